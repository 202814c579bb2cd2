"""ImageNet-1k (ILSVRC2012) validation images for evaluation (`evals.zero_shot_suite.zs_datasets = "imagenet2012"`),
no TensorFlow.

TFDS's `imagenet2012` builder wants ILSVRC2012_img_{train,val}.tar in its manual dir and TensorFlow to prepare; this
module reads the validation set in the layouts people have, from a root (`imagenet2012:<root>`, else
`$MMJAX_RAW_DATA/imagenet2012`, else `../shared/data/imagenet2012`):

  1. `<root>/ILSVRC2012_img_val.tar`: the official download (the file TFDS's manual dir holds), read in place (the tar
     is indexed once, each image is read at its offset: random access, nothing extracted);
  2. the same images extracted flat, `<root>/ILSVRC2012_val_00000001.JPEG ...` (or under `<root>/val/`);
  3. `<root>/val/<wnid>/*.JPEG` (or `<root>/<wnid>/`): the class-folder layout of valprep.sh / the PyTorch ImageNet
     example, labelled by folder.
  4. an `imagenet2012` TFDS prepared elsewhere, if it is in the array_record format: `<data_dir>/imagenet2012/<ver>/`
     found in `data.data_dir` (default $TFDS_DATA_DIR or ~/tensorflow_datasets), or `imagenet2012:<that version dir>`;
     read with `tfds.builder_from_directory(...).as_data_source("validation")` (no builder code, no TensorFlow).
     TFDS's default tfrecord format cannot be read this way: prepare with `--file_format=array_record` or convert.

Labels of layouts 1 and 2: Kaggle's `LOC_val_solution.csv` (`ImageId,PredictionString`, the first word of the latter
the wnid) when it is in the root, else TFDS's own `validation_labels.txt` (shipped in the tensorflow_datasets package:
the wnid of each of the 50,000 images, in file-name order; the image number in the file name picks the line, so a
subset of the images is labelled correctly too). A label is the wnid's position among the 1000 sorted wnids (TFDS's
labels.txt, torchvision's ImageFolder order), so labels agree across layouts; class names are CLIP's 1000
(mmjax/evals/prompts/imagenet_classnames.txt, in that order). Examples: `image` uint8 [H, W, 3] as decoded (RGB),
`label` int, `image_id` the file name.

Evaluation data are never skipped: an image that does not decode stops with one line naming the tar member or file.
Not supported: the train split (ILSVRC2012_img_train.tar: extract it to `train/<wnid>/` and use data.name =
"image_folder"), the devkit's ILSVRC2012_validation_ground_truth.txt (its ids need meta.mat; use either labels source
above), and TFDS datasets prepared as tfrecord.
"""
from __future__ import annotations

import csv
import os
import re
import tarfile

import numpy as np

from mmjax.data.image_files import BadImage, decode_image
from mmjax.errors import MmjaxError

NAME = "imagenet2012"
PREFIX = "imagenet2012:"
VAL_TAR = "ILSVRC2012_img_val.tar"
LOC_CSV = "LOC_val_solution.csv"
NUM_VAL = 50000
_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
_WNID = re.compile(r"n\d{8}")


def _tfds_file(name: str) -> str:
  import tensorflow_datasets as tfds
  return os.fspath(tfds.core.tfds_path(f"datasets/imagenet2012/{name}"))


def _lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def wnids() -> list[str]:
  """The 1000 WordNet ids in label order (sorted; TFDS's imagenet2012 labels.txt)."""
  out = _lines(_tfds_file("labels.txt"))
  if len(out) != 1000 or out != sorted(out):
    raise MmjaxError(f"{_tfds_file('labels.txt')}: expected 1000 sorted WordNet ids, got {len(out)}")
  return out


def tfds_validation_labels() -> list[str]:
  """TFDS's validation_labels.txt: the wnid of ILSVRC2012_val_{k:08d}.JPEG on line k (1-based)."""
  return _lines(_tfds_file("validation_labels.txt"))


def read_loc_solution(path: str) -> dict[int, str]:
  """Kaggle's LOC_val_solution.csv -> {image number: wnid} (the first wnid of PredictionString)."""
  out: dict[int, str] = {}
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or []):
      raise MmjaxError(f"{path}: expected the columns ImageId,PredictionString (Kaggle's LOC_val_solution.csv), "
                       f"got {reader.fieldnames}")
    for row in reader:
      m = re.fullmatch(r"ILSVRC2012_val_(\d{8})", (row["ImageId"] or "").strip())
      words = (row["PredictionString"] or "").split()
      if not m or not words or not _WNID.fullmatch(words[0]):
        raise MmjaxError(f"{path}:{reader.line_num}: expected ILSVRC2012_val_NNNNNNNN,<wnid> ..., got "
                         f"{row['ImageId']!r},{(row['PredictionString'] or '')[:30]!r}")
      out[int(m.group(1))] = words[0]
  return out


