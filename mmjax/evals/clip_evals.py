"""CLIP evaluation: zero-shot classification (Radford et al. 2021) and image<->text retrieval R@1/5/10.

Works for any two-tower model with `encode_image` / `encode_text` methods (CLIP, SigLIP) and any dataset that
`make_eval_arrays` serves; zero-shot tasks exist for datasets listed in ZERO_SHOT_TASKS. On the shapes data it
also writes `<workdir>/zero_shot.png`: the first `evals.clip.zero_shot_images` test images, each with its top-1
zero-shot "colour shape" label (the shape_colour task) and the true one.
"""
from __future__ import annotations

import os

import numpy as np

from mmjax.data import image_folder, pipeline
from mmjax.evals import plots
from mmjax.errors import MmjaxError
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, apply_fn, batched_apply, eval_arrays, needs_method, setting
from mmjax.evals.retrieval import retrieval_metrics
from mmjax.evals.zero_shot import CIFAR_TEMPLATES, build_classifier, shapes_tasks, zero_shot_accuracy
from mmjax.registry import EVALUATORS

ZERO_SHOT_TASKS = {"shapes": shapes_tasks}   # data.name -> () -> {task: (classnames, label_fn, templates)}
# Prepared classification data sets usable as `evals.clip.zero_shot_data`: name -> (split, prompt templates).
ZERO_SHOT_DATA = {"cifar10_test": ("test", CIFAR_TEMPLATES), "cifar100": ("test", CIFAR_TEMPLATES)}
EVAL_KEYS["clip"] = {
    "zero_shot": True, "retrieval": True,   # which of the two to run
    "zero_shot_data": "",                   # a prepared classification data set for zero-shot (e.g. "cifar10_test")
    "zero_shot_images": 12}                 # images in <workdir>/zero_shot.png (0: no figure)


def _zero_shot_data_arrays(ctx, name: str):
  """Images resized to data.image_size (float32 [N, H, W, 3] in [-1, 1]), int labels [N] and the class names of
  the prepared data set `name` (all of its split; `evals.num_examples` caps it under runlocal-sized configs)."""
  from mmjax.data import image_text
  import ml_collections
  cfg = ctx.config
  key = f"zero_shot_data:{name}:{cfg.data.image_size}:{cfg.data.get('data_dir', '')}:{cfg.data.get('fake_raw', 0)}"
  if key not in ctx.cache and name.startswith(image_folder.PREFIX):     # "image_folder:<root>": its test split
    limit = cfg.evals.num_examples if cfg.data.get("fake_raw", 0) else None
    images, labels, classnames, _ = image_folder.classification_arrays(
        name[len(image_folder.PREFIX):], "test", int(cfg.data.image_size), limit)
    ctx.cache[key] = (images.astype(np.float32) / 127.5 - 1, labels, classnames)
  if key not in ctx.cache:
    check_zero_shot_data(name)
    split, _ = ZERO_SHOT_DATA[name]
    b = image_text.prepared(ml_collections.ConfigDict(dict(
        name=name, data_dir=cfg.data.get("data_dir", ""), fake_raw=cfg.data.get("fake_raw", 0))))
    src = b.as_data_source(split)
    n = len(src) if not cfg.data.get("fake_raw", 0) else min(len(src), cfg.evals.num_examples)
    size = int(cfg.data.image_size)
    images = np.stack([image_text.resize(src[i]["image"], size) for i in range(n)])
    labels = np.asarray([int(src[i]["label"]) for i in range(n)])
    ctx.cache[key] = (images.astype(np.float32) / 127.5 - 1, labels, list(b.info.features["label"].names))
  return ctx.cache[key]


