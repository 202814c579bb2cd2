"""benchmarks/vs_open_clip_data.py at --tiny sizes: the mmjax and bare-decode sides always; open_clip's
get_wds_dataset side where a python with torch, open_clip_train, webdataset and braceexpand is found
($MMJAX_OPENCLIP_PYTHON, .venv-openclip/bin/python, or this python), else skipped saying why."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "vs_open_clip_data.py")
OPEN_CLIP_MODULES = ("torch", "open_clip", "open_clip_train.data", "webdataset", "braceexpand", "pandas")


def run_tiny(*extra: str) -> list[dict]:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
  proc = subprocess.run([sys.executable, SCRIPT, "--tiny", *extra], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def open_clip_python() -> tuple[str | None, str]:
  candidates = [os.environ.get("MMJAX_OPENCLIP_PYTHON", ""), os.path.join(ROOT, ".venv-openclip", "bin", "python"),
                sys.executable]
  check = "; ".join(f"import {m}" for m in OPEN_CLIP_MODULES)
  for python in [c for c in candidates if c and os.path.exists(c)]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if subprocess.run([python, "-c", check], capture_output=True, env=env, timeout=120).returncode == 0:
      return python, ""
  return None, (f"no python with {', '.join(OPEN_CLIP_MODULES)} (open_clip_torch[training]) among "
                f"$MMJAX_OPENCLIP_PYTHON, .venv-openclip/bin/python and {sys.executable}")


def test_mmjax_and_decode_sides_tiny():
  lines = run_tiny("--sides", "decode,mmjax", "--workers", "1")
  runs, summary = lines[:-1], lines[-1]
  assert [(r["side"], r["workers"]) for r in runs] == [("decode", 1), ("mmjax", 1)]
  mm = runs[1]
  assert mm["image"] == [8, 64, 64, 3] and mm["image_dtype"] == "float32" and mm["tokens"] == [8, 77]
  assert mm["images"] == 8 * 3 and all(r["images_per_s"] > 0 for r in runs)
  assert summary["summary"] and summary["ratio_mmjax_over_decode_w1"] > 0
  assert "ratio_mmjax_over_open_clip_w1" not in summary


@pytest.mark.slow
def test_open_clip_side_tiny():
  python, why = open_clip_python()
  if python is None:
    pytest.skip(why)
  lines = run_tiny("--sides", "open_clip,mmjax", "--workers", "1", "--openclip_python", python)
  oc = lines[0]
  assert oc["side"] == "open_clip" and oc["image"] == [8, 3, 64, 64] and oc["tokens"] == [8, 77]
  assert "RandomResizedCrop(size=(64, 64), scale=(0.9, 1.0)" in oc["preprocess"]
  assert lines[-1]["ratio_mmjax_over_open_clip_w1"] > 0


def test_bad_sides_are_refused():
  proc = subprocess.run([sys.executable, SCRIPT, "--tiny", "--sides", "decode,bogus"], capture_output=True,
                        text=True, cwd=ROOT, timeout=60)
  assert proc.returncode != 0 and "unknown ['bogus']" in proc.stderr