def index_tar(path: str) -> list[tuple[str, int, int]]:
  """[(member base name, data offset, size)] of the regular files of an uncompressed tar."""
  out = []
  try:
    with tarfile.open(path, "r:") as tf:
      for m in tf:
        if m.isfile():
          out.append((os.path.basename(m.name), m.offset_data, m.size))
  except (tarfile.TarError, OSError, EOFError) as e:
    raise MmjaxError(f"{path}: not a readable (uncompressed) tar ({type(e).__name__}: {e}); download "
                     f"{VAL_TAR} again") from None
  size = os.path.getsize(path)
  if out and out[-1][1] + out[-1][2] > size:
    raise MmjaxError(f"{path}: truncated ({size} bytes; its member {out[-1][0]} ends at byte "
                     f"{out[-1][1] + out[-1][2]}); download {VAL_TAR} again")
  return out


def _label_of(numbered: list[tuple[int, object]], root: str) -> list[int]:
  """The labels of images numbered k (ILSVRC2012_val_k.JPEG), from LOC_val_solution.csv or TFDS's list."""
  order = {w: i for i, w in enumerate(wnids())}
  loc = os.path.join(root, LOC_CSV)
  if os.path.isfile(loc):
    table, source = read_loc_solution(loc), loc
    get = lambda k: table.get(k)
  else:
    lines, source = tfds_validation_labels(), _tfds_file("validation_labels.txt")
    get = lambda k: lines[k - 1] if 1 <= k <= len(lines) else None
  out = []
  for k, _ in numbered:
    w = get(k)
    if w not in order:
      raise MmjaxError(f"{source}: no label for ILSVRC2012_val_{k:08d}.JPEG" + (f" ({w!r} is not one of the 1000 "
                                                                                  f"wnids)" if w else ""))
    out.append(order[w])
  return out


class ImageNetVal:
  """Random access to the ILSVRC2012 validation images of a root (layouts 1-3 of the module docstring):
  `len`, `[i]` -> {image uint8 [H, W, 3], label int32, image_id str}, `labels` int64 [N], `classnames`, `layout`."""

  def __init__(self, root: str):
    if not os.path.isdir(root):
      raise MmjaxError(f"ImageNet root {root!r} does not exist; give evals.zero_shot_suite.zs_datasets="
                       f"'imagenet2012:<dir>' (a dir holding {VAL_TAR}, its extracted images or val/<wnid>/ "
                       f"folders) or set $MMJAX_RAW_DATA")
    from mmjax.evals.benchmark import imagenet_classnames
    self.root, self.classnames = root, imagenet_classnames()
    self.tar, items = None, None
    if os.path.isfile(os.path.join(root, VAL_TAR)):
      self.tar, self.layout = os.path.join(root, VAL_TAR), "tar"
      numbered = [(int(m.group(1)), (off, size)) for name, off, size in index_tar(self.tar)
                  if (m := _VAL_FILE.fullmatch(name))]
      where = self.tar
    else:
      numbered, where = [], root
      for d in (root, os.path.join(root, "val")):
        if os.path.isdir(d):
          numbered = [(int(m.group(1)), os.path.join(d, f)) for f in os.listdir(d) if (m := _VAL_FILE.fullmatch(f))]
          if numbered:
            where, self.layout = d, "files"
            break
    if numbered:
      numbered.sort()
      items = [(f"ILSVRC2012_val_{k:08d}.JPEG", ref) for k, ref in numbered]
      labels = _label_of(numbered, root)
    else:
      items, labels = self._folders()
    if not items:
      raise MmjaxError(f"{where}: no ImageNet validation images ({VAL_TAR}, ILSVRC2012_val_NNNNNNNN.JPEG files or "
                       f"val/<wnid>/ folders)")
    self.items, self.labels = items, np.asarray(labels, np.int64)

  def _folders(self) -> tuple[list, list[int]]:
    order = {w: i for i, w in enumerate(wnids())}
    for d in (os.path.join(self.root, "val"), self.root):
      if not os.path.isdir(d):
        continue
      folders = sorted(e.name for e in os.scandir(d) if e.is_dir() and _WNID.fullmatch(e.name))
      if not folders:
        continue
      unknown = [f for f in folders if f not in order]
      if unknown:
        raise MmjaxError(f"{d}: folder {unknown[0]!r} is not one of the 1000 ImageNet-1k WordNet ids")
      items, labels = [], []
      for w in folders:
        for f in sorted(os.listdir(os.path.join(d, w))):
          if f.rsplit(".", 1)[-1].lower() in ("jpeg", "jpg", "png"):
            items.append((f, os.path.join(d, w, f)))
            labels.append(order[w])
      self.layout = "folders"
      return items, labels
    return [], []

  def __len__(self) -> int:
    return len(self.items)

  def read(self, index: int) -> bytes:
    name, ref = self.items[index]
    try:
      if self.tar is not None:
        offset, size = ref
        with open(self.tar, "rb") as f:
          f.seek(offset)
          data = f.read(size)
        if len(data) != size:
          raise OSError(f"read {len(data)} of {size} bytes")
        return data
      with open(ref, "rb") as f:
        return f.read()
    except OSError as e:
      raise MmjaxError(f"{self._where(index)}: cannot read ({e})") from None

  def _where(self, index: int) -> str:
    name, ref = self.items[index]
    return f"{self.tar}:{name}" if self.tar is not None else ref

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    try:
      image = decode_image(self.read(index), self._where(index))
    except BadImage as e:
      raise MmjaxError(f"{e}; evaluation data are never skipped: restore the file") from None
    return {"image": image, "label": np.int32(self.labels[index]), "image_id": self.items[index][0]}

  def __repr__(self) -> str:
    return f"ImageNetVal({self.root!r}, {len(self)} images, {self.layout})"


