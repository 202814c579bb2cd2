"""Flickr8k (Hodosh et al. 2013): 8,091 images with 5 captions each; standard splits train/dev/test = 6000/1000/1000.

Raw files (see `../shared/data/flickr8k/README.md`): `Flickr8k_128.zip` (JPEGs at 128x128 under
`Flicker8k_Dataset/`), `Flickr8k.token.txt` (`NAME.jpg#N<TAB>caption`) and the three split files.
Each example: `image` uint8 [128, 128, 3] (the JPEG bytes are stored as they are, checked to decode),
`captions` the image's captions (a list of str, 5 in the standard data), `image_id` the file name.
"""
from __future__ import annotations

import collections
import io
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data.builders import BadInput, MmjaxBuilder, register

IMAGE_SIZE = 128
ZIP, TOKENS = "Flickr8k_128.zip", "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
SPLIT_SIZES = {"train": 6000, "dev": 1000, "test": 1000}


def read_captions(path) -> dict[str, list[str]]:
  """`NAME.jpg#N<TAB>caption` lines -> {NAME.jpg: [caption_0, ...]} ordered by N; BadInput names the line."""
  caps: dict[str, dict[int, str]] = collections.defaultdict(dict)
  with open(path, encoding="utf-8", errors="strict") as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip("\n")
      if not line.strip():
        continue
      name, sep, caption = line.partition("\t")
      img, hash_, n = name.rpartition("#")[0], "#" in name, name.rpartition("#")[2]
      if not sep or not hash_ or not n.isdigit() or not img or not caption.strip():
        raise BadInput(f"{path}:{lineno}", f"malformed caption line {line[:60]!r}; expected 'NAME.jpg#N<TAB>caption'")
      caps[img][int(n)] = " ".join(caption.split())
  return {img: [c[k] for k in sorted(c)] for img, c in caps.items()}


def read_split(path) -> list[tuple[int, str]]:
  with open(path, encoding="utf-8") as f:
    return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def decode_jpeg(data: bytes, where: str) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.format != "JPEG":
        raise ValueError(f"format {im.format}")
      arr = np.asarray(im.convert("RGB"))
  except Exception as e:  # PIL raises many types on truncated/garbage data
    raise BadInput(where, f"corrupt or unreadable JPEG ({type(e).__name__}: {e})") from None
  if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise BadInput(where, f"image is {arr.shape[1]}x{arr.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
  return arr


@register("flickr8k")
class Flickr8k(MmjaxBuilder):
  VERSION = tfds.core.Version("1.0.0")
  FOLDER = "flickr8k"
  REQUIRED_FILES = (ZIP, TOKENS, *SPLIT_FILES.values())
  DESCRIPTION = "Flickr8k at 128x128 px with 5 captions per image (standard 6000/1000/1000 splits)."
  HOMEPAGE = "https://hockenmaier.cs.illinois.edu/8k-pictures.html"
  CITATION = ("Hodosh, Young, Hockenmaier. Framing Image Description as a Ranking Task: Data, Models and "
              "Evaluation Metrics. JAIR 47, 2013.")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the files listed in ../shared/data/flickr8k/README.md in the manual dir."

  def _features(self):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
        "captions": tfds.features.Sequence(tfds.features.Text()),
        "image_id": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    captions = read_captions(self.raw_dir / TOKENS)
    return {split: self._generate_examples(split, captions) for split in SPLIT_FILES}

  def _generate_examples(self, split, captions):
    split_path = self.raw_dir / SPLIT_FILES[split]
    zip_path = self.raw_dir / ZIP
    with zipfile.ZipFile(zip_path) as zf:
      members = {n.rpartition("/")[2]: n for n in zf.namelist() if n.lower().endswith(".jpg")}
      for lineno, name in self.limited(read_split(split_path)):
        with self.example_guard():
          where = f"{split_path}:{lineno}"
          if name not in members:
            raise BadInput(where, f"image {name} is not in {zip_path}")
          if name not in captions:
            raise BadInput(where, f"image {name} has no caption in {self.raw_dir / TOKENS}")
          data = zf.read(members[name])
          decode_jpeg(data, f"{zip_path}:{members[name]}")
          yield name, {"image": data, "captions": captions[name], "image_id": name}

  @classmethod
  def make_fake_raw(cls, root, n: int = 24, seed: int = 0):
    """Writes a tiny fake Flickr8k manual dir in the real format (random JPEGs, 5 captions each, splits
    n/2 : n/4 : n/4, one extra image in no split) under `root`; returns it. For tests and `data.fake_raw`."""
    import pathlib
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = "a dog cat man woman child runs jumps sits on in the grass water snow red blue ball street".split()
    names = [f"{1000 + i}_{rng.integers(16**10):010x}.jpg" for i in range(n + 1)]
    with zipfile.ZipFile(root / ZIP, "w", zipfile.ZIP_STORED) as zf:
      for name in names:
        base = rng.integers(0, 256, size=3)
        img = np.clip(base + rng.normal(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        zf.writestr(f"Flicker8k_Dataset/{name}", buf.getvalue())
    with open(root / TOKENS, "w") as f:
      for name in names:
        for k in range(5):
          f.write(f"{name}#{k}\t{' '.join(rng.choice(words, size=int(rng.integers(4, 10))))} .\n")
    cut = [0, n // 2, n // 2 + n // 4, n]
    for (split, file), lo, hi in zip(SPLIT_FILES.items(), cut[:-1], cut[1:]):
      (root / file).write_text("".join(f"{name}\n" for name in names[lo:hi]))
    return root
