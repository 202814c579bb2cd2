"""COCO / Flickr30k / Flickr8k captions in Karpathy's split JSON (`dataset_coco.json`, `dataset_flickr30k.json`;
Karpathy & Fei-Fei 2015) over local image files (`data.name = "karpathy"`; evals/retrieval_suite.py reads any such file).

The JSON: {"dataset": "coco", "images": [{"filepath": "val2014" (COCO only), "filename": "COCO_val2014_...jpg",
"split": "train" | "restval" | "val" | "test", "sentences": [{"raw": "A man ..."}, ...]}, ...]}. An image's file is
`<image root>/<filepath>/<filename>` (`<image root>/<filename>` without a filepath), the image root
`data.karpathy_images` (default: the JSON's folder). Splits as in the papers that report on them (and
CLIP_benchmark): "test" (COCO 5k, Flickr30k 1k images, 5 captions each), "val", and "train" = train + restval.

Examples: `image` uint8 [H, W, 3] as decoded, `captions` [str] (every raw sentence, stripped), `image_id` the path
relative to the image root; cropped and tokenized as Flickr8k's (image_text.train_transform / eval_transform).
"""
from __future__ import annotations

import json
import os

from mmjax.data import DatasetEntry, image_text
from mmjax.data.image_files import BadImage, decode_image
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

CONFIG_KEYS = dict(karpathy_json="", karpathy_images="")
SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def read_split(json_path: str, split: str, image_root: str = "") -> tuple[str, list[tuple[str, list[str]]]]:
  """(the JSON's "dataset" name, [(image path, captions)] of `split` in file order)."""
  if not os.path.isfile(json_path):
    raise MmjaxError(f"Karpathy split file {json_path!r} does not exist (config key data.karpathy_json or "
                     f"evals.retrieval_suite.retrieval_json)")
  if split not in SPLITS:
    raise MmjaxError(f"Karpathy split {split!r} is unknown; use one of {', '.join(SPLITS)}")
  try:
    with open(json_path, encoding="utf-8") as f:
      doc = json.load(f)
    images = doc["images"]
  except (ValueError, KeyError, TypeError) as e:
    raise MmjaxError(f"{json_path}: not a Karpathy split JSON ({type(e).__name__}: {e}); expected "
                     f"{{'images': [{{'filename', 'split', 'sentences': [{{'raw'}}]}}]}}") from None
  root = image_root or os.path.dirname(os.path.abspath(json_path))
  out = []
  for i, im in enumerate(images):
    if im.get("split") not in SPLITS[split]:
      continue
    captions = [s["raw"].strip() for s in im.get("sentences", []) if s.get("raw", "").strip()]
    if not captions or "filename" not in im:
      raise MmjaxError(f"{json_path}: images[{i}] has no filename or no sentence with a 'raw' caption")
    out.append((os.path.join(root, im.get("filepath", ""), im["filename"]), captions))
  if not out:
    raise MmjaxError(f"{json_path}: no image in split {split!r} (splits present: "
                     f"{sorted({im.get('split') for im in images})})")
  return str(doc.get("dataset", os.path.splitext(os.path.basename(json_path))[0])), out


class KarpathySource:
  """A grain random-access source: `image` uint8 [H, W, 3], `captions` [str], `image_id` str."""

  def __init__(self, json_path: str, split: str = "test", image_root: str = ""):
    self.json_path = json_path
    self.dataset, self.items = read_split(json_path, split, image_root)
    self.root = image_root or os.path.dirname(os.path.abspath(json_path))

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict:
    path, captions = self.items[int(index)]
    try:
      with open(path, "rb") as f:
        image = decode_image(f.read(), path)
    except (OSError, BadImage) as e:
      raise MmjaxError(f"{self.json_path}: image {path}: {getattr(e, 'strerror', None) or e}; check the image root "
                       f"(data.karpathy_images / evals.retrieval_suite.retrieval_images)") from None
    return {"image": image, "captions": list(captions), "image_id": os.path.relpath(path, self.root)}


def source(data_cfg, split: str) -> KarpathySource:
  if not data_cfg.get("karpathy_json", ""):
    raise MmjaxError("data.name='karpathy' needs data.karpathy_json (dataset_coco.json / dataset_flickr30k.json)")
  return KarpathySource(data_cfg.karpathy_json, split, data_cfg.get("karpathy_images", ""))


def corpus(data_cfg) -> list[str]:
  return [c for _, captions in source(data_cfg, "train").items for c in captions]


DATASETS.register("karpathy")(DatasetEntry(source=source, corpus=corpus, train_transform=image_text.train_transform,
                                           eval_transform=image_text.eval_transform, config_keys=CONFIG_KEYS))
