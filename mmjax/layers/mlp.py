"""Transformer feed-forward block (Vaswani et al. 2017) with exact erf GELU (Hendrycks & Gimpel 2016).

Names follow OpenCLIP's `mlp.c_fc` / `mlp.c_proj` so that imported weights map one to one.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class Mlp(nn.Module):
  """x [..., w] -> Dense(mlp_ratio * w) -> GELU (erf) -> Dense(w) -> [..., w]."""
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = x.shape[-1]
    hidden = int(w * self.mlp_ratio)
    x = nn.Dense(hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="c_fc")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype, name="c_proj")(x)
