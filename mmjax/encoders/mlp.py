"""Multi-layer perceptron encoder for feature vectors (Rumelhart, Hinton & Williams 1986; the unimodal MLP encoders of
MultiBench, Liang et al. 2021).

x `[..., D]` -> Dense(h_1) -> act -> dropout -> ... -> Dense(h_L) -> act -> dropout -> Dense(features) `[..., features]`
(the last layer is linear; `features=None` ends after the hidden layers).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from mmjax.errors import MmjaxError

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": nn.tanh, "silu": nn.silu}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise MmjaxError(f"unknown activation {name!r}; use one of {', '.join(sorted(ACTIVATIONS))}")
  return ACTIVATIONS[name]


class MLPEncoder(nn.Module):
  """[..., D] -> [..., features] (or [..., hidden[-1]] with features=None)."""
  hidden: Sequence[int] = (64,)
  features: int | None = None
  act: str = "relu"
  dropout: float = 0.0
  layer_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    fn = activation(self.act)
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, name=f"dense_{i}")(x)
      if self.layer_norm:
        x = nn.LayerNorm(name=f"ln_{i}")(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(fn(x))
    if self.features is not None:
      x = nn.Dense(self.features, name="out")(x)
    return x
