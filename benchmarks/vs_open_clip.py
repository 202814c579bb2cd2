"""mmjax vs open_clip: the same CLIP train step (the anchor's model, float32, AdamW every step), one after the other.

  python benchmarks/vs_open_clip.py [--openclip_python .venv-openclip/bin/python] [--batch 64] [--steps 20]
                                    [--rounds 2] [--allocator auto] [--open_clip_allocator system]
                                    [--extra="--last_block_pooled_only"]

Runs ../shared/bench/openclip_anchor.py with the open_clip environment (see ../shared/bench/README.md for how to
create `.venv-openclip`) and benchmarks/clip_step.py with this one, alternately for `--rounds` rounds (never at the
same time: the machine has 2 cores), and prints one JSON line: both samples/s (best round and all rounds),
ratio = mmjax / open_clip of the best rounds, mmjax's MFU against the f32 2048^2 matmul peak measured in its run.
--allocator is the malloc mmjax's step runs under (clip_step.py --allocator: by default tcmalloc or jemalloc when
installed, as `mmjax.main` does); --open_clip_allocator the one the anchor runs under (default "system": the
anchor exactly as shipped; "auto" or a path preloads the same library for a like-for-like check). Both are in the
JSON. --extra="..." (with "=") passes more flags to clip_step.py, e.g. a variant reported on its own line, never
as the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHOR = os.path.join(os.path.dirname(ROOT), "shared", "bench", "openclip_anchor.py")


def last_json(cmd: list[str], env: dict | None = None) -> dict:
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
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
  ap.add_argument("--allocator", default="auto", help="malloc for mmjax's step (clip_step.py --allocator)")
  ap.add_argument("--open_clip_allocator", default="system",
                  help="malloc for the anchor: system (as shipped), auto, tcmalloc, jemalloc or a path")
  ap.add_argument("--extra", default="", help="more flags for clip_step.py, one string")
  args = ap.parse_args()
  sys.path.insert(0, ROOT)
  from mmjax.allocator import find_allocator, preload_env
  oc_env, oc_alloc = None, "system"
  found = find_allocator(args.open_clip_allocator)
  if found is not None:
    oc_env, oc_alloc = preload_env(*found, os.environ), found[1]
  for path, what in ((args.openclip_python, "the open_clip python (see ../shared/bench/README.md)"),
                     (args.anchor, "the anchor script")):
    if not os.path.exists(path):
      sys.exit(f"{path} not found: {what}")
  common = ["--batch", str(args.batch), "--steps", str(args.steps)]
  oc_runs, mm_runs = [], []
  for _ in range(args.rounds):
    oc_runs.append(last_json([args.openclip_python, args.anchor, *common], env=oc_env))
    mm_runs.append(last_json([sys.executable, os.path.join(HERE, "clip_step.py"), *common,
                              "--allocator", args.allocator, *shlex.split(args.extra)]))
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
      "mmjax_allocator": mm.get("allocator"), "open_clip_allocator": oc_alloc, "mmjax_extra": args.extra,
      "torch": oc.get("torch"), "jax": mm.get("jax"), "platform": platform.platform(), "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
  main()
