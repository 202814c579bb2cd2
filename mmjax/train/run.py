"""The one loop body: `train(task, guard)` runs a `Task` (mmjax/train/task.py) to config.total_steps, resuming
from its restored step. Both trainers call it: the supervised `mmjax.train.loop.Trainer` and mmjax.rl's
`PPOTrainer` (which imports it from here; nothing in mmjax.train imports mmjax.rl).

Per step: the task's input, its (dispatched) step, the metrics buffered with at most one step in flight; every
log_every steps (and at the last) the buffer is fetched and written (`flush`: the non-finite guard, steps-per-second
over the window's step time); every checkpoint_every steps (and at the last) a checkpoint; a stop request (SIGTERM /
SIGINT, agreed by all processes) saves and raises `Preempted`; evaluations every `task.eval_every` steps and at the
last, each compared for the best checkpoint when config.select_best is set (mmjax/train/best.py).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import jax

from mmjax.errors import MmjaxError
from mmjax.train.best import Best
from mmjax.train.metrics import MetricWriter, StepTimer
from mmjax.train.preemption import Preempted, PreemptionGuard, stop_requested
from mmjax.train.task import Task
from mmjax.train.workdir import atomic_write


def train(task: Task, guard: PreemptionGuard | None = None) -> dict[str, float]:
  """Trains `task` to config.total_steps (resuming), evaluating on the way; returns the last evaluation.

  `guard`: an already-entered PreemptionGuard (`mmjax.main` enters one before building the trainer, so that a
  signal during start-up or compilation also stops the run cleanly); by default one is entered here.
  """
  config, ckpt, unit = task.config, task.ckpt, task.unit
  if jax.process_index() == 0:
    atomic_write(os.path.join(task.workdir, "config.json"), json.dumps(json.loads(task.meta()["config"]), indent=1))
  writer = MetricWriter(task.workdir, total_steps=config.total_steps, enabled=jax.process_index() == 0,
                        progress_bar=config.progress_bar, initial_step=task.start_step)
  best = Best.of(config, task.workdir, ckpt)
  pending: list[tuple[int, dict[str, Any], Any]] = []
  last_saved = task.start_step if task.restored is not None else None
  state, results, timer = task.state, {}, StepTimer()

  def save(done: int) -> None:
    ckpt.save(done, state, task.input_state(done), task.meta())

  def evaluate(done: int) -> dict[str, float]:
    """The task's evaluation at `done`, compared for the best checkpoint (saving `done` when it is the best)."""
    nonlocal last_saved
    with timer.excluded():              # steps_per_s counts the steps' time, not the evaluation's
      out = task.eval_state(state, done, writer)
    if best is not None:
      improved = best.improves(out, done)
      if improved and last_saved != done:
        best.hold(done)
        flush(pending, writer, task, last_saved, timer)   # never checkpoint a NaN state
        with timer.excluded():
          save(done)
        last_saved = done
      best.commit(out, done, improved)
    return out

  if task.start_step >= config.total_steps:
    if jax.process_index() == 0:
      print(f"mmjax: {task.workdir} already finished {task.start_step} {unit}s (total_steps="
            f"{config.total_steps}); evaluating the last checkpoint", flush=True)
    results = evaluate(task.start_step)
  elif (best is not None and task.restored is not None and task.eval_every
        and task.start_step % task.eval_every == 0
        and (best.evaluated() is None or best.evaluated() < task.start_step)):
    results = evaluate(task.start_step)   # checkpointed, then stopped before its evaluation was compared
  # A SIGTERM/SIGINT stops the run at the next step boundary with a checkpoint (see preemption.py); with
  # several processes, all of them stop after the same step (stop_requested, every preemption_check_every steps).
  # Under the task's context (the supervised run's mesh, so that objectives with explicit collectives (shard_map)
  # see its axes).
  with (contextlib.nullcontext(guard) if guard is not None else PreemptionGuard()) as guard, task.context():
    for step in range(task.start_step, config.total_steps):
      inputs, aux = task.next_input(step, last_saved)
      state, metrics = task.train_step(state, inputs)
      pending.append((step + 1, metrics, aux))
      if len(pending) >= 2:
        # At most one step in flight: the host prepares input k+1 while the device runs step k, but never runs
        # further ahead, so a stop signal is acted on within about one step (async dispatch could otherwise
        # queue log_every steps, and the signal would wait for all of them: beyond a preemption grace period).
        jax.block_until_ready(pending[-2][1]["loss"])
      done = step + 1
      writer.update_progress(done)
      last = done == config.total_steps
      if done % config.log_every == 0 or last:
        flush(pending, writer, task, last_saved, timer)
      if done % config.checkpoint_every == 0 or last:
        flush(pending, writer, task, last_saved, timer)
        with timer.excluded():            # steps_per_s counts the steps' time, not the checkpoint's
          save(done)
        last_saved = done
      if stop_requested(guard, done, config.preemption_check_every):
        task.state = state
        # Stops at step `done` on request: flushes metrics, saves (unless just saved), commits, raises Preempted.
        flush(pending, writer, task, last_saved, timer)  # the non-finite guard applies: never checkpoint a NaN state
        if last_saved != done:
          save(done)
        ckpt.close()  # waits until the checkpoint is committed
        writer.close()
        raise Preempted(f"preempted by {guard.signal_name} at {unit} {done}; checkpoint saved to "
                        f"{ckpt.directory}/{done}; rerun the same command to resume", step=done,
                        signal_name=guard.signal_name or "SIGTERM")
      if (task.eval_every and done % task.eval_every == 0) or last:
        results = evaluate(done)
  ckpt.close()
  writer.close()
  task.state = state
  return results


def flush(pending: list, writer: MetricWriter, task: Task, last_saved: int | None, timer: StepTimer) -> None:
  """Fetches buffered step metrics (one host sync), stops on the first non-finite step, writes the rest with the
  task's rate fields over the window's step time (`timer.lap()`: checkpoint and eval time taken out)."""
  if not pending:
    return
  fetched = jax.device_get([m for _, m, _ in pending])
  elapsed = timer.lap()                     # the window's steps are done (their metrics fetched)
  for (step, _, _), m in zip(pending, fetched):
    if not m["finite"]:
      task.ckpt.wait()
      where = (f"the last good checkpoint is step {last_saved} in {task.ckpt.directory}" if last_saved
               else "no checkpoint was written")
      raise MmjaxError(task.nonfinite_message(step, m, where))
  n = len(pending)
  for (step, _, aux), m in zip(pending, fetched):
    row = {k: float(v) for k, v in m.items() if k != "finite"}
    row.update(task.row(step, aux))
    if step == pending[-1][0]:
      row.update(task.rate(n, elapsed))
    writer.write(step, row, prefix="train")
  writer.update_progress(pending[-1][0], task.progress(fetched[-1]))
  pending.clear()
