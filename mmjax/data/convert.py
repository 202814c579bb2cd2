"""Webdataset shards or a CSV of image paths -> array_record shards, for grain's global shuffle (issue 24, item 4).

  mmjax-prepare convert --from webdataset --shards '/data/cc3m/{00000..00331}.tar' --out /data/cc3m_ar
  mmjax-prepare convert --from csv --csv_path train.tsv [--csv_img_key filepath --csv_caption_key title] --out DIR
  then train with --config.data.name=array_record --config.data.array_record_dir=DIR

Output (format: mmjax/data/record_format.py): webdataset input shard i -> `{i:05d}.array_record` with its good samples
in tar order; CSV rows -> shards of `--rows_per_shard` consecutive rows. Images are copied as the encoded bytes they
were (JPEG stays JPEG), with the caption (`txt` / the caption column) and the key (the webdataset key / the image path
as written in the CSV).

Resumable: each shard is written under a temp name (`.NNNNN.array_record.tmp`), renamed when complete, then recorded
in `manifest.json` (itself replaced atomically). A rerun of the same command skips the shards the manifest lists and
rewrites the rest; readers use only listed shards of a manifest marked complete, so no half-written shard is ever
read. A rerun with a different source or options into the same directory is refused. `--workers N` writes N shards at
once (spawned processes; the output is the same bytes as with one).

Bad input (as the webdataset source, `--skip_bad`, default on): a sample without an image or a caption, an image that
does not decode (`--check_images`, default on: decoded once here so training never meets it), a non-UTF-8 caption,
a truncated tar (the samples before the damage are kept) or an unreadable shard are skipped and counted per shard
in the manifest; with --noskip_bad the first one stops with one line naming the shard and member.
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
from typing import Callable, Iterator

from mmjax.data import record_format
from mmjax.data.image_files import IMAGE_EXTS, BadImage, decode_image
from mmjax.errors import MmjaxError

TEXT_EXT = "txt"
SHARD = "{:05d}.array_record"
WRITER_OPTIONS = "group_size:1"      # one record per chunk: cheapest random access (grain's recommendation)


class _Bad(Exception):
  """One bad example: `where`, `reason`."""

  def __init__(self, where: str, reason: str):
    super().__init__(f"{where}: {reason}")
    self.where, self.reason = where, reason


Example = tuple[str, str, str, bytes]       # key, caption, image ext, image bytes
Unit = tuple[str, Callable[[], Iterator["Example | _Bad"]]]    # (input description, examples of one output shard)


def _check(image: bytes, caption: bytes | str, where: str, check_images: bool) -> str:
  if check_images:
    try:
      decode_image(image, where)
    except BadImage as e:
      raise _Bad(*str(e).split(": ", 1)) from None
  if isinstance(caption, bytes):
    try:
      caption = caption.decode("utf-8")
    except UnicodeDecodeError as e:
      raise _Bad(where, f"caption is not UTF-8 ({e})") from None
  caption = caption.strip()
  if not caption:
    raise _Bad(where, "empty caption")
  return caption


# --------------------------------------------------------------------------------------------------- the inputs
def _shard_examples(path: str, check_images: bool) -> Iterator:
  """The examples (and _Bad items) of one webdataset shard, in tar order."""
  from mmjax.data.tar_samples import Sample, iter_samples
  for item in iter_samples(path):
    if not isinstance(item, Sample):
      yield _Bad(item.where, item.reason)
      return
    ext = next((e for e in IMAGE_EXTS if e in item.files), None)
    if ext is None or TEXT_EXT not in item.files:
      missing = "an image (jpg/png/jpeg/webp)" if ext is None else "a caption (txt)"
      yield _Bad(f"{path}:{item.key}", f"sample without {missing}; it has {sorted(item.files) or 'no members'}")
      continue
    try:
      caption = _check(item.files[ext], item.files[TEXT_EXT], f"{path}:{item.key}.{ext}", check_images)
    except _Bad as e:
      yield e
      continue
    yield item.key, caption, ext, item.files[ext]


def webdataset_units(spec: str, check_images: bool) -> tuple[list[Unit], dict]:
  """One unit per input shard (open_clip's brace / `::` notation, webdataset.parse_shards)."""
  from mmjax.data.webdataset import parse_shards
  paths = [p if "://" in p else os.path.abspath(p) for p in parse_shards(spec, key="--shards")[0]]
  units = [(p, functools.partial(_shard_examples, p, check_images)) for p in paths]
  return units, {"from": "webdataset", "shards": paths}


def _rows_examples(path: str, rows, check_images: bool) -> Iterator:
  """The examples (and _Bad items) of CSV rows [(image path, caption, line)]; keys: the paths as in the file."""
  root = os.path.dirname(os.path.abspath(path))
  for image_path, caption, line in rows:
    where = f"{path}:{line} ({image_path})"
    try:
      with open(image_path, "rb") as f:
        data = f.read()
      caption = _check(data, caption, where, check_images)
    except OSError as e:
      yield _Bad(where, f"cannot read the image ({e.strerror})")
      continue
    except _Bad as e:
      yield e
      continue
    ext = image_path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(image_path) else ""
    yield os.path.relpath(image_path, root), caption, ext, data


def csv_units(path: str, img_key: str, caption_key: str, separator: str, rows_per_shard: int, skip_bad: bool,
              check_images: bool) -> tuple[list[Unit], dict]:
  """Consecutive `rows_per_shard` rows per unit (rows read as csv_source.read_rows: paths relative to the file)."""
  from mmjax.data.csv_source import read_rows
  rows, _ = read_rows(path, img_key, caption_key, separator, skip_bad)
  chunks = [rows[i:i + rows_per_shard] for i in range(0, len(rows), rows_per_shard)]
  units = [(f"{path} rows {i * rows_per_shard}..{i * rows_per_shard + len(c) - 1}",
            functools.partial(_rows_examples, path, c, check_images)) for i, c in enumerate(chunks)]
  return units, {"from": "csv", "csv_path": os.path.abspath(path), "csv_img_key": img_key,
                 "csv_caption_key": caption_key, "csv_separator": separator, "rows_per_shard": rows_per_shard,
                 "rows": len(rows)}


# --------------------------------------------------------------------------------------------------- writing
def write_shard(path: str, examples: Iterator, skip_bad: bool) -> tuple[int, int, str | None]:
  """Writes the good examples to `path` via a temp name renamed at the end; (examples, bad, first bad)."""
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
  if os.path.exists(tmp):
    os.remove(tmp)                      # a shard a killed run did not finish
  n, bad, first = 0, 0, None
  writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
  try:
    for ex in examples:
      if isinstance(ex, _Bad):
        if not skip_bad:
          raise MmjaxError(f"{ex.where}: {ex.reason}; fix or remove it, or convert with --skip_bad to skip and "
                           f"count bad examples")
        bad, first = bad + 1, first or str(ex)
        continue
      writer.write(record_format.encode_record(*ex))
      n += 1
  except BaseException:
    writer.close()
    os.remove(tmp)
    raise
  writer.close()
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return n, bad, first


def _write_unit(job) -> tuple[str, dict]:
  out, name, what, make_examples, skip_bad = job
  n, bad, first = write_shard(os.path.join(out, name), make_examples(), skip_bad)
  return name, {"file": name, "examples": n, "bad": bad, "input": what, **({"first_bad": first} if bad else {})}


def convert(units: list[Unit], source: dict, out: str, *, skip_bad: bool = True, progress: bool = True,
            workers: int = 1) -> dict:
  """Writes the units' shards into `out`, skipping those a previous run finished; returns the final manifest.
  workers > 1: that many (spawned) processes write shards at once; the manifest still lists only finished ones."""
  from tqdm import tqdm
  os.makedirs(out, exist_ok=True)
  options = {"skip_bad": skip_bad}
  manifest = record_format.read_manifest(out)
  if manifest is not None and (manifest["source"] != source or manifest.get("options") != options):
    raise MmjaxError(f"{out} holds a conversion of another source or with other options "
                     f"({record_format.MANIFEST}: {manifest['source']}); give a new --out or rerun the same command")
  if manifest is None:
    manifest = {"format": record_format.FORMAT, "source": source, "options": options, "complete": False,
                "shards": []}
  finished = {s["file"]: s for s in manifest["shards"] if os.path.isfile(os.path.join(out, s["file"]))}
  resumed = len(finished)
  jobs = [(out, SHARD.format(i), what, make, skip_bad) for i, (what, make) in enumerate(units)
          if SHARD.format(i) not in finished]
  bar = tqdm(total=len(units), initial=resumed, unit="shard", desc=f"convert -> {out}", disable=not progress,
             file=sys.stderr)
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(jobs) > 1 else None
  try:
    for name, entry in (pool.imap_unordered(_write_unit, jobs) if pool else map(_write_unit, jobs)):
      finished[name] = entry
      manifest = dict(manifest, shards=[finished[k] for k in sorted(finished)])
      record_format.write_manifest(out, manifest)     # after the rename: a listed shard is always whole
      bar.update(1)
      bar.set_postfix(examples=sum(s["examples"] for s in finished.values()),
                      bad=sum(s["bad"] for s in finished.values()), resumed=resumed)
  finally:
    if pool:
      pool.terminate()
    bar.close()
  manifest = dict(manifest, shards=[finished[SHARD.format(i)] for i in range(len(units))], complete=True)
  record_format.write_manifest(out, manifest)
  return manifest


# --------------------------------------------------------------------------------------------------- command line
def _bool(p: argparse.ArgumentParser, name: str, help: str) -> None:
  """--name / --noname, as absl's boolean flags (mmjax-prepare's other flags) spell them; default on."""
  p.add_argument(f"--{name}", dest=name, action="store_true", default=True, help=help)
  p.add_argument(f"--no{name}", dest=name, action="store_false")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="mmjax-prepare convert", description=__doc__.split("\n\n")[0])
  p.add_argument("--from", dest="kind", required=True, choices=("webdataset", "csv"))
  p.add_argument("--shards", help="webdataset shards: '/d/{00000..00331}.tar', '::' joins several")
  p.add_argument("--csv_path", help="CSV/TSV of image paths (relative to the file) and captions")
  p.add_argument("--csv_img_key", default="filepath")
  p.add_argument("--csv_caption_key", default="title")
  p.add_argument("--csv_separator", default="\t")
  p.add_argument("--rows_per_shard", type=int, default=10_000, help="CSV rows per output shard")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--workers", type=int, default=1, help="processes writing shards at once (default 1)")
  _bool(p, "skip_bad", "skip and count bad examples (default) instead of stopping at the first")
  _bool(p, "check_images", "decode every image once, so that bad ones are skipped here (default)")
  _bool(p, "progress", "show a progress bar (default)")
  return p


