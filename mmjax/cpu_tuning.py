"""CPU-specific code paths, in one place, behind one switch (issue 23 item 7).

Every change here gives the same values (and gradients); it only changes what XLA's CPU backend compiles. The layers
(attention, MLP, transformer blocks, the ViT and text towers, decoder blocks) take a `cpu_tuning` setting and call
the functions below with it; models built from a config pass `model.cpu_tuning` down (CLIP and the multitask CLIP:
`--config.model.cpu_tuning=off`; other models keep "auto"). A setting is
  "auto"  (default) every feature when the compile target is CPU (`jax.default_backend()`, read when the function
          is traced), none elsewhere;
  "on" / "off", or a comma-separated list of FEATURES.
Features (what each gains: paired A/B on the CLIP step, `benchmarks/clip_step_ablation.py`, benchmarks/README.md):
  dense_2d   attention and MLP Dense layers applied to x [B*T, w] instead of [B, T, w]: from [B, T, w] operands
             XLA CPU writes a transposed copy of dy before each kernel-gradient dot (`dense`).
Removed because the paired ablation put their gain within noise under both mallocs (2026-12-03): a custom VJP for
the q/k/v head split, a materialised x^T for the MLP's c_proj kernel gradient and an `optimization_barrier`
ordering CLIP's text tower after its image tower.

`init_jit(fn, **jit_kwargs)`: `jax.jit` for parameter initialisation. On the CPU backend the program is compiled
with XLA's backend optimisation level 0: an init runs once, so its compile time is all that counts (a text-to-image
UNet's init compiles several times faster). The values are the same random draws up to float rounding (the
truncated-normal transform's last bit on ~5 % of entries; `tests/test_cpu_tuning.py`); elsewhere it is `jax.jit`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from mmjax.errors import MmjaxError

FEATURES = ("dense_2d",)
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
  """`layer` (an nn.Dense) on x [..., w] -> [..., features]; with dense_2d applied to x as [N, w]. Same values."""
  if "dense_2d" not in features(setting) or x.ndim == 2:
    return layer(x)
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


def init_jit(fn: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """jax.jit(fn, **jit_kwargs), compiled for a fast compile on CPU (see the module docstring)."""
  if on_cpu():
    jit_kwargs.setdefault("compiler_options", INIT_COMPILER_OPTIONS)
  return jax.jit(fn, **jit_kwargs)
