"""Unimodal encoders (mmjax/encoders/{rnn,mlp,cnn}.py), the fusion classifier and the "classify" objective.

LSTM / GRU against NumPy step-by-step recurrences (with lengths, masks, bidirectional and stacked layers); MLP and CNN
against NumPy forward passes; the classify loss against a NumPy cross-entropy; and a fusion classifier that must
learn an XOR of two modalities (impossible from either alone) with TFN fusion.
"""
from __future__ import annotations

import os
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmjax.encoders.cnn import CNNEncoder, max_pool_2x2
from mmjax.encoders.mlp import MLPEncoder
from mmjax.encoders.rnn import RNNEncoder
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.objectives import get_objective

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusion_sharded_check import random_params  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm_step(p, c, h, x):
  g = lambda n: x @ p[f"i{n}"]["kernel"] + h @ p[f"h{n}"]["kernel"] + p[f"h{n}"]["bias"]
  i, f, gg, o = _sig(g("i")), _sig(g("f")), np.tanh(g("g")), _sig(g("o"))
  c = f * c + i * gg
  return c, o * np.tanh(c)


def _gru_step(p, h, x):
  r = _sig(x @ p["ir"]["kernel"] + p["ir"]["bias"] + h @ p["hr"]["kernel"])
  z = _sig(x @ p["iz"]["kernel"] + p["iz"]["bias"] + h @ p["hz"]["kernel"])
  n = np.tanh(x @ p["in"]["kernel"] + p["in"]["bias"] + r * (h @ p["hn"]["kernel"] + p["hn"]["bias"]))
  return (1 - z) * n + z * h


def _np_rnn(p, cell, x, length, hidden):
  """One sequence x [T, D], its first `length` steps -> (outputs [T, H] zero-padded, final hidden [H])."""
  c, h = np.zeros(hidden), np.zeros(hidden)
  out = np.zeros((x.shape[0], hidden))
  for t in range(length):
    if cell == "lstm":
      c, h = _lstm_step(p, c, h, x[t])
    else:
      h = _gru_step(p, h, x[t])
    out[t] = h
  return out, h


def _np_encoder(params, cell, x, lengths, hidden, layers, bidirectional, pool):
  q = _np(params)
  outs, finals = [], []
  for b in range(x.shape[0]):
    seq, n = np.asarray(x[b], np.float64), int(lengths[b])
    for layer in range(layers):
      fo, fh = _np_rnn(q[f"fwd_{layer}"]["scan"]["cell"], cell, seq, n, hidden)
      final = [fh]
      if bidirectional:
        rev = seq.copy()
        rev[:n] = seq[:n][::-1]
        bo, bh = _np_rnn(q[f"bwd_{layer}"]["scan"]["cell"], cell, rev, n, hidden)
        back = bo.copy()
        back[:n] = bo[:n][::-1]
        fo = np.concatenate([fo, back], -1)
        final.append(bh)
      seq = fo
    outs.append(seq)
    finals.append(np.concatenate(final))
  outs, finals = np.stack(outs), np.stack(finals)
  if pool == "last":
    return finals
  if pool == "mean":
    return outs.sum(1) / np.maximum(np.asarray(lengths), 1)[:, None]
  return outs


@pytest.mark.parametrize("cell,layers,bidirectional,pool", [
    ("lstm", 1, False, "none"),
    ("lstm", 2, True, "last"),
    ("gru", 1, True, "mean"),
])
def test_rnn_matches_numpy_recurrence(cell, layers, bidirectional, pool):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 6, 4)).astype(np.float32)
  lengths = np.array([6, 3, 1], np.int32)
  x[1, 3:] = 100.0  # padding values must not leak into anything
  enc = RNNEncoder(hidden=5, cell=cell, num_layers=layers, bidirectional=bidirectional, pool=pool)
  params = random_params(enc, jnp.asarray(x), jnp.asarray(lengths), seed=1)
  got = jax.jit(enc.apply)({"params": params}, x, lengths)
  ref = _np_encoder(params, cell, x, lengths, 5, layers, bidirectional, pool)
  width = 10 if bidirectional else 5
  chex.assert_shape(got, (3, 6, width) if pool == "none" else (3, width))
  np.testing.assert_allclose(got, ref, **TOL)
  # A boolean mask gives the same result as the lengths.
  mask = np.arange(6)[None, :] < lengths[:, None]
  np.testing.assert_allclose(jax.jit(lambda p, a, m: enc.apply(p, a, mask=m))({"params": params}, x, mask), got,
                             rtol=1e-6, atol=1e-6)


