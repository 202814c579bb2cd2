"""Transformer feed-forward block (Vaswani et al. 2017) with exact erf GELU (Hendrycks & Gimpel 2016).

Names follow OpenCLIP's `mlp.c_fc` / `mlp.c_proj` so that imported weights map one to one.

`gelu_erf` is torch.nn.GELU's formula, 0.5 x (1 + erf(x / sqrt 2)). `jax.nn.gelu(approximate=False)` is the same
function written with erfc, which XLA's CPU backend expands into a two-branch approximation (one select per
branch, plus an exp), slower than the erf form (measured in benchmarks/README.md). The two agree to 1e-6.

`cpu_tuning` (mmjax/cpu_tuning.py, default "auto"): the Dense layers' CPU code path (dense_2d).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import cpu_tuning as tuning

Dtype = Any
_SQRT_HALF = float(np.sqrt(0.5))


def gelu_erf(x: jax.Array) -> jax.Array:
  """Exact GELU (Hendrycks & Gimpel 2016), x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), elementwise, dtype of x."""
  half = jnp.asarray(0.5, x.dtype)
  return half * x * (1 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


class Mlp(nn.Module):
  """x [..., w] -> Dense(mlp_ratio * w) -> GELU (erf) -> Dense(w) -> [..., w]."""
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_tuning: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w, t = x.shape[-1], self.cpu_tuning
    hidden = int(w * self.mlp_ratio)
    x = gelu_erf(tuning.dense(nn.Dense(hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="c_fc"), x, t))
    return tuning.dense(nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype, name="c_proj"), x, t)
