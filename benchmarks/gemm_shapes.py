"""The anchor CLIP step's f32 matmuls alone: XLA CPU (what mmjax's step compiles) vs torch (what open_clip runs).

  python benchmarks/gemm_shapes.py --openclip_python .venv-openclip/bin/python [--rounds 3 --reps 31 --batch 64]

Each matmul of the open_clip anchor's train step (../shared/bench/README.md: B 64, vision 65 tokens, text 32,
width 256, MLP 1024) in its three forms: forward x [M, K] @ w [K, N]; input gradient dy [M, N] @ w^T; kernel
gradient x^T @ dy, for M = 64 x 65 (vision) and 64 x 32 (text) rows and (K, N) of in_proj, out_proj, c_fc and
c_proj. One process per side and round, the sides alternated, each shape timed `--reps` times after warm-up; a
shape's rate is the median GFLOP/s of its reps, a side's the best round. Prints a JSON line per shape, then a
summary with the median over shapes of XLA / torch and the FLOP-weighted rate of each side (the matmul time of
one step if every matmul ran at that rate). mmjax runs under the malloc `mmjax.main` picks (mmjax/allocator.py).

This says where the step's time goes (benchmarks/README.md): the CLIP step is matmul-bound, so its ratio to
open_clip's (vs_open_clip.py) is bounded by how XLA's CPU dots compare with torch's (oneDNN / MKL) on this CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TOKENS = {"vision": 65, "text": 32}
LAYERS = {"in_proj": (256, 768), "out_proj": (256, 256), "c_fc": (256, 1024), "c_proj": (1024, 256)}
# form -> (operand shapes from (M, K, N), the product): the same for torch tensors and jax arrays (2-D `.T`).
FORMS = {"fwd": (lambda m, k, n: ((m, k), (k, n)), lambda a, b: a @ b),      # x @ w
         "dx": (lambda m, k, n: ((m, n), (k, n)), lambda a, b: a @ b.T),     # dy @ w^T
         "dw": (lambda m, k, n: ((m, k), (m, n)), lambda a, b: a.T @ b)}     # x^T @ dy


def shapes(batch: int = 64) -> list[tuple[str, int, int, int]]:
  """[(name, M, K, N)]: every (tower, layer, form), M = batch x tokens rows; each product is 2 M K N FLOPs."""
  return [(f"{tower}/{layer}/{form}", batch * t, k, n) for tower, t in TOKENS.items()
          for layer, (k, n) in LAYERS.items() for form in FORMS]


def _median_s(fn, reps: int) -> float:
  for _ in range(3):
    fn()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _torch_side():
  """-> (make an operand of a shape, a no-argument call of product(a, b))."""
  import torch
  torch.set_num_threads(os.cpu_count() or 1)

  def call(product, a, b):
    return lambda: product(a, b)
  return (lambda shape: torch.randn(*shape)), call


def _xla_side():
  import jax
  import jax.numpy as jnp

  def call(product, a, b):
    jitted = jax.jit(product)
    return lambda: jitted(a, b).block_until_ready()
  return (lambda shape: jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float32)), call


def child(side: str, reps: int, batch: int) -> None:
  """Times every shape on one side; prints {name: median GFLOP/s} as one JSON line."""
  operand, call = _torch_side() if side == "torch" else _xla_side()
  out = {}
  for name, m, k, n in shapes(batch):
    operand_shapes, product = FORMS[name.rsplit("/", 1)[1]]
    a, b = (operand(shape) for shape in operand_shapes(m, k, n))
    out[name] = 2 * m * k * n / _median_s(call(product, a, b), reps) / 1e9
  print(json.dumps(out))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--openclip_python", default=".venv-openclip/bin/python", help="a python with torch")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--reps", type=int, default=31)
  ap.add_argument("--batch", type=int, default=64, help="the step's batch (rows = batch x tokens); 1 to smoke-test")
  ap.add_argument("--child", choices=("xla", "torch"), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    if args.child == "xla":
      from mmjax.allocator import reexec_with_allocator
      reexec_with_allocator("auto")
    return child(args.child, args.reps, args.batch)
  if not os.path.exists(args.openclip_python):
    sys.exit(f"{args.openclip_python} not found: a python with torch (../shared/bench/README.md says how)")
  runs = {"xla": [], "torch": []}
  for _ in range(args.rounds):
    for side, py in (("torch", args.openclip_python), ("xla", sys.executable)):
      res = subprocess.run([py, os.path.abspath(__file__), "--child", side, "--reps", str(args.reps),
                            "--batch", str(args.batch)],
                           capture_output=True, text=True, check=True)
      runs[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
  best = {side: {name: max(r[name] for r in rs) for name in rs[0]} for side, rs in runs.items()}
  flops = {name: 2 * m * k * n for name, m, k, n in shapes(args.batch)}
  ratios = []
  for name in flops:
    ratios.append(best["xla"][name] / best["torch"][name])
    print(json.dumps({"shape": name, "flops": flops[name], "xla_gflops_per_s": round(best["xla"][name], 1),
                      "torch_gflops_per_s": round(best["torch"][name], 1), "ratio": round(ratios[-1], 3)}))
  weighted = {side: sum(flops.values()) / sum(f / best[side][n] for n, f in flops.items()) for side in best}
  print(json.dumps({"benchmark": "gemm_shapes", "batch": args.batch, "rounds": args.rounds, "reps": args.reps,
                    "median_ratio_xla_over_torch": round(statistics.median(ratios), 3),
                    "xla_weighted_gflops_per_s": round(weighted["xla"], 1),
                    "torch_weighted_gflops_per_s": round(weighted["torch"], 1),
                    "weighted_ratio": round(weighted["xla"] / weighted["torch"], 3),
                    "platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
  main()
