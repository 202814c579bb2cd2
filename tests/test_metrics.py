"""MetricWriter sinks (JSONL, TensorBoard, progress bar) and read_metrics."""
from __future__ import annotations

import json
import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.train.metrics import MetricWriter, read_metrics


def test_jsonl_rows(tmp_path):
  with MetricWriter(str(tmp_path), total_steps=10, progress_bar=False) as w:
    w.write(1, {"loss": jnp.float32(2.5), "lr": np.float64(1e-3), "acc": 1})
    w.write(2, {"top1": 50.0}, prefix="eval")
    w.write_text(2, "config", "a: 1")
  rows = read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 2]
  assert rows[0]["train/loss"] == 2.5 and rows[0]["train/lr"] == 1e-3 and rows[0]["train/acc"] == 1.0
  assert set(rows[0]) == {"step", "time", "train/loss", "train/lr", "train/acc"}
  assert rows[1]["eval/top1"] == 50.0 and rows[2]["config"] == "a: 1"
  assert all(abs(r["time"] - rows[0]["time"]) < 60 for r in rows)
  assert read_metrics(str(tmp_path)) == rows          # the workdir works too


def test_each_write_is_flushed_and_non_scalars_warn_once(tmp_path):
  w = MetricWriter(str(tmp_path), total_steps=10, progress_bar=False)
  with pytest.warns(UserWarning) as record:
    w.write(1, {"loss": 1.0, "hist": np.zeros(3), "name": "x"})
  assert sorted(str(r.message).split("'")[1] for r in record) == ["hist", "name"]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    w.write(2, {"loss": 2.0, "hist": np.zeros(3)})    # warned once per name only
  rows = read_metrics(str(tmp_path))                  # before close: already on disk
  assert [r["train/loss"] for r in rows] == [1.0, 2.0] and "train/hist" not in rows[0]
  w.close()
  w.close()                                           # idempotent


def test_append_on_reopen_and_truncated_line(tmp_path):
  with MetricWriter(str(tmp_path), total_steps=10, progress_bar=False) as w:
    w.write(1, {"loss": 1.0})
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 2, "train/lo')                 # crash mid-line
  assert [r["step"] for r in read_metrics(str(path))] == [1]
  with MetricWriter(str(tmp_path), total_steps=10, progress_bar=False, initial_step=2) as w:
    w.write(3, {"loss": 3.0})
  with pytest.warns(UserWarning, match="skipped 1"):
    rows = read_metrics(str(path))
  assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (3, 3.0)]


def test_disabled_writer_is_a_no_op(tmp_path):
  workdir = tmp_path / "run"
  with MetricWriter(str(workdir), total_steps=10, enabled=False) as w:
    w.write(1, {"loss": 1.0})
    w.write_text(1, "config", "x")
    w.update_progress(1, {"loss": 1.0})
    w.write_summary({"top1": 1.0})
  assert not workdir.exists()


def test_tensorboard_event_file(tmp_path):
  with MetricWriter(str(tmp_path), total_steps=10, progress_bar=False) as w:
    w.write(1, {"loss": 1.0})
  files = os.listdir(tmp_path / "tb")
  assert any(f.startswith("events.out.tfevents") for f in files), files


@pytest.mark.parametrize("progress_bar", [False, True])
def test_progress_and_summary(tmp_path, capsys, progress_bar):
  with MetricWriter(str(tmp_path), total_steps=5, progress_bar=progress_bar, initial_step=1) as w:
    for step in range(2, 6):
      w.update_progress(step, {"loss": jnp.float32(0.5), "lr": 1e-4} if step % 2 else None)
    w.write_summary({"zero_shot/shape": 91.25, "retrieval/mean_R": 40.0}, prefix="eval (step 5)")
  out = capsys.readouterr().out
  assert "eval (step 5):" in out and "zero_shot/shape" in out and "91.2500" in out
  assert not os.path.getsize(tmp_path / "metrics.jsonl")    # progress and summaries write no rows


def test_read_metrics_missing(tmp_path):
  with pytest.raises(MmjaxError, match="no metrics file"):
    read_metrics(str(tmp_path))
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
  assert read_metrics(str(tmp_path)) == [{"step": 1}]
