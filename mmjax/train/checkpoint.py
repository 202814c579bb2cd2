"""Checkpoints: orbax `CheckpointManager` over {train state, data-iterator state, config + tokenizer}.

Orbax writes each step into a temporary directory and renames it into place when complete, so a process killed
mid-save leaves only an uncommitted temporary directory (ignored, then cleaned up) and the previous checkpoint intact.
The grain iterator state is stored with the train state, so a resumed run sees exactly the batches it would have seen.

Integrity: once a step is committed, `<step>/mmjax_manifest.json` records every file's size and sha256, the
config's sha256 and the mmjax version (written atomically, by process 0). Restore checks the manifest of the
newest checkpoint first and falls back to the previous one, with a warning naming the damaged one, when a file is
missing, truncated or altered. `python -m mmjax.main --mode verify --workdir DIR` checks them all.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

import mmjax
from mmjax.errors import MmjaxError


class Checkpointer:
  """Saves and restores (state, data_state, meta) under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int | None = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # The `keep` newest steps (orbax's max_to_keep), and any step in `self.kept` (`keep_step`: the best one of
    # config.select_best, mmjax/train/best.py). Orbax picks the steps to delete when a save starts.
    self.kept: set[int] = set()
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep), _KeepSteps(self.kept)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))
    self._pending_meta: dict[int, dict[str, Any]] = {}
    self._pending_bytes: dict[int, int] = {}

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def keep_step(self, step: int, keep: bool = True) -> None:
    """Keeps checkpoint `step` beyond the `keep` newest (`keep=False`: no longer); takes effect at the next save."""
    (self.kept.add if keep else self.kept.discard)(int(step))

  def save(self, step: int, state: Any, data_state: Any, meta: dict[str, Any]) -> None:
    """Starts saving (asynchronously when enabled); `wait()` blocks until it is committed.

    A full disk (ENOSPC), now or when the previous asynchronous save finishes, raises MmjaxError saying how
    much space a checkpoint needs; the half-written step is removed and the previous checkpoints are kept.
    """
    self.wait()                     # orbax would wait here anyway; surfaces a failed async save, writes manifests
    meta = dict(meta, mmjax_version=mmjax.__version__, step=int(step))
    self._pending_meta[int(step)] = meta
    self._pending_bytes[int(step)] = sum(int(x.nbytes) for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:
      self._raise_save_error(step, e)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, Any, dict[str, Any]] | None:
    """Restores the given step, or the newest one that reads back whole (older ones are tried in turn).

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with shardings: arrays come back placed that way.
    Returns (step, state, data_state, meta), or None if there is no checkpoint.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    for s in steps:
      problems = self.verify(s)
      if problems and not problems[0].endswith("right after the commit)"):
        if step is not None:
          raise MmjaxError(f"checkpoint {self.directory}/{s} is damaged: {problems[0]}")
        logging.warning("checkpoint %s/%s is damaged (%s); trying the previous one", self.directory, s, problems[0])
        continue
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # a damaged checkpoint: report it and fall back to the previous one
        if step is not None:
          raise MmjaxError(f"checkpoint {self.directory}/{s} cannot be restored: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
        logging.warning("checkpoint %s/%s is damaged (%s: %s); trying the previous one",
                        self.directory, s, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        continue
      return s, out.state, out.data, dict(out.meta)
    return None

  def read_meta(self, step: int) -> dict[str, Any]:
    """The config/tokenizer metadata of one checkpoint, without reading the arrays."""
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def wait(self) -> None:
    """Blocks until pending saves are committed, then writes their manifests."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._raise_save_error(max(self._pending_meta, default=-1), e)
    self._write_manifests()

  def close(self) -> None:
    self.wait()
    self.manager.close()

  # ------------------------------------------------------------------ integrity
  def _raise_save_error(self, step: int, e: BaseException) -> None:
    if not is_no_space(e):
      raise e
    need = self._pending_bytes.pop(step, 0)
    self._remove_uncommitted(step)
    free = shutil.disk_usage(self.directory).free
    good = [s for s in self.all_steps() if s != step]
    need_txt = f"a checkpoint needs about {need / 2**20:.1f} MiB" if need else "a checkpoint needs more"
    kept = f"the last good checkpoint is step {good[-1]}" if good else "no checkpoint was kept"
    raise MmjaxError(f"no space left on device while saving checkpoint step {step} to {self.directory}: "
                     f"{need_txt}, {free / 2**20:.1f} MiB are free; {kept}; free space or point --workdir "
                     f"elsewhere, then rerun to resume") from None

  def _remove_uncommitted(self, step: int) -> None:
    """Deletes what a failed save left of `step` (orbax's tmp dirs and the step dir if not committed)."""
    self._pending_meta.pop(step, None)
    for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
      if name.startswith(f"{step}.orbax-checkpoint-tmp") or (name == str(step) and not is_committed(
          os.path.join(self.directory, name))):
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    try:
      self.manager.reload()
    except Exception:  # pragma: no cover (reload only re-reads the directory)
      pass

  def _write_manifests(self) -> None:
    if jax.process_index() != 0:
      return
    for step in self.all_steps():
      path = os.path.join(self.directory, str(step))
      if os.path.exists(os.path.join(path, MANIFEST)) or not is_committed(path):
        continue
      meta = self._pending_meta.pop(step, None)
      self._pending_bytes.pop(step, None)
      write_manifest(path, step, meta)

  def verify(self, step: int) -> list[str]:
    """Problems found in checkpoint `step` (empty: good). See `verify_dir`."""
    return verify_dir(os.path.join(self.directory, str(step)))


