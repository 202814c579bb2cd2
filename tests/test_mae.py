"""MAE: patchify against a NumPy loop, per-sample masking, the loss on masked patches only, norm-pix targets."""
from __future__ import annotations

import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.models.mae import len_keep, masking_from_noise, patchify, pixel_targets, random_masking, unpatchify
from mmjax.objectives import get_objective
from mmjax.objectives.masked import masked_pixel_loss

CFG = dict(name="mae", vision=dict(image_size=16, patch_size=4), encoder=dict(width=16, depth=1, num_heads=2),
           decoder=dict(width=8, depth=1, num_heads=2), mask_ratio=0.75, norm_pix_loss=False)


def np_patchify(x: np.ndarray, p: int) -> np.ndarray:
  b, h, w, c = x.shape
  out = np.zeros((b, (h // p) * (w // p), p * p * c), x.dtype)
  for i in range(b):
    for r in range(h // p):
      for s in range(w // p):
        n = r * (w // p) + s
        k = 0
        for u in range(p):          # pixel order (p1, p2, c) inside a patch
          for v in range(p):
            for ch in range(c):
              out[i, n, k] = x[i, r * p + u, s * p + v, ch]
              k += 1
  return out


@pytest.fixture(scope="module")
def mae():
  """One tiny model, its params and jitted forward passes, shared by the tests (compiling is the slow part)."""
  model = build_model(CFG)
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
  params = jax.jit(lambda k, x: model.init({"params": k}, x)["params"])(jax.random.key(1), images)
  fwd = jax.jit(lambda p, x, n: model.apply({"params": p}, x, noise=n))                       # explicit noise
  fwd_rng = jax.jit(lambda p, x, k: model.apply({"params": p}, x, rngs={"mask": k}))         # "mask" rng stream
  feats = jax.jit(lambda p, x, k: model.apply({"params": p}, x, method="encode_image", rngs={"mask": k}))
  return dict(model=model, params=params, images=images, fwd=fwd, fwd_rng=fwd_rng, feats=feats)


def test_patchify_matches_numpy_loop_and_unpatchify_inverts():
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
  ref = np_patchify(x, 4)
  got = np.asarray(patchify(jnp.asarray(x), 4))
  np.testing.assert_array_equal(got, ref)
  np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(ref), 4)), x)
  np.testing.assert_array_equal(np.asarray(unpatchify(patchify(jnp.asarray(x), 4), 4)), x)


@pytest.mark.parametrize("n,ratio", [(64, 0.75), (196, 0.75), (10, 0.9), (10, 0.7), (49, 0.5), (16, 0.0)])
def test_len_keep_is_floor_of_n_times_one_minus_ratio(n, ratio):
  exact = math.floor(n * (1 - Fraction(str(ratio))))   # exact rational arithmetic
  assert len_keep(n, ratio) == exact


def test_len_keep_rejects_ratios_that_keep_nothing():
  with pytest.raises(MmjaxError, match="mask ratio"):
    len_keep(4, 0.9)
  with pytest.raises(MmjaxError, match="mask ratio"):
    len_keep(4, 1.0)


def test_random_masking_per_sample_keeps_exact_count_of_smallest_noise():
  b, n, ratio = 32, 64, 0.75
  m = jax.device_get(random_masking(jax.random.key(3), b, n, ratio))
  noise = np.asarray(jax.random.uniform(jax.random.key(3), (b, n)))
  keep = 16
  chex.assert_shape([m["ids_keep"], m["ids_restore"], m["mask"]], [(b, keep), (b, n), (b, n)])
  np.testing.assert_array_equal((m["mask"] == 0).sum(1), np.full(b, keep))
  for i in range(b):
    smallest = set(np.argsort(noise[i])[:keep].tolist())
    assert set(m["ids_keep"][i].tolist()) == smallest
    assert set(np.flatnonzero(m["mask"][i] == 0).tolist()) == smallest
    np.testing.assert_array_equal(np.argsort(np.argsort(noise[i])), m["ids_restore"][i])
  assert len({row.tobytes() for row in m["mask"]}) == b     # every sample has its own mask


def test_model_masks_differ_across_batch_and_rngs(mae):
  same = jnp.broadcast_to(mae["images"][:1], (4, 16, 16, 3))
  _, m1 = mae["fwd_rng"](mae["params"], same, jax.random.key(0))
  _, m2 = mae["fwd_rng"](mae["params"], same, jax.random.key(1))
  m1, m2 = np.asarray(m1), np.asarray(m2)
  np.testing.assert_array_equal(m1.sum(1), np.full(4, 12.0))   # 16 patches, 4 kept
  assert len({r.tobytes() for r in m1}) > 1                       # identical images, different masks
  assert not np.array_equal(m1, m2)


def test_pixel_loss_gradient_is_zero_on_visible_patches():
  rng = np.random.default_rng(0)
  pred, target = (jnp.asarray(rng.normal(size=(3, 16, 12)), jnp.float32) for _ in range(2))
  mask = jnp.asarray(rng.random((3, 16)) < 0.75, jnp.float32)
  ref = np.sum(np.mean((np.asarray(pred) - np.asarray(target)) ** 2, -1) * np.asarray(mask)) / np.sum(mask)
  np.testing.assert_allclose(masked_pixel_loss(pred, target, mask), ref, rtol=1e-6)
  g_pred, g_target = jax.grad(masked_pixel_loss, argnums=(0, 1))(pred, target, mask)
  visible = np.asarray(mask) == 0
  assert np.all(np.asarray(g_target)[visible] == 0) and np.all(np.asarray(g_pred)[visible] == 0)
  assert np.all(np.abs(np.asarray(g_target)[~visible]).sum(-1) > 0)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_ignores_visible_pixels_of_the_target(mae, norm_pix):
  """Input fixed, target varied: changing visible patches of the target changes nothing; masked ones do."""
  images = mae["images"]
  noise = jax.random.uniform(jax.random.key(7), (4, 16))
  pred, mask = mae["fwd"](mae["params"], images, noise)
  loss = lambda target_images: masked_pixel_loss(pred, pixel_targets(target_images, 4, norm_pix), mask)
  visible = np.asarray(mask)[:, :, None] == 0
  other = np.asarray(patchify(jax.random.uniform(jax.random.key(8), images.shape, minval=-1, maxval=1), 4))
  patches = np.asarray(patchify(images, 4))
  vis_changed = unpatchify(jnp.asarray(np.where(visible, other, patches)), 4)
  masked_changed = unpatchify(jnp.asarray(np.where(visible, patches, other)), 4)
  assert float(loss(vis_changed)) == pytest.approx(float(loss(images)), rel=1e-6)
  assert abs(float(loss(masked_changed)) / float(loss(images)) - 1) > 1e-5   # float32 noise is ~1e-7


def test_prediction_does_not_see_masked_input_pixels(mae):
  """Changing the input's masked patches (same noise) leaves every prediction unchanged: nothing leaks."""
  images = mae["images"]
  noise = jax.random.uniform(jax.random.key(7), (4, 16))
  pred, mask = mae["fwd"](mae["params"], images, noise)
  masked = np.asarray(mask)[:, :, None] == 1
  other = np.asarray(patchify(jax.random.uniform(jax.random.key(9), images.shape), 4))
  changed = unpatchify(jnp.asarray(np.where(masked, other, np.asarray(patchify(images, 4)))), 4)
  pred2, _ = mae["fwd"](mae["params"], changed, noise)
  np.testing.assert_allclose(pred2, pred, atol=1e-6)


def test_norm_pix_targets_have_zero_mean_unit_variance_per_patch():
  x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  t = np.asarray(pixel_targets(jnp.asarray(x), 4, True))
  raw = np_patchify(x, 4).astype(np.float64)
  ref = (raw - raw.mean(-1, keepdims=True)) / np.sqrt(raw.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(t, ref, atol=1e-5)
  np.testing.assert_allclose(t.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(t.var(-1), 1.0, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(pixel_targets(jnp.asarray(x), 4, False)), np_patchify(x, 4))


def test_mae_objective_and_features(mae):
  model, params, images = mae["model"], mae["params"], mae["images"]
  obj = get_objective("mae")
  fn = jax.jit(lambda p, k: obj.loss_fn(p, {"image": images}, k, model=model))
  loss1, m1 = fn(params, jax.random.key(0))
  loss2, _ = fn(params, jax.random.key(1))
  assert float(m1["mask_ratio"]) == 0.75 and np.isfinite(float(loss1)) and float(loss1) != float(loss2)
  f1, f2 = mae["feats"](params, images, jax.random.key(0)), mae["feats"](params, images, jax.random.key(1))
  chex.assert_shape(f1, (4, 16))
  np.testing.assert_array_equal(f1, f2)      # probe features see every patch: no masking
  # the objective's loss is the masked pixel loss of the model's own mask (mask rng = first half of the split)
  pred, mask = mae["fwd_rng"](params, images, jax.random.split(jax.random.key(0))[0])
  np.testing.assert_allclose(loss1, masked_pixel_loss(pred, pixel_targets(images, 4, False), mask), rtol=1e-6)


def test_mae_training_reduces_the_loss(mae):
  import optax
  model, params, images = mae["model"], mae["params"], mae["images"]
  obj, tx = get_objective("mae"), optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, rng):
    (loss, _), g = jax.value_and_grad(lambda p: obj.loss_fn(p, {"image": images}, rng, model=model),
                                      has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  losses = []
  for i in range(60):
    params, opt, loss = step(params, opt, jax.random.key(i))
    losses.append(float(loss))
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_bad_configs_raise_one_line_errors():
  with pytest.raises(MmjaxError, match="model.encoder.widht"):
    build_model(dict(CFG, encoder=dict(widht=16, depth=1, num_heads=2)))
  with pytest.raises(MmjaxError, match="patch_size"):
    build_model(dict(CFG, vision=dict(image_size=16, patch_size=5)))
  with pytest.raises(MmjaxError, match="mask ratio"):
    build_model(dict(CFG, mask_ratio=1.0))


def test_masking_from_noise_is_the_argsort_rule():
  noise = jnp.asarray([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.6, 0.4]])
  m = jax.device_get(masking_from_noise(noise, 0.5))
  np.testing.assert_array_equal(m["ids_keep"], [[1, 3], [0, 3]])
  np.testing.assert_array_equal(m["mask"], [[1, 0, 1, 0], [0, 1, 1, 0]])
