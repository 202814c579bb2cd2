"""FILIP token-wise similarity and loss against NumPy loops; CLIP per-token features; the "filip" objective's
exact gradient accumulation; captured attention weights against a NumPy recomputation."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax.alignment.tokens import filip_loss, token_alignment, token_similarity
from mmjax.layers.attention import attention_weights
from mmjax.models import build_model
from mmjax.objectives import get_objective
from mmjax.train.step import accumulated_grads

TINY = dict(name="clip", embed_dim=8,
            vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0),
            text=dict(vocab_size=40, context_length=6, width=16, depth=1, num_heads=2, mlp_ratio=2.0,
                      eot_id=39))   # the texts below end with 39 (id 2 is an ordinary token in them)


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_similarity(x, y, mx, my):
  """Loops straight from the FILIP paper's definition (padding tokens excluded on both sides)."""
  bi, bt = len(x), len(y)
  s_i2t, s_t2i = np.zeros((bi, bt)), np.zeros((bi, bt))
  for i in range(bi):
    for j in range(bt):
      img = [x[i, k] for k in range(x.shape[1]) if mx[i, k]]
      txt = [y[j, r] for r in range(y.shape[1]) if my[j, r]]
      s_i2t[i, j] = np.mean([max(float(a @ b) for b in txt) for a in img])
      s_t2i[i, j] = np.mean([max(float(a @ b) for a in img) for b in txt])
  return s_i2t, s_t2i


def _data(rng, b=4, n=5, l=6, e=3):
  x, y = unit(rng.normal(size=(b, n, e))), unit(rng.normal(size=(b, l, e)))
  mx = np.ones((b, n), bool)
  mx[1, 3:] = False
  my = np.arange(l)[None, :] < rng.integers(1, l + 1, (b, 1))
  return x, y, mx, my


def test_similarity_matches_numpy_loops():
  rng = np.random.default_rng(0)
  x, y, mx, my = _data(rng)
  y = y[:3]
  my = my[:3]
  got = jax.jit(token_similarity)(x, y, mx, my)
  ref = np_similarity(x, y, mx, my)
  np.testing.assert_allclose(np.asarray(got[0]), ref[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got[1]), ref[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(token_alignment(x[0], y[1])), y[1] @ x[0].T, rtol=1e-5, atol=1e-6)


def test_loss_matches_numpy_cross_entropy():
  rng = np.random.default_rng(1)
  x, y, mx, my = _data(rng)
  scale = 7.0
  loss, metrics = jax.jit(filip_loss)(x, y, np.log(scale), mx, my)
  s_i2t, s_t2i = np_similarity(x, y, mx, my)

  def ce(logits):   # rows: queries; target on the diagonal
    logits = logits - logits.max(1, keepdims=True)
    return np.mean(np.log(np.exp(logits).sum(1)) - np.diagonal(logits))

  np.testing.assert_allclose(float(loss), 0.5 * (ce(scale * s_i2t) + ce(scale * s_t2i.T)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["i2t_acc"]), np.mean(s_i2t.argmax(1) == np.arange(4)))
  np.testing.assert_allclose(float(metrics["t2i_acc"]), np.mean(s_t2i.argmax(0) == np.arange(4)))
  _, m100 = jax.jit(filip_loss)(x, y, np.log(1e4), mx, my)
  np.testing.assert_allclose(float(m100["logit_scale"]), 1e4, rtol=1e-5)   # not clamped in the loss, as CLIP's


@functools.lru_cache(maxsize=1)
def _model_and_batch():
  model = build_model(ml_collections.ConfigDict(TINY))
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32)
  tokens = jnp.array([[1, 5, 6, 39, 0, 0], [1, 7, 39, 0, 0, 0], [1, 2, 3, 4, 5, 39], [1, 9, 39, 0, 0, 0]],
                     jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), images, tokens)["params"]
  return model, params, {"image": images, "tokens": tokens}


