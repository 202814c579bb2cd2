"""benchmarks/gemm_shapes.py: its shapes are the anchor step's matmuls (closed form), and its XLA side runs."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "benchmarks", "gemm_shapes.py")


def load():
  spec = importlib.util.spec_from_file_location("gemm_shapes", SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_the_forward_shapes_are_one_block_of_each_tower_of_the_anchor():
  """Per block, the four Dense layers' forward FLOPs are (8 + 4 m) n w^2 (n = B x T rows, w = 256, m = 4;
  ../shared/bench/README.md's 24 n w^2), and each form (fwd, dx, dw) does the same FLOPs."""
  shapes = load().shapes()
  assert len(shapes) == 2 * 4 * 3
  for tower, tokens in (("vision", 65), ("text", 32)):
    n, w = 64 * tokens, 256
    for form in ("fwd", "dx", "dw"):
      flops = sum(2 * m * k * k2 for name, m, k, k2 in shapes if name.startswith(tower) and name.endswith(form))
      assert flops == 24 * n * w ** 2, (tower, form)


def test_the_xla_side_times_every_shape():
  """At batch 1 (65 and 32 rows): a rate for every shape."""
  proc = subprocess.run([sys.executable, SCRIPT, "--child", "xla", "--reps", "1", "--batch", "1"],
                        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(1), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rates = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(rates) == {name for name, *_ in load().shapes(1)}
  assert all(r > 0 for r in rates.values())
