"""Composite objectives: `config.objective = "clip+caption"` with `config.objective_weights = {"clip": 1.0,
"caption": 2.0}` trains sum_i w_i L_i, every term a registered objective (CoCa, Yu et al. 2022 = clip+caption;
SLIP, Mu et al. 2022 = clip+simclr; contrastive beside masked modeling = clip+mae, clip+mlm). Unnamed weights are 1.

The model: each term calls the method that the model's `term_methods` names for it (a Mapping term -> method
name), through a `ModelView` whose `apply` is `model.apply(..., method=that)` and whose attributes are the model's;
so a term's objective code is unchanged and sees "its" model (e.g. `caption` a captioner [B, T] -> [B, T, V],
`mae` an MAE [B, H, W, 3] -> (pred, mask)). All terms read and update one parameter tree: shared towers get
the sum of the terms' gradients. mmjax.models.multitask.MultiTaskCLIP provides the methods.

Gradient accumulation stays exact (mmjax.train.step): when a term couples the batch (contrastive), the composite
is itself in the batch-coupled form. Its `features_fn` gives each coupled term's features (cached, GradCache) and,
for each per-example term, that term's loss and metrics on the micro-batch broadcast to [b] ("per-example
features"); `loss_from_features` takes the coupled losses on the whole batch and the mean of each broadcast
per-example loss, which is the mean over micro-batches of the micro-batch losses: the same rule (and, through the
broadcast's cotangent 1/K per micro-batch, the same gradient) as the step's accumulation of a per-example
objective on its own. When no term is coupled the composite is a per-example `loss`.

Randomness: term i gets `jax.random.fold_in(rng, i)`. Metrics: `<term>/<metric>` of every term (`clip/loss`,
`caption/loss`, `caption/accuracy`, ...) and `loss`, the weighted total.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.objectives.base import Objective, ObjectiveContext
from mmjax.registry import OBJECTIVES


class ModelView:
  """The model as one composite term sees it: `apply(variables, *args, **kw)` runs `method`; other attributes
  (eot_id, vocab_size, patch_size, ...) are the model's."""

  def __init__(self, model, method: str):
    self._model, self._method = model, method

  def apply(self, variables, *args, **kwargs):
    return self._model.apply(variables, *args, method=self._method, **kwargs)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._model, name)


def term_view(model, term: str) -> ModelView:
  """The ModelView of `term` (one-line MmjaxError when the model does not provide it)."""
  methods = getattr(model, "term_methods", None)
  if methods is None:
    raise MmjaxError(f"model {type(model).__name__} cannot train a composite objective (config key objective): "
                     f"use model.name='multitask_clip' with model.heads naming the non-CLIP terms")
  if term not in methods:
    raise MmjaxError(f"objective term {term!r} (config key objective) needs model.heads.{term}; the model "
                     f"provides {', '.join(sorted(methods))}")
  return ModelView(model, methods[term])


def term_names(name: str) -> list[str]:
  names = [n.strip() for n in str(name).split("+")]
  if any(not n for n in names) or len(set(names)) != len(names):
    raise MmjaxError(f"config key objective={name!r}: write distinct objective names joined by '+', e.g. "
                     f"'clip+caption'")
  return names


def term_weights(name: str, weights: Mapping | None) -> dict[str, float]:
  """{term: weight} for `name` ("a+b"), from config.objective_weights (missing terms weigh 1)."""
  names = term_names(name)
  weights = dict(weights or {})
  unknown = [k for k in weights if k not in names]
  if unknown:
    raise MmjaxError(f"config key objective_weights.{unknown[0]}: {unknown[0]!r} is not a term of objective "
                     f"{name!r}; use one of {', '.join(names)}")
  return {n: float(weights.get(n, 1.0)) for n in names}


def _batch_size(batch: Mapping, keys) -> int:
  key = next((k for k in keys if k in batch), None) or next(iter(batch))
  return jnp.shape(batch[key])[0]


def composite_objective(name: str, weights: Mapping | None = None, settings: Mapping | None = None) -> Objective:
  """The Objective sum_i w_i L_i of the terms of `name` ("clip+caption"); see the module docstring. `settings`
  (config.objective_kwargs) are per term: {"distill": {"temperature": 2.0}}."""
  w = term_weights(name, weights)
  settings = dict(settings or {})
  unknown = [k for k in settings if k not in w]
  if unknown:
    raise MmjaxError(f"config key objective_kwargs.{unknown[0]}: a composite objective's settings are per term; "
                     f"{unknown[0]!r} is not a term of {name!r} (use one of {', '.join(w)})")
  terms = [(n, OBJECTIVES.get(n, "objective").with_options(settings.get(n), name=n,
                                                           where=f"objective_kwargs.{n}")) for n in w]
  keys = tuple(dict.fromkeys(k for _, obj in terms for k in obj.batch_keys))
  coupled = any(obj.features_fn is not None for _, obj in terms)

  def term_outputs(params, batch, rng, model, train):
    out = {}
    for i, (n, obj) in enumerate(terms):
      view, r = term_view(model, n), jax.random.fold_in(rng, i)
      if obj.features_fn is not None:
        out[n] = obj.features_fn(params, batch, r, model=view, train=train)
      else:
        loss, metrics = obj.loss(params, batch, r, model=view, train=train)
        out[n] = {"loss": loss, **{k: v for k, v in metrics.items() if k != "loss"}}
    return out

  def total(per_term, ctx):
    loss, metrics = 0.0, {}
    for n, obj in terms:
      if obj.features_fn is not None:
        term_loss, m = obj.loss_from_features(per_term[n], ctx=ctx)
      else:
        m = dict(per_term[n])
        term_loss = m["loss"]
      metrics.update({f"{n}/{k}": v for k, v in m.items()})
      metrics[f"{n}/loss"] = term_loss
      loss = loss + w[n] * term_loss
    metrics["loss"] = loss
    return loss, metrics

  if not coupled:
    return Objective(loss=lambda params, batch, rng, *, model, train=True: total(
        term_outputs(params, batch, rng, model, train), ObjectiveContext()), batch_keys=keys)

  def features_fn(params, batch, rng, *, model, train):
    out = term_outputs(params, batch, rng, model, train)
    b = _batch_size(batch, keys)
    for n, obj in terms:
      if obj.features_fn is None:   # per-example term: its micro-batch values, one copy per example
        out[n] = {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,)) for k, v in out[n].items()}
    return out

  def loss_from_features(features, *, ctx):
    per_term = {n: features[n] if obj.features_fn is not None else
                {k: jnp.mean(v) for k, v in features[n].items()} for n, obj in terms}
    return total(per_term, ctx)

  return Objective(features_fn, loss_from_features, keys)


def get_objective(name: str, weights: Mapping | None = None, settings: Mapping | None = None) -> Objective:
  """The objective `name` (config.objective) with `settings` (config.objective_kwargs) replacing its defaults;
  "a+b" is the composite of the registered objectives a and b, weighted by `weights` (config.objective_weights).
  Exported as `mmjax.objectives.get_objective`."""
  if "+" in str(name) or weights:
    return composite_objective(name, weights, settings)
  return OBJECTIVES.get(name, "objective").with_options(settings, name=name)
