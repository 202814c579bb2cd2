"""What the standard evaluation suite shares (evals/zero_shot_suite.py, evals/retrieval_suite.py): prompt files,
CLIP's evaluation image transform, batched encoding of a source, classification metrics and CLIP_benchmark's
result files.

Packaged prompt files (mmjax/evals/prompts/, one per line, "{}" for the class name): `imagenet_templates.txt`, the
80 templates of CLIP (Radford et al. 2021; openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb, as
open_clip's zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES), `cifar_templates.txt`, CLIP's 18 CIFAR templates (the
same for CIFAR-10 and CIFAR-100 in openai/CLIP data/prompts.md), `imagenet_classnames.txt`, CLIP's 1000 ImageNet
class names (open_clip's IMAGENET_CLASSNAMES), in the order of the sorted WordNet ids (the folder names of an
ImageNet val folder), and `cifar100_classnames.txt`, CLIP's 100 CIFAR-100 class names (data/prompts.md; the
release's fine_label_names with "_" -> " ", in label order; open_clip ships no CIFAR-100 list).
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Sequence

import jax
import numpy as np
from PIL import Image

from mmjax.errors import MmjaxError
from mmjax.evals.base import setting

PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
PACKAGED = {"imagenet": "imagenet_templates.txt", "cifar": "cifar_templates.txt"}


def read_lines(path: str, what: str) -> list[str]:
  """The non-empty stripped lines of a text file."""
  if not os.path.isfile(path):
    raise MmjaxError(f"{what} file {path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f if line.strip()]
  if not lines:
    raise MmjaxError(f"{what} file {path} is empty")
  return lines


def templates(spec: str, key: str = "evals.zero_shot_suite.zs_templates") -> list[str]:
  """"imagenet" / "cifar" (the packaged lists) or the path of a file of templates, one per line, each with "{}"."""
  path = os.path.join(PROMPTS, PACKAGED[spec]) if spec in PACKAGED else spec
  out = read_lines(path, f"prompt template ({key})")
  bad = [t for t in out if t.count("{}") != 1]
  if bad:
    raise MmjaxError(f"{path}: template {bad[0]!r} must hold '{{}}' exactly once (where the class name goes)")
  return out


def imagenet_classnames() -> list[str]:
  return read_lines(os.path.join(PROMPTS, "imagenet_classnames.txt"), "class name")


def cifar100_classnames() -> list[str]:
  return read_lines(os.path.join(PROMPTS, "cifar100_classnames.txt"), "class name")


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, 3]: shorter side to `size` (bicubic), then the centre crop: CLIP's and
  open_clip's evaluation transform (torchvision Resize(size) + CenterCrop(size)), so results compare with theirs."""
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  if h <= w:
    nh, nw = size, int(size * w / h)
  else:
    nh, nw = int(size * h / w), size
  im = Image.fromarray(image)
  if (nh, nw) != (h, w):
    im = im.resize((nw, nh), Image.BICUBIC)
  top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
  return np.asarray(im.crop((left, top, left + size, top + size)))


NORMS = ("minus_one_one", "openai")      # evals.<zero_shot_suite|retrieval_suite>.suite_image_norm


def normalize(images: np.ndarray, norm: str) -> np.ndarray:
  """uint8 [B, S, S, 3] -> float32 model inputs: "minus_one_one", mmjax's training scale (x / 127.5 - 1); "openai",
  open_clip's ToTensor + Normalize(OPENAI_MEAN, OPENAI_STD), for imported OpenCLIP weights (interop/open_clip.py)."""
  if norm == "minus_one_one":
    return images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)
  if norm == "openai":
    from mmjax.interop.open_clip import preprocess_images
    return preprocess_images(images)
  raise MmjaxError(f"the suite_image_norm setting {norm!r} is unknown; use one of {', '.join(NORMS)}")


def encode_images(encode: Callable, params, load: Callable[[int], np.ndarray], n: int, batch_size: int,
                  norm: str = "minus_one_one") -> np.ndarray:
  """Unit-norm embeddings float32 [n, D] of images load(i) -> uint8 [S, S, 3], `batch_size` at a time (the last
  batch padded by repetition, so one compiled shape), scaled by `normalize(., norm)`."""
  normalize(np.zeros((1, 1, 1, 3), np.uint8), norm)            # a bad norm fails before any image is read
  out = []
  for start in range(0, n, batch_size):
    chunk = np.stack([load(i) for i in range(start, min(n, start + batch_size))])
    m = len(chunk)
    if m < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, axis=0)])
    x = normalize(chunk, norm)
    out.append(np.asarray(jax.device_get(encode(params, x)), np.float32)[:m])
  return unit(np.concatenate(out))


def unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
  """CLIP_benchmark's zero-shot metrics from logits [N, C] and int labels [N]: {"acc1", "acc5" (k <= C only),
  "mean_per_class_recall"} as fractions in [0, 1]. acc_k: the true class among the k highest scores (ties count
  against it); mean per-class recall: the recall of the top-1 prediction averaged over the classes present in
  `labels` (scikit-learn's balanced_accuracy_score, which CLIP_benchmark reports)."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  if logits.ndim != 2 or labels.shape != (logits.shape[0],) or not len(labels):
    raise MmjaxError(f"classification_metrics: logits [N, C] and labels [N] with N > 0, got {logits.shape} and "
                     f"{labels.shape}")
  true = np.take_along_axis(logits, labels[:, None], axis=1)
  others = np.arange(logits.shape[1])[None, :] != labels[:, None]
  rank = np.sum((logits >= true) & others, axis=1)           # wrong classes scoring at least the true one
  out = {f"acc{k}": float(np.mean(rank < k)) for k in ks if k <= logits.shape[1]}
  pred = np.argmax(logits, axis=1)
  out["mean_per_class_recall"] = float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))
  return out


def slug(name: str) -> str:
  """A file-name-safe form of a data set name ("image_folder:/data/imagenet" -> "image_folder_data_imagenet")."""
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def write_clip_benchmark(workdir: str | None, *, dataset: str, model: str, pretrained: str, task: str,
                         metrics: dict[str, float], language: str = "en") -> str | None:
  """One result file in CLIP_benchmark's format ({"dataset", "model", "pretrained", "task", "metrics", "language"},
  clip_benchmark/cli.py), as `<workdir>/clip_benchmark/<dataset>_<task>.json`, written atomically; None: no workdir."""
  if not workdir:
    return None
  directory = os.path.join(workdir, "clip_benchmark")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{slug(dataset)}_{task}.json")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"dataset": dataset, "model": model, "pretrained": pretrained, "task": task,
               "metrics": {k: float(v) for k, v in metrics.items()}, "language": language}, f, indent=1)
  os.replace(tmp, path)
  return path


def model_names(ctx, evaluator: str) -> tuple[str, str]:
  """("model", "pretrained") for the result files: evals.<evaluator>.benchmark_model / benchmark_pretrained, else
  the config's model.name and the workdir."""
  cfg = ctx.config
  model = setting(cfg, evaluator, "benchmark_model") or str(cfg.model.get("name", "model"))
  pretrained = setting(cfg, evaluator, "benchmark_pretrained") or (os.path.basename(os.path.normpath(ctx.workdir))
                                                                   if ctx.workdir else "")
  return model, pretrained
