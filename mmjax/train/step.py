"""The one train step: loss -> grads (optionally accumulated) -> optax update. Pure; jitted by the loop.

Gradient accumulation over K micro-batches is *exact* for every objective:
- objectives whose loss couples the batch (contrastive: every image against every text) provide `features_fn` and
  `loss_from_features`; the step computes features of all micro-batches without storing activations, the loss and its
  gradient w.r.t. the features on the whole batch, then back-propagates each micro-batch through its encoder with
  those feature cotangents (the GradCache scheme, Gao et al. 2021; open_clip's `accum_freq`), so the gradient equals
  the big-batch gradient while activations are held for one micro-batch at a time;
- objectives that average a per-example loss (`Objective.loss`) average the micro-batch gradients.
Micro-batch k takes examples k, k+K, k+2K, ...: every micro-batch is spread over all devices.
"""
from __future__ import annotations

from typing import Any, Callable

import einops
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.train.sharding import AXES
from mmjax.train.state import TrainState


def _split(tree, k: int, mesh: Mesh | None):
  def f(x):
    x = einops.rearrange(x, "(b k) ... -> k b ...", k=k)
    if mesh is not None:
      x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, AXES)))
    return x
  return jax.tree.map(f, tree)


def _merge(tree):
  return jax.tree.map(lambda x: einops.rearrange(x, "k b ... -> (b k) ..."), tree)


def accumulated_grads(objective, params, batch, rng, *, model, k: int, mesh: Mesh | None = None):
  """(loss, metrics), grads over K micro-batches, equal to the full-batch value and gradient."""
  micro = _split(batch, k, mesh)
  rngs = jax.random.split(rng, k)
  ctx = objective.context(mesh)
  if objective.features_fn is not None:
    feats_of = lambda p, mb, r: objective.features_fn(p, mb, r, model=model, train=True)
    feats = jax.lax.map(lambda a: feats_of(params, a[0], a[1]), (micro, rngs))
    (loss, metrics), g_feats = jax.value_and_grad(
        lambda f: objective.loss_from_features(f, ctx=ctx), has_aux=True)(_merge(feats))
    g_feats = _split(g_feats, k, mesh)

    def body(acc, a):
      mb, r, gf = a
      _, vjp = jax.vjp(lambda p: feats_of(p, mb, r), params)
      return jax.tree.map(jnp.add, acc, vjp(gf)[0]), None

    grads, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), (micro, rngs, g_feats))
    return (loss, metrics), grads

  grad_fn = jax.value_and_grad(lambda p, mb, r: objective.loss_fn(p, mb, r, model=model, train=True, ctx=ctx),
                               has_aux=True)

  def body(acc, a):
    (loss, metrics), g = grad_fn(params, a[0], a[1])
    return jax.tree.map(jnp.add, acc, (loss, metrics, g)), None

  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs[0]))
  zeros = (zeros[0][0], zeros[0][1], zeros[1])
  (loss, metrics, grads), _ = jax.lax.scan(body, zeros, (micro, rngs))
  return jax.tree.map(lambda x: x / k, ((loss, metrics), grads))


def make_train_step(objective, model, tx: optax.GradientTransformation, schedule: Callable, *,
                    grad_accum_steps: int = 1, mesh: Mesh | None = None) -> Callable:
  """Returns `train_step(state, batch) -> (state, metrics)`, a pure function to jit.

  batch: dict of arrays with the global batch on axis 0; `mesh` (the loop's) reaches a batch-coupled loss through
  its ObjectiveContext (mmjax.objectives.base). metrics: scalars, including `loss`, `grad_norm`, `lr` and
  `finite` (1.0 iff loss and gradient norm are finite; the loop stops on 0 and never checkpoints such a state).
  """
  ctx = objective.context(mesh)

  def train_step(state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(state.rng, state.step)
    if grad_accum_steps == 1:
      (loss, metrics), grads = jax.value_and_grad(
          lambda p: objective.loss_fn(p, batch, rng, model=model, train=True, ctx=ctx), has_aux=True)(state.params)
    else:
      (loss, metrics), grads = accumulated_grads(objective, state.params, batch, rng, model=model,
                                                 k=grad_accum_steps, mesh=mesh)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=schedule(state.step),
                   finite=(jnp.isfinite(loss) & jnp.isfinite(grad_norm)).astype(jnp.float32))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
