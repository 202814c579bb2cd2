"""The objective interface (`Objective`) and its lookup by name: the base every objective module imports, apart
from the package's __init__ (which imports the objective modules to register them)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

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
  """
  features_fn: Callable[..., Any] | None = None
  loss_from_features: Callable[..., Any] | None = None
  batch_keys: tuple[str, ...] = ()
  loss: Callable[..., Any] | None = None

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


def get_objective(name: str) -> Objective:
  """A registered objective by name; `mmjax.objectives.get_objective` also builds composites ("a+b")."""
  return OBJECTIVES.get(name, "objective")
