"""CLIP model: OpenCLIP parameter count, param tree layout, normalised embeddings, config errors, FLOPs."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.models import CLIP, build_model, clip_flops_per_step
from mmjax.registry import MODELS

# The OpenCLIP anchor model (/work/shared/bench/openclip_anchor.py).
ANCHOR = dict(name="clip", embed_dim=256,
              vision=dict(image_size=64, patch_size=8, width=256, depth=4, num_heads=4, mlp_ratio=4.0),
              text=dict(vocab_size=1024, context_length=32, width=256, depth=4, num_heads=4, mlp_ratio=4.0))
TINY = dict(name="clip", embed_dim=8,
            vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0),
            text=dict(vocab_size=40, context_length=6, width=16, depth=1, num_heads=2, mlp_ratio=2.0,
                      eot_id=39))   # the texts below end with 39 (2 is an ordinary id there)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_param_count_matches_openclip():
  model = build_model(ml_collections.ConfigDict(ANCHOR))
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 32), jnp.int32))
  p = shapes["params"]
  assert set(p) == {"vision", "text", "logit_scale"}
  assert _count(p) == 6_787_073
  assert _count(p["vision"]) == 3_291_648 and _count(p["text"]) == 3_495_424
  assert _count(p["vision"]["conv1"]) == 49_152 and _count(p["vision"]["pos_embedding"]) == 16_640
  assert _count(p["vision"]["transformer"]["resblocks_0"]) == 789_760
  assert _count(p["text"]["token_embedding"]) == 262_144 and _count(p["text"]["pos_embedding"]) == 8_192
  assert p["logit_scale"].shape == ()


def test_forward_normalised_and_consistent():
  model = build_model(TINY)
  images = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  tokens = jnp.array([[4, 5, 39, 0, 0, 0], [7, 39, 0, 0, 0, 0], [1, 2, 3, 4, 5, 39]], jnp.int32)
  (zimg, ztxt, out), variables = model.init_with_output(jax.random.key(1), images, tokens)
  chex.assert_shape([zimg, ztxt], [(3, 8), (3, 8)])
  np.testing.assert_allclose(jnp.linalg.norm(zimg, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(ztxt, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["logit_scale"], math.log(1 / 0.07), rtol=1e-6)
  assert out["logit_bias"] is None and "logit_bias" not in variables["params"]
  ei = model.apply(variables, images, method=model.encode_image)
  et = model.apply(variables, tokens, normalize=False, method=model.encode_text)
  np.testing.assert_allclose(ei, zimg, rtol=1e-6)
  np.testing.assert_allclose(et / jnp.linalg.norm(et, axis=-1, keepdims=True), ztxt, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(jnp.linalg.norm(et, axis=-1) - 1).max()) > 1e-3


def test_siglip_bias_param():
  model = build_model({**TINY, "logit_scale_init": math.log(10), "logit_bias_init": -10.0})
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 6), jnp.int32))
  assert set(shapes["params"]) == {"vision", "text", "logit_scale", "logit_bias"}
  assert shapes["params"]["logit_bias"].shape == ()
  _, _, out = model.apply(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.ones((1, 6), jnp.int32)),
                          jnp.zeros((1, 16, 16, 3)), jnp.ones((1, 6), jnp.int32))
  np.testing.assert_allclose([out["logit_scale"], out["logit_bias"]], [math.log(10), -10.0], rtol=1e-6)


def test_config_forms_and_errors():
  assert MODELS.get("clip") is CLIP
  for cfg in (ml_collections.ConfigDict(TINY), FrozenDict(TINY)):
    model = build_model(cfg)
    hash(model)  # hashable: usable as a static jit argument
    assert dict(model.vision) == TINY["vision"]
  bad = ml_collections.ConfigDict(TINY)
  bad.vision.widht = 3
  with pytest.raises(MmjaxError, match=r"model\.vision\.widht.*valid keys under model\.vision:.*width"):
    build_model(bad)
  with pytest.raises(MmjaxError, match=r"model\.text\.output_dim.*embed_dim"):
    build_model({**TINY, "text": {**TINY["text"], "output_dim": 4}})
  with pytest.raises(MmjaxError, match=r"model\.text\.depth"):
    build_model({**TINY, "text": {k: v for k, v in TINY["text"].items() if k != "depth"}})
  with pytest.raises(MmjaxError, match=r"model\.embed_size"):
    build_model({**TINY, "embed_size": 3})
  with pytest.raises(MmjaxError, match=r"model\.name"):
    build_model({**TINY, "name": "clipp"})


def test_flops_match_anchor_formula():
  def mm(m, k, n):  # FLOPs of an [m, k] @ [k, n] matmul
    return 2 * m * k * n

  def tower(n, w, layers, heads, m=4):
    d = w // heads
    per_layer = (mm(n, w, 3 * w) + mm(n, w, w) + heads * (mm(n, d, n) + mm(n, n, d))
                 + mm(n, w, m * w) + mm(n, m * w, w))
    return layers * per_layer

  b, e = 64, 256
  vision = mm(64, 3 * 8 * 8, 256) + tower(65, 256, 4, 4) + mm(1, 256, e)
  text = tower(32, 256, 4, 4) + mm(1, 256, e)
  expected = 3 * (b * (vision + text) + 2 * mm(b, e, b))
  got = clip_flops_per_step(ml_collections.ConfigDict(ANCHOR), b)
  assert got == expected
  assert round(got / 1e9, 2) == 122.57
  # A conv stem (three 3x3 stride-2 convs 3 -> 16 -> 32 -> 64 at 32, 16, 8 px, then 1x1 to 256) replaces the patch
  # embed: each output pixel of a conv is a [1, 9 c_in] @ [9 c_in, c_out] matmul.
  stem = mm(32 * 32, 9 * 3, 16) + mm(16 * 16, 9 * 16, 32) + mm(8 * 8, 9 * 32, 64) + mm(64, 64, 256)
  cfg = ml_collections.ConfigDict(ANCHOR)
  cfg.vision.stem_channels = (16, 32, 64)
  assert clip_flops_per_step(cfg, b) == got + 3 * b * (stem - mm(64, 3 * 8 * 8, 256))
