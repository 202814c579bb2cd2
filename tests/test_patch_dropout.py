"""FLIP patch dropout (Li et al. 2023) in the ViT: train-only, exactly round(p N) patches dropped per sample, the
CLS token and the kept tokens' positions kept; the FLOPs count the shorter sequence."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax.encoders import ViT
from mmjax.encoders.vit import keep_patches, patch_dropout_ids, patches_dropped
from mmjax.errors import MmjaxError
from mmjax.models import build_model, clip_flops_per_step

VIT = dict(image_size=16, patch_size=4, width=16, depth=1, num_heads=2, mlp_ratio=2.0)   # N = 16 patches
CLIP_TINY = dict(name="clip", embed_dim=8, vision=VIT,
                 text=dict(vocab_size=20, context_length=6, width=16, depth=1, num_heads=2, mlp_ratio=2.0))


def _images(b=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((b, 16, 16, 3)), jnp.float32)


@pytest.mark.slow   # three CLIP compiles (~12-15 s on the shared 2 cores)
def test_eval_outputs_bitwise_unchanged_by_the_setting():
  images, tokens = _images(), jnp.asarray(np.random.default_rng(1).integers(4, 20, (4, 6)), jnp.int32)
  plain = build_model(CLIP_TINY)
  flip = build_model({**CLIP_TINY, "vision": {**VIT, "patch_dropout": 0.5}})
  params = jax.jit(plain.init)(jax.random.PRNGKey(0), images, tokens)
  run = jax.jit(lambda m, p, train: m.apply(p, images, tokens, train=train, rngs={"dropout": jax.random.PRNGKey(3)}),
                static_argnums=(0, 2))
  a, b = run(plain, params, False), run(flip, params, False)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  c = run(flip, params, True)
  assert not np.allclose(np.asarray(a[0]), np.asarray(c[0]))      # training does drop


@pytest.mark.parametrize("n,p", [(16, 0.5), (49, 0.5), (10, 0.75), (9, 0.3), (16, 0.0)])
def test_exactly_round_pn_dropped_and_subsets_differ(n, p):
  b = 8
  ids = np.asarray(patch_dropout_ids(jax.random.PRNGKey(0), b, n, p))
  assert patches_dropped(n, p) == round(p * n)
  assert ids.shape == (b, n - round(p * n))
  for row in ids:
    assert len(set(row.tolist())) == len(row) and row.min() >= 0 and row.max() < n   # distinct, in range
    assert np.all(np.diff(row) > 0)                                                   # row-major order
  if 0 < p:
    assert len({tuple(r) for r in ids.tolist()}) > 1                                  # per-sample subsets


def test_rate_out_of_range_is_a_config_error():
  with pytest.raises(MmjaxError, match="model.vision.patch_dropout"):
    patches_dropped(16, 1.0)


def test_gather_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 1 + 10, 4)).astype(np.float32)
  ids = np.stack([np.sort(rng.permutation(10)[:5]) for _ in range(3)]).astype(np.int32)
  expected = np.stack([np.concatenate([x[i, :1], x[i, 1 + ids[i]]]) for i in range(3)])
  np.testing.assert_array_equal(np.asarray(keep_patches(jnp.asarray(x), jnp.asarray(ids))), expected)


def test_vit_keeps_cls_and_the_kept_tokens_positions():
  """With no blocks, every token's output is ln_pre(patch + its position): the training tokens must be the CLS
  row and exactly N - round(pN) distinct patch rows of the eval output, different ones per sample."""
  vit = ViT(**{**VIT, "depth": 0}, patch_dropout=0.5)
  images = _images(6)
  params = vit.init(jax.random.PRNGKey(0), images)
  _, full = vit.apply(params, images, train=False)
  _, out = vit.apply(params, images, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  full, tokens = np.asarray(full["tokens"]), np.asarray(out["tokens"])
  assert tokens.shape == (6, 1 + 8, 16)
  kept = []
  for i in range(6):
    np.testing.assert_allclose(tokens[i, 0], full[i, 0], atol=1e-6)
    dist = np.abs(tokens[i, 1:, None] - full[i, None, 1:]).max(-1)      # [K, N]
    match = dist.argmin(1)
    assert np.all(dist.min(1) < 1e-5) and len(set(match)) == 8
    kept.append(tuple(match))
  assert len(set(kept)) > 1


def test_flops_count_the_kept_tokens():
  def tower(n, w, depth, m):
    return depth * ((8 + 4 * m) * n * w * w + 4 * n * n * w)
  cfg = ml_collections.ConfigDict(CLIP_TINY)
  b, e, w = 4, 8, 16
  text = tower(6, w, 1, 2.0) + 2 * w * e
  for p, kept in ((0.0, 16), (0.5, 8), (0.75, 4)):
    cfg.vision.patch_dropout = p
    vis = 2 * 16 * 3 * 16 * w + tower(kept + 1, w, 1, 2.0) + 2 * w * e
    assert clip_flops_per_step(cfg, b) == int(3 * (b * (vis + text) + 4 * b * b * e))
