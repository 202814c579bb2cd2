"""Checkpoints: orbax `CheckpointManager` over {train state, data-iterator state, config + tokenizer}.

Orbax writes each step into a temporary directory and renames it into place when complete, so a process killed
mid-save leaves only an uncommitted temporary directory (ignored, then cleaned up) and the previous checkpoint intact.
The grain iterator state is stored with the train state, so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

import mmjax
from mmjax.errors import MmjaxError


class Checkpointer:
  """Saves and restores (state, data_state, meta) under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: Any, meta: dict[str, Any]) -> None:
    """Starts saving (asynchronously when enabled); `wait()` blocks until it is committed."""
    meta = dict(meta, mmjax_version=mmjax.__version__, step=int(step))
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, Any, dict[str, Any]] | None:
    """Restores the given step, or the newest one that reads back whole (older ones are tried in turn).

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with shardings: arrays come back placed that way.
    Returns (step, state, data_state, meta), or None if there is no checkpoint.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    for s in steps:
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
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def config_json(config) -> str:
  return json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
