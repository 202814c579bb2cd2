"""TFDS builders avmnist / mosi / cifar10_test / cifar100: content checked against independent reads of the raw files
(np.load, gzip IDX, wave/scipy, csv, PIL), split sizes against the READMEs, bad-input errors naming the file and
line/member, skip_bad, no complete data set left after a failure, and builds from `make_fake_raw`."""
from __future__ import annotations

import collections
import csv
import gzip
import io
import pathlib
import shutil
import wave
import zipfile

import chex
import numpy as np
import pytest
import scipy.io.wavfile
from PIL import Image

from mmjax.data import builders
from mmjax.data.builders import avmnist, cifar10_test, cifar100, mosi
from mmjax.errors import MmjaxError

AV_ROOT = builders.default_manual_dir("")
MOSI_RAW = builders.default_manual_dir("mosi")
CIFAR_RAW = builders.default_manual_dir("cifar10_test")
needs_avmnist = pytest.mark.skipif(
    not ((AV_ROOT / "mnist/x_train.npz").exists() and (AV_ROOT / "fsdd/recordings.zip").exists()),
    reason=f"real MNIST/FSDD files not found under {AV_ROOT} (set MMJAX_RAW_DATA to a folder holding mnist/ and fsdd/)")
needs_mosi = pytest.mark.skipif(not (MOSI_RAW / "transcripts.csv").exists(),
                                reason=f"real MOSI files not found in {MOSI_RAW} (set MMJAX_RAW_DATA)")
needs_cifar = pytest.mark.skipif(not (CIFAR_RAW / "test.zip").exists(),
                                 reason=f"real CIFAR-10 test.zip not found in {CIFAR_RAW} (set MMJAX_RAW_DATA)")
CIFAR100_RAW = builders.default_manual_dir("cifar100")
needs_cifar100 = pytest.mark.skipif(
    not (CIFAR100_RAW / cifar100.TAR).exists(),
    reason=f"real {cifar100.TAR} not found in {CIFAR100_RAW} (download the CIFAR-100 python version from "
           f"https://www.cs.toronto.edu/~kriz/cifar.html there, or set MMJAX_RAW_DATA)")


def _sizes(b) -> dict[str, int]:
  return {s: i.num_examples for s, i in b.info.splits.items()}


def _no_complete_dataset(data_dir, name) -> bool:
  return not list(pathlib.Path(data_dir).glob(f"{name}/*/dataset_info.json"))


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


# ------------------------------------------------------------------------------------------- independent readers
def _idx(path) -> np.ndarray:
  b = gzip.open(path).read()
  dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(b[3])]
  return np.frombuffer(b, np.uint8, offset=4 + 4 * b[3]).reshape(dims)


def _mnist(root):
  return {"train": (np.load(root / "mnist/x_train.npz")["arr_0"], np.load(root / "mnist/y_train.npz")["arr_0"]),
          "test": (_idx(root / "mnist/t10k-images-idx3-ubyte.gz"), _idx(root / "mnist/t10k-labels-idx1-ubyte.gz"))}


def _rewrite_zip(src_path, dst_path, keep=lambda name: True, replace=None):
  """Copies the members of `src_path` for which keep(name) into a new zip, replacing some member bytes."""
  replace = replace or {}
  with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w", zipfile.ZIP_STORED) as dst:
    for name in src.namelist():
      if keep(name):
        dst.writestr(name, replace.get(name, src.read(name)) if not name.endswith("/") else b"")


