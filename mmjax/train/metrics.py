"""One metric writer, three sinks: `workdir/metrics.jsonl` (durable, flushed every write), TensorBoard
(`workdir/tb`) and a tqdm progress bar on stderr. Only process 0 should write: pass `enabled=False` elsewhere.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
import tqdm

from mmjax.errors import MmjaxError

JSONL_NAME = "metrics.jsonl"


class StepTimer:
  """The wall time of the steps of one logging window, without the time spent inside it on other work
  (checkpoints, evaluations: `with timer.excluded(): ...`), so that `steps_per_s = n / timer.lap()` measures steps.

  `lap()` returns the window's step time and starts the next window. `clock`: seconds (time.time; fakes in tests).
  """

  def __init__(self, clock: Callable[[], float] = time.time):
    self._clock = clock
    self.start = clock()

  @contextlib.contextmanager
  def excluded(self) -> Iterator[None]:
    t = self._clock()
    try:
      yield
    finally:
      self.start += self._clock() - t

  def lap(self) -> float:
    now = self._clock()
    elapsed, self.start = now - self.start, now
    return elapsed


_TB_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")


class MetricWriter:
  """Writes scalar metrics to JSONL + TensorBoard and drives a progress bar over `total_steps`.

  A JSONL line is `{"step": int, "time": unix seconds, "<prefix>/<name>": float, ...}`; the file is opened in append
  mode, so a resumed run continues it (steps after the restored checkpoint may then appear twice).
  With `enabled=False` every method does nothing and no file is created.
  """

  def __init__(self, workdir: str, *, total_steps: int, enabled: bool = True, progress_bar: bool = True,
               initial_step: int = 0):
    self.enabled = enabled
    self._warned: set[str] = set()
    self._closed = False
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, JSONL_NAME)
    cut = False
    if os.path.isfile(path) and os.path.getsize(path) > 0:   # a crash may have cut the last line short
      with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        cut = f.read(1) != b"\n"
    self._file = open(path, "a", encoding="utf-8")
    if cut:                                   # keep the cut line on its own so the next row stays readable
      self._file.write("\n")
    import tensorboardX                       # heavy (protobuf): only on the writing process
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
    self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, disable=not progress_bar, file=sys.stderr,
                          mininterval=1.0, dynamic_ncols=True, unit="step")

  def _scalars(self, metrics: Mapping[str, Any]) -> dict[str, float]:
    """float() of every scalar value; warns once per name about anything else and drops it."""
    out = {}
    for name, value in jax.device_get(dict(metrics)).items():   # one host transfer for all device scalars
      try:
        if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
          raise TypeError
        out[name] = float(value)
      except (TypeError, ValueError):
        if name not in self._warned:
          self._warned.add(name)
          warnings.warn(f"MetricWriter: metric {name!r} is not a scalar ({type(value).__name__}); not logged",
                        stacklevel=3)
    return out

  def _line(self, row: dict[str, Any]) -> None:
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> None:
    """Logs scalars as `<prefix>/<name>` at `step` to JSONL (one line) and TensorBoard."""
    if not self.enabled:
      return
    step = int(step)
    scalars = {f"{prefix}/{k}" if prefix else k: v for k, v in self._scalars(metrics).items()}
    self._line({"step": step, "time": time.time(), **scalars})
    for tag, value in scalars.items():
      self._tb.add_scalar(_TB_UNSAFE.sub("_", tag), value, step)  # TensorBoard tags allow [A-Za-z0-9_./-]

  def write_text(self, step: int, name: str, text: str) -> None:
    """Logs a string (e.g. the config) to TensorBoard's text tab and as `{"step", "time", name: text}` in JSONL."""
    if not self.enabled:
      return
    self._line({"step": int(step), "time": time.time(), name: str(text)})
    self._tb.add_text(name, str(text), int(step))

  def update_progress(self, step: int, metrics_for_postfix: Mapping[str, Any] | None = None) -> None:
    """Moves the bar to `step`; shows the given scalars (e.g. loss, lr) after it."""
    if not self.enabled or self._bar.disable:
      return
    if step > self._bar.n:
      self._bar.update(int(step) - self._bar.n)
    if metrics_for_postfix:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in self._scalars(metrics_for_postfix).items()}, refresh=False)

  def write_summary(self, metrics: Mapping[str, Any], prefix: str = "eval") -> None:
    """Prints `prefix` and a two-column table of the scalars to stdout (through tqdm, so the bar stays intact)."""
    if not self.enabled:
      return
    scalars = self._scalars(metrics)
    width = max((len(k) for k in scalars), default=0)
    lines = [f"{prefix}:"] + [f"  {k:<{width}}  {v:10.4f}" for k, v in sorted(scalars.items())]
    tqdm.tqdm.write("\n".join(lines), file=sys.stdout)

  def close(self) -> None:
    if not self.enabled or self._closed:
      return
    self._closed = True
    self._bar.close()
    self._tb.close()
    self._file.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The rows of a metrics JSONL (`path` is the file or the workdir holding it), in file order.

  A cut-off last line (a crash mid-write, or a writer still running) is skipped silently; other unreadable lines
  are skipped with a warning.
  """
  if os.path.isdir(path):
    path = os.path.join(path, JSONL_NAME)
  if not os.path.isfile(path):
    raise MmjaxError(f"no metrics file at {path}")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  rows, bad = [], 0
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      bad += i != len(lines) - 1
  if bad:
    warnings.warn(f"read_metrics: skipped {bad} unreadable line(s) in {path}", stacklevel=2)
  return rows
