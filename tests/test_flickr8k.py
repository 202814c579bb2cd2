"""Flickr8k: the TFDS builder (real files and a fake raw folder), its bad-input errors, and the grain pipeline
(augmentation, determinism, process sharding, exact resume, eval arrays with 5 captions per image)."""
from __future__ import annotations

import io
import json
import math
import pathlib
import shutil
import zipfile

import chex
import numpy as np
import pytest
from PIL import Image

from mmjax.config import base_config
from mmjax.data import builders, image_text, pipeline
from mmjax.data.builders import flickr8k
from mmjax.errors import MmjaxError

RAW = builders.default_manual_dir("flickr8k")
needs_raw = pytest.mark.skipif(not (RAW / flickr8k.ZIP).exists(),
                               reason=f"real Flickr8k files not found in {RAW} (set MMJAX_RAW_DATA)")


def _read_tokens(path) -> dict[str, list[str]]:
  """Independent parse of Flickr8k.token.txt: NAME.jpg#N<TAB>caption."""
  out: dict[str, dict[int, str]] = {}
  for line in pathlib.Path(path).read_text().splitlines():
    key, caption = line.split("\t")
    name, n = key.split("#")
    out.setdefault(name, {})[int(n)] = caption
  return {k: [v[i] for i in sorted(v)] for k, v in out.items()}


def _check_split(b, split, raw_dir, n):
  src = b.as_data_source(split)
  assert len(src) == n
  tokens = _read_tokens(raw_dir / flickr8k.TOKENS)
  names = set((raw_dir / flickr8k.SPLIT_FILES[split]).read_text().split())
  with zipfile.ZipFile(raw_dir / flickr8k.ZIP) as zf:
    members = {m.rpartition("/")[2]: m for m in zf.namelist()}
    for i in range(min(n, 8)):
      ex = src[i]
      name = ex["image_id"].decode()
      assert name in names
      chex.assert_shape(ex["image"], (128, 128, 3))
      assert ex["image"].dtype == np.uint8
      expected = np.asarray(Image.open(io.BytesIO(zf.read(members[name]))).convert("RGB"))
      np.testing.assert_array_equal(ex["image"], expected)
      assert [c.decode() for c in ex["captions"]] == tokens[name]


@needs_raw
def test_real_subset_builds_with_the_right_content(tmp_path):
  b = builders.prepare("flickr8k", data_dir=tmp_path, limit=12)
  for split in ("train", "dev", "test"):
    _check_split(b, split, RAW, 12)


@needs_raw
def test_real_full_split_sizes(tmp_path):
  b = builders.prepare("flickr8k", data_dir=tmp_path)
  assert {s: i.num_examples for s, i in b.info.splits.items()} == {"train": 6000, "dev": 1000, "test": 1000}
  src = b.as_data_source("test")
  assert all(len(src[i]["captions"]) == 5 for i in range(0, 1000, 37))


def _fake(tmp_path, n=16):
  return flickr8k.Flickr8k.make_fake_raw(tmp_path / "raw", n=n)


