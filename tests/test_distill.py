"""Cross-modal distillation (objectives/colearning.py, models/distill.py, data/semi.py): the soft-target loss at
temperature T (with the T² convention) and the feature-distillation losses against NumPy, the soft-target gradient
against Hinton et al.'s closed form, the stratified label mask, and a teacher loaded frozen from a loop workdir /
an OpenCLIP checkpoint."""
from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.data.semi import labeled_mask
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.train import teacher as teacher_lib
from mmjax.objectives import get_objective
from mmjax.objectives.colearning import distill_kl, feature_distill_loss, masked_cross_entropy


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_kd(s, t, temp):
  """NumPy reference: T² · mean_i Σ_c p_t log(p_t / p_s) with p = softmax(logits / T)."""
  lt, ls = _np_log_softmax(t / temp), _np_log_softmax(s / temp)
  return temp ** 2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_distill_kl_matches_numpy_with_t2_scaling(temp):
  rng = np.random.default_rng(0)
  s, t = rng.standard_normal((2, 8, 10)) * 3
  got = float(distill_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp))
  np.testing.assert_allclose(got, _np_kd(s, t, temp), rtol=1e-5)
  plain = float(distill_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp, scale_by_t2=False))
  np.testing.assert_allclose(plain, _np_kd(s, t, temp) / temp ** 2, rtol=1e-5)
  assert float(distill_kl(jnp.asarray(t), jnp.asarray(t), temp)) == pytest.approx(0.0, abs=1e-6)


def test_distill_kl_gradient_is_hintons_closed_form():
  # d/ds_i of T² KL(p_t || softmax(s/T)), averaged over B examples, = T (q_i - p_i) / B (Hinton et al. 2015, eq. 2).
  rng = np.random.default_rng(1)
  s, t = rng.standard_normal((2, 5, 7)).astype(np.float32)
  temp = 3.0
  g = np.asarray(jax.grad(lambda x: distill_kl(x, jnp.asarray(t), temp))(jnp.asarray(s)))
  q, p = np.exp(_np_log_softmax(s / temp)), np.exp(_np_log_softmax(t / temp))
  np.testing.assert_allclose(g, temp * (q - p) / 5, atol=1e-6)


def test_masked_cross_entropy_matches_numpy():
  rng = np.random.default_rng(2)
  z = rng.standard_normal((6, 4)).astype(np.float32)
  y = rng.integers(0, 4, 6)
  m = np.array([1, 0, 0, 1, 1, 0], np.float32)
  ce = -_np_log_softmax(z.astype(np.float64))[np.arange(6), y]
  np.testing.assert_allclose(float(masked_cross_entropy(z, y, m)), (ce * m).sum() / 3, rtol=1e-5)
  assert float(masked_cross_entropy(z, y, np.zeros(6, np.float32))) == 0.0     # no labels in the batch: no CE


@pytest.mark.parametrize("kind", ["cosine", "mse", "contrastive"])
def test_feature_distill_loss_matches_numpy(kind):
  rng = np.random.default_rng(3)
  s, t = rng.standard_normal((2, 6, 5))
  sn, tn = s / np.linalg.norm(s, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
  if kind == "cosine":
    ref = np.mean(1 - np.sum(sn * tn, 1))
  elif kind == "mse":
    ref = np.mean(np.sum((sn - tn) ** 2, 1))
  else:
    logits = sn @ tn.T / 0.1
    rows = np.log(np.exp(logits).sum(1)) - np.diag(logits)
    cols = np.log(np.exp(logits).sum(0)) - np.diag(logits)
    ref = 0.5 * (rows.mean() + cols.mean())
  got = float(feature_distill_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), kind, temperature=0.1))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert float(feature_distill_loss(jnp.asarray(t), jnp.asarray(2 * t), "cosine")) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(MmjaxError, match="kind"):
    feature_distill_loss(jnp.asarray(s), jnp.asarray(t), "l1")


