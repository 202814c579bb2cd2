"""ImageNet-1k validation sources (mmjax/data/imagenet.py) on small files written here in the real layouts: the
official ILSVRC2012_img_val.tar read in place, its extracted files, val/<wnid>/ folders, Kaggle's
LOC_val_solution.csv, a TFDS imagenet2012 prepared as array_record; labels checked against TFDS's own label files
read here, images against PIL; and zero-shot on it (evals/zero_shot_suite.py) against a NumPy reference."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmjax.data import imagenet
from mmjax.errors import MmjaxError

N = 12


def _tfds_lines(name: str) -> list[str]:
  import tensorflow_datasets as tfds
  with open(tfds.core.tfds_path(f"datasets/imagenet2012/{name}")) as f:
    return f.read().split()


def _jpeg(i: int) -> bytes:
  """Image i: random RGB of varied size; 4 is greyscale and 7 CMYK (both occur in ImageNet's JPEGs)."""
  rng = np.random.default_rng(i)
  a = rng.integers(0, 255, (20 + i, 30 - i, 3), dtype=np.uint8)
  im = Image.fromarray(a)
  im = im.convert("L") if i == 4 else im.convert("CMYK") if i == 7 else im
  buf = io.BytesIO()
  im.save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def _name(k: int) -> str:
  return f"ILSVRC2012_val_{k:08d}.JPEG"


def write_val_tar(path, numbers, extra: dict | None = None) -> None:
  """An uncompressed tar of flat ILSVRC2012_val_*.JPEG members, as the official download."""
  with tarfile.open(path, "w") as tf:
    for k in numbers:
      data = _jpeg(k)
      info = tarfile.TarInfo(_name(k))
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
    for name, data in (extra or {}).items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))


def _pil(k: int) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(_jpeg(k))).convert("RGB"))


NUMBERS = [3, 1, 2] + list(range(4, N + 1))          # written out of order; read in image-number order


@pytest.fixture(scope="module")
def val_tar(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  write_val_tar(root / imagenet.VAL_TAR, NUMBERS, extra={"README.txt": b"not an image"})
  return root


def test_the_val_tar_is_read_in_place_with_tfds_labels(val_tar):
  src = imagenet.ImageNetVal(str(val_tar))
  wnids, val_labels = _tfds_lines("labels.txt"), _tfds_lines("validation_labels.txt")
  assert len(wnids) == 1000 and wnids == sorted(wnids) and len(val_labels) == imagenet.NUM_VAL
  assert src.layout == "tar" and len(src) == N
  want = [wnids.index(val_labels[k - 1]) for k in range(1, N + 1)]
  assert src.labels.tolist() == want
  for i in range(N):
    ex = src[i]
    assert ex["image_id"] == _name(i + 1) and int(ex["label"]) == want[i]
    np.testing.assert_array_equal(ex["image"], _pil(i + 1))
  assert src[3]["image"].shape == (24, 26, 3)                                 # greyscale -> RGB
  from mmjax.evals import benchmark
  assert src.classnames == benchmark.imagenet_classnames() and src.classnames[0] == "tench"


def test_extracted_files_folders_and_kaggle_labels_give_the_same_examples(val_tar, tmp_path):
  ref = imagenet.ImageNetVal(str(val_tar))
  flat = tmp_path / "flat" / "val"
  flat.mkdir(parents=True)
  with tarfile.open(val_tar / imagenet.VAL_TAR) as tf:
    tf.extractall(flat, filter="data")
  src = imagenet.ImageNetVal(str(tmp_path / "flat"))
  assert src.layout == "files" and src.labels.tolist() == ref.labels.tolist()
  np.testing.assert_array_equal(src[7]["image"], ref[7]["image"])
  wnids = _tfds_lines("labels.txt")
  folders = tmp_path / "folders"
  for i in range(N):
    d = folders / "val" / wnids[int(ref.labels[i])]
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(flat / _name(i + 1), d / _name(i + 1))
  src = imagenet.ImageNetVal(str(folders))
  assert src.layout == "folders"
  assert sorted(zip(src.labels.tolist(), (src[i]["image_id"] for i in range(N)))) == sorted(
      zip(ref.labels.tolist(), (_name(i + 1) for i in range(N))))
  # LOC_val_solution.csv (Kaggle) in the root wins over TFDS's list
  rows = [f"ILSVRC2012_val_{k:08d},{wnids[(5 * k) % 1000]} 1 2 3 4 {wnids[0]} 5 6 7 8" for k in range(1, N + 1)]
  (val_tar / imagenet.LOC_CSV).write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
  try:
    assert imagenet.ImageNetVal(str(val_tar)).labels.tolist() == [(5 * k) % 1000 for k in range(1, N + 1)]
  finally:
    os.remove(val_tar / imagenet.LOC_CSV)


def test_bad_files_are_named(tmp_path):
  write_val_tar(tmp_path / imagenet.VAL_TAR, range(1, 5))
  data = (tmp_path / imagenet.VAL_TAR).read_bytes()
  with tarfile.open(tmp_path / imagenet.VAL_TAR) as tf:
    last = tf.getmembers()[-1]
  (tmp_path / imagenet.VAL_TAR).write_bytes(data[:last.offset_data + 10])
  with pytest.raises(MmjaxError, match=r"ILSVRC2012_img_val.tar: (truncated|not a readable).*download"):
    imagenet.ImageNetVal(str(tmp_path))
  with tarfile.open(tmp_path / imagenet.VAL_TAR, "w") as tf:
    for k, payload in ((1, _jpeg(1)), (2, _jpeg(2)[:200])):
      info = tarfile.TarInfo(_name(k))
      info.size = len(payload)
      tf.addfile(info, io.BytesIO(payload))
  src = imagenet.ImageNetVal(str(tmp_path))
  with pytest.raises(MmjaxError, match=r"ILSVRC2012_img_val.tar:ILSVRC2012_val_00000002.JPEG: corrupt or unreadable "
                                       r"image .*never skipped") as e:
    src[1]
  assert "\n" not in str(e.value)
  os.makedirs(tmp_path / "w" / "val" / "n99999999")
  with pytest.raises(MmjaxError, match="n99999999.*not one of the 1000"):
    imagenet.ImageNetVal(str(tmp_path / "w"))
  with pytest.raises(MmjaxError, match="does not exist"):
    imagenet.ImageNetVal(str(tmp_path / "nowhere"))


def _prepare_like_tfds(data_dir, file_format: str = "array_record"):
  """An imagenet2012 TFDS data set prepared (without TensorFlow) with the features of TFDS's own builder: image
  (JPEG), label (ClassLabel over labels.txt), file_name; version 5.1.0."""
  import tensorflow_datasets as tfds
  from mmjax.data.builders import MmjaxBuilder
  wnids, val_labels = _tfds_lines("labels.txt"), _tfds_lines("validation_labels.txt")

  class Imagenet2012(MmjaxBuilder, skip_registration=True):
    name = "imagenet2012"
    VERSION = tfds.core.Version("5.1.0")

    def _features(self):
      return tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                         "label": tfds.features.ClassLabel(names=wnids),
                                         "file_name": tfds.features.Text()})

    def _split_generators(self, dl_manager):
      return {"validation": self._generate_examples()}

    def _generate_examples(self):
      for k in range(1, 7):
        yield _name(k), {"image": _jpeg(k), "label": val_labels[k - 1], "file_name": _name(k)}

  b = Imagenet2012(data_dir=str(data_dir), manual_dir=str(data_dir))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir)))
  return os.path.join(data_dir, "imagenet2012", "5.1.0")


