"""Image-caption pairs listed in a CSV/TSV file (`data.name = "csv"`): open_clip's CsvDataset (open_clip_train/data.py).

Keys as open_clip's flags: `data.csv_path` (`--train-data`), `data.csv_val_path` (`--val-data`; the eval split),
`data.csv_img_key` (default "filepath"), `data.csv_caption_key` ("title"), `data.csv_separator` (a tab). Image
paths are relative to the CSV file's folder (absolute ones are kept). The file is read once with the standard
library's `csv` (quoted fields may hold separators and newlines); rows are random access, so grain's global shuffle,
process sharding and exact resume apply as for any source (pipeline.make_train_iterator).

Examples: `image` uint8 [H, W, 3] as decoded, `captions` [str]; cropped and tokenized as Flickr8k's
(image_text.train_transform), so the batch is `image` float32 [b, S, S, 3], `tokens` int32 [b, L].

Bad input (mmjax/data/bad_input.py; `data.skip_bad` defaults to True here): a row with an empty path or caption is
dropped when the file is read (counted in `CsvSource.skipped`, reported as train/data_dropped; more than
`data.max_bad_fraction` of the rows stops there); an image that does not decode or cannot be read is passed over
for the next readable row (logged, counted as train/data_bad). With skip_bad=False either raises one line naming
the file and line (and the image path).
"""
from __future__ import annotations

import csv
import os

from mmjax.data import DatasetEntry, bad_input, image_text
from mmjax.data.image_files import BadImage, decode_image, first_readable
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

CONFIG_KEYS = dict(csv_path="", csv_val_path="", csv_img_key="filepath", csv_caption_key="title",
                   csv_separator="\t")


def read_rows(path: str, img_key: str, caption_key: str, separator: str, skip_bad: bool
              ) -> tuple[list[tuple[str, str, int]], int]:
  """[(image path, caption, line number)] of a CSV and the number of rows dropped."""
  if not os.path.isfile(path):
    raise MmjaxError(f"CSV file {path!r} does not exist (config key data.csv_path / data.csv_val_path)")
  root = os.path.dirname(os.path.abspath(path))
  rows, skipped = [], 0
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f, delimiter=separator)
    columns = reader.fieldnames or []
    for key, what in ((img_key, "data.csv_img_key"), (caption_key, "data.csv_caption_key")):
      if key not in columns:
        raise MmjaxError(f"{path}: no column {key!r} ({what}); its columns with data.csv_separator="
                         f"{separator!r}: {columns}")
    for row in reader:
      image, caption = (row.get(img_key) or "").strip(), (row.get(caption_key) or "").strip()
      if not image or not caption:
        if not skip_bad:
          raise MmjaxError(f"{path}:{reader.line_num}: empty {'path' if not image else 'caption'}; fix the row or "
                           f"set data.skip_bad=True to drop such rows")
        skipped += 1
        continue
      rows.append((os.path.join(root, image), caption, reader.line_num))
  if not rows:
    raise MmjaxError(f"{path}: no rows with both {img_key!r} and {caption_key!r}")
  return rows, skipped


class CsvSource:
  """A grain random-access source over the rows of a CSV: `image` uint8 [H, W, 3], `captions` [str] (and `_bad`,
  the bad rows passed over to serve it: see bad_input)."""
  counts_bad = True

  def __init__(self, path: str, img_key: str = "filepath", caption_key: str = "title", separator: str = "\t",
               skip_bad: bool = False, max_bad_fraction: float = bad_input.DEFAULT_MAX_BAD_FRACTION):
    self.path, self.skip_bad = path, skip_bad
    self.rows, self.skipped = read_rows(path, img_key, caption_key, separator, skip_bad)
    bad_input.check_dropped(self.skipped, len(self.rows) + self.skipped, max_bad_fraction, path)

  def __len__(self) -> int:
    return len(self.rows)

  def _load(self, index: int) -> dict:
    image_path, caption, line = self.rows[index]
    where = f"{self.path}:{line} ({image_path})"
    try:
      with open(image_path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise BadImage(f"{where}: cannot read the image ({e.strerror})") from None
    return {"image": decode_image(data, where), "captions": [caption]}

  def __getitem__(self, index: int) -> dict:
    return first_readable(self._load, int(index), len(self.rows), self.skip_bad,
                          "fix it or set data.skip_bad=True to serve the next readable row instead",
                          f"{self.path}: no row has a readable image")

  def __repr__(self) -> str:
    return f"CsvSource({self.path!r}, {len(self.rows)} rows)"


def _source_for(data_cfg, path: str) -> CsvSource:
  return CsvSource(path, data_cfg.get("csv_img_key", "filepath"), data_cfg.get("csv_caption_key", "title"),
                   data_cfg.get("csv_separator", "\t"), bad_input.skip_bad(data_cfg),
                   bad_input.max_bad_fraction(data_cfg))


def source(data_cfg, split: str) -> CsvSource:
  key = "csv_path" if split == "train" else "csv_val_path"
  if not data_cfg.get(key, ""):
    raise MmjaxError(f"data.name='csv' needs data.{key} for its {split!r} split"
                     + ("" if split == "train" else " (or evals.names='')"))
  return _source_for(data_cfg, data_cfg[key])


def corpus(data_cfg) -> list[str]:
  """Every caption of data.csv_path (no image is read)."""
  return [caption for _, caption, _ in source(data_cfg, "train").rows]


DATASETS.register("csv")(DatasetEntry(source=source, corpus=corpus, train_transform=image_text.train_transform,
                                      eval_transform=image_text.eval_transform, config_keys=CONFIG_KEYS))
