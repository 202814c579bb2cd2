"""Prepares a real data set: raw files (manual dir) -> array_record shards (data dir), once.

  python -m mmjax.data.prepare flickr8k [--manual_dir DIR] [--data_dir DIR] [--skip_bad]
  python -m mmjax.data.prepare all        (every data set whose raw files are in their default manual dir)
  mmjax-prepare convert --from webdataset|csv --shards ... | --csv_path ... --out DIR   (mmjax/data/convert.py)

Idempotent (a prepared data set is left alone) and safe to interrupt (TFDS writes into an `incomplete.*`
folder and renames it at the end). Training configs prepare their data set on first use too; this command
does it ahead of time, with a progress bar, and prints what was built. Exit status 2 on bad input, naming
the file and line (with --skip_bad, bad examples are skipped and counted instead).
"""
from __future__ import annotations

import sys
import time

from absl import app, flags, logging

from mmjax.data import builders
from mmjax.errors import MmjaxError

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, f"Raw files (default: ${builders.RAW_ENV}/<name> or "
                                  "../shared/data/<name>).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where prepared data go (default: $TFDS_DATA_DIR or "
                                "~/tensorflow_datasets).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip corrupt raw examples (and report how many) instead of "
                              "stopping at the first.")


def prepare_one(name: str) -> None:
  start = time.time()
  b = builders.get_builder(name, manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value, skip_bad=_SKIP_BAD.value)
  was_ready = builders.is_prepared(b)
  builders.prepare(name, builder=b)
  splits = ", ".join(f"{s} {info.num_examples}" for s, info in b.info.splits.items())
  what = "already prepared" if was_ready else f"prepared in {time.time() - start:.1f} s from {b.raw_dir}"
  print(f"{name}: {what} -> {b.data_dir} ({splits})")
  if b.skipped:
    print(f"{name}: skipped {len(b.skipped)} bad example(s); the first: {b.skipped[0]}")


def main(argv: list[str]) -> None:
  names = argv[1:]
  if len(names) != 1:
    raise app.UsageError(f"give one data set name or 'all' ({', '.join(sorted(builders.all_names()))})")
  logging.set_verbosity(logging.WARNING)
  try:
    for name in (sorted(builders.all_names()) if names[0] == "all" else names):
      if names[0] == "all" and _MANUAL_DIR.value is None:
        b = builders.get_builder(name, data_dir=_DATA_DIR.value)
        missing = [r for r in b.REQUIRED_FILES if not (b.raw_dir / r).exists()]
        if (missing or not b.raw_dir.is_dir()) and not builders.is_prepared(b):
          print(f"{name}: skipped, no {b.raw_dir / missing[0] if missing else b.raw_dir} "
                f"({b.MANUAL_DOWNLOAD_INSTRUCTIONS})")
          continue
      prepare_one(name)
  except MmjaxError as e:
    print(f"mmjax.data.prepare: error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  if sys.argv[1:2] == ["convert"]:       # its own argparse flags (--from is no absl flag name)
    from mmjax.data import convert
    sys.exit(convert.main(sys.argv[2:]))
  app.run(main)


if __name__ == "__main__":
  run()
