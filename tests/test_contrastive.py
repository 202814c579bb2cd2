"""clip_loss / siglip_loss against float64 NumPy loops; gradients, no temperature clamp in the loss, Objective contract."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.objectives import Objective, ObjectiveContext, get_objective
from mmjax.objectives.contrastive import clip_loss, siglip_loss

TINY = dict(name="clip", embed_dim=8,
            vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0),
            text=dict(vocab_size=40, context_length=6, width=16, depth=1, num_heads=2, mlp_ratio=2.0))


def _unit(rng, b, e):
  z = rng.standard_normal((b, e))
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def _lse(row):
  m = max(row)
  return m + math.log(sum(math.exp(v - m) for v in row))


def np_clip_loss(zi, zt, t):
  s = math.exp(t)   # OpenCLIP: exp(logit_scale) unclamped in the loss (the parameter is clamped by the update)
  b = zi.shape[0]
  logits = [[s * float(np.dot(zi[i], zt[j])) for j in range(b)] for i in range(b)]
  i2t = sum(_lse(logits[i]) - logits[i][i] for i in range(b)) / b
  t2i = sum(_lse([logits[j][i] for j in range(b)]) - logits[i][i] for i in range(b)) / b
  acc_i2t = sum(int(np.argmax(logits[i]) == i) for i in range(b)) / b
  return (i2t + t2i) / 2, s, acc_i2t


def np_siglip_loss(zi, zt, t, bias):
  b = zi.shape[0]
  total = 0.0
  for i in range(b):
    for j in range(b):
      z = math.exp(t) * float(np.dot(zi[i], zt[j])) + bias
      label = 1.0 if i == j else -1.0
      total += math.log1p(math.exp(-label * z))  # -log sigmoid(label * z)
  return total / b


@pytest.mark.parametrize("b,e,t", [(1, 4, 2.0), (5, 3, 2.659), (8, 16, 0.3), (13, 7, 5.0)])
def test_clip_loss_matches_numpy(b, e, t):
  rng = np.random.default_rng(b * 100 + e)
  zi, zt = _unit(rng, b, e), _unit(rng, b, e)
  zt[: b // 2] = zi[: b // 2] + 0.1 * zt[: b // 2]  # some pairs aligned, so accuracies are not trivial
  loss, metrics = clip_loss(jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32), jnp.float32(t))
  ref, s, acc = np_clip_loss(zi, zt, t)
  np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["loss"], ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["logit_scale"], s, rtol=1e-5)
  np.testing.assert_allclose(metrics["temperature"], 1 / s, rtol=1e-5)
  np.testing.assert_allclose(metrics["i2t_acc"], acc, atol=1e-6)
  assert set(metrics) == {"loss", "logit_scale", "temperature", "i2t_acc", "t2i_acc"}


@pytest.mark.parametrize("b,e,t,bias", [(1, 4, math.log(10), -10.0), (6, 5, 1.0, 0.5), (9, 12, 3.0, -2.0)])
def test_siglip_loss_matches_numpy(b, e, t, bias):
  rng = np.random.default_rng(7 * b + e)
  zi, zt = _unit(rng, b, e), _unit(rng, b, e)
  loss, metrics = siglip_loss(jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32), jnp.float32(t),
                              jnp.float32(bias))
  np.testing.assert_allclose(loss, np_siglip_loss(zi, zt, t, bias), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["logit_bias"], bias, rtol=1e-6)


def test_clip_loss_gradient_finite_differences():
  rng = np.random.default_rng(0)
  zi, zt = _unit(rng, 4, 3), _unit(rng, 4, 3)
  with jax.enable_x64(True):
    f = lambda z: clip_loss(z, jnp.asarray(zt), jnp.float64(1.5))[0]
    grad = np.asarray(jax.grad(f)(jnp.asarray(zi)))
    assert grad.dtype == np.float64
  eps = 1e-6
  fd = np.zeros_like(zi)
  for idx in np.ndindex(zi.shape):
    hi, lo = zi.copy(), zi.copy()
    hi[idx] += eps
    lo[idx] -= eps
    fd[idx] = (np_clip_loss(hi, zt, 1.5)[0] - np_clip_loss(lo, zt, 1.5)[0]) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_no_temperature_clamp_in_the_loss():
  """Above log 100 the loss still uses exp(t) and has a gradient (OpenCLIP's ClipLoss; the clamp of the parameter
  after each update is tested in test_logit_scale_clamp.py)."""
  rng = np.random.default_rng(1)
  zi, zt = _unit(rng, 6, 4), _unit(rng, 6, 4)
  above, g = jax.value_and_grad(lambda t: clip_loss(jnp.asarray(zi), jnp.asarray(zt), t)[0])(jnp.float32(7.0))
  np.testing.assert_allclose(float(above), np_clip_loss(zi, zt, 7.0)[0], rtol=1e-5)
  eps = 1e-4
  fd = (np_clip_loss(zi, zt, 7.0 + eps)[0] - np_clip_loss(zi, zt, 7.0 - eps)[0]) / (2 * eps)
  np.testing.assert_allclose(float(g), fd, rtol=1e-4)
  assert float(g) != 0.0


def test_perfect_alignment_gives_zero_loss():
  z = jnp.eye(5, dtype=jnp.float32)
  loss, metrics = clip_loss(z, z, jnp.float32(math.log(100)))
  assert float(loss) < 1e-6
  assert float(metrics["i2t_acc"]) == 1.0 and float(metrics["t2i_acc"]) == 1.0
  assert float(siglip_loss(z, z, jnp.float32(math.log(100)), jnp.float32(-50.0))[0]) < 1e-6


@pytest.mark.parametrize("name,extra", [("clip", {}), ("siglip", {"logit_scale_init": math.log(10),
                                                                  "logit_bias_init": -10.0})])
def test_objective_contract(name, extra):
  obj = get_objective(name)
  assert isinstance(obj, Objective) and obj.batch_keys == ("image", "tokens")
  model = build_model({**TINY, **extra})
  batch = {"image": jax.random.normal(jax.random.key(0), (4, 16, 16, 3)),
           "tokens": jax.random.randint(jax.random.key(1), (4, 6), 1, 40)}
  params = jax.jit(model.init)(jax.random.key(2), batch["image"], batch["tokens"])["params"]
  rng = jax.random.key(3)
  loss_fn = jax.jit(functools.partial(obj.loss_fn, model=model))
  loss, metrics = loss_fn(params, batch, rng)
  feats = jax.jit(functools.partial(obj.features_fn, model=model, train=True))(params, batch, rng)
  assert feats["zimg"].shape == (4, 8) and feats["ztxt"].shape == (4, 8)
  loss2, metrics2 = obj.loss_from_features(feats, ctx=obj.context())
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], metrics2["loss"], rtol=1e-6)
  assert np.isfinite(float(loss))
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, rng)[0]))(params)
  assert float(jnp.abs(grads["logit_scale"])) > 0


def test_siglip_without_bias_param_errors():
  feats = {"zimg": jnp.eye(2), "ztxt": jnp.eye(2)}
  with pytest.raises(MmjaxError, match="logit_bias_init"):
    get_objective("siglip").loss_from_features({**feats, "logit_scale": jnp.zeros((2,))},
                                               ctx=ObjectiveContext())


def test_unknown_objective():
  with pytest.raises(MmjaxError, match="known: .*clip"):
    get_objective("clipp")
