"""Image-caption array_record shards written by `mmjax-prepare convert` (`data.name = "array_record"`).

The directory, its manifest and the record layout: mmjax/data/record_format.py (written by mmjax/data/convert.py;
only the shards the manifest lists are read, so a conversion killed mid-shard is never seen).

Reading: every listed shard of `data.array_record_dir` (train) / `data.array_record_val_dir` (eval splits) in one
grain `ArrayRecordDataSource`, random access, so the pipeline's global shuffle, process sharding and exact resume
apply (pipeline.make_train_iterator). Examples are `image` uint8 [H, W, 3] and `captions` [str], as the webdataset
source's, cropped and tokenized as Flickr8k's: the batch is `image` float32 [b, S, S, 3], `tokens` int32 [b, L].
Bad input (mmjax/data/bad_input.py): an image that does not decode is passed over for the next readable record
(logged, counted as train/data_bad; `data.skip_bad` defaults to True here, and more than `data.max_bad_fraction`
bad stops the run); with skip_bad=False it raises one line naming the shard directory, record and key.
"""
from __future__ import annotations

import os

import grain

from mmjax.data import DatasetEntry, bad_input, image_text
from mmjax.data.image_files import decode_image, first_readable
from mmjax.data.record_format import MANIFEST, decode_record, read_manifest
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

CONFIG_KEYS = dict(array_record_dir="", array_record_val_dir="", corpus_examples=100_000)


def shard_paths(directory: str, key: str = "data.array_record_dir") -> tuple[list[str], list[int]]:
  """The finished shards of a complete conversion and their example counts."""
  if not os.path.isdir(directory):
    raise MmjaxError(f"{key}={directory!r} does not exist; write it with `mmjax-prepare convert --from webdataset "
                     f"--shards ... --out {directory}`")
  manifest = read_manifest(directory)
  if manifest is None:
    raise MmjaxError(f"{key}={directory!r} has no {MANIFEST}; it is not a directory written by mmjax-prepare convert")
  if not manifest.get("complete"):
    raise MmjaxError(f"{directory}: the conversion is not finished ({len(manifest['shards'])} shards so far); rerun "
                     f"the same mmjax-prepare convert command, which continues where it stopped")
  shards = [s for s in manifest["shards"] if s["examples"] > 0]
  if not shards:
    raise MmjaxError(f"{directory}: the conversion holds no examples")
  return [os.path.join(directory, s["file"]) for s in shards], [int(s["examples"]) for s in shards]


class ArrayRecordImageText:
  """A grain random-access source over the converted shards: `image` uint8 [H, W, 3], `captions` [str] (and
`_bad`, the bad records passed over to serve it: see bad_input)."""
  counts_bad = True

  def __init__(self, directory: str, skip_bad: bool = False, key: str = "data.array_record_dir"):
    self.directory, self.skip_bad = directory, skip_bad
    self.paths, self.counts = shard_paths(directory, key)
    self.source = grain.sources.ArrayRecordDataSource(self.paths)
    if len(self.source) != sum(self.counts):
      raise MmjaxError(f"{directory}: the shards hold {len(self.source)} records but {MANIFEST} lists "
                       f"{sum(self.counts)}; convert into a new directory")

  def __len__(self) -> int:
    return len(self.source)

  def record(self, index: int) -> tuple[dict, bytes]:
    return decode_record(self.source[int(index)])

  def _load(self, index: int) -> dict:
    meta, image = self.record(index)
    return {"image": decode_image(image, f"{self.directory}: record {index} (key {meta['key']})"),
            "captions": [meta["caption"]]}

  def __getitem__(self, index: int) -> dict:
    return first_readable(self._load, int(index), len(self), self.skip_bad,
                          "set data.skip_bad=True to serve the next readable record instead",
                          f"{self.directory}: no record has a readable image")

  def __repr__(self) -> str:
    return f"ArrayRecordImageText({self.directory!r}, {len(self)} records in {len(self.paths)} shards)"


def source(data_cfg, split: str) -> ArrayRecordImageText:
  key = "array_record_dir" if split == "train" else "array_record_val_dir"
  if not data_cfg.get(key, ""):
    raise MmjaxError(f"data.name='array_record' needs data.{key} for its {split!r} split"
                     + ("" if split == "train" else " (or evals.names='')"))
  return ArrayRecordImageText(data_cfg[key], bad_input.skip_bad(data_cfg), f"data.{key}")


def corpus(data_cfg) -> list[str]:
  """The captions of the first `data.corpus_examples` records of data.array_record_dir (no image is decoded)."""
  src = source(data_cfg, "train")
  return [src.record(i)[0]["caption"] for i in range(min(len(src), int(data_cfg.get("corpus_examples", 100_000))))]


DATASETS.register("array_record")(DatasetEntry(
    source=source, corpus=corpus, train_transform=image_text.train_transform,
    eval_transform=image_text.eval_transform, config_keys=CONFIG_KEYS))
