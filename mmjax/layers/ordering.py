"""Scheduling and layout hints that change no value: make one part of a program run after another; materialise
an array XLA would otherwise fold into its consumer.

XLA's CPU runtime runs independent ops concurrently on the same cores; for two big independent subgraphs (CLIP's
image and text towers) that splits the cores and their caches between them and is slower than running one after
the other (benchmarks/README.md). Accelerators run one program's ops in sequence anyway, so there this is a no-op.

`materialized` is for transposes feeding a dot on CPU: XLA CPU hands a dot to YNNPACK only when both operands are
row-major in their contraction, and otherwise runs it in Eigen at 60-80 % of that speed; XLA folds a plain
transpose back into the dot as a transposed operand, so the transpose must be hidden behind a barrier.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def run_after(x: jax.Array, dep: jax.Array) -> jax.Array:
  """Identity on x. Forward: x is available only once dep is computed. Backward: dep's cotangent from here
  (zeros) is available only once x's cotangent is, so whatever back-propagates from dep starts after
  everything that back-propagates into x. Both via `lax.optimization_barrier`, which XLA cannot see through."""
  return jax.lax.optimization_barrier((x, dep))[0]


def _run_after_fwd(x, dep):
  return run_after(x, dep), dep


def _run_after_bwd(dep, g):
  zeros, g = jax.lax.optimization_barrier((jnp.zeros_like(dep), g))
  return g, zeros


run_after.defvjp(_run_after_fwd, _run_after_bwd)


def materialized(x: jax.Array) -> jax.Array:
  """x, computed into its own buffer (an `optimization_barrier`) when compiling for CPU; x itself elsewhere."""
  return jax.lax.optimization_barrier(x) if jax.default_backend() == "cpu" else x