def test_rnn_without_lengths_reads_everything():
  x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
  enc = RNNEncoder(hidden=4, cell="lstm", pool="last")
  params = random_params(enc, jnp.asarray(x), seed=3)
  ref = _np_encoder(params, "lstm", x, [5, 5], 4, 1, False, "last")
  np.testing.assert_allclose(enc.apply({"params": params}, x), ref, **TOL)
  with pytest.raises(MmjaxError, match="'lstm' or 'gru'"):
    RNNEncoder(cell="rnn").init(jax.random.PRNGKey(0), x)


def test_mlp_encoder_matches_numpy():
  x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
  enc = MLPEncoder(hidden=(5, 4), features=2, act="tanh")
  params = random_params(enc, jnp.asarray(x), seed=5)
  q = _np(params)
  h = np.tanh(x @ q["dense_0"]["kernel"] + q["dense_0"]["bias"])
  h = np.tanh(h @ q["dense_1"]["kernel"] + q["dense_1"]["bias"])
  np.testing.assert_allclose(enc.apply({"params": params}, x), h @ q["out"]["kernel"] + q["out"]["bias"], **TOL)


def _np_conv_same(x, k, b):
  """x [B, H, W, C], k [kh, kw, C, O] (odd kernel), stride 1, zero 'SAME' padding."""
  kh, kw = k.shape[:2]
  xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros(x.shape[:3] + (k.shape[3],))
  for i in range(x.shape[1]):
    for j in range(x.shape[2]):
      out[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + kh, j:j + kw], k)
  return out + b


def _np_maxpool2(x):
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@pytest.mark.parametrize("shape", [(2, 8, 6, 2), (2, 7, 5)])  # image [B, H, W, C]; spectrogram [B, T, F]
def test_cnn_encoder_matches_numpy(shape):
  x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
  enc = CNNEncoder(channels=(3, 4), kernel_size=3, features=2)
  params = random_params(enc, jnp.asarray(x), seed=7)
  q = _np(params)
  h = x[..., None] if x.ndim == 3 else x.astype(np.float64)
  for i in range(2):
    h = _np_maxpool2(np.maximum(_np_conv_same(h, q[f"conv_{i}"]["kernel"], q[f"conv_{i}"]["bias"]), 0))
  ref = h.mean(axis=(1, 2)) @ q["out"]["kernel"] + q["out"]["bias"]
  np.testing.assert_allclose(jax.jit(enc.apply)({"params": params}, x), ref, **TOL)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_values_and_gradient(shape):
  """Values: NumPy's 2 x 2 window max ('VALID': an odd last row / column dropped). Gradient, on tie-free inputs:
  flax's nn.max_pool (select-and-scatter) -- one 1 per window at its maximum, times the cotangent. A window of
  tied maxima splits the cotangent among them (a max reduction's gradient)."""
  import flax.linen as nn
  x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
  np.testing.assert_array_equal(max_pool_2x2(jnp.asarray(x)), _np_maxpool2(x))
  ct = np.random.default_rng(9).standard_normal(_np_maxpool2(x).shape).astype(np.float32)
  ours = jax.grad(lambda v: jnp.sum(max_pool_2x2(v) * ct))(jnp.asarray(x))
  flax_grad = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), strides=(2, 2)) * ct))(jnp.asarray(x))
  np.testing.assert_allclose(ours, flax_grad, rtol=0, atol=1e-7)
  tied = jax.grad(lambda v: jnp.sum(max_pool_2x2(v)))(jnp.zeros((1, 2, 2, 1)))
  np.testing.assert_allclose(tied, np.full((1, 2, 2, 1), 0.25))


