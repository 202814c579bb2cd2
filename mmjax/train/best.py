"""Best-checkpoint selection: `config.select_best = "<metric>"` (an evaluator result key, e.g. "classify/accuracy",
or its metrics.jsonl name "eval/classify/accuracy") and `config.select_best_mode = "max" | "min"`.

After each evaluation of the loop (mmjax/train/run.py), when the metric improves on the best so far (strictly:
the first of equal values is kept), the state of that step is checkpointed (unless it just was) and kept beyond
`keep_checkpoints`, and `workdir/best.json` = {"step", "metric", "value", "mode", "evaluated"} is written
atomically once that checkpoint is committed ("evaluated": the last step whose evaluation was compared). The
previous best stays kept until then (then it goes at the next save, unless it is among the newest
`keep_checkpoints`), so best.json always names a committed checkpoint. A resumed run continues from that record; when the
checkpoint it resumes from was saved but its evaluation never compared (killed in between), that evaluation runs
first. `Trainer.evaluate(best=True)` (`mmjax.main --mode eval --best`) scores the recorded step.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import jax

from mmjax.errors import MmjaxError
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.workdir import atomic_write

FILE = "best.json"
MODES = ("max", "min")


def check_config(config) -> None:
  """The select_best keys, checked before anything runs."""
  metric, mode = config.get("select_best", "") or "", config.get("select_best_mode", "max")
  if not isinstance(metric, str):
    raise MmjaxError(f"config key select_best={metric!r} must be a metric name (e.g. 'classify/accuracy') or ''")
  if mode not in MODES:
    raise MmjaxError(f"config key select_best_mode={mode!r} must be 'max' or 'min'")


def read(workdir: str) -> dict[str, Any] | None:
  """The best-checkpoint record of `workdir` (best.json), or None."""
  try:
    with open(os.path.join(workdir, FILE)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    raise MmjaxError(f"{os.path.join(workdir, FILE)} is unreadable ({e}); delete it to select afresh") from None


def best_step(workdir: str) -> int:
  """The step of the recorded best checkpoint; a one-line error without one."""
  record = read(workdir)
  if not record or record.get("step") is None:
    raise MmjaxError(f"no best checkpoint recorded in {os.path.join(workdir, FILE)}; train with "
                     f"config.select_best set (e.g. --config.select_best=classify/accuracy)")
  return int(record["step"])


def check_kept(ckpt: Checkpointer, step: int) -> int:
  """`step` when its checkpoint exists; a one-line error otherwise."""
  if step not in ckpt.all_steps():
    raise MmjaxError(f"the best checkpoint (step {step}, {FILE}) is not in {ckpt.directory} (steps: "
                     f"{ckpt.all_steps()}); rerun training to select again")
  return step


class Best:
  """The selection state of one run; `Best.of(config, workdir, ckpt)` is None when config.select_best is ''."""

  def __init__(self, metric: str, mode: str, workdir: str, ckpt: Checkpointer):
    self.metric, self.mode, self.workdir, self.ckpt = metric, mode, workdir, ckpt
    self.key = metric[len("eval/"):] if metric.startswith("eval/") else metric
    record = read(workdir)
    # A record of another metric or mode (the config changed) is not continued.
    self.record = record if record and record.get("metric") == metric and record.get("mode") == mode else None
    if self.record is not None:
      ckpt.keep_step(self.record["step"])

  @classmethod
  def of(cls, config, workdir: str, ckpt: Checkpointer) -> "Best | None":
    metric = config.get("select_best", "") or ""
    return cls(metric, config.get("select_best_mode", "max"), workdir, ckpt) if metric else None

  def evaluated(self) -> int | None:
    """The last step whose evaluation was compared, or None."""
    return None if self.record is None else self.record.get("evaluated")

  def improves(self, results: dict[str, float], step: int) -> bool:
    if self.key not in results:
      raise MmjaxError(f"config key select_best={self.metric!r}: the evaluation at step {step} gives no "
                       f"{self.key!r}; its results: {sorted(results)}")
    value = float(results[self.key])
    if not math.isfinite(value):
      return False
    if self.record is None:
      return True
    return value > self.record["value"] if self.mode == "max" else value < self.record["value"]

  def hold(self, step: int) -> None:
    """Keeps `step` (about to be checkpointed as the new best) alongside the recorded best until `commit`."""
    self.ckpt.keep_step(step)

  def commit(self, results: dict[str, float], step: int, improved: bool) -> None:
    """Records the evaluation at `step`: the new best (its checkpoint is waited for first; the previous best is no
    longer kept), or only that it was compared."""
    if improved:
      self.ckpt.keep_step(step)         # (already, when `hold` preceded its save)
      self.ckpt.wait()
      old = None if self.record is None else self.record["step"]
      self.record = {"step": int(step), "metric": self.metric, "value": float(results[self.key]), "mode": self.mode}
      if old is not None and old != step:
        self.ckpt.keep_step(old, keep=False)
    if self.record is None:
      return
    self.record["evaluated"] = int(step)
    if jax.process_index() == 0:
      atomic_write(os.path.join(self.workdir, FILE), json.dumps(self.record, indent=1))