def test_token_features_extend_the_pooled_embeddings():
  model, params, batch = _model_and_batch()
  v = {"params": params}
  img, img_mask = jax.jit(lambda x: model.apply(v, x, method="encode_image_tokens"))(batch["image"])
  txt, txt_mask = jax.jit(lambda t: model.apply(v, t, method="encode_text_tokens"))(batch["tokens"])
  chex.assert_shape([img, txt], [(4, 5, 8), (4, 6, 8)])       # 1 CLS + (16/8)^2 patches; L = 6
  np.testing.assert_array_equal(np.asarray(txt_mask), np.asarray(batch["tokens"]) != 0)
  assert bool(jnp.all(img_mask))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(txt), axis=-1), 1.0, rtol=1e-5)
  # CLS token = encode_image; the EOT token = encode_text (same tower output, same projection)
  zimg, ztxt, _ = jax.jit(lambda x, t: model.apply(v, x, t))(batch["image"], batch["tokens"])
  np.testing.assert_allclose(np.asarray(img[:, 0]), np.asarray(zimg), rtol=1e-5, atol=1e-6)
  eot = np.asarray(txt_mask).sum(1) - 1
  np.testing.assert_allclose(np.asarray(txt)[np.arange(4), eot], np.asarray(ztxt), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_filip_objective_loss_and_exact_accumulation():
  model, params, batch = _model_and_batch()
  objective = get_objective("filip")
  rng = jax.random.key(3)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: objective.loss_fn(p, batch, rng, model=model), has_aux=True))(params)
  f = jax.jit(lambda x, t: get_objective("filip").features_fn(params, {"image": x, "tokens": t}, rng, model=model,
                                                               train=False))(batch["image"], batch["tokens"])
  img, mi, txt, mt = f["img_tokens"], f["img_mask"] > 0.5, f["txt_tokens"], f["txt_mask"] > 0.5
  s_i2t, s_t2i = np_similarity(np.asarray(img), np.asarray(txt), np.asarray(mi), np.asarray(mt))
  scale = float(np.exp(params["logit_scale"]))

  def ce(logits):
    logits = logits - logits.max(1, keepdims=True)
    return np.mean(np.log(np.exp(logits).sum(1)) - np.diagonal(logits))

  np.testing.assert_allclose(float(loss), 0.5 * (ce(scale * s_i2t) + ce(scale * s_t2i.T)), rtol=1e-4)
  (acc_loss, _), acc_grads = jax.jit(
      lambda p: accumulated_grads(objective, p, batch, rng, model=model, k=2))(params)
  np.testing.assert_allclose(float(acc_loss), float(loss), rtol=1e-5)
  chex.assert_trees_all_close(acc_grads, grads, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(grads["vision"]["conv1"]["kernel"]).max()) > 0


def test_attention_weights_match_numpy_recomputation():
  model, params, batch = _model_and_batch()
  weights = jax.jit(lambda p, x: attention_weights(model, {"params": p}, x, method="encode_image"))(
      params, batch["image"])
  assert set(weights) == {"vision/transformer/resblocks_0/attn"}
  # Layer 0 from scratch: conv patchify -> + cls/pos -> ln_pre -> ln_1 -> q, k -> softmax(q k^T / sqrt(d)).
  p = jax.tree.map(np.asarray, params["vision"])
  x = np.asarray(batch["image"], np.float64)
  patches = x.reshape(4, 2, 8, 2, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, 4, 8 * 8 * 3)
  h = patches @ p["conv1"]["kernel"].reshape(8 * 8 * 3, 16)
  h = np.concatenate([np.broadcast_to(p["cls"], (4, 1, 16)), h], axis=1) + p["pos_embedding"]

  def ln(z, q):
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)
    return z * q["scale"] + q["bias"]

  blk = p["transformer"]["resblocks_0"]
  h = ln(ln(h, p["ln_pre"]), blk["ln_1"])
  qkv = h @ blk["attn"]["in_proj"]["kernel"] + blk["attn"]["in_proj"]["bias"]
  q, k = qkv[..., :16].reshape(4, 5, 2, 8), qkv[..., 16:32].reshape(4, 5, 2, 8)
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  ref = np.exp(s - s.max(-1, keepdims=True))
  ref /= ref.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(weights["vision/transformer/resblocks_0/attn"]), ref, atol=1e-5)
