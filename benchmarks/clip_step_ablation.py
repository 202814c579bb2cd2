"""What each CPU code path (mmjax/cpu_tuning.py) gains on the open_clip anchor's CLIP train step: paired A/B.

  python benchmarks/clip_step_ablation.py [--rounds 8] [--steps 3] [--batch 64] [--mallocs auto]

One process per malloc (`auto`: tcmalloc/jemalloc as `mmjax.main` picks it, mmjax/allocator.py; `system`: glibc's).
Each compiles the step once per `model.cpu_tuning` setting below and times them alternately, `--rounds` rounds of
`--steps` steps each, so that machine noise falls on all settings alike:
  on          every feature (what "auto" gives on CPU)
  -<feature>  every feature but one (leave-one-out: the feature's gain is this setting's time over "on"; with a
              single feature this is "off")
  off         none (the code an accelerator compiles)
Paired: within each round, each setting's median step is divided by that round's "on"; the ratio of a setting is
the median of its per-round ratios, with a 95 % bootstrap interval (2,000 resamples of the rounds). A feature
whose interval for "-<feature>" contains 1.0 gains nothing measurable here ("within noise"). Prints one JSON
line per (malloc, setting), then a summary line per malloc.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def settings() -> list[tuple[str, str]]:
  """[(label, model.cpu_tuning)]: on, each leave-one-out, off."""
  from mmjax.cpu_tuning import FEATURES
  out = [("on", "on")]
  if len(FEATURES) > 1:
    out += [(f"-{f}", ",".join(g for g in FEATURES if g != f)) for f in FEATURES]
  return out + [("off", "off")]


def paired(times: dict[str, list[list[float]]], base: str = "on", seed: int = 0) -> dict[str, dict]:
  """{label: per-round step times} -> {label: {"ratio": median over rounds of (round median / base's round
  median), "ci95": [lo, hi] bootstrap over rounds}}."""
  import numpy as np
  med = {k: np.array([np.median(r) for r in v]) for k, v in times.items()}
  rng = np.random.default_rng(seed)
  out = {}
  for k, m in med.items():
    r = m / med[base]
    boot = np.median(r[rng.integers(0, len(r), (2000, len(r)))], axis=1)
    out[k] = {"ratio": round(float(np.median(r)), 4),
              "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]}
  return out


def child(args) -> None:
  import jax
  import ml_collections

  from clip_step import MODEL, make_step
  from mmjax.allocator import active_allocator

  b = args.batch
  runs = {}
  for label, setting in settings():
    cfg = ml_collections.ConfigDict(dict(MODEL, dtype="float32", remat="none", cpu_tuning=setting))
    step, state, batch = make_step(cfg, b, total_steps=10 ** 6)
    step = step.lower(state, batch).compile()
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    runs[label] = [step, state, batch, []]
  for _ in range(args.rounds):
    for label in runs:
      step, state, batch, rounds = runs[label]
      times = []
      for _ in range(args.steps):
        t = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
      runs[label][1] = state
      rounds.append(times)
  stats = paired({k: v[3] for k, v in runs.items()})
  alloc = active_allocator()
  for (label, setting) in settings():
    flat = sorted(t for r in runs[label][3] for t in r)
    med = flat[len(flat) // 2]
    print(json.dumps({"allocator": alloc, "setting": label, "cpu_tuning": setting, "steps_timed": len(flat),
                      "step_ms_median": round(1000 * med, 1), "samples_per_s_median": round(b / med, 2),
                      "vs_on": stats[label]["ratio"], "vs_on_ci95": stats[label]["ci95"]}), flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=8)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--mallocs", default="auto", help="comma-separated: auto, system")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  from mmjax.cpu_tuning import FEATURES
  if args.child is not None:
    from mmjax.allocator import reexec_with_allocator
    reexec_with_allocator(args.child)
    child(args)
    return
  for alloc in args.mallocs.split(","):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", alloc, "--rounds", str(args.rounds),
           "--steps", str(args.steps), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
      print(json.dumps(r), flush=True)
    off = next(r for r in rows if r["setting"] == "off")
    without = {r["setting"][1:]: r for r in rows if r["setting"].startswith("-")} or {FEATURES[0]: off}
    gains = {f: {"without_it_vs_on": r["vs_on"], "ci95": r["vs_on_ci95"],
                 "measurable": not (r["vs_on_ci95"][0] <= 1.0 <= r["vs_on_ci95"][1])} for f, r in without.items()}
    print(json.dumps({"benchmark": "clip_step_ablation", "allocator": rows[0]["allocator"],
                      "rounds": args.rounds, "steps": args.steps, "batch": args.batch,
                      "off_vs_on": off["vs_on"], "off_vs_on_ci95": off["vs_on_ci95"], "features": gains}))


if __name__ == "__main__":
  main()
