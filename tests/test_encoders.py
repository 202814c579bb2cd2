"""ViT and text transformer: shapes, pooling, masking, config errors (tiny models)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.encoders import TextTransformer, ViT
from mmjax.errors import MmjaxError

VIT = dict(image_size=16, patch_size=4, width=16, depth=1, num_heads=2, mlp_ratio=2.0)
TXT = dict(vocab_size=50, context_length=8, width=16, depth=2, num_heads=2, mlp_ratio=2.0, eot_id=49)   # _tokens end with 49


def _tokens():
  # Two sequences "... EOT pad..." with EOT = 49 (the largest id, as in OpenCLIP) at positions 4 and 7.
  return jnp.array([[3, 7, 9, 11, 49, 0, 0, 0], [5, 6, 7, 8, 9, 10, 12, 49]], jnp.int32)


@pytest.mark.parametrize("pool", ["cls", "gap", "none"])
def test_vit_shapes(pool):
  vit = ViT(**VIT, pool=pool, output_dim=8)
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  (emb, out), variables = vit.init_with_output(jax.random.key(1), images)
  p = variables["params"]
  chex.assert_shape(p["conv1"]["kernel"], (4, 4, 3, 16))
  assert "bias" not in p["conv1"] and "bias" not in p["proj"]
  chex.assert_shape([p["cls"], p["pos_embedding"], p["proj"]["kernel"]], [(16,), (1, 17, 16), (16, 8)])
  chex.assert_shape([out["tokens"], out["normed_tokens"], out["patch_tokens"]], [(2, 17, 16), (2, 17, 16),
                                                                                 (2, 16, 16)])
  if pool == "none":
    chex.assert_shape([emb, out["pooled"]], [(2, 17, 8), (2, 17, 16)])
  else:
    chex.assert_shape([emb, out["pooled"]], [(2, 8), (2, 16)])
    ref = out["normed_tokens"][:, 0] if pool == "cls" else out["normed_tokens"][:, 1:].mean(1)
    np.testing.assert_allclose(out["pooled"], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(emb, out["pooled"] @ p["proj"]["kernel"], rtol=1e-5, atol=1e-5)
  chex.assert_tree_all_finite((emb, out))


def test_vit_without_projection():
  emb, _ = ViT(**VIT).init_with_output(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))[0]
  chex.assert_shape(emb, (1, 16))


def test_vit_errors():
  with pytest.raises(MmjaxError, match=r"image_size=16.*resize"):
    ViT(**VIT).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(MmjaxError, match=r"patch_size=5.*valid patch sizes: \[1, 2, 4, 8, 16\]"):
    ViT(**{**VIT, "patch_size": 5}).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(MmjaxError, match="pool"):
    ViT(**VIT, pool="max").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def _conv3x3_stride2(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """[B, H, W, Ci] * [3, 3, Ci, Co] -> [B, H/2, W/2, Co]: output (i, j) sees input rows/cols 2i..2i+2 (zero past
  the bottom/right edge), written out as sums (an independent reference for the stem's 'SAME' stride-2 convs)."""
  b, h, w, _ = x.shape
  padded = np.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])
  out = np.zeros((b, h // 2, w // 2, kernel.shape[-1]))
  for di in range(3):
    for dj in range(3):
      out += padded[:, di:di + h:2, dj:dj + w:2] @ kernel[di, dj]
  return out


def _layer_norm(x: np.ndarray, p: dict) -> np.ndarray:
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def test_vit_conv_stem_tokens_recomputed():
  # depth 0: the tokens are ln_pre(cls + stem patches + positions), so the stem can be checked token by token.
  vit = ViT(**{**VIT, "depth": 0}, stem_channels=(8, 12))
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  (_, out), variables = vit.init_with_output(jax.random.key(1), images)
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  chex.assert_shape([p["stem_conv_0"]["kernel"], p["stem_conv_1"]["kernel"], p["conv1"]["kernel"]],
                    [(3, 3, 3, 8), (3, 3, 8, 12), (1, 1, 12, 16)])
  assert not any("bias" in p[k] for k in ("stem_conv_0", "stem_conv_1", "conv1"))
  x = np.asarray(images, np.float64)
  for i in range(2):
    x = np.maximum(_layer_norm(_conv3x3_stride2(x, p[f"stem_conv_{i}"]["kernel"]), p[f"stem_ln_{i}"]), 0.0)
  patches = (x @ p["conv1"]["kernel"][0, 0]).reshape(2, 16, 16)          # 4x4 patches, row-major
  tokens = np.concatenate([np.broadcast_to(p["cls"], (2, 1, 16)), patches], axis=1) + p["pos_embedding"]
  np.testing.assert_allclose(out["tokens"], _layer_norm(tokens, p["ln_pre"]), rtol=2e-4, atol=2e-4)


def test_vit_conv_stem_must_match_the_patch_size():
  with pytest.raises(MmjaxError, match=r"stem_channels=\(8,\) has 1 stride-2 convs.*patch_size=4"):
    ViT(**VIT, stem_channels=(8,)).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_text_shapes_and_eot_pooling():
  txt = TextTransformer(**TXT, output_dim=8)
  tokens = _tokens()
  (emb, out), variables = txt.init_with_output(jax.random.key(0), tokens)
  p = variables["params"]
  chex.assert_shape([p["token_embedding"]["embedding"], p["pos_embedding"], p["proj"]["kernel"]],
                    [(50, 16), (8, 16), (16, 8)])
  chex.assert_shape([emb, out["tokens"], out["normed_tokens"], out["pooled"]],
                    [(2, 8), (2, 8, 16), (2, 8, 16), (2, 16)])
  np.testing.assert_array_equal(out["eot_index"], [4, 7])
  # Pooled = the last non-pad token = OpenCLIP's argmax(token id) pooling.
  argmax = jnp.argmax(tokens, axis=-1)
  np.testing.assert_allclose(out["pooled"], out["normed_tokens"][jnp.arange(2), argmax], rtol=1e-6)
  np.testing.assert_allclose(emb, out["pooled"] @ p["proj"]["kernel"], rtol=1e-5, atol=1e-5)

  # Changing the EOT token or an earlier token changes the embedding.
  for pos in (4, 2):
    emb2, _ = txt.apply(variables, tokens.at[0, pos].set(30))
    assert float(jnp.abs(emb2[0] - emb[0]).max()) > 1e-4
    np.testing.assert_allclose(emb2[1], emb[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_pad_positions_do_not_matter(causal):
  txt = TextTransformer(**TXT, causal=causal, output_dim=8)
  tokens = _tokens()
  valid = tokens != 0
  variables = txt.init(jax.random.key(0), tokens)
  emb, out = txt.apply(variables, tokens)
  # Same mask, arbitrary ids at the pad positions: embedding and real-token states unchanged.
  junk = tokens.at[0, 5:].set(jnp.array([17, 23, 41]))
  emb2, out2 = txt.apply(variables, junk, valid)
  np.testing.assert_allclose(emb2, emb, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out2["normed_tokens"][0, :5], out["normed_tokens"][0, :5], rtol=1e-5, atol=1e-5)
  _, out3 = txt.apply(variables, tokens.at[0, 3].set(30))
  if not causal:  # bidirectional: later real tokens do influence earlier positions
    assert float(jnp.abs(out3["normed_tokens"][0, 0] - out["normed_tokens"][0, 0]).max()) > 1e-4
  else:
    np.testing.assert_allclose(out3["normed_tokens"][0, :3], out["normed_tokens"][0, :3], rtol=1e-5, atol=1e-6)


def test_text_context_length_error():
  with pytest.raises(MmjaxError, match="context_length=8"):
    TextTransformer(**TXT).init(jax.random.key(0), jnp.ones((2, 9), jnp.int32))
