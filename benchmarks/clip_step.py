"""CLIP train-step throughput and MFU for one fixed small config (the open_clip anchor's model), or ViT-B/16.

  python benchmarks/clip_step.py [--batch 64] [--steps 20] [--warmup 3]
  python benchmarks/clip_step.py --preset vit_b16 --dtype bfloat16 [--remat dots] --batch 256   (GPU/TPU)
  python benchmarks/clip_step.py --patch_dropout 0.5      (FLIP: the masked and the unmasked step, same process)

Presets: "anchor" (below), "vit_b32" (OpenCLIP's ViT-B-32: patch 32, else as B/16) and "vit_b16", OpenCLIP's ViT-B-16 (image 224, patch 16, width 768, 12 layers, 12 heads;
text 77 tokens, vocab 49408, width 512, 12 layers, 8 heads; embed 512; 149,620,737 parameters). --dtype sets the
compute dtype (parameters stay float32) and the dtype of the peak matmul; --remat the per-block remat policy;
--allocator the malloc the process re-executes itself with (default: tcmalloc or jemalloc when installed, as
`mmjax.main` does; "system" for glibc's), reported in the JSON.

Model: ViT image 64, patch 8, width 256, depth 4, 4 heads, MLP 4x; text context 32, vocab 1024, width 256, depth 4,
4 heads; embed 256 (6,787,073 parameters, as ../shared/bench/openclip_anchor.py); AdamW(1e-4, (0.9, 0.98), 1e-6,
wd 0.1); float32; random inputs made once. The step is mmjax's own jitted train step (the one the loop runs).
flops_per_step = 3 x forward matmul FLOPs (the anchor's formula); peak_gflops_per_s = an f32 2048^2 matmul measured
in the same run; mfu = gflops_per_s / peak_gflops_per_s. Prints one JSON line last.
--patch_dropout p (FLIP, Li et al. 2023) times the step with model.vision.patch_dropout = p and the unmasked step,
alternately for --rounds rounds in one process, and reports both samples/s (best round), their ratio and
the FLOPs of each (the masked step counts its shorter vision sequence).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmjax.allocator import active_allocator, reexec_with_allocator  # noqa: E402


def _allocator_arg() -> str:
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--allocator", default="auto")
  return pre.parse_known_args()[0].allocator


if __name__ == "__main__":
  reexec_with_allocator(_allocator_arg())  # before JAX starts: see mmjax/allocator.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from mmjax.models import build_model  # noqa: E402
from mmjax.models.clip import clip_flops_per_step  # noqa: E402
from mmjax.objectives import get_objective  # noqa: E402
from mmjax.train import optim  # noqa: E402
from mmjax.train.state import TrainState  # noqa: E402
from mmjax.train.step import make_train_step  # noqa: E402

VIT_B16 = dict(
    name="clip", embed_dim=512,
    vision=dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_ratio=4.0, pool="cls"),
    text=dict(vocab_size=49408, context_length=77, width=512, depth=12, num_heads=8, mlp_ratio=4.0))
VIT_B32 = dict(VIT_B16, vision=dict(VIT_B16["vision"], patch_size=32))   # OpenCLIP's ViT-B-32 (151,277,313 params)
MODEL = dict(
    name="clip", embed_dim=256,
    vision=dict(image_size=64, patch_size=8, width=256, depth=4, num_heads=4, mlp_ratio=4.0, pool="cls"),
    text=dict(vocab_size=1024, context_length=32, width=256, depth=4, num_heads=4, mlp_ratio=4.0))
PRESETS = {"anchor": MODEL, "vit_b16": VIT_B16, "vit_b32": VIT_B32}
OPTIM = dict(name="adamw", lr=1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, warmup_steps=0,
             schedule="constant", end_lr_factor=1.0, clip_grad_norm=0.0,
             no_decay_regex=r"(bias|scale|logit_scale|logit_bias)$")


def matmul_peak_gflops(n: int = 2048, reps: int = 10, dtype=jnp.float32) -> float:
  """Best-of-`reps` n x n matmul rate in `dtype`: the CPU/GPU "100 %" for MFU."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def make_step(model_cfg, batch_size: int, total_steps: int):
  """-> (jitted train step donating its state, initial TrainState, random batch made once with seed 0)."""
  size, ctx, vocab = model_cfg.vision.image_size, model_cfg.text.context_length, model_cfg.text.vocab_size
  model = build_model(model_cfg)
  tx, schedule = optim.make_optimizer(ml_collections.ConfigDict(OPTIM), total_steps=total_steps)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.standard_normal((batch_size, size, size, 3), np.float32)),
           "tokens": jnp.asarray(rng.integers(1, vocab, (batch_size, ctx)).astype(np.int32))}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["image"], batch["tokens"])["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1))
  step = jax.jit(make_train_step(get_objective("clip"), model, tx, schedule), donate_argnums=(0,))
  return step, state, batch


def time_steps(step, state, batch, steps: int):
  """-> (state, metrics, elapsed s, per-step times) of `steps` blocking steps."""
  times = []
  t0 = time.perf_counter()
  for _ in range(steps):
    ts = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(state)  # per-step times; the loop itself never blocks
    times.append(time.perf_counter() - ts)
  return state, metrics, time.perf_counter() - t0, times


def flip_main(args, model_cfg) -> None:
  """Masked (patch_dropout) vs unmasked step, compiled in one process and timed alternately."""
  b = args.batch
  masked_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  masked_cfg.vision.patch_dropout = args.patch_dropout
  runs = {}
  for name, cfg in (("unmasked", model_cfg), ("masked", masked_cfg)):
    step, state, batch = make_step(cfg, b, total_steps=(args.steps + args.warmup) * args.rounds)
    for _ in range(args.warmup):
      state, _ = step(state, batch)
    jax.block_until_ready(state)
    runs[name] = [step, state, batch, []]
  for _ in range(args.rounds):
    for name, run in runs.items():
      run[1], _, elapsed, _ = time_steps(run[0], run[1], run[2], args.steps)
      run[3].append(b * args.steps / elapsed)
  best = {name: max(run[3]) for name, run in runs.items()}
  print(json.dumps({
      "benchmark": "clip_step_flip", "preset": args.preset, "patch_dropout": args.patch_dropout,
      "dtype": args.dtype, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
      "batch": b, "steps": args.steps, "rounds": args.rounds,
      "masked_samples_per_s": round(best["masked"], 2), "unmasked_samples_per_s": round(best["unmasked"], 2),
      "ratio": round(best["masked"] / best["unmasked"], 3), "goal_ratio": 1.7,
      "masked_all": [round(x, 2) for x in runs["masked"][3]],
      "unmasked_all": [round(x, 2) for x in runs["unmasked"][3]],
      "masked_flops_per_step": clip_flops_per_step(masked_cfg, b),
      "unmasked_flops_per_step": clip_flops_per_step(model_cfg, b)}))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--preset", choices=tuple(PRESETS), default="anchor")
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  ap.add_argument("--remat", choices=("none", "full", "dots", "dots_no_batch"), default="none")
  ap.add_argument("--allocator", default="auto",
                  help="malloc to run under: auto (tcmalloc, else jemalloc, if installed), tcmalloc, jemalloc, "
                       "system (glibc) or a library path; see mmjax/allocator.py")
  ap.add_argument("--last_block_pooled_only", action="store_true",
                  help="compute both towers' last block for the pooled token only (same loss and gradients, "
                       "less work: reported on its own, never as the open_clip ratio)")
  ap.add_argument("--patch_dropout", type=float, default=0.0,
                  help="FLIP patch dropout rate: time the masked and the unmasked step side by side")
  ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds with --patch_dropout")
  args = ap.parse_args()

  model_cfg = ml_collections.ConfigDict(dict(PRESETS[args.preset], dtype=args.dtype, remat=args.remat))
  if args.last_block_pooled_only:
    model_cfg.vision.last_block_pooled_only = model_cfg.text.last_block_pooled_only = True
  if args.patch_dropout > 0:
    return flip_main(args, model_cfg)
  b = args.batch
  step, state, batch = make_step(model_cfg, b, total_steps=args.steps + args.warmup)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))

  for _ in range(args.warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready(state)
  state, metrics, elapsed, times = time_steps(step, state, batch, args.steps)
  peak = matmul_peak_gflops(n=2048 if jax.default_backend() == "cpu" else 8192, dtype=jnp.dtype(args.dtype))

  flops = clip_flops_per_step(model_cfg, b)
  step_s = elapsed / args.steps
  gflops = flops / step_s / 1e9
  times.sort()
  print(json.dumps({
      "system": "mmjax", "preset": args.preset, "last_block_pooled_only": args.last_block_pooled_only, "dtype": args.dtype, "remat": args.remat, "jax": jax.__version__, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "machine": platform.machine(), "allocator": active_allocator(), "params": int(n_params),
      "batch": b, "steps": args.steps, "warmup": args.warmup,
      "samples_per_s": round(b * args.steps / elapsed, 2), "step_ms": round(1000 * step_s, 2),
      "step_ms_median": round(1000 * times[len(times) // 2], 2), "flops_per_step": int(flops),
      "gflops_per_s": round(gflops, 2), "peak_gflops_per_s": round(peak, 2), "mfu": round(gflops / peak, 4),
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "final_loss": round(float(metrics["loss"]), 4)}))


if __name__ == "__main__":
  main()