def main(argv: list[str]) -> int:
  args = parser().parse_args(argv)
  try:
    if args.kind == "webdataset":
      if not args.shards:
        raise MmjaxError("convert --from webdataset needs --shards, e.g. --shards '/data/cc3m/{00000..00331}.tar'")
      units, source = webdataset_units(args.shards, args.check_images)
    else:
      if not args.csv_path:
        raise MmjaxError("convert --from csv needs --csv_path")
      if args.rows_per_shard < 1:
        raise MmjaxError(f"--rows_per_shard={args.rows_per_shard} must be >= 1")
      units, source = csv_units(args.csv_path, args.csv_img_key, args.csv_caption_key, args.csv_separator,
                                args.rows_per_shard, args.skip_bad, args.check_images)
    source["check_images"] = bool(args.check_images)
    if args.workers < 1:
      raise MmjaxError(f"--workers={args.workers} must be >= 1")
    manifest = convert(units, source, args.out, skip_bad=args.skip_bad, progress=args.progress,
                       workers=args.workers)
  except MmjaxError as e:
    print(f"mmjax-prepare convert: error: {e}", file=sys.stderr)
    return 2
  n = sum(s["examples"] for s in manifest["shards"])
  bad = [s for s in manifest["shards"] if s["bad"]]
  print(f"converted {n} examples into {len(manifest['shards'])} shards -> {args.out} "
        f"(train with --config.data.name=array_record --config.data.array_record_dir={args.out})")
  if bad:
    print(f"skipped {sum(s['bad'] for s in bad)} bad example(s); the first: {bad[0]['first_bad']}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
