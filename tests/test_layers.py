"""Attention, MLP and transformer block against NumPy re-implementations from the same weights."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.layers import (CrossAttention, Mlp, MultiHeadAttention, Transformer, TransformerBlock, causal_mask,
                          padding_mask)
from mmjax.layers.attention import split_heads
from mmjax.layers.mlp import gelu_erf

RTOL = ATOL = 2e-5


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _softmax(s):
  s = s - s.max(-1, keepdims=True)
  e = np.exp(s)
  return e / e.sum(-1, keepdims=True)


def _np_attention(q, k, v, heads, mask=None):
  """q [B, Tq, w], k/v [B, Tk, w] already projected; mask bool broadcastable to [B, H, Tq, Tk]."""
  b, tq, w = q.shape
  d = w // heads
  split = lambda x: x.reshape(b, x.shape[1], heads, d).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  s = np.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
  if mask is not None:
    s = np.where(np.broadcast_to(mask, s.shape), s, -1e30)
  p = _softmax(s)
  o = np.einsum("bhqk,bhkd->bhqd", p, v).transpose(0, 2, 1, 3).reshape(b, tq, w)
  return o, p


def _np_mha(p, x, heads, mask=None):
  w = x.shape[-1]
  qkv = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
  o, probs = _np_attention(qkv[..., :w], qkv[..., w:2 * w], qkv[..., 2 * w:], heads, mask)
  return o @ p["out_proj"]["kernel"] + p["out_proj"]["bias"], probs


def _np_ln(p, x, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_mlp(p, x):
  h = x @ p["c_fc"]["kernel"] + p["c_fc"]["bias"]
  h = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))
  return h @ p["c_proj"]["kernel"] + p["c_proj"]["bias"]


def test_mha_matches_numpy_and_returns_weights():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  mha = MultiHeadAttention(num_heads=2)
  params = mha.init(jax.random.key(1), x)["params"]
  assert params["in_proj"]["kernel"].shape == (8, 24) and params["in_proj"]["bias"].shape == (24,)
  assert params["out_proj"]["kernel"].shape == (8, 8)
  mask = np.random.default_rng(0).random((2, 1, 5, 5)) > 0.3
  mask[..., 0] = True  # every query sees at least one key
  for m in (None, mask):
    out, weights = mha.apply({"params": params}, x, None if m is None else jnp.asarray(m), return_weights=True)
    ref, ref_w = _np_mha(_np(params), np.asarray(x, np.float64), 2, m)
    assert out.shape == (2, 5, 8) and weights.shape == (2, 2, 5, 5) and weights.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(weights, ref_w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  # An additive (0 / -inf) mask is the same as the boolean one.
  additive = jnp.where(jnp.asarray(mask), 0.0, -jnp.inf)
  np.testing.assert_allclose(mha.apply({"params": params}, x, additive),
                             mha.apply({"params": params}, x, jnp.asarray(mask)), rtol=1e-6, atol=1e-6)


def test_split_heads_and_its_gradient_match_numpy():
  """split_heads is a permutation: its VJP must be the inverse permutation of the cotangents (NumPy)."""
  b, t, parts, h, d = 2, 3, 3, 2, 4
  x = jax.random.normal(jax.random.key(0), (b, t, parts * h * d))
  ref = np.asarray(x).reshape(b, t, parts, h, d).transpose(2, 0, 3, 1, 4)
  cts = tuple(jax.random.normal(jax.random.key(i + 1), (b, h, t, d)) for i in range(parts))
  outs, vjp = jax.vjp(lambda a: split_heads(a, parts, h), x)
  assert len(outs) == parts
  for i in range(parts):
    np.testing.assert_array_equal(outs[i], ref[i])
  (gx,) = vjp(cts)
  np.testing.assert_array_equal(gx, np.stack([np.asarray(c) for c in cts]).transpose(1, 3, 0, 2, 4).reshape(x.shape))


def test_mha_gradient_matches_plain_slicing_reference():
  """Gradients of the attention (with and without the 2-D Dense of cpu_tuning) equal autodiff of a plain
  slice-and-reshape attention."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  mha = MultiHeadAttention(num_heads=2)
  params = mha.init(jax.random.key(1), x)["params"]
  cot = jax.random.normal(jax.random.key(2), (2, 5, 8))

  def ref(p, x):
    qkv = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
    split = lambda a: a.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    q, k, v = split(qkv[..., :8]), split(qkv[..., 8:16]), split(qkv[..., 16:])
    o = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / 2.0, axis=-1) @ v
    return o.transpose(0, 2, 1, 3).reshape(2, 5, 8) @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]

  want = jax.grad(lambda p, x: jnp.sum(ref(p, x) * cot), argnums=(0, 1))(params, x)
  for setting in ("on", "off"):
    layer = MultiHeadAttention(num_heads=2, cpu_tuning=setting)
    got = jax.grad(lambda p, x: jnp.sum(layer.apply({"params": p}, x) * cot), argnums=(0, 1))(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cross_attention_matches_numpy():
  x = jax.random.normal(jax.random.key(0), (2, 3, 8))
  ctx = jax.random.normal(jax.random.key(1), (2, 6, 12))
  ca = CrossAttention(num_heads=4)
  params = ca.init(jax.random.key(2), x, ctx)["params"]
  assert params["q_proj"]["kernel"].shape == (8, 8) and params["kv_proj"]["kernel"].shape == (12, 16)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  out, weights = ca.apply({"params": params}, x, ctx, padding_mask(jnp.asarray(valid)), return_weights=True)
  p, xn, cn = _np(params), np.asarray(x, np.float64), np.asarray(ctx, np.float64)
  q = xn @ p["q_proj"]["kernel"] + p["q_proj"]["bias"]
  kv = cn @ p["kv_proj"]["kernel"] + p["kv_proj"]["bias"]
  o, probs = _np_attention(q, kv[..., :8], kv[..., 8:], 4, valid[:, None, None, :])
  ref = o @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]
  np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(weights, probs, rtol=RTOL, atol=ATOL)
  assert float(jnp.abs(weights[0, :, :, 4:]).max()) == 0.0


