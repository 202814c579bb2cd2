"""Flickr8k input pipeline: examples/s alone, and a CLIP train step fed by it vs by synthetic arrays.

  python benchmarks/input_pipeline.py [--config experiments/clip_flickr8k.py] [--steps 30] [--num_workers 0]
  python benchmarks/input_pipeline.py --source webdataset [--shards PATTERN] [--num_workers 2] [--steps 20]

--source webdataset: the webdataset pipeline's images/s (data.name=webdataset: tar read, JPEG decode, random-resized
crop to --image_size, BPE tokenization at context length 77, batching; grain worker processes with --num_workers)
and the bare JPEG decode rate of the same shards (tar read + PIL decode to RGB, one process, no crop), measured
alternately in one run (decode, pipeline, decode: the decode rate is the mean of both), so their ratio is taken
under the same machine load. Shards: --shards, or generated once under the temp dir (--gen_shards x --gen_per_shard
JPEGs of --gen_size px; the issue's 4 x 2,000 of 256 px by default).

1. pipeline_examples_per_s: the training iterator alone (array_record read, JPEG decode, random-resized crop,
   resize, one-of-5 caption, BPE tokenisation, batching to the global batch), after 3 warm-up batches.
2. step_ms_synthetic: the jitted train step of the config's model on one fixed batch already on the device;
   step_ms_fed: the same step, each batch taken from the pipeline and put on the device inside the timed loop.
   ratio = fed / synthetic (goal <= 1.05: the input is never the bottleneck). On a CPU host the pipeline's
   threads share the cores with XLA's compute, so the ratio there is an upper bound of what an accelerator sees.
Needs the real Flickr8k files (prepared on first use). Prints one JSON line last.
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

from mmjax import config as config_lib  # noqa: E402
from mmjax.data import pipeline  # noqa: E402
from mmjax.models import build_model  # noqa: E402
from mmjax.objectives import get_objective  # noqa: E402
from mmjax.train import optim  # noqa: E402
from mmjax.train.state import TrainState  # noqa: E402
from mmjax.train.step import make_train_step  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "experiments", "clip_flickr8k.py"))
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--num_workers", type=int, default=0)
  ap.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
  ap.add_argument("--source", choices=("flickr8k", "webdataset"), default="flickr8k")
  ap.add_argument("--shards", default="", help="--source webdataset: the shards (default: generated)")
  ap.add_argument("--gen_shards", type=int, default=4)
  ap.add_argument("--gen_per_shard", type=int, default=2000)
  ap.add_argument("--gen_size", type=int, default=256)
  ap.add_argument("--image_size", type=int, default=224, help="--source webdataset: the crop size")
  ap.add_argument("--decode_images", type=int, default=1000, help="--source webdataset: images per decode round")
  args = ap.parse_args()
  if args.source == "webdataset":
    return webdataset_rates(args)

  c = config_lib.load_experiment(args.config)
  c.data.num_workers = args.num_workers
  b = args.batch or c.batch_size
  tok = pipeline.build_tokenizer(c.data)
  it = pipeline.make_train_iterator(c.data, tok, global_batch_size=b, seed=0)

  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(args.steps):
    batch = next(it)
  pipe_rate = args.steps * b / (time.perf_counter() - t)

  model, objective = build_model(c.model), get_objective(c.objective)
  tx, schedule = optim.make_optimizer(c.optim, total_steps=10 * args.steps)
  dev_batch = {k: jnp.asarray(v) for k, v in batch.items()}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), dev_batch["image"], dev_batch["tokens"])["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1))
  step = jax.jit(make_train_step(objective, model, tx, schedule), donate_argnums=(0,))
  for _ in range(3):
    state, metrics = step(state, dev_batch)
  jax.block_until_ready(state)

  def timed(fed: bool) -> float:
    nonlocal state
    times = []
    for _ in range(args.steps):
      t = time.perf_counter()
      x = {k: jnp.asarray(v) for k, v in next(it).items()} if fed else dev_batch
      state, m = step(state, x)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]

  # Interleave twice (synthetic, fed, synthetic, fed) so that drifts in machine load hit both alike.
  syn, fed = [], []
  for _ in range(2):
    syn.append(timed(False))
    fed.append(timed(True))
  syn_ms, fed_ms = sum(syn) / 2, sum(fed) / 2
  print(json.dumps({
      "benchmark": "input_pipeline", "config": os.path.relpath(args.config), "global_batch": b,
      "num_workers": args.num_workers, "image_size": int(c.data.image_size),
      "pipeline_examples_per_s": round(pipe_rate, 1), "step_ms_synthetic": round(syn_ms, 2),
      "step_ms_fed": round(fed_ms, 2), "ratio_fed_over_synthetic": round(fed_ms / syn_ms, 3),
      "goal_ratio": 1.05, "device": jax.devices()[0].device_kind, "platform": platform.platform(),
      "cpu_count": os.cpu_count(), "jax": jax.__version__}))


def decode_rate(pattern: str, n: int) -> float:
  """Images/s of reading the shards' samples and decoding their JPEGs to RGB arrays (nothing else)."""
  from mmjax.data.image_files import decode_image
  from mmjax.data.tar_samples import Sample, iter_samples
  from mmjax.data.webdataset import parse_shards
  done, t = 0, time.perf_counter()
  while done < n:
    for path in parse_shards(pattern)[0]:
      for item in iter_samples(path):
        if isinstance(item, Sample) and "jpg" in item.files:
          decode_image(item.files["jpg"], path)
          done += 1
          if done >= n:
            return n / (time.perf_counter() - t)
  return n / (time.perf_counter() - t)


def webdataset_rates(args) -> None:
  import ml_collections
  from mmjax.data import fake_shards
  pattern = args.shards or fake_shards.write_shards(
      fake_shards.default_dir(f"bench_wds_{args.gen_shards}x{args.gen_per_shard}_{args.gen_size}"),
      num_shards=args.gen_shards, per_shard=args.gen_per_shard, image_size=args.gen_size)
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "..", "experiments", "clip_webdataset.py"))
  c.data.shards, c.data.num_workers, c.data.image_size = pattern, args.num_workers, args.image_size
  c.data.context_length, c.data.vocab_size, c.data.corpus_examples = 77, 512, 2000
  data = ml_collections.ConfigDict(c.data.to_dict())
  b = args.batch or 256
  tok = pipeline.build_tokenizer(data)
  decode = [decode_rate(pattern, args.decode_images)]
  it = pipeline.make_train_iterator(data, tok, global_batch_size=b, seed=0)
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(args.steps):
    batch = next(it)
  pipe_rate = args.steps * b / (time.perf_counter() - t)
  del it
  decode.append(decode_rate(pattern, args.decode_images))
  dec = sum(decode) / len(decode)
  print(json.dumps({
      "benchmark": "input_pipeline", "source": "webdataset", "shards": pattern, "global_batch": b,
      "num_workers": args.num_workers, "image_size": args.image_size, "batch_shape": list(batch["image"].shape),
      "pipeline_images_per_s": round(pipe_rate, 1), "jpeg_decode_images_per_s": round(dec, 1),
      "jpeg_decode_rounds": [round(d, 1) for d in decode],
      "ratio_pipeline_over_decode": round(pipe_rate / dec, 3),
      "ratio_per_worker": round(pipe_rate / dec / max(1, args.num_workers), 3), "goal_ratio_per_worker": 0.8,
      "platform": platform.platform(), "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
  main()
