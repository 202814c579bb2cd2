"""The record and manifest format of converted image-text array_record directories (mmjax-prepare convert).

A directory holds `NNNNN.array_record` shards (one record per example) and `manifest.json`:
{"format": FORMAT, "source": {what was converted}, "complete": bool, "shards": [{"file", "examples", "bad", "input"}]},
rewritten atomically (temp file + rename) after each finished shard. Readers use only the shards it lists.
A record is `uint32 little-endian n` + `n` bytes of UTF-8 JSON {"key", "caption", "ext"} + the image file's bytes as
they were in the source (a JPEG stays the same JPEG: no re-encoding, no loss). Standard library only.
"""
from __future__ import annotations

import json
import os
import struct

from mmjax.errors import MmjaxError

FORMAT = "mmjax-image-text-array_record-1"
MANIFEST = "manifest.json"
_LEN = struct.Struct("<I")


def encode_record(key: str, caption: str, ext: str, image: bytes) -> bytes:
  header = json.dumps({"key": key, "caption": caption, "ext": ext}, ensure_ascii=False).encode("utf-8")
  return _LEN.pack(len(header)) + header + image


def decode_record(record: bytes) -> tuple[dict, bytes]:
  """record -> ({"key", "caption", "ext"}, image bytes)."""
  (n,) = _LEN.unpack_from(record)
  return json.loads(record[_LEN.size:_LEN.size + n].decode("utf-8")), record[_LEN.size + n:]


def read_manifest(directory: str) -> dict | None:
  """The directory's manifest, or None when there is none yet."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise MmjaxError(f"{path}: unreadable manifest ({e}); convert into a new directory") from None
  if manifest.get("format") != FORMAT:
    raise MmjaxError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; convert the data again with "
                     f"mmjax-prepare convert")
  return manifest


def write_manifest(directory: str, manifest: dict) -> None:
  """Atomically: a reader sees the old manifest or the new one, never a part."""
  tmp = os.path.join(directory, f".{MANIFEST}.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(directory, MANIFEST))
