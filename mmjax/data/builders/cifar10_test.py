"""CIFAR-10 test set (Krizhevsky 2009) as 10,000 32x32 JPEGs, 1,000 per class; one split `test`.

For evaluation only (e.g. zero-shot or linear-probe transfer). Raw file (see `../shared/data/cifar10_test/README.md`):
`test.zip` with `test/<class>/NNNN.jpg`. The JPEGs are lossy re-encodings of the CIFAR-10 pixels, so pixel values
differ slightly from the official binary release, and the official `test_batch` order is not known: examples are
keyed by their member name. Each example: `image` uint8 [32, 32, 3] (the JPEG bytes stored as they are, checked
to decode), `label` in the standard order (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck),
`image_id` the member name ("test/cat/0042.jpg").
"""
from __future__ import annotations

import io
import pathlib
import re
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data.builders import BadInput, MmjaxBuilder, open_zip, register

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ZIP = "test.zip"
IMAGE_SIZE = 32
SPLIT_SIZES = {"test": 10000}
_MEMBER = re.compile(r"test/([^/]+)/([^/]+\.jpe?g)$", re.IGNORECASE)


def decode_jpeg(data: bytes, where: str) -> np.ndarray:
  """JPEG bytes -> uint8 [32, 32, 3]; BadInput names `where` if corrupt, not a JPEG or not 32x32 RGB."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.format != "JPEG":
        raise ValueError(f"format {im.format}")
      mode = im.mode
      arr = np.asarray(im)
  except Exception as e:  # PIL raises many types on truncated/garbage data
    raise BadInput(where, f"corrupt or unreadable JPEG ({type(e).__name__}: {e})") from None
  if mode != "RGB" or arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise BadInput(where, f"image is {mode} {arr.shape[1]}x{arr.shape[0]}, expected RGB {IMAGE_SIZE}x{IMAGE_SIZE}")
  return arr


def list_members(names: list[str], zip_path) -> list[tuple[str, int] | BadInput]:
  """The zip's JPEG members in sorted order with their class index (a BadInput for an unknown class folder)."""
  out: list = []
  for name in sorted(names):
    if name.endswith("/"):
      continue
    m = _MEMBER.search(name)
    if not m:
      out.append(BadInput(f"{zip_path}:{name}", "unexpected member; expected test/<class>/NNNN.jpg"))
    elif m.group(1) not in CLASSES:
      out.append(BadInput(f"{zip_path}:{name}", f"unknown class folder {m.group(1)!r}; expected one of "
                                                f"{', '.join(CLASSES)}"))
    else:
      out.append((name, CLASSES.index(m.group(1))))
  return out


@register("cifar10_test")
class Cifar10Test(MmjaxBuilder):
  VERSION = tfds.core.Version("1.0.0")
  FOLDER = "cifar10_test"
  REQUIRED_FILES = (ZIP,)
  DESCRIPTION = "CIFAR-10 test set (10,000 images, 1,000 per class) as 32x32 JPEG re-encodings."
  HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
  CITATION = "Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Tech. report, U. Toronto, 2009."
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put test.zip (see ../shared/data/cifar10_test/README.md) in the manual dir."

  def _features(self):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(names=list(CLASSES)),
        "image_id": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    zip_path = self.raw_dir / ZIP
    zf = open_zip(zip_path)
    with zf:
      for entry in self.limited(list_members(zf.namelist(), zip_path)):
        with self.example_guard():
          if isinstance(entry, BadInput):
            raise entry
          name, label = entry
          where = f"{zip_path}:{name}"
          try:
            data = zf.read(name)
          except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise BadInput(where, f"cannot read member ({type(e).__name__}: {e})") from None
          decode_jpeg(data, where)
          yield name, {"image": data, "label": label, "image_id": name}

  @classmethod
  def make_fake_raw(cls, root, n: int = 20, seed: int = 0) -> pathlib.Path:
    """Writes a fake `test.zip` in the real layout under `root` (returned): n random 32x32 JPEGs spread over the
    10 classes (class c tinted by a per-class colour, so the data are learnable), numbered from 0000 per class."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (len(CLASSES), 3))
    with zipfile.ZipFile(root / ZIP, "w", zipfile.ZIP_STORED) as zf:
      zf.writestr("test/", b"")
      for c, name in enumerate(CLASSES):
        zf.writestr(f"test/{name}/", b"")
        for k in range(n // len(CLASSES) + (c < n % len(CLASSES))):
          img = np.clip(colours[c] + rng.normal(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
          buf = io.BytesIO()
          Image.fromarray(img).save(buf, format="JPEG", quality=90)
          zf.writestr(f"test/{name}/{k:04d}.jpg", buf.getvalue())
    return root
