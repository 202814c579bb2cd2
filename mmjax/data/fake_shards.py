"""Generated webdataset shards in img2dataset's layout (`key.jpg`, `key.txt`, `key.json`), for runlocal configs.

Each image is a colour field with noise and the caption names the colour, so a tiny CLIP can learn something.
Written with the standard library's `tarfile`; a `.complete` marker makes concurrent writers safe (file lock).
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import tarfile
import tempfile

import numpy as np

from mmjax.data import builders
from mmjax.data.image_files import encode_jpeg

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40),
           "purple": (150, 50, 200), "orange": (240, 140, 30)}


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tf.addfile(info, io.BytesIO(data))


def write_shards(directory, num_shards: int = 4, per_shard: int = 16, image_size: int = 24, seed: int = 0,
                 prefix: str = "") -> str:
  """Writes `directory/{prefix}{00000..N-1}.tar` (once: reused when complete); returns the brace pattern."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  pattern = str(directory / f"{prefix}{{{0:05d}..{num_shards - 1:05d}}}.tar")
  marker = directory / f".{prefix}complete"
  with builders.file_lock(directory / f".{prefix}lock"):
    if marker.exists():
      return pattern
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    for s in range(num_shards):
      tmp = directory / f".{prefix}{s:05d}.tar.tmp"
      with tarfile.open(tmp, "w") as tf:
        for i in range(per_shard):
          key = f"{s:05d}{i:04d}"
          colour = names[int(rng.integers(len(names)))]
          img = np.clip(np.asarray(COLOURS[colour]) + rng.normal(0, 20, (image_size, image_size, 3)), 0, 255)
          add_member(tf, f"{key}.jpg", encode_jpeg(img.astype(np.uint8)))
          add_member(tf, f"{key}.txt", f"a photo of the colour {colour}".encode())
          add_member(tf, f"{key}.json", json.dumps({"key": key, "width": image_size}).encode())
      os.replace(tmp, directory / f"{prefix}{s:05d}.tar")
    marker.touch()
  return pattern


def default_dir(name: str) -> pathlib.Path:
  return pathlib.Path(tempfile.gettempdir()) / f"mmjax_fake_{os.getuid()}" / name
