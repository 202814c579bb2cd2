"""The "dcca" objective: Deep CCA (Andrew et al. 2013), -(sum of the top-k canonical correlations) of the two
views' network outputs (mmjax.alignment.cca.dcca_loss). The covariances are estimated on the whole batch, so the
loss couples the batch: features_fn + loss_from_features, and gradient accumulation stays exact (the step's
GradCache path) -- a full-batch DCCA of N examples can run as K micro-batches of N / K.

The model is one with two outputs per example, e.g. "deep_cca" (mmjax/models/deep_cca.py); its `modalities` name
the two batch keys. Settings (config.objective_kwargs): `k` (None: every output dimension) and `ridge`.
"""
from __future__ import annotations

import jax

from mmjax.alignment.cca import dcca_loss
from mmjax.models.inputs import model_inputs
from mmjax.objectives.base import Objective, configurable
from mmjax.registry import OBJECTIVES


def dcca_features(params, batch: dict, rng, *, model, train: bool) -> dict[str, jax.Array]:
  """-> {"h1": [B, o1], "h2": [B, o2]}, the two views' outputs."""
  args, kwargs = model_inputs(model, batch, (), what="objective 'dcca'")
  h1, h2 = model.apply({"params": params}, *args, **kwargs, train=train, rngs={"dropout": rng})
  return {"h1": h1, "h2": h2}


def dcca_objective(k: int | None = None, ridge: float = 1e-3) -> Objective:
  """Deep CCA's objective: top-`k` correlations (None: all of the outputs' min(o1, o2)), covariances regularised
  by `ridge` x identity (r1 = r2, Andrew et al.'s r)."""
  def loss_from_features(features, *, ctx):
    return dcca_loss(features["h1"], features["h2"], k=k, r1=ridge, r2=ridge)
  return Objective(dcca_features, loss_from_features, ())


DCCA_OBJECTIVE = OBJECTIVES.register("dcca")(configurable(dcca_objective))
