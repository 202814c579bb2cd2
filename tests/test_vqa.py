"""VQA on shapes: questions/answers (mmjax/data/vqa_shapes.py) re-derived independently from the scene objects and
checked against the rendered pixels; the model's masking and modalities (mmjax/models/vqa.py); the evaluator's
per-type accuracy and answer prior (mmjax/evals/vqa_evals.py) against hand computations."""
from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data import shapes as shapes_lib
from mmjax.data import vqa_shapes as vqa
from mmjax.evals.vqa_evals import majority_answers, per_type_accuracy
from mmjax.models import build_model

CFG = shapes_lib.ShapesConfig(image_size=32, min_shapes=1, max_shapes=4, noise_std=0.03)
COLOURS = list(shapes_lib.COLOURS)
PALETTE = np.asarray(list(shapes_lib.COLOURS.values()))
SHAPE_NAMES = list(shapes_lib.SHAPES)
POSITION_NAMES = list(shapes_lib.POSITIONS)


def _find(objects, shape=None, colour=None, position=None):
  out = [o for o in objects if (shape is None or SHAPE_NAMES[o["shape"]] == shape)
         and (colour is None or COLOURS[o["colour"]] == colour)
         and (position is None or POSITION_NAMES[o["position"]] == position)]
  return out


def _pixel_colour(image: np.ndarray, obj: dict) -> str:
  """The palette colour nearest to the rendered pixel at the object's centre."""
  cx, cy = obj["centre"]
  rgb = image[int(cy), int(cx)].astype(np.float64) / 255.0
  return COLOURS[int(np.argmin(((PALETTE - rgb) ** 2).sum(1)))]


def reference_answer(question: str, objects: list[dict], image: np.ndarray) -> tuple[str, str]:
  """(question type, answer) re-derived from the question text and the scene objects, without the module's code."""
  m = re.fullmatch(r"what colour is the (\w+) \?", question)
  if m:
    (obj,) = _find(objects, shape=m.group(1))                # the shape must be unique in the scene
    assert _pixel_colour(image, obj) == COLOURS[obj["colour"]], question
    return "colour", COLOURS[obj["colour"]]
  m = re.fullmatch(r"what colour is the object at the ([\w ]+) \?", question)
  if m:
    (obj,) = _find(objects, position=m.group(1))
    assert _pixel_colour(image, obj) == COLOURS[obj["colour"]], question
    return "colour", COLOURS[obj["colour"]]
  m = re.fullmatch(r"what shape is the (\w+) object \?", question)
  if m:
    (obj,) = _find(objects, colour=m.group(1))
    return "shape", SHAPE_NAMES[obj["shape"]]
  m = re.fullmatch(r"what shape is the object at the ([\w ]+) \?", question)
  if m:
    (obj,) = _find(objects, position=m.group(1))
    return "shape", SHAPE_NAMES[obj["shape"]]
  if question == "how many objects are there ?":
    return "count", str(len(objects))
  m = re.fullmatch(r"how many (\w+) objects are there \?", question)
  if m:
    word = m.group(1)
    n = len(_find(objects, colour=word)) if word in COLOURS else len(_find(objects, shape=word))
    assert word in COLOURS or word in SHAPE_NAMES
    return "count", str(n)
  m = re.fullmatch(r"is there any (\w+) (\w+) \?", question)
  if m:
    return "exist", "yes" if _find(objects, colour=m.group(1), shape=m.group(2)) else "no"
  m = re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+) \?", question)
  if m:
    (a,) = _find(objects, colour=m.group(1), shape=m.group(2))
    (b,) = _find(objects, colour=m.group(4), shape=m.group(5))
    (ra, ca), (rb, cb) = divmod(a["position"], 3), divmod(b["position"], 3)
    (xa, ya), (xb, yb) = a["centre"], b["centre"]
    rel = m.group(3)
    if rel in ("left of", "right of"):
      assert ca != cb, question                              # only asked between different columns
      truth = (xa < xb) if rel == "left of" else (xa > xb)   # pixel centres, not the module's grid logic
      assert truth == ((ca < cb) if rel == "left of" else (ca > cb))
    else:
      assert ra != rb, question
      truth = (ya < yb) if rel == "above" else (ya > yb)     # image y grows downwards
    return "relpos", "yes" if truth else "no"
  raise AssertionError(f"unparsed question {question!r}")


def test_questions_and_answers_match_the_scene_on_500_scenes():
  types, answers = [], []
  colour_checked = 0
  for i in range(500):
    ex = vqa.vqa_example(i, "test", CFG)
    objects = shapes_lib.sample_scene(i, "test", CFG)
    # the example's label arrays are those of the same scene
    assert int(ex["count"]) == len(objects)
    assert [int(s) for s in ex["shape"][:len(objects)]] == [o["shape"] for o in objects]
    qtype, answer = reference_answer(ex["question"], objects, ex["image"])
    assert (ex["qtype"], ex["answer"]) == (qtype, answer), (i, ex["question"], ex["answer"], answer)
    types.append(qtype)
    answers.append(answer)
    colour_checked += qtype == "colour"
    # every object's centre pixel has its label's colour (the colour answers are visible)
    for o in objects:
      assert _pixel_colour(ex["image"], o) == COLOURS[o["colour"]], (i, o)
  types, answers = np.asarray(types), np.asarray(answers)
  assert set(types) == set(vqa.QTYPES) and colour_checked > 50
  for t in ("exist", "relpos"):
    yes = np.mean(answers[types == t] == "yes")
    assert 0.25 < yes < 0.75, (t, yes)                      # no trivial answer prior for yes/no questions
  assert len(set(answers[types == "count"])) >= 4


