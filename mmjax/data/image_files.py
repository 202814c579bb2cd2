"""Encoded image files (JPEG, PNG, WebP) -> uint8 RGB arrays, shared by the webdataset, CSV and image-folder sources.

A file that PIL cannot decode raises `BadImage` naming where it came from (a tar member, a CSV row, a path), so a
source can skip and count it (`data.skip_bad`) or stop with one line that names it.
"""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

# File name extensions read as images, in open_clip's order of preference (`image="jpg;png;jpeg;webp"`).
IMAGE_EXTS = ("jpg", "png", "jpeg", "webp")


_ADDRESS = re.compile(r" <[^<>]* at 0x[0-9a-fA-F]+>")   # PIL's "cannot identify image file <_io.BytesIO object at 0x..>"


class BadImage(ValueError):
  """An image that does not decode; `str(e)` names where it came from and why."""


def decode_image(data: bytes, where: str) -> np.ndarray:
  """Encoded bytes -> uint8 [H, W, 3] (any mode converted to RGB, as open_clip's `.convert("RGB")`)."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.mode != "RGB":
        im = im.convert("RGB")
      return np.asarray(im)
  except Exception as e:  # PIL raises many types on truncated or garbage data
    detail = _ADDRESS.sub("", str(e).splitlines()[0]) if str(e) else ""   # same message for the same bytes
    raise BadImage(f"{where}: corrupt or unreadable image ({type(e).__name__}: {detail})") from None


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes (test data and fake shards)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()
