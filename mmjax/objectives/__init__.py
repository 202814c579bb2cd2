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
  return OBJECTIVES.get(name, "objective")


from mmjax.objectives import contrastive  # noqa: E402,F401  (registers "clip", "siglip"; needs Objective)
from mmjax.objectives import contrastive_sharded  # noqa: E402,F401  ("clip_sharded", "siglip_sharded")
from mmjax.objectives import masked  # noqa: E402,F401  ("mae", "mlm", "m3ae")
from mmjax.objectives import classify  # noqa: E402,F401  ("classify")
from mmjax.objectives import filip  # noqa: E402,F401  ("filip"; FILIP token-wise loss, mmjax.alignment.tokens)
from mmjax.objectives import caption  # noqa: E402,F401  ("caption"; teacher-forced captioning cross-entropy)
from mmjax.objectives import flow_matching  # noqa: E402,F401  ("flow_matching"; text-to-image rectified flow)
from mmjax.objectives import colearning  # noqa: E402,F401  ("mctn", "distill", "clip_feature_distill")
from mmjax.objectives import mvae  # noqa: E402,F401  ("mvae"; sub-sampled multimodal ELBO, Wu & Goodman 2018)

__all__ = ["Objective", "get_objective", "contrastive", "contrastive_sharded"]
