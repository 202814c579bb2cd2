"""Webdataset shards (mmjax/data/webdataset.py, tar_samples.py) on shards written here with tarfile + PIL: reading
checked against tarfile's own member list, epochs, process/worker splits, weights (chi-square), exact resume (also
with the JPEG draft), bad input; the JPEG draft's crops against PIL's bicubic of the same box from the full decode."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmjax.data import image_text
from mmjax.data import webdataset as wds
from mmjax.data.image_files import decode_pil
from mmjax.data.tar_samples import Sample, ShardDamage, iter_samples
from mmjax.errors import MmjaxError

CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}   # chi-square 0.999 quantiles (false-alarm rate 1e-3)


def jpeg(seed: int, size: int = 8) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def write_tar(path, samples) -> None:
  """samples: [(key, {ext: bytes})] written in order as key.ext members."""
  with tarfile.open(path, "w") as tf:
    for key, files in samples:
      for ext, data in files.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def good(key: str, seed: int, size: int = 8) -> tuple[str, dict]:
  return key, {"jpg": jpeg(seed, size), "txt": f"caption of {key}".encode(), "json": json.dumps({"k": key}).encode()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """6 shards x 10 samples of 32 px: keys s<shard>_<i>."""
  d = tmp_path_factory.mktemp("wds")
  for s in range(6):
    write_tar(d / f"shard-{s:03d}.tar", [good(f"s{s}_{i:02d}", 100 * s + i, 32) for i in range(10)])
  return str(d / "shard-{000..005}.tar")


def all_keys(pattern):
  return {f"s{s}_{i:02d}" for s in range(6) for i in range(10)}


def spec(pattern, **kw):
  paths, weights = wds.parse_shards(pattern, kw.pop("shard_weights", ""))
  return wds.StreamSpec(tuple(paths), tuple(weights), **kw)


def take(stream, n, field="__key__"):
  return [next(stream)[field] for _ in range(n)]


def test_brace_expansion_and_sources():
  assert wds.expand_braces("/d/{000..002}.tar") == ["/d/000.tar", "/d/001.tar", "/d/002.tar"]
  assert wds.expand_braces("a{1..2}-{x,y}") == ["a1-x", "a1-y", "a2-x", "a2-y"]
  assert wds.expand_braces("{8..11}") == ["8", "9", "10", "11"]
  assert wds.expand_braces("a{b,c{1..2}}") == ["ab", "ac1", "ac2"]
  paths, weights = wds.parse_shards("/a/{0..1}.tar::/b/x.tar", "1::3")
  assert paths == ["/a/0.tar", "/a/1.tar", "/b/x.tar"] and weights == [1.0, 1.0, 3.0]
  with pytest.raises(MmjaxError, match="one non-negative weight per"):
    wds.parse_shards("/a.tar::/b.tar", "1")
  with pytest.raises(MmjaxError, match="data.shards is empty"):
    wds.parse_shards("")


def test_samples_match_tarfile_member_list(shards, tmp_path):
  """Samples read from byte 0 and from a sample's start offset == grouping tarfile's own member list by key."""
  path = wds.parse_shards(shards)[0][2]
  with tarfile.open(path) as tf:
    members = [(m.name, m.offset, tf.extractfile(m).read()) for m in tf.getmembers()]
  ref: dict[str, dict] = {}
  starts = {}
  for name, offset, data in members:
    key, ext = name.split(".", 1)
    starts.setdefault(key, offset)
    ref.setdefault(key, {})[ext] = data
  got = list(iter_samples(path))
  assert all(isinstance(s, Sample) for s in got)
  assert [s.key for s in got] == list(ref) and all(s.files == ref[s.key] for s in got)
  assert [s.start for s in got] == [starts[k] for k in ref]
  assert [s.end for s in got[:-1]] == [s.start for s in got[1:]]
  later = list(iter_samples(path, got[4].start))
  assert [s.key for s in later] == list(ref)[4:] and later[0].files == ref[got[4].key]
  only_txt = list(iter_samples(path, 0, frozenset({"txt"})))
  assert [set(s.files) for s in only_txt] == [{"txt"}] * len(ref)


@pytest.mark.parametrize("buffer", [0, 7])
def test_epoch_is_a_permutation_and_reshuffled(shards, buffer):
  st = wds.SampleStream(spec(shards, shuffle_buffer=buffer, seed=3))
  e1, e2 = take(st, 60), take(st, 60)
  assert set(e1) == set(e2) == all_keys(shards) and len(set(e1)) == 60
  assert e1 != e2                               # a new shard order (and buffer picks) each epoch
  other = take(wds.SampleStream(spec(shards, shuffle_buffer=buffer, seed=4)), 60)
  assert other != e1
  if buffer:                                    # the buffer mixes shards: not 10 runs of one shard each
    runs = 1 + sum(a[:2] != b[:2] for a, b in zip(e1, e1[1:]))
    assert runs > 12


@pytest.mark.parametrize("buffer", [0, 5])
def test_two_processes_disjoint_and_union_is_one_process_epoch(shards, buffer):
  one = take(wds.SampleStream(spec(shards, shuffle_buffer=buffer, seed=1)), 60)
  per_proc = [take(wds.SampleStream(spec(shards, shuffle_buffer=buffer, seed=1, process_index=p, process_count=2)),
                   30, "__url__") for p in range(2)]
  urls = [set(u) for u in per_proc]
  assert not urls[0] & urls[1] and len(urls[0]) == len(urls[1]) == 3     # disjoint shards, 3 each
  keys = [take(wds.SampleStream(spec(shards, shuffle_buffer=buffer, seed=1, process_index=p, process_count=2)), 30)
          for p in range(2)]
  assert not set(keys[0]) & set(keys[1]) and set(keys[0]) | set(keys[1]) == set(one)
  # grain workers split a process's shards the same way
  workers = [set(take(wds.SampleStream(spec(shards, seed=1), w, 3), 20, "__url__")) for w in range(3)]
  assert sum(map(len, workers)) == 6 and len(set.union(*workers)) == 6
  with pytest.raises(MmjaxError, match="fewer than the 2 processes x 4 data workers"):
    wds.SampleStream(spec(shards, process_count=2), 0, 4)


def test_resampled_sources_follow_their_weights(shards, tmp_path):
  """Two sources: the 6 shards (weight 1 each) and one more shard (weight 3): per-shard draw shares 1/9 and 3/9."""
  extra = tmp_path / "extra.tar"
  write_tar(extra, [good(f"x_{i}", 7000 + i) for i in range(4)])
  st = wds.SampleStream(spec(f"{shards}::{extra}", shard_weights="1::3", resampled=True, seed=0))
  draws = [st.shard_path(0, k) for k in range(4500)]
  names = sorted(set(draws))
  assert len(names) == 7
  counts = np.asarray([draws.count(n) for n in names], float)
  expected = np.asarray([3 / 9 if n.endswith("extra.tar") else 1 / 9 for n in names]) * len(draws)
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 22.46, (chi2, counts)                   # df = 6: 0.999 quantile
  # the samples follow the draws: extra's shards hold 4 samples, the others 10, so extra's expected sample share is
  # (3/9 * 4) / (3/9 * 4 + 6/9 * 10) = 1/6 (about 112 shard draws here: +-0.022)
  urls = take(st, 900, "__url__")
  share = sum(u.endswith("extra.tar") for u in urls) / 900
  assert 0.09 < share < 0.25, share
  # mixing sources with weights without resampling is refused, as open_clip does
  with pytest.raises(MmjaxError, match="resampled=True"):
    import ml_collections
    wds.stream_spec(ml_collections.ConfigDict(dict(shards=f"{shards}::{extra}", shard_weights="1::3")), seed=0)


def test_resampled_without_weights_is_uniform_over_shards(shards):
  st = wds.SampleStream(spec(shards, resampled=True, seed=5))
  draws = [st.shard_path(0, k) for k in range(3000)]
  counts = np.asarray([draws.count(p) for p in sorted(set(draws))], float)
  assert len(counts) == 6
  chi2 = float(((counts - 500) ** 2 / 500).sum())
  assert chi2 < 20.52                                    # df = 5: 0.999 quantile
  assert [wds.SampleStream(spec(shards, resampled=True, seed=5)).shard_path(0, k) for k in range(50)] == draws[:50]


@pytest.mark.parametrize("kw", [dict(shuffle_buffer=9), dict(shuffle_buffer=0), dict(shuffle_buffer=6, resampled=True),
                                dict(shuffle_buffer=9, draft_size=8)],
                         ids=["buffer", "no_buffer", "resampled", "jpeg_draft"])
def test_state_round_trip_resumes_exactly(shards, kw):
  """Stopped after a random number of samples (mid-shard, mid-epoch, buffer full), the state through JSON gives the
  same next samples (keys, pixels, augmentation seeds; with the JPEG draft the same reduction) as the uninterrupted
  stream."""
  rng = np.random.default_rng(0)
  for cut in rng.integers(1, 130, size=3):
    a = wds.SampleStream(spec(shards, seed=2, **kw))
    for _ in range(int(cut)):
      next(a)
    state = json.loads(json.dumps(a.get_state()))
    b = wds.SampleStream(spec(shards, seed=2, **kw))
    b.set_state(state)
    for _ in range(40):
      x, y = next(a), next(b)
      assert x["__key__"] == y["__key__"] and x["_rng"] == y["_rng"]
      assert (x["full_hw"], x["reduced_by"]) == (y["full_hw"], y["reduced_by"]) == ((32, 32), 2 if "draft_size" in kw
                                                                                    else 1)
      np.testing.assert_array_equal(np.asarray(x["image"]), np.asarray(y["image"]))


# --------------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
  """shard 0: good, a corrupt JPEG (b_01), no caption (b_02), good; shard 1: 6 good then truncated in the middle of
  the 5th sample's JPEG; shard 2: not a tar; shard 3: missing."""
  d = tmp_path_factory.mktemp("bad")
  write_tar(d / "b0.tar", [good("b_00", 1), ("b_01", {"jpg": b"\xff\xd8not a jpeg", "txt": b"broken"}),
                           ("b_02", {"jpg": jpeg(2)}), good("b_03", 3)])
  full = d / "full.tar"
  write_tar(full, [good(f"t_{i}", 10 + i) for i in range(6)])
  with tarfile.open(full) as tf:
    cut_member = [m for m in tf.getmembers() if m.name == "t_4.jpg"][0]
  data = full.read_bytes()
  (d / "b1.tar").write_bytes(data[:cut_member.offset_data + cut_member.size // 2])
  (d / "b2.tar").write_bytes(b"this is not a tar file" * 40)
  return d, [str(d / f"b{i}.tar") for i in range(4)]


def test_truncated_tar_keeps_the_good_samples_before_the_damage(bad_shards):
  _, paths = bad_shards
  got = list(iter_samples(paths[1]))
  assert [s.key for s in got[:-1]] == ["t_0", "t_1", "t_2", "t_3"]
  assert all(set(s.files) == {"jpg", "txt", "json"} for s in got[:-1])
  assert isinstance(got[-1], ShardDamage) and "t_4.jpg" in got[-1].where
  assert isinstance(list(iter_samples(paths[2]))[-1], ShardDamage)
  assert "cannot open" in list(iter_samples(paths[3]))[0].reason


def test_bad_samples_are_skipped_and_counted(bad_shards):
  _, paths = bad_shards
  st = wds.SampleStream(wds.StreamSpec(tuple(paths), (1.0,) * 4, shuffle_buffer=0, max_bad_fraction=1.0))
  keys = take(st, 6)                                    # one epoch: the 6 good samples of the 4 shards
  assert sorted(keys) == ["b_00", "b_03", "t_0", "t_1", "t_2", "t_3"]
  assert st._read() is None                             # read the rest of the epoch: only bad input is left
  # bad: corrupt JPEG, no caption, truncated tar, not a tar, missing shard; seen: 4 + 4 samples read + 3 damages
  assert (st.bad, st.seen) == (5, 11)


@pytest.mark.parametrize("which,match", [(0, r"b0.tar:b_0[12]"), (1, r"b1.tar:t_4.jpg"), (2, "b2.tar"),
                                         (3, "b3.tar.*cannot open")])
def test_skip_bad_false_names_shard_and_member(bad_shards, which, match):
  _, paths = bad_shards
  st = wds.SampleStream(wds.StreamSpec((paths[which],), (1.0,), shuffle_buffer=0, skip_bad=False))
  with pytest.raises(MmjaxError, match=match) as e:
    take(st, 8)
  assert "\n" not in str(e.value) and "data.skip_bad" in str(e.value)


def test_too_many_bad_examples_stop_the_run(bad_shards):
  _, paths = bad_shards
  st = wds.SampleStream(wds.StreamSpec((paths[0],), (1.0,), shuffle_buffer=0, max_bad_fraction=0.01))
  with pytest.raises(MmjaxError, match=r"of the \d+ examples seen are bad, more than data.max_bad_fraction=0.01"):
    take(st, 500)                                       # half the samples are bad: stops after 100 seen at most


# --------------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path):
  """CLIP trained 10 steps on shards (with a corrupt JPEG and a caption-less sample) == the same run SIGKILLed at a
  random step and rerun: identical parameters, batch fingerprints of every step, and bad-example counts."""
  from conftest import read_jsonl, run_driver
  d = tmp_path / "shards"
  d.mkdir()
  for s in range(4):
    samples = [good(f"k{s}_{i:02d}", 50 * s + i) for i in range(9)]
    if s == 1:
      samples[3] = ("k1_03", {"jpg": b"\xff\xd8garbage", "txt": b"a broken image"})
      samples[6] = ("k1_06", {"jpg": jpeg(6)})
    write_tar(d / f"{s}.tar", samples)
  settings = [f"data.shards={d}/{{0..3}}.tar", f"data.val_shards={d}/0.tar", "data.shuffle_buffer=6",
              "data.max_bad_fraction=0.5", "total_steps=10", "checkpoint_every=2", "log_every=1", "evals.names=''"]
  args = [a for s in settings for a in ("--set", s)]
  config = "experiments/clip_webdataset.py:runlocal"
  run_driver("--config", config, "--workdir", str(tmp_path / "a"), "--dump", str(tmp_path / "a.npz"), *args)
  kill = int(np.random.default_rng(24).integers(3, 9))
  killed = run_driver("--config", config, "--workdir", str(tmp_path / "b"), "--kill_at", f"train:{kill}", *args,
                      check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  resumed = run_driver("--config", config, "--workdir", str(tmp_path / "b"), "--dump", str(tmp_path / "b.npz"), *args)
  with np.load(tmp_path / "a.npz") as za, np.load(tmp_path / "b.npz") as zb:
    assert za.files == zb.files
    for k in za.files:
      np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
  rows = {w: [r for r in read_jsonl(tmp_path / w / "metrics.jsonl") if "train/loss" in r] for w in "ab"}
  ref = {r["step"]: r for r in rows["a"]}
  assert sorted(ref) == list(range(1, 11)) and len({r["train/batch_fingerprint"] for r in ref.values()}) == 10
  assert len(rows["b"]) > 10                            # some steps ran twice: before the kill and after resuming
  for r in rows["b"]:
    assert r["train/batch_fingerprint"] == ref[r["step"]]["train/batch_fingerprint"], r["step"]
    assert (r["train/data_bad"], r["train/data_seen"]) == (ref[r["step"]]["train/data_bad"],
                                                           ref[r["step"]]["train/data_seen"])
  assert ref[10]["train/data_bad"] >= 2                 # 10 x 8 examples: more than two epochs of 34 good ones
  assert f"mmjax: data: {int(ref[10]['train/data_bad'])} bad examples skipped of" in resumed.stdout


# --------------------------------------------------------------------------------------------------- JPEG draft
def photo_jpeg(seed: int, n: int) -> bytes:
  """A photograph-like n x n JPEG: smooth colour fields, a few sharp-edged blobs, slight noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:n, 0:n] / n
  img = np.stack([128 + 100 * np.sin(6 * x + seed), 128 + 100 * np.cos(5 * y), 128 + 80 * np.sin(4 * (x + y))], -1)
  for _ in range(8):
    (cy, cx), r = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.2)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
  img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "JPEG", quality=90)
  return buf.getvalue()


@pytest.mark.parametrize("scale", [(0.9, 1.0), (0.3, 1.0), (0.08, 1.0)])
def test_draft_factor_keeps_every_drawn_box_at_least_the_crop_size(scale):
  """Whatever box random_resized_crop_box draws (tries and fallback), it spans >= size pixels each way at 1/f."""
  rng = np.random.default_rng(0)
  reductions = set()
  for _ in range(300):
    h, w = (int(v) for v in rng.integers(8, 1500, 2))
    size = int(rng.integers(4, 300))
    f = image_text.draft_factor(h, w, size, scale)
    reductions.add(f)
    assert f == 1 or image_text.min_crop_side(h, w, scale) / f >= size
    for _ in range(20):
      left, top, right, bottom = image_text.random_resized_crop_box(rng, h, w, scale)
      assert min(right - left, bottom - top) >= image_text.min_crop_side(h, w, scale)
  assert reductions == {1, 2, 4, 8}


@pytest.mark.parametrize("n,size,expect_f", [(128, 24, 4), (256, 64, 2), (256, 100, 2), (160, 140, 1)])
def test_jpeg_draft_crop_matches_pil_bicubic_of_the_full_decode(n, size, expect_f):
  """The stream's path (decode_pil with the draft, then train_transform's box / f) against an independent reference:
  PIL's own full decode and bicubic resize of the same box (drawn by the same seed on the full size). Without a
  reduction (f = 1) the crop is bit-identical to the reference; with one, within about a grey level on average."""
  data = photo_jpeg(n + size, n)
  draft = lambda h, w: image_text.draft_factor(h, w, size, (0.9, 1.0))   # noqa: E731
  cfg = {"image_size": size, "crop_scale": (0.9, 1.0)}
  diffs = []
  for seed in range(6):
    image, full_hw, f = decode_pil(data, "x.jpg", draft)
    assert full_hw == (n, n) and f == expect_f and image.size == (-(-n // f),) * 2 and image.mode == "RGB"
    got = image_text.train_transform({"image": image, "full_hw": full_hw, "reduced_by": f, "captions": ["c"]},
                                     np.random.default_rng(seed), cfg)["image"].astype(int)
    box = image_text.random_resized_crop_box(np.random.default_rng(seed), n, n, (0.9, 1.0))
    with Image.open(io.BytesIO(data)) as im:
      full = im.convert("RGB")
    ref = np.asarray(full.resize((size, size), Image.BICUBIC, box=box)).astype(int)
    assert got.shape == ref.shape == (size, size, 3)
    diffs.append(np.abs(got - ref).mean())
    if f == 1:
      np.testing.assert_array_equal(got, ref)
  # measured: 1.26 (128 -> 24, f 4), 0.51 (256 -> 64), 0.85 (256 -> 100) grey levels of 255 on average
  assert np.mean(diffs) < 1.5, diffs


def test_jpeg_draft_only_for_jpegs_and_off_without_draft_size(shards):
  png = io.BytesIO()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(png, "PNG")
  assert decode_pil(png.getvalue(), "x.png", lambda h, w: 8)[1:] == ((64, 64), 1)
  assert decode_pil(photo_jpeg(0, 64), "x.jpg", lambda h, w: 8)[1:] == ((64, 64), 8)
  assert next(wds.SampleStream(spec(shards)))["reduced_by"] == 1
  from ml_collections import ConfigDict
  cfg = ConfigDict({"shards": shards, "image_size": 8, "crop_scale": (0.9, 1.0)})
  assert wds.stream_spec(cfg, seed=0).draft_size == 8
  cfg.jpeg_draft = False
  assert wds.stream_spec(cfg, seed=0).draft_size == 0