# --------------------------------------------------------------------------------------------- prepared by TFDS
def prepared_dir(data_dir: str) -> str | None:
  """`<data_dir>/imagenet2012/<newest version>` holding a dataset_info.json, or None."""
  base = os.path.join(os.path.expanduser(data_dir), NAME)
  if not os.path.isdir(base):
    return None
  versions = [v for v in os.listdir(base) if re.fullmatch(r"\d+\.\d+\.\d+", v)
              and os.path.isfile(os.path.join(base, v, "dataset_info.json"))]
  if not versions:
    return None
  return os.path.join(base, max(versions, key=lambda v: tuple(map(int, v.split(".")))))


class PreparedImageNet:
  """The validation split of an imagenet2012 TFDS prepared in array_record format (`version_dir`): `len`, `[i]` ->
  {image, label, image_id}; labels are TFDS's (the sorted wnids, as ImageNetVal's), read with the images."""

  def __init__(self, version_dir: str, split: str = "validation"):
    import tensorflow_datasets as tfds
    b = tfds.builder_from_directory(version_dir)
    fmt = getattr(b.info.file_format, "value", b.info.file_format)
    if str(fmt) != "array_record":
      raise MmjaxError(f"{version_dir}: prepared as {fmt}, which needs TensorFlow to read; prepare it with "
                       f"`tfds build imagenet2012 --file_format=array_record` (or convert it with `tfds "
                       f"convert_format`), or give the raw {VAL_TAR} instead")
    if split not in b.info.splits:
      raise MmjaxError(f"{version_dir}: no {split!r} split (it has {', '.join(b.info.splits)})")
    names = list(b.info.features["label"].names)
    if names != wnids():
      raise MmjaxError(f"{version_dir}: its label names are not the 1000 sorted ImageNet WordNet ids")
    from mmjax.evals.benchmark import imagenet_classnames
    self.directory, self.source, self.classnames = version_dir, b.as_data_source(split), imagenet_classnames()
    self.layout = "tfds"

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    ex = self.source[int(index)]
    name = ex.get("file_name", b"")
    return {"image": np.asarray(ex["image"]), "label": np.int32(ex["label"]),
            "image_id": name.decode() if isinstance(name, bytes) else str(name)}


def open_val(spec: str, data_dir: str = ""):
  """"imagenet2012" (a TFDS-prepared array_record copy in data_dir, else the raw files in the default root) or
  "imagenet2012:<root>" (raw files, or a TFDS version dir holding dataset_info.json)."""
  from mmjax.data import builders
  if spec.startswith(PREFIX):
    root = os.path.expanduser(spec[len(PREFIX):])
    if os.path.isfile(os.path.join(root, "dataset_info.json")):
      return PreparedImageNet(root)
    return ImageNetVal(root)
  if spec != NAME:
    raise MmjaxError(f"{spec!r}: expected 'imagenet2012' or 'imagenet2012:<dir>'")
  prepared = prepared_dir(data_dir or os.fspath(builders.default_data_dir()))
  if prepared is not None:
    return PreparedImageNet(prepared)
  return ImageNetVal(os.fspath(builders.default_manual_dir(NAME)))
