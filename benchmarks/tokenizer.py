"""CLIP BPE tokenisation on one core: mmjax.data.clip_bpe vs `open_clip.tokenize`, side by side in one process.

  PYTHON benchmarks/tokenizer.py [--n 20000 --core 0 --repeats 3]

PYTHON: one with torch + open_clip_torch 3.3.0 and mmjax's text dependencies (ftfy, regex, tokenizers, numpy); on this
workplace `PYTHONPATH=.venv/lib/python3.11/site-packages .venv-openclip/bin/python` (.venv-openclip lacks
`tokenizers`; both have numpy 2.4.6 and open_clip 3.3.0). Without torch + open_clip only mmjax's numbers are printed.

Captions: the first N of Flickr8k (`../shared/data/flickr8k/Flickr8k.token.txt` or $MMJAX_RAW_DATA/flickr8k), else
N generated caption-like strings (`"source"` says which). One core: the process pins itself with
`os.sched_setaffinity(0, {core})` before importing torch and sets torch.set_num_threads(1), RAYON_NUM_THREADS=1 and
TOKENIZERS_PARALLELISM=false (both tokenizers are single-threaded Python anyway). "cold" is the first pass over the
captions with an empty BPE cache (each side's; open_clip's module-level tokenizer starts empty too), "warm" the best
of `--repeats` further passes (a second epoch); `mmjax_warm_all_ftfy_per_s` sends every caption through ftfy (what a
corpus that is not plain ASCII costs). The two sides alternate; `identical` checks every id.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def captions(n: int) -> tuple[list[str], str]:
  raw = os.environ.get("MMJAX_RAW_DATA", os.path.join(ROOT, "..", "shared", "data"))
  for path in (os.path.join(raw, "flickr8k", "Flickr8k.token.txt"),):
    try:
      with open(path, encoding="utf-8") as f:
        caps = [line.split("\t", 1)[1].strip() for line in f if "\t" in line]
      if len(caps) >= n:
        return caps[:n], "flickr8k"
    except OSError:
      pass
  rng = random.Random(0)
  words = ("a man woman dog child girl boy in the on with red blue black white is are running jumping sitting "
           "standing grass water street snow ball bike beach two three people of near wearing shirt").split()
  return [" ".join(rng.choice(words) for _ in range(rng.randrange(6, 18))).capitalize() + " ." for _ in range(n)], \
      "generated"


def rate(fn, texts) -> tuple[float, object]:
  t0 = time.perf_counter()
  out = fn(texts)
  return len(texts) / (time.perf_counter() - t0), out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=20000)
  ap.add_argument("--core", type=int, default=0)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  os.sched_setaffinity(0, {args.core})
  os.environ.update(RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
  texts, source = captions(args.n)

  from mmjax.data import clip_bpe
  try:
    import open_clip
    import torch
    torch.set_num_threads(1)
  except ImportError:
    open_clip = None
  t0 = time.perf_counter()
  tok = clip_bpe.ClipBpeTokenizer()
  load_s = time.perf_counter() - t0
  res = {"benchmark": "tokenizer", "captions": len(texts), "source": source, "context_length": 77,
         "cpu_affinity": sorted(os.sched_getaffinity(0)), "loadavg_1min": round(os.getloadavg()[0], 2),
         "ftfy_skipped_fraction": round(sum(clip_bpe._NEEDS_FTFY(t) is None for t in texts) / len(texts), 4),
         "mmjax_load_s": round(load_s, 3)}
  sides = {"mmjax": lambda x: tok.encode(x, 77)}
  if open_clip is not None:
    sides["open_clip"] = lambda x: open_clip.tokenize(x, context_length=77).numpy()
  outs, cold, warm = {}, {}, {k: 0.0 for k in sides}
  for name, fn in sides.items():
    cold[name], outs[name] = rate(fn, texts)
  for _ in range(args.repeats):
    for name, fn in sides.items():
      warm[name] = max(warm[name], rate(fn, texts)[0])
  for name in sides:
    res[f"{name}_cold_per_s"], res[f"{name}_warm_per_s"] = round(cold[name]), round(warm[name])
  fast_path = clip_bpe._NEEDS_FTFY           # every text through ftfy (a corpus that is not plain ASCII), warm cache
  clip_bpe._NEEDS_FTFY = lambda text: True
  res["mmjax_warm_all_ftfy_per_s"] = round(rate(sides["mmjax"], texts)[0])
  clip_bpe._NEEDS_FTFY = fast_path
  if open_clip is not None:
    res.update(open_clip=open_clip.__version__, identical=bool((outs["mmjax"] == outs["open_clip"]).all()),
               ratio_cold=round(cold["mmjax"] / cold["open_clip"], 2),
               ratio_warm=round(warm["mmjax"] / warm["open_clip"], 2))
  else:
    res["open_clip"] = None
  res["goal_per_s"] = 20000
  print(json.dumps(res))


if __name__ == "__main__":
  main()
