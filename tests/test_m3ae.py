"""M3AE: per-sample text masking of non-pad tokens, no leak of masked patches/tokens, losses on masked positions
only, and the same training on 1 and 8 simulated devices."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_jsonl, run_driver
from mmjax.models import build_model
from mmjax.models.m3ae import text_masking
from mmjax.objectives import get_objective
from mmjax.objectives.masked import masked_token_loss

CFG = dict(name="m3ae", vision=dict(image_size=16, patch_size=4), text=dict(vocab_size=40, context_length=10),
           encoder=dict(width=16, depth=1, num_heads=2), decoder=dict(width=8, depth=1, num_heads=2),
           image_mask_ratio=0.75, text_mask_ratio=0.5, norm_pix_loss=True)


def _tokens(b: int, length: int = 10, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  out = np.zeros((b, length), np.int32)
  for row in out:
    n = rng.integers(1, length - 1)
    row[0], row[1:1 + n], row[1 + n] = 1, rng.integers(4, 40, n), 2
  return out


@pytest.fixture(scope="module")
def m3ae():
  model = build_model(CFG)
  images = jax.random.uniform(jax.random.key(0), (6, 16, 16, 3), minval=-1, maxval=1)
  tokens = jnp.asarray(_tokens(6))
  params = jax.jit(lambda k, x, t: model.init({"params": k}, x, t)["params"])(jax.random.key(1), images, tokens)
  apply = jax.jit(lambda p, x, t, ni, nt: model.apply({"params": p}, x, t, image_noise=ni, text_noise=nt))
  return model, params, images, tokens, apply


def test_text_masking_keeps_floor_of_valid_tokens_per_sample():
  tokens = _tokens(64, 12, seed=3)
  valid = tokens != 0
  noise = np.random.default_rng(0).random(tokens.shape).astype(np.float32)
  m = jax.device_get(text_masking(jnp.asarray(noise), jnp.asarray(valid), 0.75))
  n_valid = valid.sum(1)
  keep = np.floor(n_valid * 0.25 + 1e-6).astype(int)
  chex.assert_shape(m["ids_keep"], (64, 3))                        # floor(12 * 0.25) slots
  np.testing.assert_array_equal(m["visible"].sum(1), keep)
  np.testing.assert_array_equal(m["slot_valid"].sum(1), keep)
  assert not m["visible"][~valid].any() and not m["mask"][~valid].any()   # pads: neither visible nor scored
  np.testing.assert_array_equal(m["mask"], (valid & ~m["visible"]).astype(np.float32))
  for i in range(64):
    order = [j for j in np.argsort(noise[i]) if valid[i, j]]          # valid positions, smallest noise first
    assert set(np.flatnonzero(m["visible"][i]).tolist()) == set(order[:keep[i]])
    np.testing.assert_array_equal(m["ids_keep"][i][:keep[i]], order[:keep[i]])
  assert len({r.tobytes() for r in m["mask"]}) > 32


def test_model_masks_are_per_sample_with_exact_counts(m3ae):
  model, params, images, tokens, _ = m3ae
  same_img = jnp.broadcast_to(images[:1], images.shape)
  same_tok = jnp.broadcast_to(tokens[:1], tokens.shape)
  out = jax.device_get(jax.jit(lambda p, k: model.apply({"params": p}, same_img, same_tok, rngs={"mask": k}))(
      params, jax.random.key(3)))
  np.testing.assert_array_equal(out["image_mask"].sum(1), np.full(6, 12.0))   # 16 patches, 4 kept
  assert len({r.tobytes() for r in out["image_mask"]}) > 1
  n_valid = int((np.asarray(tokens[0]) != 0).sum())
  np.testing.assert_array_equal(out["text_mask"].sum(1), np.full(6, n_valid - np.floor(n_valid * 0.5 + 1e-6)))
  chex.assert_shape([out["pixel_pred"], out["text_logits"]], [(6, 16, 48), (6, 10, 40)])


def test_outputs_do_not_see_masked_patches_or_tokens(m3ae):
  model, params, images, tokens, apply = m3ae
  ni = jax.random.uniform(jax.random.key(4), (6, 16))
  nt = jax.random.uniform(jax.random.key(5), (6, 10))
  out = jax.device_get(apply(params, images, tokens, ni, nt))
  img_masked = np.repeat(np.repeat(out["image_mask"].reshape(6, 4, 4), 4, 1), 4, 2)[..., None] == 1
  images2 = np.where(img_masked, np.asarray(jax.random.uniform(jax.random.key(6), images.shape)), images)
  # Masked tokens get other non-special ids, except a masked <eot> (id 2): its position is the text's length, which
  # the model is given (the padding after it is masked out of attention), not masked content.
  tok_masked = (out["text_mask"] == 1) & (np.asarray(tokens) != 2)
  tokens2 = np.where(tok_masked, (np.asarray(tokens) + 7) % 36 + 4, tokens)     # other non-special ids
  assert (tokens2 != np.asarray(tokens)).any() and (images2 != np.asarray(images)).any()
  out2 = jax.device_get(apply(params, jnp.asarray(images2), jnp.asarray(tokens2), ni, nt))
  for k in ("pixel_pred", "text_logits"):
    np.testing.assert_allclose(out2[k], out[k], atol=1e-5, err_msg=k)


def test_losses_count_masked_positions_only(m3ae):
  model, params, images, tokens, apply = m3ae
  ni = jax.random.uniform(jax.random.key(4), (6, 16))
  nt = jax.random.uniform(jax.random.key(5), (6, 10))
  out = apply(params, images, tokens, ni, nt)
  g = np.asarray(jax.grad(lambda l: masked_token_loss(l, tokens, out["text_mask"])[0])(out["text_logits"]))
  scored = np.asarray(out["text_mask"]) == 1
  assert np.all(g[~scored] == 0) and np.all(np.abs(g[scored]).sum(-1) > 0)
  assert not scored[np.asarray(tokens) == 0].any()                   # padding is never scored
  loss, m = jax.jit(lambda p, k: get_objective("m3ae").loss_fn(
      p, {"image": images, "tokens": tokens}, k, model=model))(params, jax.random.key(0))
  np.testing.assert_allclose(loss, m["image_loss"] + 0.5 * m["text_loss"], rtol=1e-6)


def test_image_features_ignore_text_and_masking(m3ae):
  model, params, images, _, _ = m3ae
  f = jax.jit(lambda p, x, k: model.apply({"params": p}, x, method="encode_image", rngs={"mask": k}))
  a, b = f(params, images, jax.random.key(0)), f(params, images, jax.random.key(1))
  chex.assert_shape(a, (6, 16))
  np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_one_vs_eight_devices_same_losses(tmp_path):
  """3 steps of experiments/m3ae_shapes.py:runlocal on 1 and on 8 simulated devices: same losses and params."""
  common = ["--config", "experiments/m3ae_shapes.py:runlocal", "--set", "total_steps=3", "--set", "batch_size=16",
            "--set", "checkpoint_every=100", "--set", "evals.names=''"]
  for name, devices in (("d1", 1), ("d8", 8)):
    run_driver(*common, "--workdir", str(tmp_path / name), "--dump", str(tmp_path / f"{name}.npz"), devices=devices)
  losses = [[(r["train/loss"], r["train/image_loss"], r["train/text_loss"])
             for r in read_jsonl(tmp_path / d / "metrics.jsonl") if "train/loss" in r] for d in ("d1", "d8")]
  assert len(losses[0]) == 3
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  with np.load(tmp_path / "d1.npz") as a, np.load(tmp_path / "d8.npz") as b:
    assert a.files == b.files
    for k in a.files:
      np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-5, err_msg=k)