# ------------------------------------------------------------------------------------------------ classifier
def _classifier_cfg(**over):
  cfg = dict(name="fusion_classifier", modalities=("a", "b"), num_classes=2, fusion="tfn",
             fusion_kwargs={"features": 16}, head_hidden=(16,),
             encoders={"a": {"name": "mlp", "hidden": (16,), "features": 4},
                       "b": {"name": "mlp", "hidden": (16,), "features": 4}})
  cfg.update(over)
  return ml_collections.ConfigDict(cfg)


def test_classify_loss_is_softmax_cross_entropy():
  model = build_model(_classifier_cfg(num_classes=3))
  rng = np.random.default_rng(8)
  batch = {"a": rng.standard_normal((5, 3)).astype(np.float32), "b": rng.standard_normal((5, 2)).astype(np.float32),
           "label": np.array([0, 2, 1, 1, 0], np.int32)}
  params = random_params(model, jnp.asarray(batch["a"]), jnp.asarray(batch["b"]), seed=9)
  loss, metrics = get_objective("classify").loss_fn(params, batch, jax.random.PRNGKey(0), model=model, train=False)
  logits = np.asarray(model.apply({"params": params}, batch["a"], batch["b"]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(loss, -logp[np.arange(5), batch["label"]].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == batch["label"]))
  with pytest.raises(MmjaxError, match="needs batch keys \\['label'\\]"):
    get_objective("classify").loss_fn(params, {"a": batch["a"], "b": batch["b"]}, jax.random.PRNGKey(0),
                                      model=model)


def test_classifier_config_errors():
  with pytest.raises(MmjaxError, match="model.encoders.a.name"):
    build_model(_classifier_cfg(encoders={"a": {"name": "transformerr"}})).init(
        jax.random.PRNGKey(0), jnp.ones((2, 3)), jnp.ones((2, 3)))
  with pytest.raises(MmjaxError, match="not in model.modalities"):
    build_model(_classifier_cfg(encoders={"c": {"name": "mlp"}}))
  with pytest.raises(MmjaxError, match="model.fusion"):
    build_model(_classifier_cfg(fusion="tnf")).init(jax.random.PRNGKey(0), jnp.ones((2, 3)), jnp.ones((2, 3)))


def _train_xor(cfg, steps=300, n=512, seed=0) -> float:
  """label = [a_0 > 0] XOR [b_0 > 0] (+ distractor features): needs both modalities. -> held-out accuracy."""
  rng = np.random.default_rng(seed)
  a, b = rng.standard_normal((2 * n, 3)).astype(np.float32), rng.standard_normal((2 * n, 3)).astype(np.float32)
  label = ((a[:, 0] > 0) ^ (b[:, 0] > 0)).astype(np.int32)
  data = {"a": a, "b": b, "label": label}
  train = {k: v[:n] for k, v in data.items()}
  test = {k: v[n:] for k, v in data.items()}
  model = build_model(cfg)
  inputs = [jnp.asarray(train[m]) for m in model.modalities]
  params = model.init(jax.random.PRNGKey(seed), *inputs)["params"]
  tx = optax.adam(1e-2)
  objective = get_objective("classify")

  @jax.jit
  def step(p, s, i):
    (_, m), g = jax.value_and_grad(lambda q: objective.loss_fn(q, train, jax.random.PRNGKey(0), model=model),
                                   has_aux=True)(p)
    upd, s = tx.update(g, s, p)
    return optax.apply_updates(p, upd), s, m

  state = tx.init(params)
  for i in range(steps):
    params, state, _ = step(params, state, i)
  _, metrics = objective.loss_fn(params, test, jax.random.PRNGKey(0), model=model, train=False)
  return float(metrics["accuracy"])


@pytest.mark.slow
def test_fusion_classifier_learns_a_cross_modal_xor():
  assert _train_xor(_classifier_cfg()) > 0.9
  unimodal = _classifier_cfg(modalities=("a",), fusion="early", fusion_kwargs={},
                             encoders={"a": {"name": "mlp", "hidden": (16,)}})
  assert _train_xor(unimodal) < 0.65  # one modality alone carries no information about the label
