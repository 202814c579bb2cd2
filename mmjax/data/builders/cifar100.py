"""CIFAR-100 (Krizhevsky 2009) from the official python release: splits `train` (50,000) and `test` (10,000).

Raw file (the manual dir, default `$MMJAX_RAW_DATA/cifar100` or `../shared/data/cifar100`): `cifar-100-python.tar.gz`
as downloaded from https://www.cs.toronto.edu/~kriz/cifar.html, holding `cifar-100-python/{train,test,meta}`,
pickled dicts (read as the page says, `pickle.load(f, encoding="bytes")`): a split has b"data" uint8 [N, 3072] (each
row the 1024 red, then green, then blue values of a 32x32 image in row-major order), b"fine_labels" and
b"coarse_labels" (N ints), b"filenames" (N bytes); meta has b"fine_label_names" (100) and b"coarse_label_names"
(20). Only numpy's array reconstruction is allowed while unpickling (no other code in the file can run).

Each example (stored in TFDS's key-hashed order; `image_id` gives the release's position): `image` uint8 [32, 32, 3]
(stored as a lossless PNG, so the pixels are exactly the release's), `label` the fine label (0..99, `FINE_CLASSES`:
the release's fine_label_names, checked against meta), `coarse_label` (0..19), `image_id` "test/00042" (split /
position), `file_name` the release's name.
Zero-shot class names: CLIP's (mmjax/evals/prompts/cifar100_classnames.txt: the fine names with "_" -> " ", as
openai/CLIP data/prompts.md lists them) with CLIP's 18 CIFAR templates (cifar_templates.txt).

Bad input: a file that cannot be read (not a gzip tar, a member missing, a pickle that does not load) stops the
prepare with one line naming it; an example with a row of the wrong size or a label out of range is a BadInput
naming file, split and position (skipped and counted with `skip_bad=True`).
"""
from __future__ import annotations

import io
import pathlib
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data.builders import BadInput, MmjaxBuilder, register
from mmjax.errors import MmjaxError

TAR = "cifar-100-python.tar.gz"
MEMBERS = {"train": "cifar-100-python/train", "test": "cifar-100-python/test"}
META = "cifar-100-python/meta"
IMAGE_SIZE = 32
SPLIT_SIZES = {"train": 50000, "test": 10000}
FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm")
NUM_COARSE = 20

# What the release's pickles may reference: numpy arrays (numpy 1.x and 2.x module names) and, in pickles written
# by Python 3 with protocol 2, bytes rebuilt by _codecs.encode; nothing else.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")


def load_pickle(data: bytes, where: str) -> dict[str, object]:
  """A release pickle -> dict with str keys (b"data" -> "data")."""
  try:
    d = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
  except Exception as e:  # truncated, not a pickle, or a forbidden global
    raise MmjaxError(f"{where}: not a CIFAR-100 python pickle ({type(e).__name__}: {e}); download "
                     f"{TAR} again") from None
  if not isinstance(d, dict):
    raise MmjaxError(f"{where}: expected a pickled dict, got {type(d).__name__}")
  return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in d.items()}


def read_member(path: pathlib.Path, member: str) -> bytes:
  where = f"{path}:{member}"
  try:
    with tarfile.open(path, "r:gz") as tf:
      f = tf.extractfile(member)
      if f is None:
        raise KeyError(member)
      return f.read()
  except KeyError:
    raise MmjaxError(f"{where}: missing from the archive; is it the python version ({TAR})?") from None
  except (tarfile.TarError, OSError, EOFError) as e:
    raise MmjaxError(f"{path}: unreadable or truncated gzip tar ({type(e).__name__}: {e}); download {TAR} "
                     f"again") from None


def _names(values, where: str) -> list[str]:
  try:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
  except Exception as e:
    raise MmjaxError(f"{where}: unreadable label names ({type(e).__name__})") from None


def check_meta(path: pathlib.Path) -> None:
  meta = load_pickle(read_member(path, META), f"{path}:{META}")
  names = _names(meta.get("fine_label_names", []), f"{path}:{META}")
  if tuple(names) != FINE_CLASSES:
    raise MmjaxError(f"{path}:{META}: fine_label_names ({len(names)}, starting {names[:3]}) are not CIFAR-100's "
                     f"100 classes; is it the CIFAR-100 python release?")