def _wav_bytes(pcm: np.ndarray, rate=8000, channels=1, width=2) -> bytes:
  buf = io.BytesIO()
  with wave.open(buf, "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(pcm.tobytes())
  return buf.getvalue()


# ------------------------------------------------------------------------------------------- AV-MNIST
def _check_avmnist_split(b, split, root, n, index_range):
  src = b.as_data_source(split)
  assert len(src) == n
  mnist = _mnist(root)
  images, labels = mnist["test" if split == "test" else "train"]
  lo, hi = {"train": (10, 49), "dev": (5, 9), "test": (0, 4)}[split]
  with zipfile.ZipFile(root / "fsdd/recordings.zip") as zf:
    for i in range(n):
      ex = src[i]
      chex.assert_shape(ex["image"], (28, 28, 1))
      assert ex["image"].dtype == np.uint8 and ex["audio"].dtype == np.int16 and ex["audio"].ndim == 1
      k = int(ex["image_index"])
      assert index_range[0] <= k < index_range[1]
      np.testing.assert_array_equal(ex["image"][..., 0], images[k])
      assert int(ex["label"]) == int(labels[k]) and 0 <= int(ex["label"]) <= 9
      digit, speaker, idx = _text(ex["audio_id"]).split("_")
      assert int(digit) == int(ex["label"]) and speaker == _text(ex["speaker"]) and lo <= int(idx) <= hi
      rate, pcm = scipy.io.wavfile.read(io.BytesIO(zf.read(f"recordings/{_text(ex['audio_id'])}.wav")))
      assert rate == 8000
      np.testing.assert_array_equal(ex["audio"], pcm)


@needs_avmnist
def test_avmnist_real_subset_matches_raw_files(tmp_path):
  b = builders.prepare("avmnist", data_dir=tmp_path, limit=12)
  assert b.raw_dir == AV_ROOT and _sizes(b) == {"train": 12, "dev": 12, "test": 12}
  _check_avmnist_split(b, "train", AV_ROOT, 12, (0, 18000))
  _check_avmnist_split(b, "dev", AV_ROOT, 12, (18000, 20000))
  _check_avmnist_split(b, "test", AV_ROOT, 12, (0, 10000))


@needs_avmnist
@pytest.mark.slow
def test_avmnist_real_full_sizes_and_classes(tmp_path):
  b = builders.prepare("avmnist", data_dir=tmp_path)             # ~17 s on 2 cores
  assert _sizes(b) == {"train": 18000, "dev": 2000, "test": 10000}     # README: 20k subset (9:1) and t10k
  src = b.as_data_source("test")
  labels = collections.Counter(int(src[i]["label"]) for i in range(len(src)))
  assert [labels[d] for d in range(10)] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]   # README
  ids = {s: {_text(b.as_data_source(s)[i]["audio_id"]) for i in range(0, len(b.as_data_source(s)), 3)}
         for s in ("train", "dev")}
  assert not ids["train"] & ids["dev"]


def test_pairing_is_deterministic_balanced_and_label_consistent():
  labels = np.random.default_rng(0).integers(0, 10, 500)
  pools = {d: [f"recordings/{d}_s{j}_{k}.wav" for j in range(2) for k in range(3)] for d in range(10)}
  a = avmnist.pair_recordings(labels, pools, seed=0)
  assert a == avmnist.pair_recordings(labels, pools, seed=0) and a != avmnist.pair_recordings(labels, pools, seed=1)
  for d in range(10):
    used = collections.Counter(a[i] for i in np.flatnonzero(labels == d))
    assert set(used) <= set(pools[d])
    counts = [used[p] for p in pools[d]]
    assert max(counts) - min(counts) <= 1                       # every recording reused about equally often


def test_read_wav_rejects_bad_formats():
  pcm = (np.sin(np.arange(800) / 5) * 1000).astype("<i2")
  np.testing.assert_array_equal(avmnist.read_wav(_wav_bytes(pcm), "x.zip:a.wav"), pcm)
  with pytest.raises(MmjaxError, match=r"x.zip:a.wav: WAV is 1 channel\(s\), 16-bit, 16000 Hz"):
    avmnist.read_wav(_wav_bytes(pcm, rate=16000), "x.zip:a.wav")
  with pytest.raises(MmjaxError, match=r"WAV is 2 channel"):
    avmnist.read_wav(_wav_bytes(np.repeat(pcm, 2), channels=2), "x.zip:a.wav")
  with pytest.raises(MmjaxError, match=r"x.zip:a.wav: not a RIFF/WAVE file"):
    avmnist.read_wav(b"ID3" + bytes(100), "x.zip:a.wav")
  with pytest.raises(MmjaxError, match=r"truncated WAV: header says 800 samples, data holds 300"):
    avmnist.read_wav(_wav_bytes(pcm)[:44 + 600], "x.zip:a.wav")


