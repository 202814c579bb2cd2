"""Mesh and shardings: the batch on ("data", "fsdp"), parameters by regex rules (big_vision / MaxText style)."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import MmjaxError
from mmjax.train.optim import path_str

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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_specs(tree: Any, rules: Sequence[tuple[str, tuple]]) -> Any:
  """PartitionSpec for every leaf: the first rule whose regex matches the '/'-joined path; else replicated.

  A rule's spec must fit the leaf's rank, and every sharded dimension must divide by the axis size (checked in
  `shardings`).
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def spec_for(path, leaf):
    name = path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        if len(spec) > len(leaf.shape):
          raise MmjaxError(f"sharding rule {pattern.pattern!r} -> {spec} has more axes than parameter "
                           f"{name} of shape {tuple(leaf.shape)}")
        return P(*spec)
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, tuple]]) -> Any:
  """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs), checking divisibility."""
  specs = param_specs(tree, rules)

  def check(path, leaf, spec):
    for dim, axes in zip(leaf.shape, spec):
      if axes is None:
        continue
      size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if dim % size:
        raise MmjaxError(f"parameter {path_str(path)} dim {dim} is not divisible by mesh axes {axes} "
                         f"(size {size}); change config key sharding_rules or mesh")
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(check, tree, specs)


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def nearby_multiples(value: int, unit: int) -> list[int]:
  """The multiples of `unit` just below and above `value` (positive ones only)."""
  low = (value // unit) * unit
  return [m for m in (low, low + unit) if m > 0 and m != value] or [unit]


def check_batch_size(batch_size: int, mesh: Mesh, process_count: int) -> None:
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  unit = math.lcm(shards, process_count)
  if batch_size < 1 or batch_size % unit:
    raise MmjaxError(f"config key batch_size={batch_size} must be divisible by the {shards} batch shards "
                     f"(mesh data x fsdp) and by the {process_count} processes; use a multiple of {unit}, "
                     f"e.g. {' or '.join(map(str, nearby_multiples(batch_size, unit)))}")


def check_grad_accum(grad_accum_steps: int, batch_size: int, mesh: Mesh) -> None:
  """grad_accum_steps must be >= 1 and split each device's share of the batch into equal micro-batches."""
  per_device = batch_size // mesh.size
  if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1 or per_device % grad_accum_steps:
    raise MmjaxError(f"config key grad_accum_steps={grad_accum_steps} must be >= 1 and divide the per-device "
                     f"batch (batch_size {batch_size} / {mesh.size} devices = {per_device}); valid values: "
                     f"{divisors(per_device)}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global, sharded batch from this process's slice (works for 1 or many processes)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