def split_arrays(path: pathlib.Path, split: str) -> dict[str, object]:
  """The pickled split: data uint8 [N, 3072], fine_labels, coarse_labels, filenames (as stored)."""
  where = f"{path}:{MEMBERS[split]}"
  d = load_pickle(read_member(path, MEMBERS[split]), where)
  missing = [k for k in ("data", "fine_labels", "coarse_labels") if k not in d]
  if missing:
    raise MmjaxError(f"{where}: no {', '.join(missing)} in the pickle (keys: {sorted(d)})")
  data = np.asarray(d["data"])
  if data.ndim != 2 or len(data) != len(d["fine_labels"]) or len(data) != len(d["coarse_labels"]):
    raise MmjaxError(f"{where}: data {data.shape} and {len(d['fine_labels'])} fine / {len(d['coarse_labels'])} "
                     f"coarse labels do not match")
  return d


def to_image(row: np.ndarray) -> np.ndarray:
  """A release row [3072] (R plane, G plane, B plane) -> uint8 [32, 32, 3]."""
  return np.ascontiguousarray(row.reshape(3, IMAGE_SIZE, IMAGE_SIZE).transpose(1, 2, 0))


def encode_png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


@register("cifar100")
class Cifar100(MmjaxBuilder):
  VERSION = tfds.core.Version("1.0.0")
  FOLDER = "cifar100"
  REQUIRED_FILES = (TAR,)
  DESCRIPTION = "CIFAR-100: 60,000 32x32 colour images in 100 fine (20 coarse) classes; 50,000 train, 10,000 test."
  HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
  CITATION = "Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Tech. report, U. Toronto, 2009."
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put {TAR} (the CIFAR-100 python version) in the manual dir."

  def _features(self):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
        "label": tfds.features.ClassLabel(names=list(FINE_CLASSES)),
        "coarse_label": tfds.features.ClassLabel(num_classes=NUM_COARSE),
        "image_id": tfds.features.Text(),
        "file_name": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    check_meta(self.raw_dir / TAR)
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split: str):
    path = self.raw_dir / TAR
    d = split_arrays(path, split)
    data, fine, coarse = np.asarray(d["data"]), d["fine_labels"], d["coarse_labels"]
    names = d.get("filenames") or [b""] * len(data)
    for i in self.limited(list(range(len(data)))):
      with self.example_guard():
        where = f"{path}:{MEMBERS[split]}: example {i}"
        if data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or data.dtype != np.uint8:
          raise BadInput(where, f"row of {data.shape[1]} {data.dtype} values, expected 3072 uint8")
        label, coarse_label = int(fine[i]), int(coarse[i])
        if not 0 <= label < len(FINE_CLASSES) or not 0 <= coarse_label < NUM_COARSE:
          raise BadInput(where, f"label {label} / coarse label {coarse_label} out of range [0, 100) / [0, 20)")
        name = names[i].decode() if isinstance(names[i], bytes) else str(names[i])
        image_id = f"{split}/{i:05d}"
        yield image_id, {"image": encode_png(to_image(data[i])), "label": label, "coarse_label": coarse_label,
                         "image_id": image_id, "file_name": name}

  @classmethod
  def make_fake_raw(cls, root, n: int = 20, seed: int = 0, n_train: int | None = None) -> pathlib.Path:
    """Writes a fake `cifar-100-python.tar.gz` in the release's format under `root` (returned): `n` test and
    `n_train` (default n) train images, random pixels tinted per fine class (learnable), labels cycling through
    the classes, pickled with bytes keys as the release's are."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (len(FINE_CLASSES), 3))
    members = {META: {b"fine_label_names": [c.encode() for c in FINE_CLASSES],
                      b"coarse_label_names": [f"coarse_{k}".encode() for k in range(NUM_COARSE)]}}
    for split, count in (("train", n if n_train is None else n_train), ("test", n)):
      labels = [(7 * k + (split == "test")) % len(FINE_CLASSES) for k in range(count)]
      images = np.stack([np.clip(colours[c] + rng.normal(0, 30, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
                         for c in labels]).astype(np.uint8) if count else np.zeros((0, 32, 32, 3), np.uint8)
      members[MEMBERS[split]] = {
          b"filenames": [f"fake_{split}_{k:05d}.png".encode() for k in range(count)],
          b"batch_label": f"{split} batch (fake)".encode(),
          b"fine_labels": labels, b"coarse_labels": [c // 5 for c in labels],
          b"data": images.transpose(0, 3, 1, 2).reshape(count, -1)}
    write_release(root / TAR, members)
    return root


def write_release(path: pathlib.Path, members: dict[str, object]) -> None:
  """A `cifar-100-python.tar.gz` with the given members pickled (tests write damaged ones with it)."""
  with tarfile.open(path, "w:gz") as tf:
    for name, obj in members.items():
      data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