def _prediction_grid(ctx, images, logits, labels, classnames, top1: float) -> None:
  """`<workdir>/zero_shot.png`: the first evals.clip.zero_shot_images images with top-1 and true class (process 0)."""
  import jax
  k = min(int(setting(ctx.config, "clip", "zero_shot_images")), len(images))
  if ctx.workdir is None or k == 0 or jax.process_index() != 0:
    return
  pred = np.argmax(logits[:k], axis=1)
  captions = [f"{'ok' if p == t else 'WRONG'}: {classnames[p]}\ntrue: {classnames[t]}"
              for p, t in zip(pred, labels[:k])]
  plots.image_grid([np.asarray(images[:k])], ["test image"], os.path.join(ctx.workdir, "zero_shot.png"),
                   title=f"zero-shot top-1 colour + shape ({top1:.1f} % of {len(labels)} test images)",
                   captions=captions)


def check_zero_shot_data(name: str) -> None:
  if name and name not in ZERO_SHOT_DATA and not name.startswith(image_folder.PREFIX):
    raise MmjaxError(f"evals.clip.zero_shot_data={name!r} is not a zero-shot data set; use one of "
                     f"{', '.join(sorted(ZERO_SHOT_DATA))}, 'image_folder:<root>' or ''")


def check_clip(cfg, model) -> None:
  for method in ("encode_image", "encode_text"):
    needs_method("clip", cfg, model, method, "a two-tower image-text model (clip, multitask_clip, ...)")
  if setting(cfg, "clip", "zero_shot"):
    check_zero_shot_data(str(setting(cfg, "clip", "zero_shot_data") or ""))


EVAL_CHECKS["clip"] = check_clip


@EVALUATORS.register("clip")
def clip_eval(params, ctx) -> dict[str, float]:
  cfg = ctx.config
  arrays = eval_arrays(ctx)
  bs = min(cfg.evals.batch_size, len(arrays["image"]))
  enc_img, enc_txt = apply_fn(ctx, "encode_image"), apply_fn(ctx, "encode_text")   # compiled once per run
  img = batched_apply(enc_img, params, arrays["image"], bs)
  results: dict[str, float] = {}
  zero_shot = setting(cfg, "clip", "zero_shot")
  if setting(cfg, "clip", "retrieval"):
    txt = batched_apply(enc_txt, params, arrays["tokens"], bs)
    r = retrieval_metrics(img, txt, arrays["txt_to_img"])
    results.update({f"retrieval/{k}": float(v) for k, v in r.items()})
  if zero_shot and cfg.data.name in ZERO_SHOT_TASKS:
    tasks_fn = ZERO_SHOT_TASKS[cfg.data.name]
    context_length = arrays["tokens"].shape[1]
    encode_text = lambda t: batched_apply(enc_txt, params, np.asarray(t), bs)
    tokenize = lambda texts: ctx.tokenizer.encode(list(texts), context_length)
    for task, (classnames, label_fn, templates) in tasks_fn().items():
      classifier = build_classifier(encode_text, tokenize, classnames, templates)
      labels = np.asarray(label_fn(arrays))
      acc = zero_shot_accuracy(img, classifier, labels)
      results[f"zero_shot/{task}"] = float(acc["top1"])
      if task == "shape_colour":
        _prediction_grid(ctx, arrays["image"], np.asarray(img) @ np.asarray(classifier).T, labels, classnames,
                         acc["top1"])
  zs = setting(cfg, "clip", "zero_shot_data")
  if zero_shot and zs:
    images, labels, classnames = _zero_shot_data_arrays(ctx, zs)
    context_length = arrays["tokens"].shape[1]
    classifier = build_classifier(lambda t: batched_apply(enc_txt, params, np.asarray(t), bs),
                                  lambda texts: ctx.tokenizer.encode(list(texts), context_length),
                                  [c.replace("_", " ") for c in classnames],
                                  ZERO_SHOT_DATA[zs][1] if zs in ZERO_SHOT_DATA else CIFAR_TEMPLATES)
    acc = zero_shot_accuracy(batched_apply(enc_img, params, images, bs), classifier, labels, topk=(1, 5))
    results[f"zero_shot/{zs}"] = float(acc["top1"])
    if "top5" in acc:
      results[f"zero_shot/{zs}_top5"] = float(acc["top5"])
  return results
