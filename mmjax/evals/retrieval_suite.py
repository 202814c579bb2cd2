"""Evaluator "retrieval_suite": image-text retrieval with several captions per image (COCO / Flickr30k 5k / 1k test
images, 5 captions each), recall@1/5/10 both ways (evals/retrieval.py), reported and written as CLIP_benchmark's
zeroshot_retrieval (image_retrieval_recall@K: a caption finds its image; text_retrieval_recall@K: an image finds
any of its captions; fractions in [0, 1]), one JSON per data set (evals/benchmark.py).

Settings (evals.retrieval_suite.*):
  retrieval_json: comma-separated Karpathy split files (dataset_coco.json, dataset_flickr30k.json; data/karpathy.py),
    each optionally "name=" prefixed (default name: the file's "dataset" field); "" (default): the run's own data
    set's test split (any image-text source whose examples carry `captions`: flickr8k, karpathy, csv, webdataset,
    array_record);
  retrieval_images: comma-separated image roots, one per file ("" : each file's folder);
  retrieval_split: the Karpathy split ("test");
  retrieval_limit: 0 (every image) or the first this many images (with all their captions);
  benchmark_model, benchmark_pretrained, suite_image_norm: as zero_shot_suite's.
Images: shorter side to data.image_size then the centre crop; captions tokenized at data.context_length.
Results: retrieval_suite/<name>/{image,text}_retrieval_recall@{1,5,10}.
"""
from __future__ import annotations

import numpy as np

from mmjax.data import karpathy, pipeline  # noqa: F401  (pipeline registers every data set)
from mmjax.errors import MmjaxError
from mmjax.evals import benchmark
from mmjax.evals.base import EVAL_KEYS, apply_fn, batched_apply, setting
from mmjax.evals.retrieval import retrieval_metrics
from mmjax.registry import DATASETS, EVALUATORS

EVAL_KEYS["retrieval_suite"] = {"retrieval_json": "", "retrieval_images": "", "retrieval_split": "test",
                                "retrieval_limit": 0, "benchmark_model": "", "benchmark_pretrained": "",
                                "suite_image_norm": "minus_one_one"}
KS = (1, 5, 10)


def sources(ctx) -> list[tuple[str, object]]:
  """[(name, random-access source of {image, captions})] of the data sets to evaluate."""
  cfg = ctx.config
  files = [s.strip() for s in str(setting(cfg, "retrieval_suite", "retrieval_json")).split(",") if s.strip()]
  if not files:
    data = ctx.config.data
    return [(str(data.name), DATASETS.get(data.name, "data.name").source(data, "test"))]
  images = str(setting(cfg, "retrieval_suite", "retrieval_images"))
  roots = [s.strip() for s in images.split(",")] if images else [""] * len(files)
  if len(roots) != len(files):
    raise MmjaxError(f"evals.retrieval_suite.retrieval_images gives {len(roots)} image roots for the {len(files)} "
                     f"files of evals.retrieval_suite.retrieval_json; give one per file (or none: each file's folder)")
  out = []
  for item, root in zip(files, roots):
    name, sep, path = item.partition("=")
    if not sep:
      name, path = "", item
    src = karpathy.KarpathySource(path, str(setting(cfg, "retrieval_suite", "retrieval_split")), root)
    out.append((name or src.dataset, src))
  return out


def evaluate(params, ctx, name: str, src) -> dict[str, float]:
  cfg = ctx.config
  limit = int(setting(cfg, "retrieval_suite", "retrieval_limit"))
  n = min(len(src), limit) if limit else len(src)
  bs, size = int(cfg.evals.batch_size), int(cfg.data.image_size)
  captions: list[list[str]] = [None] * n

  def load(i):
    ex = src[i]
    if "captions" not in ex:
      raise MmjaxError(f"retrieval_suite: data set {name!r} has no captions; give "
                       f"evals.retrieval_suite.retrieval_json")
    captions[i] = list(ex["captions"])
    return benchmark.center_crop_resize(ex["image"], size)

  enc_img, enc_txt = apply_fn(ctx, "encode_image"), apply_fn(ctx, "encode_text")   # compiled once per run
  img = benchmark.encode_images(enc_img, params, load, n, min(bs, n),
                                setting(cfg, "retrieval_suite", "suite_image_norm"))
  texts = [c for cs in captions for c in cs]
  txt_to_img = np.repeat(np.arange(n, dtype=np.int32), [len(cs) for cs in captions])
  tokens = np.asarray(ctx.tokenizer.encode(texts, int(cfg.data.context_length)))
  txt = benchmark.unit(np.asarray(batched_apply(enc_txt, params, tokens, min(bs, len(tokens)))))
  r = retrieval_metrics(img, txt, txt_to_img, ks=KS)
  metrics = {f"image_retrieval_recall@{k}": r[f"t2i_R@{k}"] / 100 for k in KS}
  metrics.update({f"text_retrieval_recall@{k}": r[f"i2t_R@{k}"] / 100 for k in KS})
  model_name, pretrained = benchmark.model_names(ctx, "retrieval_suite")
  benchmark.write_clip_benchmark(ctx.workdir, dataset=name, model=model_name, pretrained=pretrained,
                                 task="zeroshot_retrieval", metrics=metrics)
  return {f"retrieval_suite/{name}/{k}": v for k, v in metrics.items()}


@EVALUATORS.register("retrieval_suite")
def retrieval_suite(params, ctx) -> dict[str, float]:
  results: dict[str, float] = {}
  for name, src in sources(ctx):
    results.update(evaluate(params, ctx, name, src))
  return results
