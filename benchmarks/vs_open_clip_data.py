"""Webdataset input pipelines side by side: open_clip's `get_wds_dataset` vs mmjax's, and the bare JPEG decode rate.

  python benchmarks/vs_open_clip_data.py [--openclip_python .venv-openclip/bin/python] [--rounds 3]
      [--workers 1,2] [--batch 256] [--batches 10] [--warmup 2] [--image_size 224] [--context_length 77]
      [--gen_shards 4 --gen_per_shard 2000 --gen_size 256 | --shards PATTERN] [--sides decode,open_clip,mmjax]
  python benchmarks/vs_open_clip_data.py --tiny        # smoke run (seconds): 2 small shards, 64 px, tiny batches

The same shards (generated once under the temp dir by mmjax.data.fake_shards: --gen_shards x --gen_per_shard JPEGs
of --gen_size px with captions, the issue's 4 x 2,000 of 256 px by default, or --shards) are read by, for each
worker count W in --workers, in this order within each of --rounds rounds (never two at once; each in a fresh
process, so worker start-up is the same for both pipelines and excluded by the warm-up):
  - decode: the bare JPEG decode rate, the physical limit of the CPU for this data: W processes, each holding the
    encoded JPEGs of its share of the shards in memory (read before the clock starts), PIL `Image.open` + `load()`
    (+ `.convert("RGB")` where not RGB) and nothing else; images/s = all images / (last end - first start);
  - open_clip: open_clip_train.data.get_wds_dataset with the `args` open_clip's training builds (train_data,
    train_num_samples, batch_size, workers=W, seed 0, world_size 1, not resampled), the preprocess of
    `open_clip.image_transform(image_size, is_train=True)` (RandomResizedCrop scale (0.9, 1.0) bicubic, ToTensor,
    Normalize) and `open_clip.get_tokenizer("ViT-B-32")` (context 77), run with --openclip_python (torch +
    open_clip_torch + `webdataset<=0.2.86` (open_clip_train 3.3.0's pin; 1.x fails with KeyError 'fname') +
    braceexpand + pandas; see ../shared/bench/README.md for `.venv-openclip`);
  - mmjax: `mmjax.data.pipeline.make_train_iterator` on data.name=webdataset (experiments/clip_webdataset.py) with
    data.num_workers=W grain worker processes, the same crop (image_size, crop_scale (0.9, 1.0), bicubic) and CLIP's
    BPE at the same context length (tokenizer.kind=clip_bpe: open_clip's ids).
Both pipelines: `--warmup` batches of `--batch` are taken first (worker start, shuffle-buffer fill), then images/s
over the next `--batches` batches, as the training loop receives them (float32 images, int tokens).

Prints one JSON line per (round, side, W), then a summary line with the best round of each (side, W), all rounds,
and the ratios mmjax / open_clip (goal >= 1.2 at each W) and mmjax / decode (goal >= 0.8 at each W), with the load
average before and after (the machine has 2 cores: run it idle).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIDES = ("decode", "open_clip", "mmjax")
TINY = dict(gen_shards=2, gen_per_shard=48, gen_size=96, image_size=64, batch=8, batches=3, warmup=1, rounds=1,
            decode_images=48)


# --------------------------------------------------------------------------------------------------- the sides
def _shard_paths(pattern: str) -> list[str]:
  from braceexpand import braceexpand      # in the open_clip env (webdataset needs it) ...
  return list(braceexpand(pattern))


def _paths(pattern: str) -> list[str]:
  try:
    return _shard_paths(pattern)
  except ImportError:                      # ... and mmjax's own brace expansion in mmjax's env
    sys.path.insert(0, ROOT)
    from mmjax.data.webdataset import expand_braces
    return expand_braces(pattern)


def _jpegs(paths: list[str], limit: int) -> list[bytes]:
  import tarfile
  out = []
  for path in paths:
    with tarfile.open(path) as tf:
      for m in tf:
        if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg")):
          out.append(tf.extractfile(m).read())
          if len(out) >= limit:
            return out
  return out


def _decode_worker(args) -> tuple[float, float, int]:
  from PIL import Image
  paths, limit, barrier = args
  data = _jpegs(paths, limit)
  barrier.wait()
  t0 = time.perf_counter()
  for b in data:
    with Image.open(io.BytesIO(b)) as im:
      im.load()
      if im.mode != "RGB":
        im.convert("RGB")
  return t0, time.perf_counter(), len(data)


def side_decode(a) -> dict:
  """W processes decode their share of the shards' JPEGs (in memory), from a common start."""
  import multiprocessing as mp
  paths = _paths(a.shards)
  ctx = mp.get_context("fork")
  barrier = ctx.Manager().Barrier(a.workers)
  jobs = [(paths[w::a.workers] or paths, a.decode_images, barrier) for w in range(a.workers)]
  with ctx.Pool(a.workers) as pool:
    res = pool.map(_decode_worker, jobs, chunksize=1)
  n = sum(r[2] for r in res)
  return {"images": n, "images_per_s": n / (max(r[1] for r in res) - min(r[0] for r in res))}


