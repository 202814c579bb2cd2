"""CSV/TSV image-caption source (mmjax/data/csv_source.py) on files written here, checked against Python's csv
module and PIL reading the same files; batches through grain's global shuffle."""
from __future__ import annotations

import csv
import io
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data import csv_source, pipeline
from mmjax.data.tokenizer import Tokenizer
from mmjax.errors import MmjaxError


def write_png(path, seed: int, size: int = 20) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  """12 rows in a TSV (open_clip's default columns), images under imgs/ relative to the file; one caption holds a
  quoted tab and a newline."""
  d = tmp_path_factory.mktemp("csv")
  rows = []
  for i in range(12):
    write_png(str(d / "imgs" / f"{i}.png"), i)
    caption = f"picture number {i}" if i != 5 else "a caption\twith a tab\nand a newline"
    rows.append({"filepath": f"imgs/{i}.png", "title": caption, "extra": str(i)})
  with open(d / "train.tsv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["extra", "filepath", "title"], delimiter="\t")
    w.writeheader()
    w.writerows(rows)
  return d


def cfg(path, **kw):
  base = dict(name="csv", csv_path=str(path), csv_img_key="filepath", csv_caption_key="title", csv_separator="\t",
              skip_bad=False, image_size=16, context_length=12, crop_scale=(0.5, 1.0), flip=False, num_workers=0,
              prefetch=0)
  return ml_collections.ConfigDict(dict(base, **kw))


def test_rows_match_the_csv_module_and_pil(table, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)                           # image paths are relative to the CSV, not to the cwd
  src = csv_source.source(cfg(table / "train.tsv"), "train")
  with open(table / "train.tsv", newline="") as f:
    ref = list(csv.reader(f, delimiter="\t"))
  header, body = ref[0], ref[1:]
  assert len(src) == len(body) == 12
  for i, row in enumerate(body):
    ex = src[i]
    assert ex["captions"] == [row[header.index("title")].strip()]
    want = np.asarray(Image.open(os.path.join(table, row[header.index("filepath")])).convert("RGB"))
    np.testing.assert_array_equal(ex["image"], want)
  assert src[5]["captions"] == ["a caption\twith a tab\nand a newline"]


def test_other_separator_and_keys_and_errors(tmp_path):
  write_png(str(tmp_path / "a.png"), 1)
  (tmp_path / "t.csv").write_text('img,caption\na.png,"one, with a comma"\na.png,\n')
  c = cfg(tmp_path / "t.csv", csv_img_key="img", csv_caption_key="caption", csv_separator=",")
  with pytest.raises(MmjaxError, match=r"t.csv:3: empty caption"):
    csv_source.source(c, "train")
  c.skip_bad = True
  src = csv_source.source(c, "train")
  assert len(src) == 1 and src.skipped == 1 and src[0]["captions"] == ["one, with a comma"]
  with pytest.raises(MmjaxError, match=r"no column 'filepath' \(data.csv_img_key\).*\['img', 'caption'\]"):
    csv_source.source(cfg(tmp_path / "t.csv", csv_separator=","), "train")
  with pytest.raises(MmjaxError, match="needs data.csv_val_path"):
    csv_source.source(c, "test")


def test_bad_image_names_the_row_or_is_replaced(tmp_path):
  write_png(str(tmp_path / "ok.png"), 0)
  (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  (tmp_path / "t.tsv").write_text("filepath\ttitle\nbad.jpg\tbroken\nok.png\tfine\n")
  src = csv_source.source(cfg(tmp_path / "t.tsv"), "train")
  with pytest.raises(MmjaxError, match=r"t.tsv:2 \(.*bad.jpg\): corrupt or unreadable image"):
    src[0]
  src = csv_source.source(cfg(tmp_path / "t.tsv", skip_bad=True), "train")
  assert src[0]["captions"] == ["fine"]


def test_batches_cover_every_row_once_per_epoch_through_global_shuffle(table):
  c = cfg(table / "train.tsv")
  captions = csv_source.corpus(c)
  tok = Tokenizer.train(captions, 300)
  it = pipeline.make_train_iterator(c, tok, global_batch_size=4, seed=0)
  epochs = [[next(it) for _ in range(3)] for _ in range(2)]
  b = epochs[0][0]
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == {"image": ((4, 16, 16, 3), np.float32),
                                                           "tokens": ((4, 12), np.int32)}
  assert -1 <= b["image"].min() and b["image"].max() <= 1
  ref = sorted(map(tuple, tok.encode(captions, 12).tolist()))
  orders = []
  for epoch in epochs:
    rows = [tuple(r) for batch in epoch for r in batch["tokens"].tolist()]
    assert sorted(rows) == ref
    orders.append(rows)
  assert orders[0] != orders[1]                         # reshuffled each epoch