def test_fake_raw_builds_and_is_idempotent(tmp_path):
  raw = _fake(tmp_path)
  b = builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds")
  assert {s: i.num_examples for s, i in b.info.splits.items()} == {"train": 8, "dev": 4, "test": 4}
  _check_split(b, "train", raw, 8)
  info = pathlib.Path(b.data_dir, "dataset_info.json")
  mtime = info.stat().st_mtime_ns
  assert builders.is_prepared(builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds"))
  assert info.stat().st_mtime_ns == mtime       # not rebuilt


def _no_complete_dataset(data_dir) -> bool:
  return not list(pathlib.Path(data_dir).glob("flickr8k/*/dataset_info.json"))


def _rewrite_member(zip_path, name, data):
  tmp = zip_path.with_suffix(".tmp")
  with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(tmp, "w") as dst:
    for m in src.namelist():
      dst.writestr(m, data if m.endswith(name) else src.read(m))
  tmp.replace(zip_path)


def test_corrupt_jpeg_names_the_member_and_skip_bad_counts_it(tmp_path):
  raw = _fake(tmp_path)
  victim = (raw / flickr8k.SPLIT_FILES["train"]).read_text().split()[2]
  with zipfile.ZipFile(raw / flickr8k.ZIP) as zf:
    good = zf.read(f"Flicker8k_Dataset/{victim}")
  _rewrite_member(raw / flickr8k.ZIP, victim, good[:len(good) // 3])    # truncated JPEG
  with pytest.raises(MmjaxError, match=rf"Flickr8k_128.zip:Flicker8k_Dataset/{victim}: corrupt"):
    builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "a")
  assert _no_complete_dataset(tmp_path / "a")
  b = builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "b", skip_bad=True)
  assert len(b.skipped) == 1 and victim in b.skipped[0]
  assert b.info.splits["train"].num_examples == 7


def test_malformed_caption_line_names_file_and_line(tmp_path):
  raw = _fake(tmp_path)
  lines = (raw / flickr8k.TOKENS).read_text().splitlines()
  lines[6] = lines[6].replace("\t", " ")                              # no TAB on line 7
  (raw / flickr8k.TOKENS).write_text("\n".join(lines) + "\n")
  with pytest.raises(MmjaxError, match=r"Flickr8k.token.txt:7: malformed caption line"):
    builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds")
  assert _no_complete_dataset(tmp_path / "tfds")


def test_split_naming_a_missing_image_then_fixed_rebuilds(tmp_path):
  raw = _fake(tmp_path)
  split = raw / flickr8k.SPLIT_FILES["test"]
  good = split.read_text()
  split.write_text(good + "404_missing.jpg\n")
  with pytest.raises(MmjaxError, match=r"Flickr_8k.testImages.txt:5: image 404_missing.jpg is not in"):
    builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds")
  assert _no_complete_dataset(tmp_path / "tfds")
  split.write_text(good)                                              # fixed: a later prepare completes
  b = builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds")
  assert b.info.splits["test"].num_examples == 4
  assert not list((tmp_path / "tfds" / "flickr8k").glob("incomplete.*"))


def test_missing_manual_dir_and_missing_file(tmp_path):
  with pytest.raises(MmjaxError, match=r"manual dir .*nowhere does not exist; pass --manual_dir"):
    builders.prepare("flickr8k", manual_dir=tmp_path / "nowhere", data_dir=tmp_path / "tfds")
  raw = _fake(tmp_path)
  (raw / flickr8k.SPLIT_FILES["dev"]).unlink()
  with pytest.raises(MmjaxError, match=r"Flickr_8k.devImages.txt is missing"):
    builders.prepare("flickr8k", manual_dir=raw, data_dir=tmp_path / "tfds")


def test_random_resized_crop_box_follows_its_distribution():
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(2000):
    l, t, r, b = image_text.random_resized_crop_box(rng, 128, 96, scale=(0.3, 0.8), ratio=(0.5, 2.0))
    assert 0 <= l < r <= 96 and 0 <= t < b <= 128
    areas.append((r - l) * (b - t) / (128 * 96))
    aspects.append((r - l) / (b - t))
  areas, aspects = np.array(areas), np.array(aspects)
  assert areas.min() > 0.28 and areas.max() < 0.82           # rounding to whole pixels
  assert aspects.min() > 0.45 and aspects.max() < 2.2
  # On a square image no aspect is favoured by the fit check: log(aspect) is uniform on log(ratio), mean 0.
  sq = [image_text.random_resized_crop_box(rng, 128, 128, scale=(0.3, 0.8), ratio=(0.5, 2.0)) for _ in range(2000)]
  assert abs(np.mean([math.log((r - l) / (b - t)) for l, t, r, b in sq])) < 0.05
  # Fallback when no sample fits: the largest centred crop within the ratio range.
  assert image_text.random_resized_crop_box(rng, 10, 100, scale=(2.0, 3.0), ratio=(1.0, 1.0)) == (45, 0, 55, 10)


def _cfg(**kw):
  cfg = base_config().data
  cfg.update(dict(name="flickr8k", image_size=32, context_length=16, fake_raw=24, crop_scale=(0.5, 1.0),
                  flip=True, **kw))
  return cfg


@pytest.fixture(scope="module")
def tok():
  return pipeline.build_tokenizer(_cfg())


def test_train_batches_deterministic_sharded_and_resumable(tok):
  cfg = _cfg()
  take = lambda it, n: [next(it) for _ in range(n)]
  a = take(pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1), 5)
  b = take(pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["tokens"], y["tokens"])
  chex.assert_shape(a[0]["image"], (4, 32, 32, 3))
  assert a[0]["image"].dtype == np.float32 and -1 <= a[0]["image"].min() and a[0]["image"].max() <= 1
  c = next(pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=2))
  assert not np.array_equal(a[0]["image"], c["image"])
  # Two processes: each takes half of every global batch; together, in process order, the 1-process batch.
  p0 = take(pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1, process_index=0, process_count=2), 5)
  p1 = take(pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1, process_index=1, process_count=2), 5)
  for whole, x, y in zip(a, p0, p1):
    np.testing.assert_array_equal(np.concatenate([x["image"], y["image"]]), whole["image"])
    np.testing.assert_array_equal(np.concatenate([x["tokens"], y["tokens"]]), whole["tokens"])
  # Exact resume from a JSON round-tripped state, across an epoch boundary (3 batches of 4 per epoch).
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  rest = take(it, 4)
  it2 = pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=1)
  it2.set_state(state)
  for x, y in zip(rest, take(it2, 4)):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["tokens"], y["tokens"])


