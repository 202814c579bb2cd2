"""Mesh and shardings: the batch on ("data", "fsdp"), parameters by regex rules (big_vision / MaxText style)."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import MmjaxError
from mmjax.mesh import AXES, BATCH_SPEC, divisors, make_mesh  # noqa: F401  (re-exported: the loop's names)
from mmjax.train.optim import path_str

def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


FSDP = "fsdp"   # a rule's spec may be this string: shard the leaf's largest dimension divisible by the fsdp axis


def fsdp_spec(shape: Sequence[int], dtype, fsdp_size: int, min_size: int = 1) -> P:
  """ZeRO-3 / FSDP placement of one leaf (big_vision's "fsdp" strategy): its largest dimension that divides by
  the `fsdp` axis size (the last such on ties) is sharded over "fsdp"; scalars, integer leaves (step counters,
  PRNG keys), leaves smaller than `min_size` elements and leaves without such a dimension stay replicated."""
  if fsdp_size <= 1 or not jax.numpy.issubdtype(dtype, jax.numpy.floating) or math.prod(shape) < min_size:
    return P()
  best = None
  for i, dim in enumerate(shape):
    if dim % fsdp_size == 0 and (best is None or dim >= shape[best]):
      best = i
  if best is None:
    return P()
  return P(*([None] * best), "fsdp")


def param_specs(tree: Any, rules: Sequence[tuple[str, Any]], mesh: Mesh | None = None) -> Any:
  """PartitionSpec for every leaf: the first rule whose regex matches the '/'-joined path; else replicated.

  A rule's spec is a tuple of mesh axes per dimension (e.g. `(None, "fsdp")`), or the string "fsdp" for the
  automatic FSDP placement of `fsdp_spec` (needs `mesh`). Rules match the whole train state, so the optimizer
  moments (paths `opt_state/.../mu/<param path>`) are sharded like their parameters: `(".*", "fsdp")` is
  ZeRO-3 over the fsdp axis. A tuple spec must fit the leaf's rank, and every sharded dimension must divide
  by the axis size (checked in `shardings`).
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def spec_for(path, leaf):
    name = path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        if isinstance(spec, str):
          if spec != FSDP:
            raise MmjaxError(f"sharding rule {pattern.pattern!r} -> {spec!r}: a spec is a tuple of mesh axes "
                             f"or the string {FSDP!r}")
          if mesh is None:
            raise MmjaxError(f"sharding rule {pattern.pattern!r} -> {FSDP!r} needs the mesh")
          return fsdp_spec(leaf.shape, leaf.dtype, mesh.shape["fsdp"])
        if len(spec) > len(leaf.shape):
          raise MmjaxError(f"sharding rule {pattern.pattern!r} -> {spec} has more axes than parameter "
                           f"{name} of shape {tuple(leaf.shape)}")
        return P(*spec)
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs), checking divisibility."""
  specs = param_specs(tree, rules, mesh)

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


def bytes_per_device(leaf, sharding: NamedSharding) -> int:
  """Bytes of one device's shard of `leaf` (array or ShapeDtypeStruct)."""
  shard = sharding.shard_shape(tuple(leaf.shape))
  return math.prod(shard) * np.dtype(leaf.dtype).itemsize


def _fmt_bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024


def sharding_table(state: Any, state_shardings: Any, max_rows: int | None = None) -> str:
  """A printable table of the train state's placement: one row per parameter (path, shape, spec, bytes per
  device), then totals per device for the parameters, the optimizer state and the rest, against their
  unsharded size. `state` holds arrays or ShapeDtypeStructs with `.params` and `.opt_state` (a TrainState)."""
  rows, totals = [], {}
  groups = (("params", state.params, state_shardings.params),
            ("opt_state", state.opt_state, state_shardings.opt_state))
  for group, tree, shards in groups:
    dev = full = 0
    for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(shards)):
      b = bytes_per_device(leaf, sh)
      dev, full = dev + b, full + math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
      if group == "params":
        rows.append((path_str(path), "x".join(map(str, leaf.shape)) or "()", str(tuple(sh.spec)), _fmt_bytes(b)))
    totals[group] = (dev, full)
  shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max_rows]
  widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h)
            for i, h in enumerate(("parameter", "shape", "spec", "per device"))]
  line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
  out = [line(("parameter", "shape", "spec", "per device")), line(["-" * w for w in widths])]
  out += [line(r) for r in shown]
  if len(shown) < len(rows):
    out.append(f"... {len(rows) - len(shown)} more parameters")
  for group, (dev, full) in totals.items():
    out.append(f"{group}: {_fmt_bytes(dev)} per device of {_fmt_bytes(full)} "
               f"({100 * dev / max(full, 1):.0f} %)")
  return "\n".join(out)


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