class _KeepSteps:
  """Orbax preservation policy: preserves the checkpoints whose step is in `steps` (a set updated in place)."""

  def __init__(self, steps: set[int]):
    self.steps = steps

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    return [int(c.step) in self.steps for c in checkpoints]


MANIFEST = "mmjax_manifest.json"


def is_no_space(e: BaseException) -> bool:
  """ENOSPC anywhere in the exception chain (tensorstore reports it as a ValueError with os_error_code 28)."""
  cause: BaseException | None = e
  while cause is not None:
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(cause) or f"os_error_code='{errno.ENOSPC}'" in str(cause):
      return True
    cause = cause.__cause__ or cause.__context__
  return False


def is_committed(path: str) -> bool:
  """Orbax's commit marker (local file systems: the step dir exists under its final name with a marker)."""
  return os.path.isdir(path) and (os.path.exists(os.path.join(path, "commit_success.txt"))
                                  or os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")))


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _files(path: str) -> list[str]:
  out = []
  for d, _, files in os.walk(path):
    out += [os.path.relpath(os.path.join(d, f), path) for f in files]
  return sorted(f for f in out if f != MANIFEST and not f.endswith(".tmp"))


def write_manifest(path: str, step: int, meta: dict[str, Any] | None = None) -> None:
  config = (meta or {}).get("config")
  manifest = {
      "step": int(step), "mmjax_version": mmjax.__version__,
      "config_sha256": hashlib.sha256(config.encode()).hexdigest() if isinstance(config, str) else None,
      "files": {f: {"size": os.path.getsize(os.path.join(path, f)), "sha256": _sha256(os.path.join(path, f))}
                for f in _files(path)}}
  tmp = os.path.join(path, MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(path, MANIFEST))


def verify_dir(path: str) -> list[str]:
  """Problems of one checkpoint directory: not committed, no/unreadable manifest, missing/extra/resized/altered
  files. An empty list means the checkpoint is intact."""
  if not is_committed(path):
    return [f"{path} is not a committed checkpoint (no orbax commit marker)"]
  try:
    with open(os.path.join(path, MANIFEST)) as f:
      manifest = json.load(f)
    files = manifest["files"]
  except FileNotFoundError:
    return [f"{path}/{MANIFEST} is missing (the run may have stopped right after the commit)"]
  except (ValueError, KeyError, TypeError) as e:
    return [f"{path}/{MANIFEST} is unreadable ({type(e).__name__})"]
  problems = []
  present = set(_files(path))
  for rel, want in files.items():
    full = os.path.join(path, rel)
    if rel not in present:
      problems.append(f"{full} is missing")
    elif os.path.getsize(full) != want["size"]:
      problems.append(f"{full} has {os.path.getsize(full)} bytes, the manifest says {want['size']}")
    elif _sha256(full) != want["sha256"]:
      problems.append(f"{full} has changed (sha256 differs from the manifest)")
  problems += [f"{os.path.join(path, rel)} is not in the manifest" for rel in sorted(present - set(files))]
  return problems


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def config_json(config) -> str:
  return json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
