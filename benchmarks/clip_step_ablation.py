"""What each CPU change gained on the open_clip anchor's CLIP train step, measured side by side.

  python benchmarks/clip_step_ablation.py [--rounds 8] [--steps 3] [--batch 64]

Two processes, one per malloc (glibc's, then tcmalloc/jemalloc as `mmjax.main` picks it: mmjax/allocator.py).
Each compiles the step for every code variant below and times them alternately (`--rounds` rounds of `--steps`
steps each), so that machine noise falls on all variants alike:
  base       the step as of 2026-11-30: GELU through erfc (jax.nn.gelu), the two towers free to run concurrently,
             nn.Dense on [B, T, w], q/k/v split by rearrange + unpacking (autodiff's pad-and-sum gradient),
             c_proj's kernel gradient as XLA's transposed-operand dot
  +erf       GELU in its erf form (mmjax.layers.mlp.gelu_erf, torch's formula)
  +ordered   + the text tower ordered after the image tower (the optimization_barrier in CLIP.__call__)
  +2d        + attention and MLP Dense layers applied to [B*T, w] (mlp.dense_2d: no transposed copy of dy before
             each kernel-gradient dot)
  +split     + mmjax.layers.attention.split_heads (one transpose for the q/k/v gradients)
  +wide      + Mlp.c_proj's kernel gradient from a materialised x^T (mlp.wide_input_dot_general): the default now
  +pooled    + last_block_pooled_only on both towers: less work, same loss and gradients; reported on its
             own line, never as the open_clip ratio
The variants are made by patching those functions while the step is traced (for base..+ordered, a
stand-in for flax's lax reshapes nn.Dense's 2-D input back to [B, T, w]). Prints one JSON line per
(malloc, variant), then one summary line with each median step time relative to base under glibc.
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

VARIANTS = ("base", "+erf", "+ordered", "+2d", "+split", "+wide", "+pooled")


class _Dense3D:
  """Stands in for flax.linen.linear's `lax`: nn.Dense's product on [B, T, w] instead of [B*T, w]."""

  def __init__(self, batch: int):
    self.batch = batch

  def __getattr__(self, name):
    import jax
    return getattr(jax.lax, name)

  def dot_general(self, lhs, rhs, dims, precision=None, preferred_element_type=None):
    import jax
    kw = dict(precision=precision, preferred_element_type=preferred_element_type)
    if lhs.ndim == 2 and lhs.shape[0] % self.batch == 0 and tuple(map(tuple, dims[0])) == ((1,), (0,)):
      y = jax.lax.dot_general(lhs.reshape(self.batch, -1, lhs.shape[1]), rhs, (((2,), (0,)), ((), ())), **kw)
      return y.reshape(lhs.shape[0], rhs.shape[1])
    return jax.lax.dot_general(lhs, rhs, dims, **kw)


def child(args) -> None:
  import einops
  import flax.linen.linear as flax_linear
  import jax
  import ml_collections

  import mmjax.layers.attention as attention
  import mmjax.layers.mlp as mlp
  from clip_step import MODEL, make_step
  from mmjax.allocator import active_allocator

  saved = (mlp.gelu_erf, jax.lax.optimization_barrier, flax_linear.lax, attention.split_heads,
           mlp.wide_input_dot_general)
  erf_gelu, barrier, flax_lax, split_heads, wide = saved
  plain_split = lambda x, parts, h: tuple(einops.rearrange(x, "b t (p h d) -> p b h t d", p=parts, h=h))
  b = args.batch
  runs = {}
  for variant in VARIANTS:
    at = VARIANTS.index(variant)
    cfg = ml_collections.ConfigDict(dict(MODEL, dtype="float32", remat="none"))
    if variant == "+pooled":
      cfg.vision.last_block_pooled_only = cfg.text.last_block_pooled_only = True
    step, state, batch = make_step(cfg, b, total_steps=10 ** 6)
    mlp.gelu_erf = erf_gelu if at >= 1 else (lambda x: jax.nn.gelu(x, approximate=False))
    jax.lax.optimization_barrier = barrier if at >= 2 else (lambda x: x)
    flax_linear.lax = flax_lax if at >= 3 else _Dense3D(b)
    attention.split_heads = split_heads if at >= 4 else plain_split
    mlp.wide_input_dot_general = wide if at >= 5 else None
    try:
      step = step.lower(state, batch).compile()   # traced and compiled under the patches
    finally:
      (mlp.gelu_erf, jax.lax.optimization_barrier, flax_linear.lax, attention.split_heads,
       mlp.wide_input_dot_general) = saved
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    runs[variant] = [step, state, []]
  for _ in range(args.rounds):
    for variant in VARIANTS:
      step, state, times = runs[variant]
      for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
      runs[variant][1] = state
  for variant in VARIANTS:
    times = sorted(runs[variant][2])
    med = times[len(times) // 2]
    print(json.dumps({"allocator": active_allocator(), "variant": variant, "steps_timed": len(times),
                      "step_ms_median": round(1000 * med, 1), "step_ms_p25": round(1000 * times[len(times) // 4], 1),
                      "samples_per_s_median": round(b / med, 2)}), flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=8)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child is not None:
    from mmjax.allocator import reexec_with_allocator
    reexec_with_allocator(args.child)
    child(args)
    return
  rows = []
  for alloc in ("system", "auto"):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", alloc, "--rounds", str(args.rounds),
           "--steps", str(args.steps), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith("{"):
        print(line, flush=True)
        rows.append(json.loads(line))
  base = next(r["step_ms_median"] for r in rows if r["allocator"] == "system" and r["variant"] == "base")
  print(json.dumps({"benchmark": "clip_step_ablation", "relative_to_glibc_base": {
      f"{'glibc' if r['allocator'] == 'system' else os.path.basename(r['allocator'])} {r['variant']}":
      round(r["step_ms_median"] / base, 3) for r in rows}}))


if __name__ == "__main__":
  main()
