"""Bad input in your own data (webdataset, CSV, image-folder and array_record sources): skip, count, or stop.

`data.skip_bad` (base config default None, "the data set decides"): the user-data sources skip a bad example (an
image that does not decode or cannot be read, a row or sample without a caption, a damaged shard) and count it;
with skip_bad=False the first one stops the run with one line naming the file and row / shard and member. The
built-in TFDS builders (flickr8k, avmnist, mosi, cifar10_test, cifar100) read None as False: their prepare step
builds a fixed, published split once, and a silently smaller split would be cached and change every number
computed on it (`mmjax-prepare NAME --skip_bad` opts in, and reports the count).

`data.max_bad_fraction` (default 0.01): a run stops with a clear message when more than this fraction of the
examples it has read are bad (counted from `MIN_SEEN` examples on, so one bad image early on never stops a run).

Counting. The webdataset stream counts in its iterator state (mmjax/data/webdataset.py). A random-access source
that sets `counts_bad = True` (csv_source, image_folder, array_record_source) serves, in place of a bad example,
the next readable one (image_files.first_readable) with `_bad` = the number of bad ones it passed over; the
pipeline carries `_bad` through the transforms into the batch, and `CountingIterator` takes it out again, adds it
up and checks the fraction. Its state {kind: "counted", seen, bad, dropped, inner: the grain iterator's state} is
checkpointed with the rest, so a resumed run continues the counts. Rows a CSV source drops when it reads the file
(no path or no caption) are `dropped`, checked against the fraction once, at read time. The training loop logs
`data_seen`, `data_bad` (and `data_dropped` when non-zero) as train/data_* in metrics.jsonl and prints them at the
end (pipeline.data_counters).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mmjax.errors import MmjaxError

MIN_SEEN = 100                  # max_bad_fraction applies from this many examples seen on (as webdataset.MIN_SEEN)
DEFAULT_MAX_BAD_FRACTION = 0.01
KIND = "counted"                # the CountingIterator state's "kind"
BAD_KEY = "_bad"                # per example: bad examples passed over to serve it


def _get(data_cfg, key: str):
  return data_cfg.get(key, None) if hasattr(data_cfg, "get") else None


def skip_bad(data_cfg, default: bool = True) -> bool:
  """`data.skip_bad`, or `default` (the data set's own) when it is unset (None): True for the user-data sources."""
  value = _get(data_cfg, "skip_bad")
  return default if value is None else bool(value)


def max_bad_fraction(data_cfg) -> float:
  value = _get(data_cfg, "max_bad_fraction")
  frac = DEFAULT_MAX_BAD_FRACTION if value is None else float(value)
  if not 0 <= frac <= 1:
    raise MmjaxError(f"data.max_bad_fraction={frac} must be in [0, 1] (0.01: stop when more than 1 % of the "
                     f"examples read are bad)")
  return frac


def too_many(bad: int, seen: int, frac: float) -> bool:
  return bad > frac * max(seen, MIN_SEEN)


def check_dropped(dropped: int, total: int, frac: float, what: str) -> None:
  """Rows dropped when a listing was read (e.g. CSV rows without a caption) against data.max_bad_fraction."""
  if dropped and dropped > frac * max(total, MIN_SEEN):
    raise MmjaxError(f"{what}: {dropped} of its {total} rows were dropped (no path or no caption), more than "
                     f"data.max_bad_fraction={frac}; fix the file or raise data.max_bad_fraction")


class CountingIterator:
  """Wraps a batch iterator whose batches carry `_bad` int [b]: removes it, counts examples read (`seen`: the b
  served plus the bad ones passed over) and bad ones, and stops the run past `max_bad_fraction`. Resumes exactly
  (`get_state` / `set_state`; a state saved before counting existed is the inner state alone: counts start at 0)."""

  def __init__(self, inner, max_bad_fraction: float, what: str, dropped: int = 0):
    self.inner, self.frac, self.what, self.dropped = inner, float(max_bad_fraction), what, int(dropped)
    self.seen = self.bad = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self.inner)
    bad = np.asarray(batch.pop(BAD_KEY))
    n_bad = int(bad.sum())
    self.seen += int(bad.size) + n_bad
    self.bad += n_bad
    if n_bad and too_many(self.bad, self.seen, self.frac):
      raise MmjaxError(f"{self.what}: {self.bad} of the {self.seen} examples read are bad, more than "
                       f"data.max_bad_fraction={self.frac} (each is logged as 'mmjax: skipping a bad image: ...'); "
                       f"fix the data or raise data.max_bad_fraction")
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"kind": KIND, "seen": self.seen, "bad": self.bad, "dropped": self.dropped,
            "inner": self.inner.get_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    if isinstance(state, dict) and state.get("kind") == KIND:
      self.seen, self.bad = int(state["seen"]), int(state["bad"])
      state = state["inner"]
    self.inner.set_state(state)
