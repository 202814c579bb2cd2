"""Transformer feed-forward block (Vaswani et al. 2017) with exact erf GELU (Hendrycks & Gimpel 2016).

Names follow OpenCLIP's `mlp.c_fc` / `mlp.c_proj` so that imported weights map one to one.

`gelu_erf` is torch.nn.GELU's formula, 0.5 x (1 + erf(x / sqrt 2)). `jax.nn.gelu(approximate=False)` is the same
function written with erfc, which XLA's CPU backend expands into a two-branch approximation (one select per
branch, plus an exp), slower than the erf form (measured in benchmarks/README.md). The two agree to 1e-6.

`wide_input_dot_general` is `c_proj`'s matmul on CPU: the same product, with a kernel gradient that XLA CPU can hand
to YNNPACK (see its docstring).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.layers.ordering import materialized

Dtype = Any
_SQRT_HALF = float(np.sqrt(0.5))


@jax.custom_vjp
def _matmul_transposed_input_grad(x: jax.Array, w: jax.Array) -> jax.Array:
  return x @ w


def _mtig_fwd(x, w):
  return x @ w, (x, w)


def _mtig_bwd(res, dy):
  x, w = res
  return dy @ w.T, materialized(x.T) @ dy


_matmul_transposed_input_grad.defvjp(_mtig_fwd, _mtig_bwd)


def wide_input_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                           preferred_element_type=None) -> jax.Array:
  """`lax.dot_general` for a 2-D nn.Dense whose input is wider than its output (x [N, K] @ w [K, M], K > M).

  Same values and gradients. On the CPU backend the kernel gradient x^T dy is computed from a materialised x^T
  [K, N]: XLA CPU sends a dot to YNNPACK only when both operands are row-major in their contraction, and
  otherwise to Eigen, which runs x^T dy at 130 GFLOP/s against 163 for YNNPACK on [4160, 1024]^T [4160, 256]
  here; the transpose of x costs less than the difference (-1.6 % on the CLIP step in a paired A/B,
  benchmarks/README.md).
  Any other call, or another backend, is plain `lax.dot_general`.
  """
  plain = (lhs.ndim == 2 and rhs.ndim == 2 and tuple(map(tuple, dimension_numbers[0])) == ((1,), (0,))
           and not any(dimension_numbers[1]) and precision is None and preferred_element_type is None)
  if plain and jax.default_backend() == "cpu":  # elsewhere the transpose would only cost a copy
    return _matmul_transposed_input_grad(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


def dense_2d(layer: nn.Module, x: jax.Array) -> jax.Array:
  """`layer` (an nn.Dense) applied to x [..., w] as [N, w], reshaped back to [..., features]. Same values.

  The kernel gradient is then one 2-D dot x^T dy. From [B, T, w] operands XLA CPU first writes a transposed copy
  of dy and then runs the dot on that (11 % of the CLIP step: benchmarks/README.md).
  """
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


def gelu_erf(x: jax.Array) -> jax.Array:
  """Exact GELU (Hendrycks & Gimpel 2016), x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), elementwise, dtype of x."""
  half = jnp.asarray(0.5, x.dtype)
  return half * x * (1 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


class Mlp(nn.Module):
  """x [..., w] -> Dense(mlp_ratio * w) -> GELU (erf) -> Dense(w) -> [..., w]."""
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = x.shape[-1]
    hidden = int(w * self.mlp_ratio)
    x = gelu_erf(dense_2d(nn.Dense(hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="c_fc"), x))
    return dense_2d(nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype,
                             dot_general=wide_input_dot_general, name="c_proj"), x)