@needs_avmnist
def test_avmnist_truncated_wav_names_member_and_skip_bad(tmp_path):
  # a small real raw root: the real MNIST files + one speaker's recordings with index 0 (test), 5 (dev), 10 (train)
  root = tmp_path / "raw"
  shutil.copytree(AV_ROOT / "mnist", root / "mnist")
  (root / "fsdd").mkdir()
  y0 = int(np.load(root / "mnist/y_train.npz")["arr_0"][0])
  victim = f"recordings/{y0}_jackson_10.wav"               # the only train recording of the first image's digit
  with zipfile.ZipFile(AV_ROOT / "fsdd/recordings.zip") as zf:
    good = zf.read(victim)
  _rewrite_zip(AV_ROOT / "fsdd/recordings.zip", root / "fsdd/recordings.zip",
               keep=lambda n: n.endswith(("_jackson_0.wav", "_jackson_5.wav", "_jackson_10.wav")),
               replace={victim: good[:len(good) // 2]})
  with pytest.raises(MmjaxError, match=rf"recordings.zip:{victim}: truncated WAV"):
    builders.prepare("avmnist", manual_dir=root, data_dir=tmp_path / "a", limit=20)
  assert _no_complete_dataset(tmp_path / "a", "avmnist")
  b = builders.prepare("avmnist", manual_dir=root, data_dir=tmp_path / "b", limit=20, skip_bad=True)
  n_bad = int((np.load(root / "mnist/y_train.npz")["arr_0"][:20] == y0).sum())
  assert len(b.skipped) == n_bad and all(victim in s for s in b.skipped)
  assert _sizes(b) == {"train": 20 - n_bad, "dev": 20, "test": 20}


def test_avmnist_fake_raw_builds_and_bad_idx(tmp_path):
  root = avmnist.AvMnist.make_fake_raw(tmp_path / "raw", n=30)
  b = builders.prepare("avmnist", manual_dir=root, data_dir=tmp_path / "tfds")
  assert _sizes(b) == {"train": 27, "dev": 3, "test": 30}
  _check_avmnist_split(b, "dev", root, 3, (27, 30))
  _check_avmnist_split(b, "test", root, 30, (0, 30))
  # a truncated IDX file names the file
  data = gzip.open(root / avmnist.T10K_IMAGES).read()
  with gzip.open(root / avmnist.T10K_IMAGES, "wb") as f:
    f.write(data[:-100])
  with pytest.raises(MmjaxError, match=r"t10k-images-idx3-ubyte.gz: IDX header says \[30, 28, 28\]"):
    builders.prepare("avmnist", manual_dir=root, data_dir=tmp_path / "tfds2")
  assert _no_complete_dataset(tmp_path / "tfds2", "avmnist")


def test_avmnist_missing_fsdd_names_the_file(tmp_path):
  root = avmnist.AvMnist.make_fake_raw(tmp_path / "raw", n=10)
  (root / "fsdd/recordings.zip").unlink()
  with pytest.raises(MmjaxError, match=r"fsdd/recordings.zip is missing from the manual dir"):
    builders.prepare("avmnist", manual_dir=root, data_dir=tmp_path / "tfds")


def test_avmnist_preprocess_shapes_noise_and_pca():
  rng = np.random.default_rng(0)
  wave16 = (np.sin(np.arange(5000) * 0.3) * 8000).astype(np.int16)
  ex = {"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), "audio": wave16, "label": 7}
  out = avmnist.avmnist_preprocess(ex)
  chex.assert_shape(out["image"], (28, 28, 1))
  chex.assert_shape(out["audio"], (101, 40))                        # 1 + 8000 // 80 frames of 40 mels
  assert out["image"].dtype == np.float32 and out["audio"].dtype == np.float32
  np.testing.assert_allclose(out["image"], ex["image"] / 255.0, rtol=1e-6)
  assert int(out["audio_frames"]) == 1 + 5000 // 80 and int(out["label"]) == 7
  # silence after the recording: the padded frames sit at the top_db floor, the recorded ones well above it
  floor = out["audio"].min()
  assert np.all(out["audio"][70:] == floor) and out["audio"][10:50].max(axis=1).min() > floor + 5
  # image_pca in the pipeline: a projection on pixel (0, 0) alone keeps that pixel and zeroes the rest
  first_pixel = avmnist.ImagePca(np.zeros(784, np.float32), np.eye(784, 1, dtype=np.float32), 1.0)
  kept = avmnist.avmnist_preprocess(ex, image_pca=first_pixel)["image"]
  assert kept[0, 0, 0] == np.float32(ex["image"][0, 0, 0] / 255.0) and not kept.ravel()[1:].any()
  with pytest.raises(MmjaxError, match="need rng"):
    avmnist.avmnist_preprocess(ex, audio_snr_db=10.0)
  # white noise at the requested SNR (measured over a long wave)
  clean = np.sin(np.arange(200_000) * 0.05).astype(np.float32) * 0.3
  noisy = avmnist.add_white_noise(clean, 6.0, np.random.default_rng(1))
  snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
  assert abs(snr - 6.0) < 0.05
  # PCA energy filter: the leading eigenvectors of the covariance holding >= keep_energy of the variance
  patterns = rng.uniform(0, 1, (3, 144))                                   # 12x12 images: a small eigenproblem
  patterns -= patterns.mean(axis=1, keepdims=True)
  coeffs = rng.normal(0, 1, (300, 3)) * np.array([3.0, 2.0, 1.0])           # variances ~ 9 : 4 : 1 (+ noise)
  images = np.clip(np.round(120 + 12 * coeffs @ patterns + rng.normal(0, 2, (300, 144))), 0, 255).astype(np.uint8)
  images = images.reshape(300, 12, 12)
  pca = avmnist.fit_image_pca(images, keep_energy=0.8)
  x = images.reshape(300, -1) / 255.0
  evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
  evals, evecs = evals[::-1], evecs[:, ::-1]
  share = np.cumsum(evals) / evals.sum()
  assert 0.5 < share[0] < 0.8 <= share[1]                             # so the fewest components reaching 0.8 are 2
  assert pca.components.shape == (144, 2) and abs(pca.kept_energy - share[1]) < 1e-6
  np.testing.assert_allclose(pca.components @ pca.components.T, evecs[:, :2] @ evecs[:, :2].T, atol=1e-5)
  filtered = pca.apply(images[:5, :, :, None])
  chex.assert_shape(filtered, (5, 12, 12, 1))
  expect = x.mean(0) + (x[:5] - x.mean(0)) @ evecs[:, :2] @ evecs[:, :2].T
  np.testing.assert_allclose(filtered.reshape(5, -1), expect, atol=1e-4)
  assert np.abs(filtered.reshape(5, -1) - x[:5]).max() > 0.01                # it did remove something


# ------------------------------------------------------------------------------------------- MOSI
def _csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


@needs_mosi
def test_mosi_real_full_matches_csv_files(tmp_path):
  b = builders.prepare("mosi", data_dir=tmp_path)                      # ~1 s
  assert b.raw_dir == MOSI_RAW and _sizes(b) == {"train": 1447, "test": 752}       # README
  transcripts = _csv(MOSI_RAW / "transcripts.csv")
  videos = {}
  for split, dims in (("train", (738, 709)), ("test", (285, 467))):
    index = _csv(MOSI_RAW / f"text_{split}.csv")
    feats = {m: _csv(MOSI_RAW / f"{m}/{m}_{split}0.csv") for m in ("text", "audio", "video")}
    assert len(index) == _sizes(b)[split]
    expected = {transcripts[int(r[0])][0]: i for i, r in enumerate(index)}
    src = b.as_data_source(split)
    labels = collections.Counter()
    for j in range(len(src)):
      ex = src[j]
      utt = _text(ex["utterance_id"])
      i = expected.pop(utt)
      t = transcripts[int(index[i][0])]
      assert int(ex["label"]) == int(t[3]) == int(feats["audio"][i][-1])
      assert _text(ex["transcript"]) == t[1] and _text(ex["video_id"]) == utt.rsplit("_", 1)[0]
      assert int(ex["utterance_number"]) == int(utt.rsplit("_", 1)[1])
      for m, d in (("text", 100), ("audio", 73), ("video", 100)):
        assert ex[m].dtype == np.float32 and ex[m].shape == (d,)
        np.testing.assert_allclose(ex[m], np.array(feats[m][i][:-1], np.float32))
      labels[int(ex["label"])] += 1
    assert not expected and (labels[0], labels[1]) == dims                           # README per-class counts
    videos[split] = {_text(src[j]["video_id"]) for j in range(len(src))}
  assert (len(videos["train"]), len(videos["test"])) == (62, 31) and not videos["train"] & videos["test"]


def _mosi_copy(tmp_path) -> pathlib.Path:
  raw = tmp_path / "raw"
  shutil.copytree(MOSI_RAW, raw, ignore=shutil.ignore_patterns("README.md"))
  raw.chmod(0o755)
  for p in raw.rglob("*"):
    p.chmod(0o755 if p.is_dir() else 0o644)
  return raw


@needs_mosi
def test_mosi_malformed_row_names_file_and_line_and_skip_bad(tmp_path):
  raw = _mosi_copy(tmp_path)
  path = raw / "audio/audio_train0.csv"
  lines = path.read_text().splitlines()
  lines[4] = lines[4].replace('"', "").replace(",", ";", 3)           # line 5: 71 fields, unquoted
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(MmjaxError, match=r"audio/audio_train0.csv:5: malformed row: 71 fields"):
    builders.prepare("mosi", manual_dir=raw, data_dir=tmp_path / "a", limit=10)
  assert _no_complete_dataset(tmp_path / "a", "mosi")
  b = builders.prepare("mosi", manual_dir=raw, data_dir=tmp_path / "b", limit=10, skip_bad=True)
  assert _sizes(b) == {"train": 9, "test": 10}
  assert len(b.skipped) == 1 and "audio_train0.csv:5" in b.skipped[0]
  bad_utt = _csv(raw / "transcripts.csv")[int(_csv(raw / "text_train.csv")[4][0])][0]
  src = b.as_data_source("train")
  assert bad_utt not in {_text(src[j]["utterance_id"]) for j in range(len(src))}


@needs_mosi
def test_mosi_label_disagreement_and_row_count(tmp_path):
  raw = _mosi_copy(tmp_path)
  path = raw / "video/video_test0.csv"
  rows = _csv(path)
  rows[2][-1] = str(1 - int(rows[2][-1]))                               # line 3: label flipped
  with open(path, "w", newline="") as f:
    csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
  with pytest.raises(MmjaxError, match=r"video/video_test0.csv:3: label \d disagrees with label \d at .*text_test0.csv:3"):
    builders.prepare("mosi", manual_dir=raw, data_dir=tmp_path / "a", limit=5)
  assert _no_complete_dataset(tmp_path / "a", "mosi")
  with open(path, "a", newline="") as f:                                   # one row too many: not skippable
    csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(rows[0])
  with pytest.raises(MmjaxError, match=r"video_test0.csv: 753 rows, but text_test.csv has 752"):
    builders.prepare("mosi", manual_dir=raw, data_dir=tmp_path / "b", skip_bad=True)
  assert _no_complete_dataset(tmp_path / "b", "mosi")


def test_mosi_fake_raw_builds(tmp_path):
  raw = mosi.Mosi.make_fake_raw(tmp_path / "raw", n=24)
  b = builders.prepare("mosi", manual_dir=raw, data_dir=tmp_path / "tfds")
  sizes = _sizes(b)
  assert sizes["train"] + sizes["test"] == 24 and min(sizes.values()) > 0
  transcripts = {r[0]: r for r in _csv(raw / "transcripts.csv")}
  for split in ("train", "test"):
    src = b.as_data_source(split)
    for j in range(len(src)):
      ex = src[j]
      assert int(ex["label"]) == int(transcripts[_text(ex["utterance_id"])][3])
      chex.assert_shape([ex["text"], ex["audio"], ex["video"]], [(100,), (73,), (100,)])


# ------------------------------------------------------------------------------------------- CIFAR-10 test
@needs_cifar
def test_cifar10_real_full_matches_zip(tmp_path):
  b = builders.prepare("cifar10_test", data_dir=tmp_path)                # ~2 s
  assert _sizes(b) == {"test": 10000}                                    # README
  src = b.as_data_source("test")
  names = b.info.features["label"].names
  assert names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
  with zipfile.ZipFile(CIFAR_RAW / "test.zip") as zf:
    for i in range(0, 10000, 97):
      ex = src[i]
      member = _text(ex["image_id"])
      assert member.split("/")[1] == names[int(ex["label"])]
      chex.assert_shape(ex["image"], (32, 32, 3))
      assert ex["image"].dtype == np.uint8
      np.testing.assert_array_equal(ex["image"], np.asarray(Image.open(io.BytesIO(zf.read(member))).convert("RGB")))
  import tensorflow_datasets as tfds
  ids = b.as_data_source("test", decoders={"image": tfds.decode.SkipDecoding()})
  per_class = collections.Counter(_text(ids[i]["image_id"]).split("/")[1] for i in range(len(ids)))
  assert set(per_class.values()) == {1000} and len(per_class) == 10               # README: 1000 per class


@needs_cifar
def test_cifar10_corrupt_jpeg_and_unknown_class(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  keep = lambda n: n.endswith("/") or n.rsplit("/", 1)[1] in ("0000.jpg", "0001.jpg", "0002.jpg")
  with zipfile.ZipFile(CIFAR_RAW / "test.zip") as zf:
    good = zf.read("test/cat/0001.jpg")
  _rewrite_zip(CIFAR_RAW / "test.zip", raw / "test.zip", keep=keep, replace={"test/cat/0001.jpg": good[:len(good) // 2]})
  with pytest.raises(MmjaxError, match=r"test.zip:test/cat/0001.jpg: corrupt or unreadable JPEG"):
    builders.prepare("cifar10_test", manual_dir=raw, data_dir=tmp_path / "a")
  assert _no_complete_dataset(tmp_path / "a", "cifar10_test")
  b = builders.prepare("cifar10_test", manual_dir=raw, data_dir=tmp_path / "b", skip_bad=True)
  assert _sizes(b) == {"test": 29} and len(b.skipped) == 1 and "test/cat/0001.jpg" in b.skipped[0]
  _rewrite_zip(CIFAR_RAW / "test.zip", raw / "test.zip", keep=keep)
  with zipfile.ZipFile(raw / "test.zip", "a") as zf:
    zf.writestr("test/cats/0000.jpg", good)
  with pytest.raises(MmjaxError, match=r"test.zip:test/cats/0000.jpg: unknown class folder 'cats'"):
    builders.prepare("cifar10_test", manual_dir=raw, data_dir=tmp_path / "c")
  assert _no_complete_dataset(tmp_path / "c", "cifar10_test")


def test_cifar10_fake_raw_builds(tmp_path):
  raw = cifar10_test.Cifar10Test.make_fake_raw(tmp_path / "raw", n=23)
  b = builders.prepare("cifar10_test", manual_dir=raw, data_dir=tmp_path / "tfds", limit=None)
  assert _sizes(b) == {"test": 23}
  src = b.as_data_source("test")
  with zipfile.ZipFile(raw / "test.zip") as zf:
    for i in range(len(src)):
      member = _text(src[i]["image_id"])
      assert member.split("/")[1] == cifar10_test.CLASSES[int(src[i]["label"])]
      np.testing.assert_array_equal(src[i]["image"], np.asarray(Image.open(io.BytesIO(zf.read(member)))))


# ------------------------------------------------------------------------------------------- CIFAR-100
def _cifar100_reference(path) -> dict:
  """The release read as its web page says: pickle.load(f, encoding="bytes") of each member."""
  import pickle
  import tarfile
  with tarfile.open(path, "r:gz") as tf:
    return {m: pickle.load(tf.extractfile(f"cifar-100-python/{m}"), encoding="bytes")
            for m in ("train", "test", "meta")}


def _check_cifar100(b, ref, step: int = 1) -> None:
  assert b.info.features["label"].names == list(cifar100.FINE_CLASSES)
  assert [n.decode() for n in ref["meta"][b"fine_label_names"]] == list(cifar100.FINE_CLASSES)
  for split in ("train", "test"):
    src, raw = b.as_data_source(split), ref[split]
    assert len(src) == len(raw[b"fine_labels"])
    for i in range(0, len(src), step):
      ex = src[i]
      k = int(_text(ex["image_id"]).split("/")[1])                  # the release's position
      assert _text(ex["image_id"]).split("/")[0] == split
      want = np.asarray(raw[b"data"][k]).reshape(3, 32, 32).transpose(1, 2, 0)
      np.testing.assert_array_equal(ex["image"], want)              # lossless: the release's pixels exactly
      assert (int(ex["label"]), int(ex["coarse_label"])) == (raw[b"fine_labels"][k], raw[b"coarse_labels"][k])
      assert _text(ex["file_name"]) == raw[b"filenames"][k].decode()


def test_cifar100_fake_raw_matches_an_independent_read(tmp_path):
  raw = cifar100.Cifar100.make_fake_raw(tmp_path / "raw", n=23, n_train=11)
  b = builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "tfds")
  assert _sizes(b) == {"train": 11, "test": 23}
  _check_cifar100(b, _cifar100_reference(raw / cifar100.TAR))
  prompts = pathlib.Path(cifar100.__file__).parents[2] / "evals" / "prompts" / "cifar100_classnames.txt"
  names = prompts.read_text().splitlines()
  assert names == [c.replace("_", " ") for c in cifar100.FINE_CLASSES]     # CLIP's names (openai/CLIP prompts.md)
  assert list(cifar100.FINE_CLASSES) == sorted(cifar100.FINE_CLASSES) and "aquarium fish" in names


def test_cifar100_bad_input_names_the_file_and_example(tmp_path):
  raw = cifar100.Cifar100.make_fake_raw(tmp_path / "raw", n=12, n_train=4)
  ref = _cifar100_reference(raw / cifar100.TAR)
  members = {f"cifar-100-python/{m}": ref[m] for m in ("train", "test", "meta")}
  members["cifar-100-python/test"][b"fine_labels"][3] = 150
  cifar100.write_release(raw / cifar100.TAR, members)
  with pytest.raises(MmjaxError, match=r"cifar-100-python.tar.gz:cifar-100-python/test: example 3: label 150 / "
                                       r"coarse label \d+ out of range"):
    builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "a")
  assert _no_complete_dataset(tmp_path / "a", "cifar100")
  b = builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "b", skip_bad=True)
  assert _sizes(b) == {"train": 4, "test": 11} and len(b.skipped) == 1 and "example 3" in b.skipped[0]
  # a pickle that would run code is refused, not run
  marker = tmp_path / "ran"
  evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
  cifar100.write_release(raw / cifar100.TAR, dict(members, **{cifar100.META: evil}))
  with pytest.raises(MmjaxError, match=r"cifar-100-python/meta: not a CIFAR-100 python pickle .*refusing to load"):
    builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "c")
  assert not marker.exists()
  # other names in meta, a truncated download
  meta = {**ref["meta"], b"fine_label_names": [b"x"] * 100}
  cifar100.write_release(raw / cifar100.TAR, dict(members, **{cifar100.META: meta}))
  with pytest.raises(MmjaxError, match=r"fine_label_names .* are not CIFAR-100's 100 classes"):
    builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "d")
  cifar100.write_release(raw / cifar100.TAR, members)
  data = (raw / cifar100.TAR).read_bytes()
  (raw / cifar100.TAR).write_bytes(data[:len(data) // 2])
  with pytest.raises(MmjaxError, match=r"cifar-100-python.tar.gz: unreadable or truncated gzip tar"):
    builders.prepare("cifar100", manual_dir=raw, data_dir=tmp_path / "e")
  assert all(_no_complete_dataset(tmp_path / d, "cifar100") for d in "acde")


@needs_cifar100
def test_cifar100_real_matches_the_release(tmp_path):
  b = builders.prepare("cifar100", data_dir=tmp_path)
  assert _sizes(b) == cifar100.SPLIT_SIZES                                   # the web page: 50,000 / 10,000
  ref = _cifar100_reference(CIFAR100_RAW / cifar100.TAR)
  _check_cifar100(b, ref, step=97)
  assert set(collections.Counter(ref["test"][b"fine_labels"]).values()) == {100}   # 100 test images per class


# ------------------------------------------------------------------------------------------- common
@pytest.mark.parametrize("name", ["avmnist", "mosi", "cifar10_test", "cifar100"])
def test_missing_manual_dir(tmp_path, name):
  with pytest.raises(MmjaxError, match=rf"{name}: manual dir .*nowhere does not exist; pass --manual_dir"):
    builders.prepare(name, manual_dir=tmp_path / "nowhere", data_dir=tmp_path / "tfds")
  assert _no_complete_dataset(tmp_path / "tfds", name)


def test_env_var_sets_the_avmnist_root(tmp_path, monkeypatch):
  monkeypatch.setenv(builders.RAW_ENV, str(tmp_path / "rawroot"))
  assert builders.get_builder("avmnist", data_dir=tmp_path).raw_dir == tmp_path / "rawroot"
  assert builders.get_builder("mosi", data_dir=tmp_path).raw_dir == tmp_path / "rawroot" / "mosi"


def test_prepare_all_skips_data_sets_without_raw_files(tmp_path):
  import os
  import subprocess
  import sys
  cifar100.Cifar100.make_fake_raw(tmp_path / "raw" / "cifar100", n=5, n_train=3)
  env = dict(os.environ, MMJAX_RAW_DATA=str(tmp_path / "raw"), PYTHONPATH=str(pathlib.Path(__file__).parents[1]))
  proc = subprocess.run([sys.executable, "-m", "mmjax.data.prepare", "all", f"--data_dir={tmp_path}/tfds"], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "cifar100: prepared in" in proc.stdout and "(train 3, test 5)" in proc.stdout
  for name in ("avmnist", "cifar10_test", "flickr8k", "mosi"):
    assert f"{name}: skipped, no {tmp_path}/raw/" in proc.stdout
