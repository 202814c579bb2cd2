"""Encoded image files (JPEG, PNG, WebP) -> uint8 RGB arrays, shared by the webdataset, CSV and image-folder sources.

A file that PIL cannot decode raises `BadImage` naming where it came from (a tar member, a CSV row, a path), so a
source can skip and count it (`data.skip_bad`) or stop with one line that names it.
"""
from __future__ import annotations

import io
import logging
import re
from typing import Callable

import numpy as np
from PIL import Image

from mmjax.errors import MmjaxError

# File name extensions read as images, in open_clip's order of preference (`image="jpg;png;jpeg;webp"`).
IMAGE_EXTS = ("jpg", "png", "jpeg", "webp")


_ADDRESS = re.compile(r" <[^<>]* at 0x[0-9a-fA-F]+>")   # PIL's "cannot identify image file <_io.BytesIO object at 0x..>"


class BadImage(ValueError):
  """An image that does not decode; `str(e)` names where it came from and why."""


def decode_image(data: bytes, where: str) -> np.ndarray:
  """Encoded bytes -> uint8 [H, W, 3] (any mode converted to RGB, as open_clip's `.convert("RGB")`)."""
  return np.asarray(decode_pil(data, where)[0])


def decode_pil(data: bytes, where: str, draft: Callable[[int, int], int] | None = None
               ) -> tuple[Image.Image, tuple[int, int], int]:
  """Encoded bytes -> (a loaded RGB PIL image, (H, W) of the full image, f): the image decoded at 1/f of its size
  each way; f = 1 unless the file is a JPEG and `draft(height, width)` (of the full image) allows f in (2, 4, 8):
  libjpeg then decodes it at that scale directly (PIL `Image.draft`: the inverse DCT at reduced size, an
  antialiased reduction, cheaper than the full decode) and pixel (x, y) of the result covers [f x, f x + f) x
  [f y, f y + f) of the full image; the result is ceil(W / f) x ceil(H / f). f depends on the header's size only,
  so the same bytes always decode the same way. Keeping the PIL image (no NumPy array) saves two copies when the
  next step is a PIL resize."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      f, full_hw = 1, (im.height, im.width)
      if draft is not None and im.format == "JPEG":
        want = int(draft(im.height, im.width))
        if want > 1:
          w, h = im.size
          got = im.draft(im.mode, (-(-w // want), -(-h // want)))   # PIL picks the largest power of 2 <= want
          f = int(round(w / got[1][2])) if got is not None else 1
      im.load()
      if im.mode != "RGB":
        im = im.convert("RGB")
      return im, full_hw, f
  except Exception as e:  # PIL raises many types on truncated or garbage data
    detail = _ADDRESS.sub("", str(e).splitlines()[0]) if str(e) else ""   # same message for the same bytes
    raise BadImage(f"{where}: corrupt or unreadable image ({type(e).__name__}: {detail})") from None


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes (test data and fake shards)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def first_readable(load: Callable[[int], dict], index: int, n: int, skip_bad: bool, fix: str, what: str) -> dict:
  """load(index); with skip_bad, on a BadImage the next readable one of the n examples (wrapping around), logged.
  The example carries `_bad`: how many bad ones were passed over (mmjax.data.bad_input counts them per run).
  Without skip_bad a BadImage raises one line ending with `fix`; none readable: "{what}" in the message."""
  for i in range(n if skip_bad else 1):
    try:
      return dict(load((index + i) % n), _bad=i)
    except BadImage as e:
      if not skip_bad:
        raise MmjaxError(f"{e}; {fix}") from None
      logging.warning("mmjax: skipping a bad image: %s", e)
  raise MmjaxError(what)