def test_labeled_mask_is_stratified_and_seeded():
  labels = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 10])
  mask = labeled_mask(labels, 0.1, seed=0)
  counts = np.bincount(labels[mask == 1], minlength=10)
  np.testing.assert_array_equal(counts, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
  np.testing.assert_array_equal(mask, labeled_mask(labels, 0.1, seed=0))
  assert not np.array_equal(mask, labeled_mask(labels, 0.1, seed=1))
  with pytest.raises(MmjaxError, match="label_fraction"):
    labeled_mask(labels, 0.0, 0)


@pytest.mark.slow
def test_teacher_loads_frozen_from_a_loop_workdir_and_distill_loss_matches_numpy(tmp_path):
  """A 2-step image teacher trained by the loop (fake AV-MNIST) is restored with exactly its trained weights; the
  "distill" objective's loss is (1 - α) CE(labelled) + α T² KL, computed here in NumPy from the two models' logits;
  the student's parameters hold no teacher weights."""
  from mmjax.train import loop
  teacher_cfg = config_lib.load_experiment(os.path.join(ROOT, "experiments", "avmnist_fusion.py"), "image,runlocal")
  teacher_cfg.print_sharding = False
  trainer = loop.Trainer(teacher_cfg, str(tmp_path / "teacher"))
  trainer.train()
  trained = jax.tree.map(np.asarray, trainer.state.params)
  teacher = teacher_lib.load_classifier_teacher(str(tmp_path / "teacher"))
  assert teacher.inputs == ("image",)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, teacher.params), trained)

  cfg = config_lib.load_experiment(os.path.join(ROOT, "experiments", "distill_avmnist.py"), "distill,runlocal")
  cfg.model.random_teacher = False
  cfg.model.teacher_workdir = str(tmp_path / "teacher")
  cfg.objective_kwargs.temperature, cfg.objective_kwargs.alpha = 2.0, 0.7
  model = build_model(cfg.model)
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((4, 28, 28, 1), np.float32), "audio": rng.standard_normal((4, 13, 40, 1), np.float32),
           "label": np.array([1, 2, 3, 4], np.int32), "labeled": np.array([1, 0, 1, 0], np.float32)}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["audio"])["params"]
  assert "student" in params and len(params) == 1              # no teacher weights among the trained ones
  model = teacher_lib.attach(model)     # the teacher is read from its workdir here, once; the objective only runs it
  objective = get_objective("distill", None, cfg.objective_kwargs)
  loss, m = jax.jit(lambda p: objective.loss_fn(p, batch, jax.random.PRNGKey(0), model=model,
                                                               train=False))(params)
  s = np.asarray(jax.jit(lambda p: model.apply({"params": p}, batch["audio"]))(params), np.float64)
  t = np.asarray(jax.jit(lambda p: teacher.model.apply({"params": p}, batch["image"]))(trained), np.float64)
  ce = -_np_log_softmax(s)[np.arange(4), batch["label"]]
  ref = 0.3 * (ce[0] + ce[2]) / 2 + 0.7 * _np_kd(s, t, 2.0)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-4)
  np.testing.assert_allclose(float(m["kd"]), _np_kd(s, t, 2.0), rtol=1e-4)


def test_missing_teacher_is_a_one_line_error(tmp_path):
  with pytest.raises(MmjaxError, match="teacher_workdir"):
    build_model(dict(name="distill_student", student=dict(name="fusion_classifier", modalities=("audio",),
                                                           num_classes=10)))
  with pytest.raises(MmjaxError, match="config.json"):
    teacher_lib.load_classifier_teacher(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_clip_feature_distillation_from_an_open_clip_checkpoint(tmp_path):
  """An OpenCLIP checkpoint (the tiny fixture, safetensors) as a frozen teacher gives open_clip's own reference
  embeddings for [0, 1] images; the objective equals the NumPy cosine loss between student and teacher."""
  from safetensors.numpy import save_file
  fixtures = os.path.join(ROOT, "tests", "fixtures")
  sys.path.insert(0, fixtures)
  from open_clip_weights import inputs, weights
  from mmjax.interop import open_clip as oc
  meta = json.load(open(os.path.join(fixtures, "open_clip_tiny.json")))
  path = str(tmp_path / "tiny.safetensors")
  save_file({k: np.ascontiguousarray(v) for k, v in weights(meta["shapes"]).items()}, path)
  ref = np.load(os.path.join(fixtures, "open_clip_tiny.npz"))
  images, tokens = inputs()
  images01 = images * np.asarray(oc.OPENAI_STD, np.float32) + np.asarray(oc.OPENAI_MEAN, np.float32)
  teacher = teacher_lib.load_clip_teacher(open_clip_path=path)
  zimg, ztxt = jax.jit(teacher)({"image": images01, "tokens": tokens.astype(np.int32)})
  np.testing.assert_allclose(np.asarray(zimg), ref["image_embeddings"], atol=1e-4)
  np.testing.assert_allclose(np.asarray(ztxt), ref["text_embeddings"], atol=1e-4)

  student = dict(name="clip", embed_dim=16, vision=dict(image_size=32, patch_size=16, width=32, depth=1, num_heads=2),
                 text=dict(vocab_size=96, context_length=16, width=32, depth=1, num_heads=2))
  model = build_model(dict(name="clip_distill_student", student=student, teacher_dim=64, teacher_open_clip=path))
  model = teacher_lib.attach(model)
  batch = {"image": images01, "tokens": tokens.astype(np.int32)}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["image"], batch["tokens"])["params"]
  loss_fn = lambda p: get_objective("clip_feature_distill").loss_fn(p, batch, jax.random.PRNGKey(0), model=model,
                                                                    train=False)
  (loss, m), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  s_img, s_txt, _ = jax.jit(lambda p: model.apply({"params": p}, batch["image"], batch["tokens"]))(params)
  cos = lambda a, b: np.mean(1 - np.sum(np.asarray(a) * np.asarray(b), 1))
  np.testing.assert_allclose(float(loss), cos(s_img, ref["image_embeddings"]) + cos(s_txt, ref["text_embeddings"]),
                             atol=1e-4)
  assert float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(g["proj"]))) > 0
