"""Flow-matching objective (Lipman et al. 2023; rectified flow, Liu et al. 2023) of a text-to-image velocity model
(mmjax.models.text_to_image), per-example `Objective.loss` form, with classifier-free-guidance text dropout
(Ho & Salimans 2022).

With t ~ U[0, 1], eps ~ N(0, I) and drop ~ Bernoulli(model.cond_drop_prob), all drawn from the loss's rng:
  x_t = (1 - t) x0 + t eps,   target v = eps - x0,
  loss = mean over the batch and every pixel/channel of (v_theta(x_t, t, text or null) - v)^2.
batch["image"] float [B, H, W, 3] in [-1, 1] (x0), batch["tokens"] int32 [B, L].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x0, noise [B, ...], t [B] -> (x_t, target velocity), both [B, ...]."""
  tb = t.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
  return (1 - tb) * x0 + tb * noise, noise - x0


def sample_inputs(rng: jax.Array, x0: jax.Array, drop_prob: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """-> (t [B] ~ U[0, 1), noise like x0 ~ N(0, 1), drop [B] bool ~ Bernoulli(drop_prob))."""
  k_t, k_n, k_d = jax.random.split(rng, 3)
  b = x0.shape[0]
  t = jax.random.uniform(k_t, (b,), jnp.float32)
  noise = jax.random.normal(k_n, x0.shape, jnp.float32)
  drop = jax.random.bernoulli(k_d, drop_prob, (b,))
  return t, noise, drop


def flow_matching_loss_at(params, model, x0: jax.Array, tokens: jax.Array, t: jax.Array, noise: jax.Array,
                          drop: jax.Array) -> jax.Array:
  """The loss for given t [B], noise [B, H, W, C] and drop [B] (deterministic)."""
  x0 = x0.astype(jnp.float32)
  x_t, target = interpolate(x0, noise, t)
  pred = model.apply({"params": params}, x_t, tokens, t, drop)
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target))


def flow_matching_loss(params, batch: dict, rng: jax.Array, *, model, train: bool = True):
  """-> (loss, {"loss"}); text dropped with model.cond_drop_prob only when train."""
  x0 = batch["image"]
  t, noise, drop = sample_inputs(rng, x0, float(model.cond_drop_prob) if train else 0.0)
  loss = flow_matching_loss_at(params, model, x0, batch["tokens"], t, noise, drop)
  return loss, {"loss": loss}


FLOW_MATCHING_OBJECTIVE = OBJECTIVES.register("flow_matching")(
    Objective(loss=flow_matching_loss, batch_keys=("image", "tokens")))
