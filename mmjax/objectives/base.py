"""The objective interface (`Objective`) and its lookup by name: the base every objective module imports, apart
from the package's __init__ (which imports the objective modules to register them)."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.registry import OBJECTIVES


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective, in one of two forms.

  Batch-coupled (contrastive):
    features_fn(params, batch, rng, *, model, train) -> pytree of [B, ...] arrays (deterministic given rng);
    loss_from_features(params, features) -> (loss scalar, metrics dict of scalars).
  Per-example (the loss is a mean over examples: MAE, MLM, classification):
    loss(params, batch, rng, *, model, train) -> (loss scalar, metrics dict of scalars).
  batch_keys: the batch entries the model reads, in the order of its positional arguments (used for `init`).
  `params` is the model's param tree (variables["params"]).
  options: the objective's settings and their defaults (config.objective_kwargs sets them: `with_options`);
  build(**options) -> the Objective with those settings (see `configurable`).
  """
  features_fn: Callable[..., Any] | None = None
  loss_from_features: Callable[..., Any] | None = None
  batch_keys: tuple[str, ...] = ()
  loss: Callable[..., Any] | None = None
  options: Mapping[str, Any] = FrozenDict()
  build: Callable[..., "Objective"] | None = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    coupled = self.features_fn is not None and self.loss_from_features is not None
    if coupled == (self.loss is not None):
      raise ValueError("an Objective has either features_fn + loss_from_features, or loss")

  def loss_fn(self, params, batch, rng, *, model, train: bool = True):
    """(loss, metrics) for one batch."""
    if self.loss is not None:
      return self.loss(params, batch, rng, model=model, train=train)
    features = self.features_fn(params, batch, rng, model=model, train=train)
    return self.loss_from_features(params, features)

  def with_options(self, settings: Mapping[str, Any] | None, *, name: str = "",
                   where: str = "objective_kwargs") -> "Objective":
    """This objective with `settings` (a subset of `options`) replacing their defaults; an unknown setting is
    an error naming the config key (`where`.<setting>) and the objective's settings."""
    settings = dict(settings or {})
    if not settings:
      return self
    unknown = [k for k in settings if k not in self.options]
    if unknown:
      have = (f"its settings are {', '.join(sorted(self.options))}" if self.options else "it has no settings")
      raise MmjaxError(f"config key {where}.{unknown[0]}: objective {name or '?'!r} has no setting "
                       f"{unknown[0]!r}; {have}")
    return self.build(**{**self.options, **settings})


def configurable(factory: Callable[..., Objective], **settings) -> Objective:
  """`factory(**settings)` with `options` = every keyword of `factory` at its value here (its signature's defaults
  for those not given), so `with_options` (config.objective_kwargs) rebuilds it with other settings: the
  objective's hyperparameters live with the objective, not in the model's config."""
  options = {name: p.default for name, p in inspect.signature(factory).parameters.items()}
  options.update(settings)
  return dataclasses.replace(factory(**options), options=FrozenDict(options),
                             build=lambda **new: configurable(factory, **new))


def get_objective(name: str) -> Objective:
  """A registered objective by name; `mmjax.objectives.get_objective` also builds composites ("a+b")."""
  return OBJECTIVES.get(name, "objective")
