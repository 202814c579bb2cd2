"""mmjax vs open_clip: the same CLIP train step (the anchor's model, float32, AdamW every step), one after the other.

  python benchmarks/vs_open_clip.py [--openclip_python .venv-openclip/bin/python] [--batch 64] [--steps 20]
                                    [--rounds 2]

Runs ../shared/bench/openclip_anchor.py with the open_clip environment (see ../shared/bench/README.md for how to
create `.venv-openclip`) and benchmarks/clip_step.py with this one, alternately for `--rounds` rounds (never at the
same time: the machine has 2 cores), and prints one JSON line: both samples/s (best round and all rounds),
ratio = mmjax / open_clip of the best rounds, mmjax's MFU against the f32 2048^2 matmul peak measured in its run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHOR = os.path.join(os.path.dirname(ROOT), "shared", "bench", "openclip_anchor.py")


def last_json(cmd: list[str]) -> dict:
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  if proc.returncode:
    sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
  return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--openclip_python", default=os.path.join(ROOT, ".venv-openclip", "bin", "python"))
  ap.add_argument("--anchor", default=ANCHOR)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--rounds", type=int, default=2)
  args = ap.parse_args()
  for path, what in ((args.openclip_python, "the open_clip python (see ../shared/bench/README.md)"),
                     (args.anchor, "the anchor script")):
    if not os.path.exists(path):
      sys.exit(f"{path} not found: {what}")
  common = ["--batch", str(args.batch), "--steps", str(args.steps)]
  oc_runs, mm_runs = [], []
  for _ in range(args.rounds):
    oc_runs.append(last_json([args.openclip_python, args.anchor, *common]))
    mm_runs.append(last_json([sys.executable, os.path.join(HERE, "clip_step.py"), *common]))
  oc = max(oc_runs, key=lambda r: r["samples_per_s"])
  mm = max(mm_runs, key=lambda r: r["samples_per_s"])
  print(json.dumps({
      "benchmark": "vs_open_clip", "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
      "open_clip_samples_per_s": oc["samples_per_s"], "mmjax_samples_per_s": mm["samples_per_s"],
      "ratio": round(mm["samples_per_s"] / oc["samples_per_s"], 3), "goal_ratio": 1.15,
      "open_clip_step_ms_median": oc.get("step_ms_median"), "mmjax_step_ms_median": mm.get("step_ms_median"),
      "mmjax_mfu_vs_matmul_peak": mm.get("mfu"), "goal_mfu": 0.65,
      "open_clip_all": [r["samples_per_s"] for r in oc_runs], "mmjax_all": [r["samples_per_s"] for r in mm_runs],
      "params": mm.get("params"), "open_clip_params": oc.get("params"),
      "torch": oc.get("torch"), "jax": mm.get("jax"), "platform": platform.platform(), "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
  main()
