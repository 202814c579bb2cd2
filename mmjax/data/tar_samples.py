"""Webdataset tar shards read as a stream of samples, from any byte offset, with the standard library's `tarfile`.

A webdataset shard (what img2dataset writes; Aizman et al. 2019) is a plain tar whose consecutive members sharing a
key form one sample: `000123.jpg`, `000123.txt`, `000123.json`. The key is the member path up to the first "." of
its base name and the extension the rest, lower-cased (webdataset's `base_plus_ext`, as open_clip reads it).

Why `tarfile` and not the `webdataset` package: a sample here is addressed by the byte offset of its first header,
and reading can start at any such offset (`iter_samples(path, start)`), so an iterator checkpoints as a few
integers and resumes with one seek; webdataset's pipeline of generators has no state to save or restore (open_clip
issue #135). Members are read into memory, never extracted to disk.

Damage: a shard that cannot be opened, is not a tar, or is truncated/corrupt in the middle yields the samples before
the damage, then one `ShardDamage` naming the shard, the member and the reason.
"""
from __future__ import annotations

import dataclasses
import re
import tarfile
from typing import Iterator

_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")
BLOCK = tarfile.BLOCKSIZE


@dataclasses.dataclass
class Sample:
  """One sample: `key`, `start` (byte offset of its first member's header), `end` (offset where the next sample
  starts or where reading stopped: resume there) and `files` {extension: bytes} of the members read."""
  key: str
  start: int
  end: int
  files: dict[str, bytes]


@dataclasses.dataclass
class ShardDamage:
  """The rest of a shard is unreadable: `where` (shard or shard:member) and `reason`."""
  where: str
  reason: str


def split_key(name: str) -> tuple[str, str]:
  """"dir/000123.seg.json" -> ("dir/000123", "seg.json"); a name without an extension -> (name, "")."""
  m = _KEY.match(name)
  return (m.group(1), m.group(2).lower()) if m else (name, "")


def open_shard(path: str):
  """A binary file object: a local path, `file://`, or any fsspec URL where fsspec and its backend are installed."""
  if "://" in path and not path.startswith("file://"):
    if path.startswith("pipe:"):
      raise OSError("pipe: URLs are not supported; give a local path or an fsspec URL")
    try:
      import fsspec
    except ImportError:
      raise OSError(f"reading {path.split('://')[0]}:// URLs needs fsspec (pip install fsspec)") from None
    return fsspec.open(path, "rb").open()
  return open(path[len("file://"):] if path.startswith("file://") else path, "rb")


def _reason(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def iter_samples(path: str, start: int = 0, exts: frozenset[str] | None = None
                 ) -> Iterator[Sample | ShardDamage]:
  """The samples of shard `path` from the member header at byte `start` on; only members whose extension is in
  `exts` (all when None) are read, the others are skipped by seeking. Ends with a ShardDamage if damaged."""
  try:
    f = open_shard(path)
  except Exception as e:
    yield ShardDamage(path, f"cannot open the shard ({_reason(e)})")
    return
  with f:
    try:
      tf = tarfile.open(fileobj=f, mode="r:")
    except Exception as e:
      yield ShardDamage(path, f"not a readable tar file ({_reason(e)})")
      return
    if start:
      tf.firstmember, tf.offset = None, start
    key, begin, files, pos, name = None, start, {}, start, ""
    try:
      while True:
        pos = tf.offset if tf.firstmember is None else 0
        m = tf.next()
        tf.members.clear()                     # tarfile keeps every header otherwise: O(1) memory per shard
        if m is None:
          _check_end(f, pos)
          break
        if not m.isfile():
          continue
        name = m.name
        k, ext = split_key(m.name)
        if k != key:
          if key is not None and files:
            yield Sample(key, begin, m.offset, files)
          key, begin, files = k, m.offset, {}
        if exts is None or ext in exts:
          pos = m.offset
          files[ext] = tf.extractfile(m).read()
    except Exception as e:  # tarfile.ReadError, OSError, EOFError on truncated or corrupt data
      if key is not None and files:
        yield Sample(key, begin, pos, files)
      yield ShardDamage(f"{path}:{name}" if name else path, f"truncated or corrupt tar ({_reason(e)})")
      return
    if key is not None and files:
      yield Sample(key, begin, pos, files)


def _check_end(f, pos: int) -> None:
  """Where tarfile stopped: zeros (the end-of-archive blocks) or the end of the file is a clean end; a block with
  data (a header cut short or corrupt: a shard truncated at a header) is damage."""
  f.seek(pos)
  if f.read(BLOCK).strip(b"\0"):
    raise tarfile.ReadError(f"truncated or corrupt header at byte {pos}")