def test_a_tfds_imagenet2012_prepared_as_array_record_is_read(val_tar, tmp_path, monkeypatch):
  version_dir = _prepare_like_tfds(tmp_path / "tfds")
  ref = imagenet.ImageNetVal(str(val_tar))
  for src in (imagenet.open_val("imagenet2012", str(tmp_path / "tfds")),
              imagenet.open_val(f"imagenet2012:{version_dir}")):
    assert isinstance(src, imagenet.PreparedImageNet) and len(src) == 6
    for i in range(6):
      ex = src[i]
      k = int(ex["image_id"][len("ILSVRC2012_val_"):-len(".JPEG")])
      assert int(ex["label"]) == int(ref.labels[k - 1])
      np.testing.assert_array_equal(ex["image"], _pil(k))
  # not prepared there: the raw files of the default root ($MMJAX_RAW_DATA/imagenet2012)
  monkeypatch.setenv("MMJAX_RAW_DATA", str(val_tar.parent))
  os.rename(val_tar, val_tar.parent / "imagenet2012")
  try:
    assert isinstance(imagenet.open_val("imagenet2012", str(tmp_path / "empty")), imagenet.ImageNetVal)
  finally:
    os.rename(val_tar.parent / "imagenet2012", val_tar)
  # TFDS's default tfrecord format needs TensorFlow: a clear message
  info = os.path.join(version_dir, "dataset_info.json")
  with open(info) as f:
    doc = json.load(f)
  doc["fileFormat"] = "tfrecord"
  with open(info, "w") as f:
    json.dump(doc, f)
  with pytest.raises(MmjaxError, match=r"prepared as tfrecord.*--file_format=array_record"):
    imagenet.open_val(f"imagenet2012:{version_dir}")


def test_zero_shot_suite_on_the_val_tar_matches_the_reference(val_tar, tmp_path):
  from test_eval_suite import D, PARAMS, ctx_for, ref_image_features, ref_text_features
  from mmjax.evals import benchmark, zero_shot_suite
  (tmp_path / "t.txt").write_text("a photo of a {}.\nitap of the {}.\n")
  ctx = ctx_for(tmp_path, zs_datasets=f"imagenet2012:{val_tar}", zs_templates=str(tmp_path / "t.txt"),
                zs_classnames="", zs_limit=0, batch_size=256)
  got = zero_shot_suite.zero_shot_suite(PARAMS, ctx)
  labels = imagenet.ImageNetVal(str(val_tar)).labels
  names = benchmark.imagenet_classnames()
  emb = ref_text_features([t.format(c) for c in names for t in ("a photo of a {}.", "itap of the {}.")])
  cls = emb.reshape(1000, 2, D).mean(1)
  cls /= np.linalg.norm(cls, axis=1, keepdims=True)
  order = np.argsort(-(ref_image_features([_pil(k) for k in range(1, N + 1)]) @ cls.T), axis=1)
  want = {"acc1": np.mean(order[:, 0] == labels), "acc5": np.mean([labels[i] in order[i, :5] for i in range(N)]),
          "mean_per_class_recall": np.mean([np.mean(order[labels == c, 0] == c) for c in np.unique(labels)])}
  assert {k: got[f"zero_shot_suite/imagenet2012/{k}"] for k in want} == pytest.approx(want, abs=1e-6)
  assert zero_shot_suite._Classification(ctx, "imagenet2012:" + str(val_tar)).default_templates == "imagenet"
