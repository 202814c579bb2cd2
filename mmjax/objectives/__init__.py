"""Training objectives, looked up by the config's `objective` in mmjax.registry.OBJECTIVES.

An objective is split into per-example features and a loss on the whole batch of features, so the training
loop can accumulate gradients exactly for losses that couple examples (contrastive: Radford et al. 2021;
sigmoid: Zhai et al. 2023): compute the features of every micro-batch, the loss on the full batch, then
back-propagate micro-batch by micro-batch (as in GradCache, Gao et al. 2021).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mmjax.registry import OBJECTIVES


@dataclasses.dataclass(frozen=True)
class Objective:
  """features_fn(params, batch, rng, *, model, train) -> pytree of [B, ...] arrays (deterministic given rng);
  loss_from_features(params, features) -> (loss scalar, metrics dict of scalars);
  batch_keys: the batch entries features_fn reads. `params` is the model's param tree (variables["params"]).
  """
  features_fn: Callable[..., Any]
  loss_from_features: Callable[..., Any]
  batch_keys: tuple[str, ...]

  def loss_fn(self, params, batch, rng, *, model, train: bool = True):
    """(loss, metrics) = loss_from_features(params, features_fn(params, batch, rng, model=model, train=train))."""
    features = self.features_fn(params, batch, rng, model=model, train=train)
    return self.loss_from_features(params, features)


def get_objective(name: str) -> Objective:
  return OBJECTIVES.get(name, "objective")


from mmjax.objectives import contrastive  # noqa: E402,F401  (registers "clip", "siglip"; needs Objective)

__all__ = ["Objective", "get_objective", "contrastive"]
