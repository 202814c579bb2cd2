"""last_block_pooled_only: the last block computed for the pooled token only gives the full model's embeddings
and gradients (the other tokens' last-block outputs never reach the loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.layers import Transformer, causal_mask, padding_mask
from mmjax.models import build_model
from mmjax.objectives.contrastive import clip_loss

TOL = dict(rtol=1e-5, atol=1e-6)
GRAD_TOL = dict(rtol=1e-4, atol=2e-5)   # float32: the weight gradients sum over B*T rows in one, B in the other


@pytest.mark.parametrize("remat", ["none", "full"])
@pytest.mark.parametrize("masking", ["causal", "padding", "none"])
def test_last_query_row_equals_the_full_output_row(remat, masking):
  x = jax.random.normal(jax.random.key(0), (3, 6, 8))
  valid = jnp.array([[1] * 6, [1] * 3 + [0] * 3, [1] + [0] * 5], bool)
  mask = {"causal": causal_mask(6)[None, None], "padding": padding_mask(valid), "none": None}[masking]
  tr = Transformer(depth=2, num_heads=2, remat=remat)
  params = tr.init(jax.random.key(1), x, mask)
  index = jnp.array([5, 2, 0])
  full = tr.apply(params, x, mask)
  pruned = tr.apply(params, x, mask, last_query_index=index)
  assert pruned.shape == (3, 1, 8)
  np.testing.assert_allclose(pruned[:, 0], full[jnp.arange(3), index], **TOL)


TINY = dict(name="clip", embed_dim=8,
            vision=dict(image_size=16, patch_size=4, width=16, depth=2, num_heads=2, mlp_ratio=2.0),
            text=dict(vocab_size=40, context_length=6, width=16, depth=2, num_heads=2, mlp_ratio=2.0,
                      eot_id=39))   # the texts below end with 39 (2 is an ordinary id there)


def _tiny(pruned: bool, remat: str = "none"):
  cfg = {**TINY, "remat": remat, "vision": dict(TINY["vision"], last_block_pooled_only=pruned),
         "text": dict(TINY["text"], last_block_pooled_only=pruned)}
  return build_model(cfg)


@pytest.mark.parametrize("remat", ["none", "dots"])
def test_clip_embeddings_and_gradients_equal_the_full_model(remat):
  images = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  tokens = jnp.array([[4, 5, 39, 0, 0, 0], [7, 39, 0, 0, 0, 0], [1, 2, 3, 4, 5, 39], [9, 8, 39, 0, 0, 0]],
                     jnp.int32)
  full, pruned = _tiny(False, remat), _tiny(True, remat)
  params = jax.jit(full.init)(jax.random.key(1), images, tokens)["params"]
  params_pruned = jax.jit(pruned.init)(jax.random.key(1), images, tokens)["params"]
  jax.tree.map(np.testing.assert_array_equal, params, params_pruned)   # same tree, same initial values

  def loss(model, p):
    zimg, ztxt, extra = model.apply({"params": p}, images, tokens)
    return clip_loss(zimg, ztxt, extra["logit_scale"])[0], (zimg, ztxt)

  (l_full, z_full), g_full = jax.jit(jax.value_and_grad(lambda p: loss(full, p), has_aux=True))(params)
  (l_pruned, z_pruned), g_pruned = jax.jit(jax.value_and_grad(lambda p: loss(pruned, p), has_aux=True))(params)
  np.testing.assert_allclose(l_pruned, l_full, **TOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), z_pruned, z_full)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **GRAD_TOL), g_pruned, g_full)
  # The last blocks' weights really are trained through the pooled token.
  assert float(jnp.abs(g_pruned["vision"]["transformer"]["resblocks_1"]["mlp"]["c_fc"]["kernel"]).max()) > 0


def test_token_outputs_are_refused_when_pruned():
  model = _tiny(True)
  images = jnp.zeros((1, 16, 16, 3))
  tokens = jnp.array([[4, 39, 0, 0, 0, 0]], jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), images, tokens)["params"]
  with pytest.raises(MmjaxError, match="last_block_pooled_only=True.*'normed_tokens' does not exist"):
    model.apply({"params": params}, images, method="encode_image_tokens")
  gap = {**TINY, "vision": dict(TINY["vision"], pool="gap", last_block_pooled_only=True)}
  with pytest.raises(MmjaxError, match="last_block_pooled_only needs model.vision.pool='cls'"):
    build_model(gap).init(jax.random.key(0), images, tokens)


def test_flops_count_the_pruned_last_blocks():
  from mmjax.models import clip_flops_per_step
  cfg = {"embed_dim": 256, "vision": dict(image_size=64, patch_size=8, width=256, depth=4, mlp_ratio=4.0),
         "text": dict(context_length=32, width=256, depth=4, mlp_ratio=4.0)}
  pruned = {**cfg, "vision": dict(cfg["vision"], last_block_pooled_only=True),
            "text": dict(cfg["text"], last_block_pooled_only=True)}
  w, b = 256, 64
  saved = 0
  for n in (65, 32):   # per sequence: full block (qkv, out, MLP, scores, PV) minus the pooled-only block
    full_block = 2 * n * w * 3 * w + 2 * n * w * w + 2 * 2 * n * w * 4 * w + 2 * 2 * n * n * w
    pooled_block = 2 * n * w * 3 * w + 2 * w * w + 2 * 2 * w * 4 * w + 2 * 2 * n * w
    saved += full_block - pooled_block
  assert clip_flops_per_step(cfg, b) - clip_flops_per_step(pruned, b) == 3 * b * saved
