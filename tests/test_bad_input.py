"""Bad input in your own data (mmjax/data/bad_input.py): skip_bad's per-data-set default, the count of bad examples
through the random-access pipeline (CSV, image folder; resumed exactly, summed over grain workers), the count in
metrics.jsonl and printed at the end of a run, and data.max_bad_fraction stopping a run with a clear message."""
from __future__ import annotations

import csv
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, read_jsonl
from mmjax import config as config_lib
from mmjax.data import bad_input, csv_source, image_folder, pipeline, webdataset
from mmjax.data.tokenizer import Tokenizer
from mmjax.errors import MmjaxError

N, BAD = 40, (7, 23)          # rows of the CSV, rows whose image is corrupt


def write_png(path, seed: int, size: int = 12) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  """N rows (open_clip's TSV columns); the images of rows BAD are not images."""
  d = tmp_path_factory.mktemp("bad_csv")
  rows = []
  for i in range(N):
    if i in BAD:
      (d / f"{i}.jpg").write_bytes(b"\xff\xd8 truncated garbage")
      rows.append({"filepath": f"{i}.jpg", "title": f"broken picture {i}"})
    else:
      write_png(str(d / f"{i}.png"), i)
      rows.append({"filepath": f"{i}.png", "title": f"picture number {i}"})
  with open(d / "train.tsv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["filepath", "title"], delimiter="\t")
    w.writeheader()
    w.writerows(rows)
  return d / "train.tsv"


def data_cfg(path, **kw):
  """The base config's data section (skip_bad None: the data set decides) for data.name = "csv"."""
  c = config_lib.base_config().data
  c.name, c.image_size, c.context_length, c.crop_scale, c.prefetch = "csv", 8, 10, (0.5, 1.0), 0
  c.csv_path, c.csv_img_key, c.csv_caption_key, c.csv_separator = str(path), "filepath", "title", "\t"
  for k, v in kw.items():
    c[k] = v
  return c


# ----------------------------------------------------------------------------------------------- defaults
def test_skip_bad_is_on_for_your_own_data_and_off_for_the_tfds_builders(table, tmp_path, monkeypatch):
  base = config_lib.base_config().data
  assert base.skip_bad is None and base.max_bad_fraction == 0.01
  assert bad_input.skip_bad(base) is True and bad_input.skip_bad(base, default=False) is False
  assert bad_input.skip_bad(dict(skip_bad=False)) is False and bad_input.skip_bad({}) is True
  shards = ml_collections.ConfigDict(dict(base.to_dict(), shards="/x/{0..1}.tar"))
  assert webdataset.stream_spec(shards, seed=0).skip_bad is True
  shards.skip_bad = False
  assert webdataset.stream_spec(shards, seed=0).skip_bad is False
  # CSV: a row without a caption is dropped (and counted), a bad image passed over, by default
  (tmp_path / "t.tsv").write_text("filepath\ttitle\n0.png\t\n" + "".join(f"0.png\tok {i}\n" for i in range(200)))
  write_png(str(tmp_path / "0.png"), 0)
  src = csv_source.source(data_cfg(tmp_path / "t.tsv"), "train")
  assert (len(src), src.skipped) == (200, 1)
  assert csv_source.source(data_cfg(table), "train")[BAD[0]]["captions"] == [f"picture number {BAD[0] + 1}"]
  with pytest.raises(MmjaxError, match=r"train.tsv:\d+ \(.*7.jpg\): corrupt or unreadable image.*data.skip_bad"):
    csv_source.source(data_cfg(table, skip_bad=False), "train")[BAD[0]]
  # the TFDS builders' prepare: None reads as strict
  from mmjax.data import builders, image_text
  seen = {}
  monkeypatch.setattr(builders, "prepare", lambda name, **kw: seen.update(kw))
  image_text.prepared(ml_collections.ConfigDict(dict(base.to_dict(), name="flickr8k")))
  assert seen["skip_bad"] is False


def test_the_command_line_sets_the_placeholder(tmp_path):
  """--config.data.skip_bad=False/True on the command line (config_flags, as mmjax.main parses it) over the None."""
  import subprocess
  import sys
  path = tmp_path / "exp.py"
  path.write_text("from mmjax import config\ndef get_config():\n  return config.base_config()\n")
  script = ("import sys\nfrom absl import flags\nfrom ml_collections import config_flags\n"
            "h = config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
            "flags.FLAGS(['prog', '--config', *sys.argv[1:]])\nprint(repr(h.value.data.skip_bad))\n")
  for extra, want in (([], "None"), (["--config.data.skip_bad=False"], "False"),
                      (["--config.data.skip_bad=True"], "True")):
    out = subprocess.run([sys.executable, "-c", script, str(path), *extra], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout
    assert out.strip() == want


def test_csv_rows_dropped_beyond_max_bad_fraction_stop_at_read(tmp_path):
  write_png(str(tmp_path / "0.png"), 0)
  body = "".join("0.png\t\n" if i % 20 == 0 else f"0.png\tok {i}\n" for i in range(200))     # 10 of 200 empty
  (tmp_path / "t.tsv").write_text("filepath\ttitle\n" + body)
  with pytest.raises(MmjaxError, match=r"t.tsv: 10 of its 200 rows were dropped .*data.max_bad_fraction=0.01"):
    csv_source.source(data_cfg(tmp_path / "t.tsv"), "train")
  assert csv_source.source(data_cfg(tmp_path / "t.tsv", max_bad_fraction=0.1), "train").skipped == 10


# ----------------------------------------------------------------------------------------------- counting
def _tokenizer(table):
  return Tokenizer.train(csv_source.corpus(data_cfg(table)), 300)


def test_bad_images_are_counted_per_epoch_and_resume_exactly(table):
  c, tok = data_cfg(table, max_bad_fraction=0.2), _tokenizer(table)
  it = pipeline.make_train_iterator(c, tok, global_batch_size=8, seed=0)
  batches = [next(it) for _ in range(5)]                        # one epoch: every row requested once
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {"image": ((8, 8, 8, 3), np.float32),
                                                                    "tokens": ((8, 10), np.int32)}
  assert pipeline.data_counters(it) == {"data_seen": N + len(BAD), "data_bad": len(BAD)}
  # the rows after the bad ones are served in their place: each twice, and no "broken" caption ever
  rows = [tuple(r) for b in batches for r in b["tokens"].tolist()]
  good = tok.encode([f"picture number {i}" for i in range(N) if i not in BAD], 10).tolist()
  assert sorted(rows) == sorted(map(tuple, good + [good[BAD[0]], good[BAD[1] - 1]]))
  # resume from a saved (JSON) state mid-epoch: the same batches and counts
  it = pipeline.make_train_iterator(c, tok, global_batch_size=8, seed=0)
  next(it), next(it)
  state = json.loads(json.dumps(it.get_state()))
  assert state["kind"] == bad_input.KIND and state["inner"] == {"next_index": 2}
  again = pipeline.make_train_iterator(c, tok, global_batch_size=8, seed=0)
  again.set_state(state)
  for want in batches[2:]:
    np.testing.assert_array_equal(next(again)["tokens"], want["tokens"])
  assert pipeline.data_counters(again) == {"data_seen": N + len(BAD), "data_bad": len(BAD)}
  old = pipeline.make_train_iterator(c, tok, global_batch_size=8, seed=0)
  old.set_state({"next_index": 2})                             # a checkpoint from before the counts: from 0
  np.testing.assert_array_equal(next(old)["tokens"], batches[2]["tokens"])


def test_grain_workers_count_the_same(table):
  c, tok = data_cfg(table, max_bad_fraction=0.2), _tokenizer(table)
  ref = pipeline.make_train_iterator(c, tok, global_batch_size=8, seed=1)
  it = pipeline.make_train_iterator(data_cfg(table, max_bad_fraction=0.2, num_workers=2), tok, global_batch_size=8,
                                    seed=1)
  for _ in range(10):
    np.testing.assert_array_equal(next(it)["tokens"], next(ref)["tokens"])
  assert pipeline.data_counters(it) == pipeline.data_counters(ref) == {"data_seen": 2 * (N + 2), "data_bad": 4}


def test_more_bad_than_max_bad_fraction_stops_with_a_clear_message(table):
  it = pipeline.make_train_iterator(data_cfg(table), _tokenizer(table), global_batch_size=8, seed=0)
  with pytest.raises(MmjaxError, match=r"data.name='csv' \(train split\): 2 of the \d+ examples read are bad, more "
                                       r"than data.max_bad_fraction=0.01 .*fix the data or raise") as e:
    for _ in range(5):
      next(it)
  assert "\n" not in str(e.value)


def test_an_image_folder_skips_in_training_and_is_strict_in_evaluation(tmp_path):
  for c in ("a", "b"):
    for i in range(4):
      write_png(str(tmp_path / c / f"{i}.png"), 10 * (c == "b") + i)
  (tmp_path / "b" / "1.png").write_bytes(b"\x89PNG not really")
  c = ml_collections.ConfigDict(dict(config_lib.base_config().data.to_dict(), name="image_folder",
                                     folder_root=str(tmp_path), image_size=8, prefetch=0, max_bad_fraction=0.5))
  it = pipeline.make_train_iterator(c, None, global_batch_size=4, seed=0)
  labels = np.concatenate([next(it)["label"] for _ in range(2)])
  assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 and pipeline.data_counters(it)["data_bad"] == 1
  with pytest.raises(MmjaxError, match=r"b/1.png: corrupt or unreadable image.*evaluation data are never skipped"):
    image_folder.classification_arrays(str(tmp_path), "test", 8)


# ----------------------------------------------------------------------------------------------- a whole run
def _run_config(table, steps: int = 5, **data):
  """CLIP (clip_webdataset's runlocal sizes) on the CSV, batch 8: 5 steps are one epoch of the 40 rows."""
  c = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_webdataset.py"), "runlocal")
  for key in ("shards", "val_shards", "shuffle_buffer", "resampled", "shard_weights"):
    del c.data[key]
  c.data.name, c.data.csv_path = "csv", str(table)
  c.data.update(data)
  c.total_steps, c.batch_size, c.checkpoint_every, c.log_every = steps, 8, 5, 1
  c.evals.names, c.progress_bar = "", False
  return c


def test_a_run_logs_the_count_in_metrics_jsonl_and_prints_it(table, tmp_path, capsys):
  from mmjax.train import loop
  loop.Trainer(_run_config(table, max_bad_fraction=0.2), str(tmp_path / "w")).train()
  rows = [r for r in read_jsonl(tmp_path / "w" / "metrics.jsonl") if "train/loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  assert (rows[-1]["train/data_bad"], rows[-1]["train/data_seen"]) == (2, N + 2)
  assert f"mmjax: data: 2 bad examples skipped of {N + 2} read (this process; train/data_bad" in capsys.readouterr().out
  # resumed from the step-5 checkpoint: the counts go on from the checkpoint's
  loop.Trainer(_run_config(table, steps=7, max_bad_fraction=0.2), str(tmp_path / "w")).train()
  rows = [r for r in read_jsonl(tmp_path / "w" / "metrics.jsonl") if "train/loss" in r]
  assert rows[-1]["step"] == 7 and rows[-1]["train/data_seen"] - rows[-1]["train/data_bad"] == 7 * 8
  assert rows[-1]["train/data_bad"] >= 2


def test_a_run_past_max_bad_fraction_stops_naming_the_step(table, tmp_path):
  from mmjax.train import loop
  with pytest.raises(MmjaxError, match=r"data pipeline failed at step \d: data.name='csv' \(train split\): 2 of the "
                                       r"\d+ examples read are bad, more than data.max_bad_fraction=0.01"):
    loop.Trainer(_run_config(table), str(tmp_path / "w")).train()
