"""The train step: gradient accumulation is exact (contrastive and per-example objectives); optimizer pieces."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.objectives import Objective, get_objective
from mmjax.train import optim, sharding
from mmjax.train.state import TrainState
from mmjax.train.step import make_train_step

MODEL = ml_collections.ConfigDict(dict(
    name="clip", embed_dim=16,
    vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0, pool="cls"),
    text=dict(vocab_size=50, context_length=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0)))


def batch_of(b, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, 50, (b, 8)).astype(np.int32)
  tokens[:, 6:] = 0  # padding after EOT, as the tokenizer makes
  return {"image": rng.standard_normal((b, 16, 16, 3)).astype(np.float32), "tokens": tokens}


def one_step(objective, accum, b=16):
  model = build_model(MODEL)
  batch = batch_of(b)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["image"], batch["tokens"])["params"]
  cfg = config_lib.base_config().optim
  cfg.warmup_steps, cfg.schedule, cfg.lr = 0, "constant", 1e-2
  tx, schedule = optim.make_optimizer(cfg, 10)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1))
  step = jax.jit(make_train_step(objective, model, tx, schedule, grad_accum_steps=accum))
  new_state, metrics = step(state, batch)
  return new_state, metrics


def assert_close_trees(a, b, tol=1e-5):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol, err_msg=str(path))


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_accumulation_equals_big_batch_contrastive(name):
  """4 micro-batches == one batch of 16, although the loss couples all 16 examples."""
  objective = get_objective(name)
  if name == "siglip":
    MODEL.logit_bias_init = -10.0
  try:
    s1, m1 = one_step(objective, 1)
    s4, m4 = one_step(objective, 4)
  finally:
    MODEL.logit_bias_init = None
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
  assert_close_trees(s1.params, s4.params)


def test_naive_accumulation_would_differ():
  """Sanity of the test above: averaging per-micro-batch contrastive losses is a different gradient."""
  clip = get_objective("clip")
  naive = Objective(loss=clip.loss_fn, batch_keys=clip.batch_keys)
  _, m1 = one_step(clip, 1)
  _, m4 = one_step(naive, 4)
  assert abs(float(m1["loss"]) - float(m4["loss"])) > 1e-3


def test_accumulation_per_example_objective():
  """An objective that averages a per-example loss accumulates by averaging micro-batch gradients."""
  def loss_fn(params, batch, rng, *, model, train=True):
    zimg = model.apply({"params": params}, batch["image"], method="encode_image")
    loss = jnp.mean((zimg - 0.1) ** 2)
    return loss, {"mse": loss}
  per_example = Objective(loss=loss_fn, batch_keys=("image", "tokens"))
  s1, m1 = one_step(per_example, 1)
  s4, m4 = one_step(per_example, 4)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  assert_close_trees(s1.params, s4.params)


def test_decay_mask_matches_open_clip_rule():
  params = {"vision": {"proj": {"kernel": jnp.zeros((4, 4))}, "ln_post": {"scale": jnp.zeros(4), "bias": jnp.zeros(4)},
                       "cls": jnp.zeros(4), "pos_embedding": jnp.zeros((1, 5, 4))},
            "logit_scale": jnp.zeros(())}
  mask = optim.decay_mask(params, config_lib.base_config().optim.no_decay_regex)
  assert mask["vision"]["proj"]["kernel"]
  assert not mask["vision"]["ln_post"]["scale"] and not mask["vision"]["ln_post"]["bias"]
  assert not mask["vision"]["cls"] and not mask["logit_scale"]


def test_weight_decay_skips_masked_params():
  """With zero gradients, AdamW moves only decayed params: p <- p (1 - lr wd)."""
  cfg = config_lib.base_config().optim
  cfg.warmup_steps, cfg.schedule, cfg.lr, cfg.weight_decay = 0, "constant", 0.1, 0.5
  tx, _ = optim.make_optimizer(cfg, 10)
  params = {"w": {"kernel": jnp.ones((2, 2))}, "b": {"bias": jnp.ones(2)}}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["w"]["kernel"], 1 - 0.1 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(new["b"]["bias"], 1.0)


def test_warmup_cosine_schedule_closed_form():
  cfg = config_lib.base_config().optim
  cfg.lr, cfg.warmup_steps, cfg.end_lr_factor = 1.0, 10, 0.1
  s = optim.make_schedule(cfg, 110)
  assert float(s(0)) == 0.0 and math.isclose(float(s(5)), 0.5, rel_tol=1e-6)
  for t in (10, 35, 60, 110):
    expect = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 10) / 100))
    assert math.isclose(float(s(t)), expect, rel_tol=1e-5), t


def test_mesh_and_specs():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))
  assert mesh.shape == {"data": jax.device_count(), "fsdp": 1}
  with pytest.raises(MmjaxError, match="mesh"):
    sharding.make_mesh(ml_collections.ConfigDict({"data": 3, "fsdp": 5}))
  with pytest.raises(MmjaxError, match="unknown mesh axis"):
    sharding.make_mesh(ml_collections.ConfigDict({"model": 1}))
  specs = sharding.param_specs({"a": {"mlp": {"kernel": jnp.zeros((4, 8))}}, "b": jnp.zeros(3)},
                               [(r"mlp/kernel$", ("fsdp", None))])
  assert specs["a"]["mlp"]["kernel"] == jax.sharding.PartitionSpec("fsdp", None)
  assert specs["b"] == jax.sharding.PartitionSpec()
  with pytest.raises(MmjaxError, match="batch_size"):
    sharding.check_batch_size(7, sharding.make_mesh(ml_collections.ConfigDict({"data": -1})), 2)
