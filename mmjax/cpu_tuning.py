"""CPU-specific code paths, in one place, behind one switch (issue 23 item 7).

Every change here gives the same values (and gradients); it only changes what XLA's CPU backend compiles. The layers
(mmjax/layers/attention.py, mlp.py, encoders/text.py) take a `cpu_tuning` setting and call the functions below with
it; models built from a config pass `model.cpu_tuning` down (CLIP: `--config.model.cpu_tuning=off`). A setting is
  "auto"  (default) every feature when the compile target is CPU (`jax.default_backend()`, read when the function
          is traced), none elsewhere;
  "on" / "off", or a comma-separated list of FEATURES ("dense_2d,wide_proj").
Features (what each gains, paired A/B on the CLIP step: `benchmarks/clip_step_ablation.py`, benchmarks/README.md):
  dense_2d   attention and MLP Dense layers applied to x [B*T, w] instead of [B, T, w]: from [B, T, w] operands
             XLA CPU writes a transposed copy of dy before each kernel-gradient dot (`dense`).
  wide_proj  the MLP's c_proj kernel gradient x^T dy from a materialised x^T [K, B*T]: XLA CPU hands a dot to
             YNNPACK only when both operands are row-major in their contraction, else to Eigen, slower
             (`proj_dot_general`; c_proj's input is then flattened to 2-D as with dense_2d).
  split_heads  q/k/v split from the fused in_proj output with a custom VJP: one transpose stacks the gradients
             back, where autodiff of the plain rearrange pads each part and sums the pads (`split_heads`).
  ordered_towers  CLIP's text tower runs after its image tower (and its backward before the image tower's): XLA's
             CPU runtime otherwise runs the two concurrently, splitting the cores and caches (`run_after`).

`init_jit(fn, **jit_kwargs)`: `jax.jit` for parameter initialisation. On the CPU backend the program is compiled
with XLA's backend optimisation level 0: an init runs once, so its compile time is all that counts (a text-to-image
UNet's init compiles several times faster). The values are the same random draws up to float rounding (the
truncated-normal transform's last bit on ~5 % of entries; `tests/test_cpu_tuning.py`); elsewhere it is `jax.jit`.
"""
from __future__ import annotations

from typing import Any, Callable

import functools

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError

FEATURES = ("dense_2d", "split_heads", "wide_proj", "ordered_towers")
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def check(setting: str, key: str = "model.cpu_tuning") -> None:
  """Raises a one-line MmjaxError naming `key` unless `setting` is auto / on / off or a list of FEATURES."""
  if setting in ("auto", "on", "off"):
    return
  bad = [f for f in str(setting).split(",") if f.strip() not in FEATURES]
  if bad or not str(setting).strip():
    raise MmjaxError(f"config key {key}={setting!r}: use 'auto' (all on CPU, none elsewhere), 'on', 'off' or a "
                     f"comma-separated list of {', '.join(FEATURES)}")


def features(setting: str = "auto") -> frozenset[str]:
  """The features a setting turns on, for the current compile target."""
  check(setting)
  if setting == "auto":
    return frozenset(FEATURES) if on_cpu() else frozenset()
  if setting in ("on", "off"):
    return frozenset(FEATURES) if setting == "on" else frozenset()
  return frozenset(f.strip() for f in setting.split(","))


def dense(layer: nn.Module, x: jax.Array, setting: str = "auto") -> jax.Array:
  """`layer` (an nn.Dense) on x [..., w] -> [..., features]; applied to x as [N, w] with dense_2d, or when the
  layer's product is `wide_input_dot_general` (which acts on 2-D products). Same values."""
  flat = "dense_2d" in features(setting) or getattr(layer, "dot_general", None) is wide_input_dot_general
  if not flat or x.ndim == 2:
    return layer(x)
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


def materialized(x: jax.Array) -> jax.Array:
  """x, computed into its own buffer (an `optimization_barrier`, which XLA cannot fold into the consumer)."""
  return jax.lax.optimization_barrier(x)


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
  """`lax.dot_general` for a 2-D nn.Dense (x [N, K] @ w [K, M]) whose kernel gradient x^T dy is computed from a
  materialised x^T [K, N] (see the module docstring). Same values and gradients; any other call is plain
  `lax.dot_general`."""
  plain = (lhs.ndim == 2 and rhs.ndim == 2 and tuple(map(tuple, dimension_numbers[0])) == ((1,), (0,))
           and not any(dimension_numbers[1]) and precision is None and preferred_element_type is None)
  if plain:
    return _matmul_transposed_input_grad(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


def proj_dot_general(setting: str = "auto") -> Callable[..., jax.Array] | None:
  """The `dot_general` for nn.Dense(..., dot_general=...) of a projection whose input is wider than its output
  (the MLP's c_proj): `wide_input_dot_general` with wide_proj, else None (flax's own)."""
  return wide_input_dot_general if "wide_proj" in features(setting) else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _split_heads_vjp(x: jax.Array, parts: int, num_heads: int) -> tuple[jax.Array, ...]:
  return tuple(einops.rearrange(x, "b t (parts h d) -> parts b h t d", parts=parts, h=num_heads))


def _split_heads_fwd(x, parts, num_heads):
  return _split_heads_vjp(x, parts, num_heads), None


def _split_heads_bwd(parts, num_heads, _, grads):
  return (einops.rearrange(jnp.stack(grads), "parts b h t d -> b t (parts h d)"),)


_split_heads_vjp.defvjp(_split_heads_fwd, _split_heads_bwd)


def split_heads(x: jax.Array, parts: int, num_heads: int, setting: str = "auto") -> tuple[jax.Array, ...]:
  """x [B, T, parts * H * d] (parts | heads | d, as in_proj's columns) -> `parts` arrays [B, H, T, d]; with
  split_heads through the custom VJP (its gradient: the inverse permutation in one transpose)."""
  if "split_heads" in features(setting):
    return _split_heads_vjp(x, parts, num_heads)
  return tuple(einops.rearrange(x, "b t (parts h d) -> parts b h t d", parts=parts, h=num_heads))


@jax.custom_vjp
def _run_after(x: jax.Array, dep: jax.Array) -> jax.Array:
  return jax.lax.optimization_barrier((x, dep))[0]


def _run_after_fwd(x, dep):
  return _run_after(x, dep), dep


def _run_after_bwd(dep, g):
  zeros, g = jax.lax.optimization_barrier((jnp.zeros_like(dep), g))
  return g, zeros


_run_after.defvjp(_run_after_fwd, _run_after_bwd)


def run_after(x: jax.Array, dep: jax.Array, setting: str = "auto") -> jax.Array:
  """Identity on x. With ordered_towers: forward, x is available only once dep is computed; backward, dep's
  cotangent from here (zeros) only once x's is, so whatever back-propagates from dep starts after everything
  that back-propagates into x (both via `lax.optimization_barrier`, which XLA cannot see through)."""
  return _run_after(x, dep) if "ordered_towers" in features(setting) else x


def init_jit(fn: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """jax.jit(fn, **jit_kwargs), compiled for a fast compile on CPU (see the module docstring)."""
  if on_cpu():
    jit_kwargs.setdefault("compiler_options", INIT_COMPILER_OPTIONS)
  return jax.jit(fn, **jit_kwargs)