def test_causal_mask_blocks_the_future():
  x = jax.random.normal(jax.random.key(0), (1, 6, 8))
  tr = Transformer(depth=2, num_heads=2)
  mask = causal_mask(6)[None, None]
  params = tr.init(jax.random.key(1), x, mask)
  t = 2
  x2 = x.at[:, t + 1:].set(jax.random.normal(jax.random.key(3), (1, 6 - t - 1, 8)))
  y1, y2 = tr.apply(params, x, mask), tr.apply(params, x2, mask)
  np.testing.assert_allclose(y1[:, :t + 1], y2[:, :t + 1], rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(y1[:, t + 1:] - y2[:, t + 1:]).max()) > 1e-3
  _, w = MultiHeadAttention(2).apply({"params": params["params"]["resblocks_0"]["attn"]}, x, mask,
                                     return_weights=True)
  assert float(jnp.abs(jnp.triu(w, k=1)).max()) == 0.0


def test_mlp_uses_exact_erf_gelu():
  x = 3.0 * jax.random.normal(jax.random.key(0), (2, 4, 6))
  mlp = Mlp(mlp_ratio=2.0)
  params = mlp.init(jax.random.key(1), x)["params"]
  assert params["c_fc"]["kernel"].shape == (6, 12) and params["c_proj"]["kernel"].shape == (12, 6)
  ref = _np_mlp(_np(params), np.asarray(x, np.float64))
  np.testing.assert_allclose(mlp.apply({"params": params}, x), ref, rtol=RTOL, atol=ATOL)
  # The tanh approximation would differ from the exact GELU by more than the tolerance here.
  h = jnp.linspace(-4, 4, 101)
  assert float(jnp.abs(jax.nn.gelu(h, approximate=True) - jax.nn.gelu(h, approximate=False)).max()) > 1e-4


def test_gelu_erf_matches_math_erf_and_its_derivative():
  """gelu_erf = x Phi(x) against math.erf in float64 (including |x| large, where erf saturates), and its
  gradient against the closed form Phi(x) + x phi(x)."""
  x = np.concatenate([np.linspace(-12.0, 12.0, 961), [-1e-3, 0.0, 1e-3]]).astype(np.float32)
  xd = x.astype(np.float64)
  phi_cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in xd])
  np.testing.assert_allclose(gelu_erf(jnp.asarray(x)), xd * phi_cdf, rtol=0, atol=2e-6)
  grad = jax.vmap(jax.grad(gelu_erf))(jnp.asarray(x))
  ref = phi_cdf + xd * np.exp(-0.5 * xd ** 2) / math.sqrt(2.0 * math.pi)
  np.testing.assert_allclose(grad, ref, rtol=0, atol=2e-6)
  assert gelu_erf(jnp.ones((2,), jnp.bfloat16)).dtype == jnp.bfloat16


def test_block_is_pre_ln():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  blk = TransformerBlock(num_heads=2)
  params = blk.init(jax.random.key(1), x)["params"]
  p, xn = _np(params), np.asarray(x, np.float64)
  h = xn + _np_mha(p["attn"], _np_ln(p["ln_1"], xn), 2)[0]
  ref = h + _np_mlp(p["mlp"], _np_ln(p["ln_2"], h))
  np.testing.assert_allclose(blk.apply({"params": params}, x), ref, rtol=RTOL, atol=ATOL)


def test_heads_must_divide_width():
  with pytest.raises(MmjaxError, match="num_heads"):
    MultiHeadAttention(num_heads=3).init(jax.random.key(0), jnp.zeros((1, 2, 8)))


def test_eot_positions_and_through_eot_against_numpy():
  from mmjax.layers import eot_positions, through_eot
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 6, (64, 9))           # 0 is a real token here ("!" in CLIP's BPE), 5 the EOT
  tokens[::7] = np.where(tokens[::7] == 5, 4, tokens[::7])   # some rows without an EOT
  for eot_id in (5, None):
    want = np.empty(64, int)
    for i, row in enumerate(tokens):
      if eot_id is None:
        want[i] = int(np.argmax(row))
      else:
        hits = np.flatnonzero(row == eot_id)
        want[i] = hits[0] if hits.size else row.size - 1
    np.testing.assert_array_equal(np.asarray(eot_positions(tokens, eot_id)), want)
    np.testing.assert_array_equal(np.asarray(through_eot(tokens, eot_id)),
                                  np.arange(9)[None, :] <= want[:, None])
