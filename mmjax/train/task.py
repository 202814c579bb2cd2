"""The `Task` a training loop body runs (`mmjax.train.run.train`): what differs between the supervised loop
(`mmjax.train.loop.Trainer`: a sharded data batch per step) and PPO (`mmjax.rl.trainer.PPOTrainer`: a rollout and
its updates per step, no data), behind a few hooks. Everything else -- at most one step in flight, the metric
windows with the non-finite guard and the steps-per-second timer, periodic and final checkpoints, preemption
(a checkpoint, then `Preempted`), evaluations, the "already finished" path and the optional best-checkpoint
selection (`config.select_best`, mmjax/train/best.py) -- is the loop body's, written once.

A task is built (its constructor initialises the state or restores it from `ckpt`) before the loop runs; the loop
reads its attributes, calls its hooks, and sets `task.state` to the latest state when it stops (end or preemption).
Both trainers are tasks themselves: their `train(guard)` prepares the step function (and the data iterator), then
calls `run.train(self, guard)`; `mmjax.train.arrays.ArrayTask` is one over in-memory arrays (report protocols).
"""
from __future__ import annotations

from typing import Any, ContextManager, Protocol, runtime_checkable

from mmjax.train.checkpoint import Checkpointer
from mmjax.train.metrics import MetricWriter


@runtime_checkable
class Task(Protocol):
  """The hooks of one training loop body (see the module docstring)."""

  config: Any            # total_steps, log_every, checkpoint_every, preemption_check_every, progress_bar[, select_best*]
  workdir: str
  ckpt: Checkpointer
  state: Any             # the train state (a pytree): restored or freshly initialised; the loop's result is put here
  start_step: int        # the restored step, else 0
  restored: Any          # the restored checkpoint (step, state, data_state, meta), or None for a fresh run
  unit: str              # what one step is called in messages: "step", "update"
  eval_every: int        # evaluate every this many steps (0: only at the end)

  def context(self) -> ContextManager:
    """Entered around the steps (with the preemption guard): the run's mesh, or a null context."""

  def next_input(self, step: int, last_saved: int | None) -> tuple[Any, Any]:
    """(input of step `step + 1`, aux): the global batch (and its fingerprint) or (None, None); `last_saved` names
    the checkpoint an input error can point to."""

  def train_step(self, state, inputs) -> tuple[Any, dict[str, Any]]:
    """One (jitted, dispatched, not awaited) step: (new state, device metrics with "loss" and "finite")."""

  def input_state(self, step: int) -> Any:
    """The JSON-able input state saved with the checkpoint of `step` (the data iterator's, env-step counts)."""

  def row(self, step: int, aux: Any) -> dict[str, float]:
    """Extra fields of the metrics.jsonl row of `step` (`aux` from `next_input`)."""

  def rate(self, n: int, elapsed: float) -> dict[str, float]:
    """Extra fields of a window's last row: `n` steps took `elapsed` seconds of step time."""

  def progress(self, metrics: dict[str, Any]) -> dict[str, float]:
    """The progress-bar fields from a window's last (fetched) metrics."""

  def nonfinite_message(self, step: int, metrics: dict[str, Any], where: str) -> str:
    """The error of a non-finite step; `where` names the last good checkpoint."""

  def eval_state(self, state, step: int, writer: MetricWriter) -> dict[str, float]:
    """Evaluates `state` at `step`, writing the results with `writer`; returns them."""

  def meta(self) -> dict[str, Any]:
    """The checkpoint metadata (config JSON under "config", tokenizer, ...)."""