def _time_batches(it, a, count) -> dict:
  for _ in range(a.warmup):
    count(next(it))
  t0, n = time.perf_counter(), 0
  for _ in range(a.batches):
    n += count(next(it))
  dt = time.perf_counter() - t0
  return {"images": n, "seconds": round(dt, 3), "images_per_s": n / dt}


def side_open_clip(a) -> dict:
  import open_clip
  import torch
  from open_clip_train.data import get_wds_dataset
  preprocess = open_clip.image_transform(a.image_size, is_train=True)
  tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=a.context_length)
  need = a.batch * (a.warmup + a.batches + a.workers)     # each worker's epoch must outlast the timed batches
  args = argparse.Namespace(train_data=a.shards, val_data=None, dataset_resampled=False, train_num_samples=need,
                            train_data_upsampling_factors=None, seed=0, batch_size=a.batch, workers=a.workers,
                            world_size=1, rank=0)
  info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
  info.set_epoch(0)
  it = iter(info.dataloader)
  shapes = {}

  def count(batch):
    images, texts = batch
    shapes.update(image=list(images.shape), image_dtype=str(images.dtype), tokens=list(texts.shape))
    return int(images.shape[0])
  out = _time_batches(it, a, count)
  del it
  return dict(out, **shapes, torch=torch.__version__, open_clip=getattr(open_clip, "__version__", "?"),
              preprocess=str(preprocess).replace("\n", " "))


def side_mmjax(a) -> dict:
  sys.path.insert(0, ROOT)
  import ml_collections
  from mmjax import config as config_lib
  from mmjax.data import pipeline
  from mmjax.data.clip_bpe import ClipBpeTokenizer
  c = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_webdataset.py"))
  c.data.shards, c.data.num_workers, c.data.image_size = a.shards, a.workers, a.image_size
  c.data.context_length, c.data.crop_scale = a.context_length, (0.9, 1.0)
  data = ml_collections.ConfigDict(c.data.to_dict())
  it = pipeline.make_train_iterator(data, ClipBpeTokenizer(None), global_batch_size=a.batch, seed=0)
  shapes = {}

  def count(batch):
    shapes.update(image=list(batch["image"].shape), image_dtype=str(batch["image"].dtype),
                  tokens=list(batch["tokens"].shape))
    return int(batch["image"].shape[0])
  out = _time_batches(it, a, count)
  if hasattr(it, "close"):
    it.close()
  return dict(out, **shapes, jpeg_draft=bool(data.get("jpeg_draft", True)))


