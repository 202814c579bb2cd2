"""Evaluator "zero_shot_suite": zero-shot classification (Radford et al. 2021, Sec. 3.1.4) on standard data sets, with
prompt templates and class names from files, reported as CLIP_benchmark reports it (acc1, acc5,
mean_per_class_recall) and written as one CLIP_benchmark JSON per data set (evals/benchmark.py).

Settings (evals.zero_shot_suite.*):
  zs_datasets: comma-separated data sets, each optionally "name=" prefixed (the name in the results):
    "cifar10_test" (the prepared CIFAR-10 test set, mmjax/data/builders/cifar10_test.py; CIFAR templates);
    "cifar100" (the test split of the prepared CIFAR-100, mmjax/data/builders/cifar100.py, from the official
    cifar-100-python.tar.gz; CLIP's CIFAR-100 class names and CIFAR templates);
    "imagenet2012" / "imagenet2012:<root>" (the ILSVRC2012 validation set, mmjax/data/imagenet.py: the official
    ILSVRC2012_img_val.tar read in place, its extracted images, val/<wnid>/ folders, or a TFDS imagenet2012 prepared
    as array_record; CLIP's 1000 class names and 80 ImageNet templates);
    "image_folder:<root>" (root/<class>/*.jpg, its test split as data/image_folder.py: class names from
    classnames.txt or the folder names; 1000 WordNet-id folders (n01440764, ...) with no classnames.txt: an ImageNet
    val folder, named with CLIP's 1000 ImageNet class names; ImageNet templates).
  zs_templates: "" (the data set's default), "imagenet" (CLIP's 80), "cifar" (CLIP's 18) or a file, one per line;
  zs_classnames: "" or a file of class names, one per line in label order (for every data set listed);
  zs_limit: 0 (every image) or at most this many, evenly spaced over the split (so every class keeps some);
  benchmark_model, benchmark_pretrained: the "model" / "pretrained" fields of the result files;
  suite_image_norm: "minus_one_one" (mmjax's training scale) or "openai" (open_clip's mean/std: imported weights).
Images: shorter side to data.image_size then the centre crop (CLIP's evaluation transform); prompts tokenized with
the run's tokenizer at data.context_length. Results: zero_shot_suite/<name>/{acc1, acc5, mean_per_class_recall}.
"""
from __future__ import annotations

import os
import re

import numpy as np

from mmjax.data import image_folder, imagenet
from mmjax.errors import MmjaxError
from mmjax.evals import benchmark
from mmjax.evals.base import EVAL_KEYS, apply_fn, batched_apply, setting
from mmjax.evals.zero_shot import build_classifier
from mmjax.registry import EVALUATORS

EVAL_KEYS["zero_shot_suite"] = {"zs_datasets": "cifar10_test", "zs_templates": "", "zs_classnames": "",
                                "zs_limit": 0, "benchmark_model": "", "benchmark_pretrained": "",
                                "suite_image_norm": "minus_one_one"}
_WNID = re.compile(r"n\d{8}")


def parse_datasets(spec: str) -> list[tuple[str, str]]:
  """"cifar10_test, imagenet1k=image_folder:/d/val" -> [("cifar10_test", "cifar10_test"), ("imagenet1k", ...)];
  unnamed "image_folder:/d/val" is named "val", "imagenet2012:/d" "imagenet2012"."""
  out = []
  for item in (s.strip() for s in str(spec).split(",")):
    if not item:
      continue
    name, sep, what = item.partition("=")
    if not sep or ":" in name:
      if item.startswith(image_folder.PREFIX):
        name = os.path.basename(os.path.normpath(item[len(image_folder.PREFIX):]))
      else:
        name = imagenet.NAME if item.startswith(imagenet.PREFIX) else item
      what = item
    out.append((name.strip(), what.strip()))
  if not out:
    raise MmjaxError("evals.zero_shot_suite.zs_datasets is empty; give e.g. 'cifar10_test' or "
                     "'image_folder:/data/imagenet'")
  return out


# Prepared (TFDS builder) classification sets: name -> (split, default templates, packaged class names or None for
# the builder's ClassLabel names).
PREPARED = {"cifar10_test": ("test", "cifar", None), "cifar100": ("test", "cifar", benchmark.cifar100_classnames)}