def test_examples_are_pure_functions_of_index_and_split():
  a, b = vqa.vqa_example(17, "train", CFG), vqa.vqa_example(17, "train", CFG)
  assert a["question"] == b["question"] and a["answer"] == b["answer"]
  np.testing.assert_array_equal(a["image"], b["image"])
  qs_train = [vqa.vqa_example(i, "train", CFG)["question"] for i in range(20)]
  qs_test = [vqa.vqa_example(i, "test", CFG)["question"] for i in range(20)]
  assert qs_train != qs_test
  src = vqa.VQASource(CFG, "test")
  assert src[3]["question"] == vqa.vqa_example(3, "test", CFG)["question"]


def test_preprocess_and_tokenize():
  ex = vqa.vqa_example(5, "train", CFG)
  out = vqa.vqa_preprocess(ex, {"question_length": 12})
  words = ex["question"].split()
  assert int(out["question_length"]) == len(words)
  assert [vqa.VOCAB[i] for i in out["question"][:len(words)]] == words
  assert np.all(out["question"][len(words):] == 0)
  assert vqa.ANSWERS[int(out["label"])] == ex["answer"] and vqa.QTYPES[int(out["qtype"])] == ex["qtype"]
  np.testing.assert_allclose(out["image"], ex["image"] / 127.5 - 1, atol=1e-6)
  with pytest.raises(Exception, match="question_length"):
    vqa.tokenize("a b c d", 3)


@pytest.fixture(scope="module")
def models():
  kw = dict(num_answers=len(vqa.ANSWERS), vocab_size=len(vqa.VOCAB), width=16, num_heads=2, head_hidden=8,
            fusion_kwargs={"depth": 1})
  full = build_model(dict(name="vqa", modalities=("image", "question"), **kw))
  qonly = build_model(dict(name="vqa", modalities=("question",), **kw))
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(-1, 1, (3, 16, 16, 3)), jnp.float32)
  q = np.zeros((3, 8), np.int32)
  lengths = np.array([3, 5, 8], np.int32)
  for b, n in enumerate(lengths):
    q[b, :n] = rng.integers(1, len(vqa.VOCAB), n)
  pf = full.init(jax.random.PRNGKey(0), image, jnp.asarray(q))["params"]
  pq = qonly.init(jax.random.PRNGKey(0), jnp.asarray(q))["params"]
  return full, pf, qonly, pq, image, q, lengths


def test_vqa_model_shapes_masking_and_image_dependence(models):
  full, pf, qonly, pq, image, q, lengths = models
  lg = full.apply({"params": pf}, image, jnp.asarray(q))
  chex.assert_shape(lg, (3, len(vqa.ANSWERS)))
  chex.assert_tree_all_finite(lg)
  assert "fusion" in pf and "fusion" not in pq and "image_pos" in pf
  # the image matters for the fused model
  lg2 = full.apply({"params": pf}, image[::-1], jnp.asarray(q))
  assert float(jnp.max(jnp.abs(lg - lg2))) > 1e-5
  # tokens past question_length do not change the answer (masked attention and masked pooling)
  noisy = q.copy()
  for b, n in enumerate(lengths):
    noisy[b, n:] = 7
  lens = {"question": jnp.asarray(lengths)}
  for model, params, args in ((full, pf, (image,)), (qonly, pq, ())):
    a = model.apply({"params": params}, *args, jnp.asarray(q), lengths=lens)
    b = model.apply({"params": params}, *args, jnp.asarray(noisy), lengths=lens)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  with pytest.raises(Exception, match="modalities"):
    build_model(dict(name="vqa", modalities=("image",))).init(jax.random.PRNGKey(0), image)


def test_per_type_accuracy_and_majority_answers():
  pred = np.array([1, 0, 3, 3, 5, 5])
  label = np.array([1, 1, 3, 2, 5, 4])
  qtype = np.array([0, 0, 1, 1, 2, 2])
  out = per_type_accuracy(pred, label, qtype, ["a", "b", "c", "d"])
  assert out["accuracy"] == pytest.approx(3 / 6)
  assert [out["acc_a"], out["acc_b"], out["acc_c"]] == pytest.approx([0.5, 0.5, 0.5])
  assert np.isnan(out["acc_d"]) and out["frac_d"] == 0.0 and out["frac_a"] == pytest.approx(1 / 3)
  maj = majority_answers(np.array([2, 2, 1, 4, 4, 4, 0]), np.array([0, 0, 0, 1, 1, 1, 2]), 4)
  assert maj.tolist() == [2, 4, 0, -1]


@pytest.mark.slow
def test_question_only_variant_runs_in_the_loop(tmp_path):
  """The baseline variant trains and evaluates through the loop (the default variant runs in test_experiments)."""
  import os
  from conftest import ROOT
  from mmjax import config as config_lib
  from mmjax.train import loop
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "vqa_shapes.py"), "question_only,runlocal")
  assert tuple(config.model.modalities) == ("question",)
  results = loop.Trainer(config, str(tmp_path)).train()
  assert 0.0 <= results["vqa/accuracy"] <= 1.0 and results["vqa/num_examples"] == 16
  assert sum(results[f"vqa/frac_{t}"] for t in vqa.QTYPES) == pytest.approx(1.0)