def test_epochs_see_every_image_once_with_fresh_augmentation(tok):
  cfg = _cfg()
  raw = image_text.prepared(cfg)
  src = raw.as_data_source("train")
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=4, seed=0)
  epoch1 = np.concatenate([next(it)["image"] for _ in range(3)])
  epoch2 = np.concatenate([next(it)["image"] for _ in range(3)])
  # Each fake image is noise around its own base colour: a crop's mean colour names its source image.
  means = np.stack([src[i]["image"].reshape(-1, 3).mean(0) for i in range(len(src))]) / 127.5 - 1
  owner = lambda img: int(np.argmin(np.abs(means - img.reshape(-1, 3).mean(0)).sum(1)))
  own1, own2 = [owner(x) for x in epoch1], [owner(x) for x in epoch2]
  assert sorted(own1) == sorted(own2) == list(range(12))
  assert own1 != own2                                           # reshuffled
  for i in range(12):                                            # and re-augmented
    assert not np.array_equal(epoch1[own1.index(i)], epoch2[own2.index(i)])


def test_eval_arrays_keep_all_five_captions(tok):
  cfg = _cfg()
  ev = pipeline.make_eval_arrays(cfg, tok, 3, "test")
  chex.assert_shape(ev["image"], (3, 32, 32, 3))
  chex.assert_shape(ev["tokens"], (15, 16))
  np.testing.assert_array_equal(ev["txt_to_img"], np.repeat(np.arange(3), 5))
  src = image_text.prepared(cfg).as_data_source("test")
  assert ev["caption"][5:10] == [c.decode() for c in src[1]["captions"]]
  expected = np.asarray(Image.fromarray(src[2]["image"]).resize((32, 32), Image.BICUBIC), np.float32) / 127.5 - 1
  np.testing.assert_allclose(ev["image"][2], expected, atol=1e-6)
  one = pipeline.first_caption_only(ev)
  assert one["tokens"].shape == (3, 16) and one["caption"] == [ev["caption"][i] for i in (0, 5, 10)]


def test_prepare_command_reports_and_fails_cleanly(tmp_path):
  import subprocess
  import sys
  raw = _fake(tmp_path)
  cmd = [sys.executable, "-m", "mmjax.data.prepare", "flickr8k", f"--manual_dir={raw}", f"--data_dir={tmp_path}/t"]
  out = subprocess.run(cmd, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert "flickr8k: prepared in" in out.stdout and "train 8, dev 4, test 4" in out.stdout
  out = subprocess.run(cmd, capture_output=True, text=True)
  assert "flickr8k: already prepared" in out.stdout
  shutil.rmtree(raw)
  out = subprocess.run(cmd[:4] + [f"--manual_dir={raw}", f"--data_dir={tmp_path}/u"], capture_output=True, text=True)
  assert out.returncode == 2 and "does not exist; pass --manual_dir" in out.stderr
