"""The device mesh: axes ("data", "fsdp") and `make_mesh` from a config's `mesh` section. Below mmjax.train (which
re-exports these names from mmjax.train.sharding) so that objectives with explicit collectives can build or check
a mesh without importing the training loop."""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from mmjax.errors import MmjaxError

AXES = ("data", "fsdp")
BATCH_SPEC = P(AXES)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a `Mesh` with axes ("data", "fsdp") from e.g. {"data": -1, "fsdp": 1}; -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = {a: int(mesh_cfg.get(a, 1)) for a in AXES}
  unknown = set(mesh_cfg.keys()) - set(AXES)
  if unknown:
    raise MmjaxError(f"unknown mesh axis {sorted(unknown)} in config key mesh; valid axes: {AXES}")
  for a, s in sizes.items():
    if s != -1 and (s < 1 or n % s):
      raise MmjaxError(f"config key mesh.{a}={s} does not fit the {n} available devices; valid values: "
                       f"{divisors(n)} (divisors of the device count) or -1 for all remaining devices")
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise MmjaxError(f"config key mesh: at most one axis may be -1, got {dict(sizes)}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if n % fixed:
      raise MmjaxError(f"config key mesh={dict(sizes)}: {n} devices are not divisible by {fixed}")
    sizes[free[0]] = n // fixed
  if math.prod(sizes.values()) != n:
    raise MmjaxError(f"config key mesh={dict(sizes)} needs {math.prod(sizes.values())} devices, "
                     f"but {n} are available; use -1 for one axis to fill the rest")
  grid = np.asarray(devices).reshape([sizes[a] for a in AXES])
  return Mesh(grid, AXES)


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]