# --------------------------------------------------------------------------------------------------- the driver
def _run_side(side: str, w: int, a, shards: str) -> dict:
  python = a.openclip_python if side == "open_clip" else sys.executable
  env = dict(os.environ)
  if side == "open_clip":
    env.pop("PYTHONPATH", None)                # the torch env alone: no mmjax / jax on its path
  else:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  cmd = [python, os.path.abspath(__file__), "--_side", side, "--workers", str(w), "--shards", shards,
         "--batch", str(a.batch), "--batches", str(a.batches), "--warmup", str(a.warmup),
         "--image_size", str(a.image_size), "--context_length", str(a.context_length),
         "--decode_images", str(a.decode_images)]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=a.timeout)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    sys.exit(f"vs_open_clip_data: the {side} side with {w} workers failed ({proc.returncode}):\n"
             f"{proc.stderr[-3000:]}")
  return json.loads(lines[-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--openclip_python", default=os.path.join(ROOT, ".venv-openclip", "bin", "python"))
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--workers", default="1,2", help="worker (and decode process) counts, comma separated")
  ap.add_argument("--sides", default=",".join(SIDES), help="which of decode,open_clip,mmjax to run")
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--batches", type=int, default=10, help="timed batches per run, after --warmup")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--image_size", type=int, default=224)
  ap.add_argument("--context_length", type=int, default=77)
  ap.add_argument("--decode_images", type=int, default=1000, help="images each decode process decodes")
  ap.add_argument("--shards", default="", help="existing shards (brace pattern); default: generated")
  ap.add_argument("--gen_shards", type=int, default=4)
  ap.add_argument("--gen_per_shard", type=int, default=2000)
  ap.add_argument("--gen_size", type=int, default=256)
  ap.add_argument("--timeout", type=int, default=900, help="seconds for one side's run")
  ap.add_argument("--tiny", action="store_true", help="smoke-test sizes: " + json.dumps(TINY))
  ap.add_argument("--_side", choices=SIDES, help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a._side:
    a.workers = int(a.workers)
    out = {"decode": side_decode, "open_clip": side_open_clip, "mmjax": side_mmjax}[a._side](a)
    print(json.dumps(out))
    return
  if a.tiny:
    for k, v in TINY.items():
      setattr(a, k, v)
  sides = [s for s in a.sides.split(",") if s]
  if set(sides) - set(SIDES):
    sys.exit(f"--sides: unknown {sorted(set(sides) - set(SIDES))}; use some of {','.join(SIDES)}")
  workers = [int(w) for w in a.workers.split(",")]
  if "open_clip" in sides and not os.path.exists(a.openclip_python):
    sys.exit(f"{a.openclip_python} not found: the python with torch, open_clip_torch, webdataset and braceexpand "
             f"(see ../shared/bench/README.md), or leave open_clip out of --sides")
  shards = a.shards
  if not shards:
    sys.path.insert(0, ROOT)
    from mmjax.data import fake_shards
    shards = fake_shards.write_shards(
        fake_shards.default_dir(f"bench_wds_{a.gen_shards}x{a.gen_per_shard}_{a.gen_size}"),
        num_shards=a.gen_shards, per_shard=a.gen_per_shard, image_size=a.gen_size)
  load0 = os.getloadavg()[0]
  runs: dict[tuple[str, int], list[float]] = {}
  for r in range(a.rounds):
    for w in workers:
      for side in sides:
        res = _run_side(side, w, a, shards)
        rate = round(res.pop("images_per_s"), 1)
        runs.setdefault((side, w), []).append(rate)
        print(json.dumps({"benchmark": "vs_open_clip_data", "round": r, "side": side, "workers": w,
                          "images_per_s": rate, "loadavg_1min": round(os.getloadavg()[0], 2), **res}), flush=True)
  best = {f"{s}_w{w}": max(v) for (s, w), v in runs.items()}
  summary = {"benchmark": "vs_open_clip_data", "summary": True, "shards": shards, "batch": a.batch,
             "batches": a.batches, "warmup": a.warmup, "rounds": a.rounds, "image_size": a.image_size,
             "context_length": a.context_length, "best_images_per_s": best,
             "all_images_per_s": {f"{s}_w{w}": v for (s, w), v in runs.items()}}
  for w in workers:
    if ("mmjax", w) in runs and ("open_clip", w) in runs:
      summary[f"ratio_mmjax_over_open_clip_w{w}"] = round(best[f"mmjax_w{w}"] / best[f"open_clip_w{w}"], 3)
    if ("mmjax", w) in runs and ("decode", w) in runs:
      summary[f"ratio_mmjax_over_decode_w{w}"] = round(best[f"mmjax_w{w}"] / best[f"decode_w{w}"], 3)
  summary.update(goal_ratio_over_open_clip=1.2, goal_ratio_over_decode=0.8,
                 loadavg_1min_start=round(load0, 2), loadavg_1min_end=round(os.getloadavg()[0], 2),
                 platform=platform.platform(), cpu_count=os.cpu_count())
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
