"""Batched, jitted DTW throughput (pairs/s) against dtaidistance's C implementation, on the same data in one run.

  python benchmarks/dtw.py [--pairs 256 --length 128 --dim 20 --band -1 --repeats 10]

Data: `pairs` random pairs (x_k, y_k) of standard-normal sequences [length, dim] (seed 0). mmjax:
`jax.jit(dtw_distance)` on the whole batch [pairs, length, dim] in float32 (squared-Euclidean local cost, distance
only, no path), best of `repeats` timed calls after one compiling call. dtaidistance (2.5.1, `pip install
mmjax[bench]`): `dtw_ndim.distance_fast(x_k, y_k)` (C, float64) in a Python loop over the pairs, best of `repeats`
loops. dtaidistance returns sqrt(sum of squared distances along the path), mmjax the sum itself, so the check
compares mmjax's distance with dtaidistance's squared (`max_rel_diff`). band >= 0 is a Sakoe-Chiba band of that
radius (dtaidistance's window = band + 1). Prints one JSON line last. XLA uses every core, dtaidistance's
`distance_fast` one: run it on an idle machine (`loadavg_1min` in the line says how idle it was).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mmjax.alignment.dtw import dtw_distance  # noqa: E402


def best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--pairs", type=int, default=256)
  ap.add_argument("--length", type=int, default=128)
  ap.add_argument("--dim", type=int, default=20)
  ap.add_argument("--band", type=int, default=-1, help="Sakoe-Chiba radius; -1: none")
  ap.add_argument("--repeats", type=int, default=10)
  args = ap.parse_args()
  try:
    import dtaidistance
    from dtaidistance import dtw_ndim
  except ImportError:
    raise SystemExit("benchmarks/dtw.py needs dtaidistance: pip install 'dtaidistance==2.5.1' (or mmjax[bench])")

  band = None if args.band < 0 else args.band
  rng = np.random.default_rng(0)
  x = rng.standard_normal((args.pairs, args.length, args.dim))
  y = rng.standard_normal((args.pairs, args.length, args.dim))

  f = jax.jit(lambda a, b: dtw_distance(a, b, band=band))
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  t = time.perf_counter()
  ours = np.asarray(f(xj, yj).block_until_ready())
  compile_s = time.perf_counter() - t
  jax_s = best_time(lambda: f(xj, yj).block_until_ready(), args.repeats)

  window = None if band is None else band + 1
  kw = {} if window is None else {"window": window}
  xs = [np.ascontiguousarray(v) for v in x]
  ys = [np.ascontiguousarray(v) for v in y]
  theirs = np.array([dtw_ndim.distance_fast(a, b, **kw) for a, b in zip(xs, ys)])
  dtai_s = best_time(lambda: [dtw_ndim.distance_fast(a, b, **kw) for a, b in zip(xs, ys)], args.repeats)

  rel = np.abs(ours - theirs ** 2) / theirs ** 2
  mm, dt = args.pairs / jax_s, args.pairs / dtai_s
  print(json.dumps({
      "benchmark": "dtw", "pairs": args.pairs, "length": args.length, "dim": args.dim, "band": band,
      "jax": jax.__version__, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
      "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
      "dtaidistance": dtaidistance.__version__,
      "mmjax_pairs_per_s": round(mm, 1), "dtaidistance_pairs_per_s": round(dt, 1), "ratio": round(mm / dt, 3),
      "mmjax_ms": round(1000 * jax_s, 2), "dtaidistance_ms": round(1000 * dtai_s, 2),
      "mmjax_compile_s": round(compile_s, 2), "max_rel_diff": float(f"{rel.max():.3g}"),
      "distances_agree": bool(rel.max() < 1e-4)}))


if __name__ == "__main__":
  main()