class _Classification:
  """A data set: n, example(i) -> (uint8 [H, W, 3], int label), classnames, default template spec; `labels` int [N]
  where known without reading the images (None: a prepared ImageNet, whose labels come with the images)."""

  def __init__(self, ctx, what: str):
    cfg = ctx.config
    if what.startswith(image_folder.PREFIX):
      src = image_folder.ImageFolderSource(what[len(image_folder.PREFIX):], "test")
      self.labels = np.asarray([label for _, label in src.files])
      self.classnames = src.classnames
      if (len(src.classes) == 1000 and all(_WNID.fullmatch(c) for c in src.classes)
          and src.classnames == src.classes):
        self.classnames = benchmark.imagenet_classnames()
      self.source, self.default_templates = src, "imagenet"
    elif what in PREPARED:
      import ml_collections
      from mmjax.data import image_text
      split, self.default_templates, names = PREPARED[what]
      b = image_text.prepared(ml_collections.ConfigDict(dict(
          name=what, data_dir=cfg.data.get("data_dir", ""), fake_raw=cfg.data.get("fake_raw", 0))))
      self.source = b.as_data_source(split)
      labels = b.as_data_source(split, decoders={"image": tfds_skip()})
      self.labels = np.asarray([int(labels[i]["label"]) for i in range(len(labels))])
      self.classnames = names() if names is not None else list(b.info.features["label"].names)
    elif what == imagenet.NAME or what.startswith(imagenet.PREFIX):
      self.source = imagenet.open_val(what, cfg.data.get("data_dir", ""))
      self.labels = getattr(self.source, "labels", None)
      self.classnames, self.default_templates = self.source.classnames, "imagenet"
    else:
      raise MmjaxError(f"evals.zero_shot_suite.zs_datasets: {what!r} is not a zero-shot data set; use one of "
                       f"{', '.join(PREPARED)}, 'imagenet2012[:<root>]' or 'image_folder:<root>'")
    self.n = len(self.source)

  def example(self, i: int) -> tuple[np.ndarray, int]:
    ex = self.source[int(i)]
    return np.asarray(ex["image"]), int(ex["label"])


def tfds_skip():
  import tensorflow_datasets as tfds
  return tfds.decode.SkipDecoding()


def evaluate(params, ctx, name: str, what: str) -> dict[str, float]:
  cfg = ctx.config
  data = _Classification(ctx, what)
  names_file = setting(cfg, "zero_shot_suite", "zs_classnames")
  classnames = (benchmark.read_lines(names_file, "class name (evals.zero_shot_suite.zs_classnames)")
                if names_file else data.classnames)
  if data.labels is not None and len(classnames) <= int(data.labels.max()):
    raise MmjaxError(f"evals.zero_shot_suite.zs_classnames gives {len(classnames)} class names, but {what} has "
                     f"labels up to {int(data.labels.max())}; give one name per class, in label order")
  tmpl = benchmark.templates(setting(cfg, "zero_shot_suite", "zs_templates") or data.default_templates)
  n, limit = data.n, int(setting(cfg, "zero_shot_suite", "zs_limit"))
  index = np.unique(np.linspace(0, n - 1, limit).astype(int)) if 0 < limit < n else np.arange(n)
  bs, size = int(cfg.evals.batch_size), int(cfg.data.image_size)
  enc_img, enc_txt = apply_fn(ctx, "encode_image"), apply_fn(ctx, "encode_text")   # compiled once per run
  labels = np.zeros(len(index), np.int64)

  def load(i: int) -> np.ndarray:          # each image once, in order; its label read with it
    image, labels[i] = data.example(index[i])
    return benchmark.center_crop_resize(image, size)

  img = benchmark.encode_images(enc_img, params, load, len(index), min(bs, len(index)),
                                setting(cfg, "zero_shot_suite", "suite_image_norm"))
  if len(classnames) <= int(labels.max()):
    raise MmjaxError(f"evals.zero_shot_suite.zs_classnames gives {len(classnames)} class names, but {what} has "
                     f"labels up to {int(labels.max())}; give one name per class, in label order")
  context_length = int(cfg.data.context_length)
  classifier = build_classifier(lambda t: batched_apply(enc_txt, params, np.asarray(t), min(bs, len(t))),
                                lambda texts: ctx.tokenizer.encode(list(texts), context_length),
                                list(classnames), tmpl, batch_size=bs)
  metrics = benchmark.classification_metrics(img @ np.asarray(classifier, np.float32).T, labels)
  model_name, pretrained = benchmark.model_names(ctx, "zero_shot_suite")
  benchmark.write_clip_benchmark(ctx.workdir, dataset=name, model=model_name, pretrained=pretrained,
                                 task="zeroshot_classification", metrics=metrics)
  return {f"zero_shot_suite/{name}/{k}": v for k, v in metrics.items()}


@EVALUATORS.register("zero_shot_suite")
def zero_shot_suite(params, ctx) -> dict[str, float]:
  results: dict[str, float] = {}
  for name, what in parse_datasets(setting(ctx.config, "zero_shot_suite", "zs_datasets")):
    results.update(evaluate(params, ctx, name, what))
  return results
