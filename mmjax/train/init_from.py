"""Start a run from a checkpoint: config keys `model.init_from` and `model.init_from_keys` (the training side).

`model.init_from` is one of
- an OpenCLIP checkpoint file: `.safetensors` (read without torch) or `.pt` / `.pth` / `.bin` (torch.load with
  weights_only=True), mapped to mmjax paths by mmjax.interop.open_clip.import_params (as open_clip's
  `load_checkpoint`: a {"state_dict": ...} wrapper and DDP's "module." prefix are undone);
- "PRESET:FILE", e.g. "ViT-B-32:/ckpt/b32.safetensors": the same file, checked to have the architecture of that
  open_clip model config (mmjax.interop.open_clip.PRESETS);
- an mmjax workdir: the parameters of its newest checkpoint (mmjax.train.teacher.load_params).

`model.init_from_keys` is a regex (re.search on "/"-joined parameter paths, e.g. "^vision/" for LiT's image tower);
"" loads every parameter that the model and the checkpoint share. Every other parameter keeps its fresh
initialisation; `placement_table` says which is which. The Trainer calls `load_into` only when the workdir has no
checkpoint: resuming always wins over init_from.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.train.optim import path_str

OPEN_CLIP_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = v
  return out


def load_source(spec: str) -> tuple[str, dict[str, np.ndarray]]:
  """(description, {"/"-joined mmjax parameter path: float32 ndarray}) of a `model.init_from` value."""
  from mmjax.interop import open_clip
  preset, path = open_clip.split_preset(spec)
  if not path:
    raise MmjaxError(f"config key model.init_from={spec!r} names a preset but no file; use PRESET:FILE")
  if os.path.isdir(path):
    from mmjax.train import teacher
    step, params = teacher.load_params(path)
    return f"{path} (step {step})", {k: np.asarray(v) for k, v in _flatten(params).items()}
  if not os.path.isfile(path):
    raise MmjaxError(f"config key model.init_from={spec!r}: no such file or directory; give an OpenCLIP file "
                     f"({'/'.join(OPEN_CLIP_SUFFIXES)}), PRESET:FILE or an mmjax workdir with a checkpoint")
  if not path.endswith(OPEN_CLIP_SUFFIXES):
    raise MmjaxError(f"config key model.init_from={spec!r} is not an OpenCLIP checkpoint (expected a name ending "
                     f"in {', '.join(OPEN_CLIP_SUFFIXES)}) nor an mmjax workdir")
  try:
    sd = open_clip.load_state_dict(path)
  except MmjaxError:
    raise
  except Exception as e:      # safetensors / torch raise their own types on a truncated or foreign file
    raise MmjaxError(f"config key model.init_from={spec!r}: cannot read the file ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:120] if str(e) else ''}); is it an OpenCLIP checkpoint?") from None
  if preset is not None:
    try:
      open_clip.check_preset(preset, sd, path)
    except MmjaxError as e:
      raise MmjaxError(f"config key model.init_from: {e}") from None
  return f"OpenCLIP {path}", _flatten(open_clip.import_params(sd))


def select(fresh_shapes: Mapping[str, tuple], source: Mapping[str, np.ndarray], keys_regex: str,
           what: str) -> tuple[list[str], list[tuple[str, tuple, str]]]:
  """(paths to load, table rows (path, shape, "loaded" | "fresh" | "fresh (not in checkpoint)")).

  fresh_shapes: {path: shape} of the model's parameters. A selected path whose shapes differ is an error naming
  the parameter and both shapes; so is a selection that loads nothing."""
  pattern = re.compile(keys_regex) if keys_regex else None
  load, rows = [], []
  for path, shape in fresh_shapes.items():
    if pattern is not None and not pattern.search(path):
      rows.append((path, tuple(shape), "fresh"))
    elif path not in source:
      rows.append((path, tuple(shape), "fresh (not in checkpoint)"))
    elif tuple(np.shape(source[path])) != tuple(shape):
      raise MmjaxError(f"model.init_from={what}: parameter {path} has shape {tuple(np.shape(source[path]))} in the "
                       f"checkpoint but {tuple(shape)} in the model; make the model config match the checkpoint or "
                       f"leave it out with model.init_from_keys")
    else:
      load.append(path)
      rows.append((path, tuple(shape), "loaded"))
  if not load:
    raise MmjaxError(f"model.init_from={what}: model.init_from_keys={keys_regex!r} selects no parameter that the "
                     f"model and the checkpoint share (model paths look like {next(iter(fresh_shapes), '?')!r}, "
                     f"checkpoint paths like {next(iter(source), '?')!r})")
  return load, rows


def placement_table(rows: list[tuple[str, tuple, str]], what: str, unused: int = 0) -> str:
  """One line per parameter: path, shape, loaded / fresh; a summary line first."""
  n = sum(r[2] == "loaded" for r in rows)
  width = max(len(r[0]) for r in rows)
  head = f"mmjax: init_from {what}: {n} of {len(rows)} parameters loaded, {len(rows) - n} fresh" + (
      f"; {unused} checkpoint parameters unused" if unused else "")
  return "\n".join([head] + [f"  {p:<{width}}  {str(list(s)):<18}  {how}" for p, s, how in rows])


def load_into(params: Any, spec: str, keys_regex: str = "", *, verbose: bool = True) -> Any:
  """`params` (a pytree of jax Arrays, possibly sharded) with the selected leaves replaced by the checkpoint's
  values, each placed with the sharding of the leaf it replaces (every process reads the file and keeps its own
  shards: jax.make_array_from_callback). Fresh leaves are the same arrays as before."""
  what, source = load_source(spec)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [path_str(p) for p, _ in leaves]
  load, rows = select({p: x.shape for p, (_, x) in zip(paths, leaves)}, source, keys_regex, what)
  chosen = set(load)
  if verbose and jax.process_index() == 0:
    used = {p for p in source if p in chosen}
    print(placement_table(rows, what, unused=len(source) - len(used)), flush=True)
  out = []
  for path, (_, x) in zip(paths, leaves):
    if path not in chosen:
      out.append(x)
      continue
    value = np.array(source[path], dtype=x.dtype, order="C")
    sharding = getattr(x, "sharding", None)
    out.append(jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
               if sharding is not None else jax.numpy.asarray(value))
  return jax.tree_util.tree_unflatten(treedef, out)
