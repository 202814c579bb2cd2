"""Zero-shot classifier (prompt ensembles) and accuracy, with a bag-of-words text encoder written in NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.evals.zero_shot import SHAPES_TEMPLATES, build_classifier, shapes_tasks, zero_shot_accuracy

WORDS = ["<pad>"] + "a an there is image of picture showing red green blue cat dog bird fish orange in".split()
EMBED = np.random.default_rng(0).normal(size=(len(WORDS), 8)).astype(np.float32)
EMBED[0] = 0


def tokenize(texts: list[str], length: int = 8) -> np.ndarray:
  out = np.zeros((len(texts), length), np.int32)
  for i, t in enumerate(texts):
    ids = [WORDS.index(w) for w in t.split()][:length]
    out[i, :len(ids)] = ids
  return out


class BagOfWords:
  """Sum of word vectors (not normalised); records the batch sizes it was called with."""

  def __init__(self):
    self.calls: list[int] = []

  def __call__(self, tokens: np.ndarray) -> np.ndarray:
    self.calls.append(len(tokens))
    return EMBED[tokens].sum(axis=1) * 3.0


def reference(classnames, templates):
  rows = []
  for c in classnames:
    texts = [t(c) if callable(t) else t.format(c) for t in templates]
    e = EMBED[tokenize(texts)].sum(axis=1).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    m = e.mean(axis=0)
    rows.append(m / np.linalg.norm(m))
  return np.stack(rows)


@pytest.mark.parametrize("batch_size", [256, 4, 5])
def test_classifier_is_normalised_mean_of_normalised_prompts(batch_size):
  classnames = ["cat", "dog", "bird", "fish", "orange"]
  templates = ["a {}", "there is a {}", lambda c: f"a picture of {c}", "a {} in a picture"]
  enc = BagOfWords()
  w = np.asarray(build_classifier(enc, tokenize, classnames, templates, batch_size=batch_size))
  assert w.shape == (5, 8)
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(w, reference(classnames, templates), atol=1e-5)
  assert set(enc.calls) == {min(batch_size, 20)}     # fixed batch shape: a jitted encoder compiles once


def test_shapes_templates_use_articles():
  assert [t("orange") for t in SHAPES_TEMPLATES][:2] == ["an orange", "there is an orange"]
  assert SHAPES_TEMPLATES[0]("red circle") == "a red circle"
  w = build_classifier(BagOfWords(), tokenize, ["red", "orange"], SHAPES_TEMPLATES)
  np.testing.assert_allclose(np.asarray(w), reference(["red", "orange"], SHAPES_TEMPLATES), atol=1e-5)


def test_accuracy_hand_made():
  classifier = np.eye(6, 4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]       # 6 classes, classes 4, 5 duplicate 0, 1
  classifier[4:] *= 0.5
  img = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.2, 1, 0], [0, 0, 0.9, 0.1], [0, 0, 0, 1]], np.float32)
  labels = np.array([0, 1, 2, 3, 2])
  logits = img @ classifier.T
  want1 = 100 * np.mean(np.argmax(logits, axis=1) == labels)
  got = zero_shot_accuracy(img, classifier, labels, topk=(1, 5, 6))
  assert got["top1"] == pytest.approx(want1) == 60.0
  # Image 4 (label 2) scores 0 on its class: class 3 (1.0) and the tied classes 0, 1, 4, 5 rank ahead -> rank 5.
  assert got["top5"] == 80.0 and got["top6"] == 100.0
  assert zero_shot_accuracy(img, classifier, np.array([0, 1, 2, 3, 5]), topk=(1, 2))["top2"] == 80.0


def test_accuracy_random_vs_numpy():
  rng = np.random.default_rng(3)
  img, classifier = rng.normal(size=(200, 16)), rng.normal(size=(10, 16))
  labels = rng.integers(0, 10, 200)
  logits = img @ classifier.T
  order = np.argsort(-logits, axis=1)
  got = zero_shot_accuracy(img.astype(np.float32), classifier.astype(np.float32), labels, topk=(1, 5))
  assert got["top1"] == pytest.approx(100 * np.mean(order[:, 0] == labels))
  assert got["top5"] == pytest.approx(100 * np.mean((order[:, :5] == labels[:, None]).any(axis=1)))


def test_topk_larger_than_classes_is_skipped():
  got = zero_shot_accuracy(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.arange(3), topk=(1, 5))
  assert got == {"top1": 100.0}


def test_errors():
  img, clf = np.zeros((4, 3), np.float32), np.zeros((5, 3), np.float32)
  with pytest.raises(MmjaxError, match="img_emb"):
    zero_shot_accuracy(img[:, :2], clf, np.zeros(4, int))
  with pytest.raises(MmjaxError, match="classifier"):
    zero_shot_accuracy(img, clf[0], np.zeros(4, int))
  with pytest.raises(MmjaxError, match="labels"):
    zero_shot_accuracy(img, clf, np.zeros(3, int))
  with pytest.raises(MmjaxError, match="labels"):
    zero_shot_accuracy(img, clf, np.array([0, 1, 2, 5]))
  with pytest.raises(MmjaxError, match="no '\\{\\}'"):
    build_classifier(BagOfWords(), tokenize, ["cat"], ["a photo"])
  with pytest.raises(MmjaxError, match="classnames"):
    build_classifier(BagOfWords(), tokenize, [], ["a {}"])
  with pytest.raises(MmjaxError, match="encode_text"):
    build_classifier(lambda t: np.zeros((len(t), 1, 3)), tokenize, ["cat"], ["a {}"])


def test_shapes_tasks():
  from mmjax.data import shapes
  tasks = shapes_tasks()
  assert set(tasks) == {"shape", "colour", "shape_colour"}
  n_s, n_c = len(shapes.SHAPES), len(shapes.COLOURS)
  assert tasks["shape"][0] == list(shapes.SHAPES) and tasks["colour"][0] == list(shapes.COLOURS)
  names, label_fn, templates = tasks["shape_colour"]
  assert tasks["shape"][2][0]("circle") == "a red circle"        # shape prompts ensemble over colour words
  assert tasks["colour"][2][1]("orange") == "an orange square"  # colour prompts over shape words
  assert len(names) == n_s * n_c
  example = {"shape": np.array([[2, -1], [0, 1]]), "colour": np.array([[3, -1], [n_c - 1, 0]])}
  np.testing.assert_array_equal(tasks["shape"][1](example), [2, 0])
  np.testing.assert_array_equal(tasks["colour"][1](example), [3, n_c - 1])
  labels = label_fn(example)
  c0, s0 = list(shapes.COLOURS)[3], shapes.SHAPES[2]
  assert names[labels[0]] == f"{c0} {s0}" and names[labels[1]] == f"{list(shapes.COLOURS)[-1]} {shapes.SHAPES[0]}"
