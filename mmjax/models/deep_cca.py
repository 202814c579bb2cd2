"""Deep CCA's two view networks (Andrew et al. 2013): one MLP per view, `views` naming the batch keys they read.

    (x1 [B, D1], x2 [B, D2]) -> (h1 [B, features], h2 [B, features])

Trained with the "dcca" objective (mmjax/objectives/cca.py: -(sum of the top-k canonical correlations of h1, h2),
the whole batch one covariance estimate), then linear CCA of the outputs gives the canonical directions
(mmjax.alignment.cca.linear_cca).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from mmjax.encoders.mlp import MLPEncoder
from mmjax.errors import MmjaxError
from mmjax.registry import MODELS


@MODELS.register("deep_cca")
class DeepCCA(nn.Module):
  """Two MLPs (hidden sizes `hidden`, output `features`), one per view in `views`."""
  views: Sequence[str] = ("text", "audio")
  hidden: Sequence[int] = (128,)
  features: int = 10
  act: str = "relu"

  def __post_init__(self):
    object.__setattr__(self, "views", tuple(self.views))
    object.__setattr__(self, "hidden", tuple(self.hidden))
    if len(self.views) != 2:
      raise MmjaxError(f"config key model.views must name two batch keys, got {list(self.views)}")
    super().__post_init__()

  @property
  def modalities(self) -> tuple[str, ...]:
    return self.views

  @nn.compact
  def __call__(self, x1: jax.Array, x2: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    f1 = MLPEncoder(hidden=self.hidden, features=self.features, act=self.act, name="f1")
    f2 = MLPEncoder(hidden=self.hidden, features=self.features, act=self.act, name="f2")
    return f1(x1, train=train), f2(x2, train=train)
