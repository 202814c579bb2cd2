"""CPU-only compile settings, in one place (issue 23 item 7).

`init_jit(fn, **jit_kwargs)`: `jax.jit` for parameter initialisation. On the CPU backend the program is compiled
with XLA's backend optimisation level 0: an init runs once, so its compile time is all that counts (a text-to-image
UNet's init compiles several times faster). The values are the same random draws up to float rounding (the truncated-normal
transform's last bit on ~5 % of entries; `tests/test_cpu_tuning.py`); elsewhere (GPU/TPU) it is plain `jax.jit`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def init_jit(fn: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
  """jax.jit(fn, **jit_kwargs), compiled for a fast compile on CPU (see the module docstring)."""
  if on_cpu():
    jit_kwargs.setdefault("compiler_options", INIT_COMPILER_OPTIONS)
  return jax.jit(fn, **jit_kwargs)
