"""Image-caption data sets prepared by a TFDS builder (Flickr8k), served to the grain pipeline.

Training examples get a random-resized crop (Szegedy et al. 2015, as torchvision / open_clip sample it) to
`data.image_size`, an optional horizontal flip (`data.flip`; off by default since captions say "left"/"right")
and one of the image's captions drawn at random; evaluation resizes the whole image and keeps every caption
(Flickr8k: 5 per image, so 1k test images give 5k retrieval queries).

Data config keys read: `name`, `image_size`, `crop_scale` (min, max area fraction), `flip`, `manual_dir`,
`data_dir` (empty: the builder defaults), `skip_bad`, and `fake_raw`: n > 0 builds from a generated fake raw
folder of n images in the real format (under the temp dir) instead of the real files; tests use it so that the
real loader code runs without `../shared/data`.
"""
from __future__ import annotations

import math
import os
import pathlib
import tempfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data import DatasetEntry
from mmjax.data import builders
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: tuple[float, float] = (0.9, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of a crop covering a uniform `scale` fraction of the area with a log-uniform
  aspect `ratio`; 10 tries, then the largest centred crop within `ratio` (torchvision's RandomResizedCrop)."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  top, left = (height - h) // 2, (width - w) // 2
  return left, top, left + w, top + h


def min_crop_side(height: int, width: int, scale: tuple[float, float]) -> float:
  """A lower bound of the shorter side of every box `random_resized_crop_box(rng, height, width, scale)` can draw
  (default ratio (3/4, 4/3)): a try's sides are round(sqrt(area * s * a)) and round(sqrt(area * s / a)) with
  s >= scale[0] and a in [3/4, 4/3]; the fallback's shorter side is min(height, width)."""
  return min(height, width, math.sqrt(scale[0] * height * width * 3 / 4) - 0.5)


def draft_factor(height: int, width: int, size: int, scale: tuple[float, float]) -> int:
  """The largest f in (8, 4, 2, 1) by which a height x width image may be reduced before its random-resized crop to
  `size` (scale `scale`): every box that can be drawn still spans >= size pixels each way at 1/f, so the bicubic
  resize from the reduced image stays a reduction (or 1:1), as from the full image (mmjax.data.image_files.decode_pil
  decodes a JPEG at 1/f)."""
  side = min_crop_side(height, width, scale)
  return next((f for f in (8, 4, 2) if side / f >= size), 1)


def resize(image, size: int, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
  """uint8 [H, W, 3] or an RGB PIL image -> uint8 [size, size, 3]: the `box` region (default: all; PIL's
  (left, top, right, bottom), fractional allowed), bicubic (antialiased)."""
  if isinstance(image, Image.Image):
    if box is None and image.size == (size, size):
      return np.asarray(image)
  else:
    if box is None and image.shape[0] == size and image.shape[1] == size:
      return image
    image = Image.fromarray(image)
  return np.asarray(image.resize((size, size), Image.BICUBIC, box=box))


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class TfdsSource:
  """A grain random-access source over a prepared split: `image` uint8 [H, W, 3], `captions` list[str]."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    ex = self.source[int(index)]
    return {"image": ex["image"], "captions": [_text(c) for c in ex["captions"]]}

  def __repr__(self) -> str:
    return f"TfdsSource({self.source!r})"


def _cfg(data_cfg, key: str, default):
  return data_cfg.get(key, default) if hasattr(data_cfg, "get") else default


def prepared(data_cfg, name: str | None = None) -> builders.MmjaxBuilder:
  """The data set's builder, prepared on first use (see module docstring for the config keys)."""
  name = name or data_cfg["name"]
  fake = int(_cfg(data_cfg, "fake_raw", 0))
  manual_dir, data_dir = _cfg(data_cfg, "manual_dir", "") or None, _cfg(data_cfg, "data_dir", "") or None
  if fake:
    root = pathlib.Path(tempfile.gettempdir()) / f"mmjax_fake_{os.getuid()}" / f"{name}_{fake}"
    data_dir = data_dir or root / "tfds"
    manual_dir = root / "raw"
    with builders.file_lock(root / ".lock"):
      if not (manual_dir / ".complete").exists():
        builders.get_builder(name)
        builders.BUILDERS[name].make_fake_raw(manual_dir, n=fake)
        (manual_dir / ".complete").touch()
  return builders.prepare(name, manual_dir=manual_dir, data_dir=data_dir,
                          skip_bad=bool(_cfg(data_cfg, "skip_bad", False)))


def image_text_source(data_cfg, split: str) -> TfdsSource:
  b = prepared(data_cfg)
  if split not in b.info.splits:
    raise MmjaxError(f"data set {b.name!r} has no split {split!r}; it has {', '.join(b.info.splits)}")
  return TfdsSource(b.as_data_source(split))


def image_text_corpus(data_cfg) -> list[str]:
  """Every caption of the train split (the images are not decoded)."""
  b = prepared(data_cfg)
  src = b.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
  return [_text(c) for i in range(len(src)) for c in src[i]["captions"]]


def train_transform(example: dict, rng: np.random.Generator, data_cfg) -> dict:
  """`image` uint8 [H, W, 3] or an RGB PIL image; a streamed example may carry `full_hw` (H, W) and `reduced_by` f:
  its image was decoded at 1/f (image_files.decode_pil), and the crop box is drawn on the full H x W, as it would be
  without the reduction, then divided by f."""
  image = example["image"]
  scale = tuple(float(s) for s in _cfg(data_cfg, "crop_scale", (0.9, 1.0)))
  hw = example.get("full_hw") or ((image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2])
  box = random_resized_crop_box(rng, int(hw[0]), int(hw[1]), scale)
  f = example.get("reduced_by", 1)
  if f != 1:
    box = tuple(c / f for c in box)
  image = resize(image, int(data_cfg["image_size"]), box)
  if _cfg(data_cfg, "flip", False) and rng.random() < 0.5:
    image = image[:, ::-1]
  caption = example["captions"][int(rng.integers(len(example["captions"])))]
  return {"image": np.ascontiguousarray(image), "caption": caption}


def eval_transform(example: dict, data_cfg) -> dict:
  return {"image": resize(example["image"], int(data_cfg["image_size"])), "captions": example["captions"]}


DATASETS.register("flickr8k")(DatasetEntry(source=image_text_source, corpus=image_text_corpus,
                                           train_transform=train_transform, eval_transform=eval_transform))
