"""Graceful preemption: SIGTERM / SIGINT (what TPU VMs, SLURM and Ctrl-C send) stop a run at a step boundary.

The first signal only records that a stop was requested; the training loop checks `guard.requested` after each
step, saves a checkpoint with the data-iterator state, waits for it to commit and raises `Preempted`, which
`mmjax.main` turns into exit status `EXIT_PREEMPTED` (75, EX_TEMPFAIL: a scheduler may requeue the job; rerunning
the same command resumes). A second signal exits at once with `EXIT_FORCED`: orbax commits a checkpoint by an
atomic rename, so a forced exit leaves at worst an uncommitted temporary directory and the previous checkpoint.

Several processes: every `config.preemption_check_every` steps (the same steps on every process) the trainers
all-gather each process's flag (`stop_requested`), so a signal that reaches any one process (a preempted host)
stops all of them after the same step, and they save one consistent checkpoint (a peer's stop is recorded with
`request_from_peer`). Between those steps nothing blocks on the other hosts; a signal waits at most
`preemption_check_every - 1` steps, so choose it so that this many steps take well under the grace period.
One process checks its own flag after every step (no collective).
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from mmjax.errors import MmjaxError

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"; a scheduler can requeue the job
EXIT_FORCED = 130    # 128 + SIGINT: the conventional status of an interrupted process

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _say(line: str) -> None:
  """Writes one line to stderr without Python's buffered io (a handler may interrupt a buffered write)."""
  try:
    os.write(2, (line + "\n").encode())
  except OSError:
    pass


def stop_requested(guard: "PreemptionGuard", step: int, every: int = 1) -> bool:
  """Whether every process stops after `step` (steps counted alike on all processes). One process: its own flag,
  each step. Several: at steps divisible by `every` only, one blocking all-gather of the flags (a stop anywhere is
  a stop everywhere); False at the other steps, where no process waits for another."""
  import jax
  if jax.process_count() == 1:
    return guard.requested
  if every < 1:
    raise MmjaxError(f"config key preemption_check_every={every} must be >= 1")
  if step % every:
    return False
  import numpy as np
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.asarray([int(guard.requested)], np.int32))
  if flags.any() and not guard.requested:
    guard.request_from_peer()
  return bool(flags.any())


class Preempted(MmjaxError):
  """The run stopped on request (SIGTERM/SIGINT) after saving a checkpoint of `step`; rerunning resumes it."""

  def __init__(self, message: str, step: int, signal_name: str = "SIGTERM"):
    super().__init__(message)
    self.step = step
    self.signal_name = signal_name


class PreemptionGuard:
  """Context manager: while active, SIGTERM/SIGINT set `requested` instead of killing the process.

    with PreemptionGuard() as guard:
      for step in ...:
        ...
        if guard.requested:
          save(); raise Preempted(...)

  A second signal calls `os._exit(EXIT_FORCED)` at once. Handlers can only be installed from the main thread;
  elsewhere the guard is inert (`requested` stays False). The previous handlers are restored on exit.
  """

  def __init__(self, signals: tuple[int, ...] = SIGNALS):
    self.signals = tuple(signals)
    self.signal_name: str | None = None
    self._count = 0
    self._peer = False
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    """Whether a stop signal arrived (here, or at another process: `request_from_peer`) since entering."""
    return self._count > 0 or self._peer

  def request_from_peer(self) -> None:
    """Another process got a stop signal: stop here too (a later signal here still forces an exit)."""
    self._peer = True
    self.signal_name = self.signal_name or "a stop signal on another process"

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    self._count += 1
    if self._count == 1:
      self.signal_name = signal.Signals(signum).name
      _say(f"mmjax: got {self.signal_name}; stopping after this step and saving a checkpoint "
           f"(send it again to exit at once)")
    else:
      _say(f"mmjax: got {signal.Signals(signum).name} again; exiting now without saving")
      os._exit(EXIT_FORCED)

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
