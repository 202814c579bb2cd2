"""ImageNet-style folders `root/<class>/*.jpg` as a classification data set (`data.name = "image_folder"`).

As torchvision's ImageFolder (which open_clip / CLIP_benchmark evaluate with): classes are the sub-folders of the
split's folder in sorted order, label i the i-th of them; files `*.jpg|jpeg|png|webp` (any case), sorted, in any
depth below the class folder. Class names for prompts: the folder names ("_" -> " "), or the lines of a
`classnames.txt` (one per class, in the sorted folder order; CLIP_benchmark's format) in the split folder or root.

Splits: `data.folder_root/<split>` (train, val, test; the test split falls back to val, as ImageNet's layout has no
test folder) when the root has split folders, else the root itself for every split.
Examples: `image` uint8 [S, S, 3] (S = data.image_size; training: a random-resized crop as image_text's, evaluation:
the whole image resized), `label` int32, `image_id` the path relative to the split folder; preprocessed for models
to `image` float32 [S, S, 3] in [-1, 1] and `label` int32 (so a fusion classifier with modalities ("image",) and
objective "classify" trains on it). For CLIP evaluation: `evals.clip.zero_shot_data = "image_folder:/path/to/root"` and
`evals.linear_probe.probe_data = "image_folder:/path/to/root"` (evals/clip_evals.py, evals/linear_probe.py).

Bad input (mmjax/data/bad_input.py): as a training source (`data.name = "image_folder"`, `data.skip_bad` defaulting
to True) an image that does not decode or cannot be read is passed over for the next readable one (logged, counted
as train/data_bad; more than `data.max_bad_fraction` bad stops the run). As evaluation data ("image_folder:<root>")
it is strict: a bad image stops the evaluation with one line naming the file, since a result over fewer images
would not compare with published ones.
"""
from __future__ import annotations

import os

import numpy as np

from mmjax.data import DatasetEntry, bad_input, image_text
from mmjax.data.image_files import IMAGE_EXTS, BadImage, decode_image, first_readable
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

CONFIG_KEYS = dict(folder_root="")
SPLITS = ("train", "val", "test")
PREFIX = "image_folder:"        # evals.clip.zero_shot_data / evals.linear_probe.probe_data = "image_folder:<root>"


def split_dir(root: str, split: str) -> str:
  if not os.path.isdir(root):
    raise MmjaxError(f"image folder {root!r} does not exist (config key data.folder_root or evals.*_data="
                     f"'image_folder:<root>')")
  for name in (split, "val") if split == "test" else (split,):
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
  if present:
    raise MmjaxError(f"image folder {root!r} has split folders {present} but no {split!r} one; point it at a folder "
                     f"of class folders or add {root}/{split}")
  return root


def list_folder(directory: str) -> tuple[list[str], list[tuple[str, int]]]:
  """(class folder names sorted, [(image path, label)] sorted by class then path)."""
  classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
  if not classes:
    raise MmjaxError(f"image folder {directory!r} has no class sub-folders; expected <root>/<class>/*.jpg")
  files = []
  for label, c in enumerate(classes):
    found = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(directory, c)) for f in names
                   if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS)
    files += [(p, label) for p in found]
  if not files:
    raise MmjaxError(f"image folder {directory!r} has no images ({', '.join(IMAGE_EXTS)}) in its class folders")
  return classes, files


def class_names(root: str, directory: str, classes: list[str]) -> list[str]:
  """The display names: classnames.txt (split folder, else root) or the folder names with "_" -> " "."""
  for d in (directory, root):
    path = os.path.join(d, "classnames.txt")
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
      if len(names) != len(classes):
        raise MmjaxError(f"{path} has {len(names)} class names but {directory} has {len(classes)} class folders; "
                         f"give one line per folder, in sorted folder order")
      return names
  return [c.replace("_", " ") for c in classes]


class ImageFolderSource:
  """A grain random-access source: `image` uint8 [H, W, 3] as decoded, `label` int32, `image_id` str (and `_bad`,
  the bad images passed over to serve it when `skip_bad`: see bad_input)."""
  counts_bad = True

  def __init__(self, root: str, split: str = "test", skip_bad: bool = False):
    self.root, self.directory, self.skip_bad = root, split_dir(root, split), skip_bad
    self.classes, self.files = list_folder(self.directory)
    self.classnames = class_names(root, self.directory, self.classes)

  def __len__(self) -> int:
    return len(self.files)

  def _load(self, index: int) -> dict:
    path, label = self.files[index]
    where = f"image folder {self.directory}: {path}"
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise BadImage(f"{where}: cannot read the image ({e.strerror})") from None
    return {"image": decode_image(data, where), "label": np.int32(label),
            "image_id": os.path.relpath(path, self.directory)}

  def __getitem__(self, index: int) -> dict:
    return first_readable(self._load, int(index), len(self.files), self.skip_bad,
                          "fix or remove the file (training with data.skip_bad=True passes over it; evaluation "
                          "data are never skipped)",
                          f"image folder {self.directory}: no image is readable")


def classification_arrays(root: str, split: str, size: int, limit: int | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
  """(images uint8 [N, size, size, 3] resized whole, labels int64 [N], class names, image_ids str [N]) of the
  first `limit` images (all by default) of a folder's split, for zero-shot and linear-probe evaluation."""
  src = ImageFolderSource(root, split)
  n = len(src) if limit is None else min(limit, len(src))
  examples = [src[i] for i in range(n)]
  images = np.stack([image_text.resize(e["image"], size) for e in examples]).astype(np.uint8)
  return (images, np.asarray([int(e["label"]) for e in examples], np.int64), src.classnames,
          np.asarray([e["image_id"] for e in examples]))


def source(data_cfg, split: str) -> ImageFolderSource:
  root = data_cfg.get("folder_root", "")
  if not root:
    raise MmjaxError("data.name='image_folder' needs data.folder_root (root/<class>/*.jpg)")
  return ImageFolderSource(root, split, skip_bad=bad_input.skip_bad(data_cfg))


def train_transform(example: dict, rng: np.random.Generator, data_cfg) -> dict:
  image = example["image"]
  scale = tuple(float(s) for s in data_cfg.get("crop_scale", (0.9, 1.0)))
  box = image_text.random_resized_crop_box(rng, image.shape[0], image.shape[1], scale)
  image = image_text.resize(image, int(data_cfg["image_size"]), box)
  if data_cfg.get("flip", False) and rng.random() < 0.5:
    image = image[:, ::-1]
  return {"image": np.ascontiguousarray(image), "label": example["label"]}


def eval_transform(example: dict, data_cfg) -> dict:
  return {"image": image_text.resize(example["image"], int(data_cfg["image_size"])), "label": example["label"]}


def preprocess(example: dict, data_cfg) -> dict:
  del data_cfg
  return {"image": example["image"].astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0),
          "label": np.int32(example["label"])}


DATASETS.register("image_folder")(DatasetEntry(source=source, train_transform=train_transform,
                                               eval_transform=eval_transform, preprocess=preprocess,
                                               config_keys=CONFIG_KEYS))
