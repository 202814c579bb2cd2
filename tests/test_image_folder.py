"""Image-folder classification source (mmjax/data/image_folder.py): listing vs os.walk, class names, batches, and the
zero-shot / linear-probe hooks ("image_folder:<root>")."""
from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data import image_folder, pipeline
from mmjax.errors import MmjaxError

CLASSES = ["cat", "dog", "sea_lion"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """root/test/<class>/*.jpg|png (4 per class; dog has one in a sub-folder and an upper-case extension) plus a
  README that is not an image."""
  root = tmp_path_factory.mktemp("folder")
  rng = np.random.default_rng(0)
  for c in CLASSES:
    for i in range(4):
      name = f"{c}/{i}.jpg" if i != 3 else (f"{c}/x.PNG" if c == "dog" else f"{c}/3.png")
      if c == "dog" and i == 0:
        name = "dog/sub/0.jpg"
      path = root / "test" / name
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (12 + i, 10, 3), dtype=np.uint8)).save(
          path, format="PNG" if name.lower().endswith("png") else "JPEG")
  (root / "test" / "cat" / "README.txt").write_text("not an image")
  return root


def test_listing_labels_and_classnames(folder, tmp_path):
  src = image_folder.ImageFolderSource(str(folder), "test")
  ref = sorted((os.path.relpath(os.path.join(d, f), folder / "test"), CLASSES.index(
      os.path.relpath(d, folder / "test").split(os.sep)[0]))
               for d, _, files in os.walk(folder / "test") for f in files if not f.endswith(".txt"))
  got = sorted((src[i]["image_id"], int(src[i]["label"])) for i in range(len(src)))
  assert got == ref and len(src) == 12
  assert src.classnames == ["cat", "dog", "sea lion"]
  ex = src[0]
  assert ex["image"].dtype == np.uint8 and ex["image"].shape[2] == 3 and ex["label"].dtype == np.int32
  # classnames.txt wins; a wrong number of lines is an error
  other = tmp_path / "r"
  for c in ("a", "b"):
    (other / c).mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(other / c / "0.jpg")
  (other / "classnames.txt").write_text("an apple\na banana\n")
  assert image_folder.ImageFolderSource(str(other), "test").classnames == ["an apple", "a banana"]
  (other / "classnames.txt").write_text("just one\n")
  with pytest.raises(MmjaxError, match="1 class names but .* has 2 class folders"):
    image_folder.ImageFolderSource(str(other), "test")
  with pytest.raises(MmjaxError, match="does not exist"):
    image_folder.ImageFolderSource(str(tmp_path / "nope"), "test")


def test_split_folder_or_root(tmp_path):
  for split in ("train", "val"):
    (tmp_path / split / "k").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / split / "k" / f"{split}.jpg")
  assert image_folder.ImageFolderSource(str(tmp_path), "train")[0]["image_id"] == os.path.join("k", "train.jpg")
  assert image_folder.ImageFolderSource(str(tmp_path), "val")[0]["image_id"] == os.path.join("k", "val.jpg")
  assert image_folder.ImageFolderSource(str(tmp_path), "test")[0]["image_id"] == os.path.join("k", "val.jpg")
  os.rename(tmp_path / "train", tmp_path / "other")
  with pytest.raises(MmjaxError, match=r"has split folders \['val'\] but no 'train' one"):
    image_folder.ImageFolderSource(str(tmp_path), "train")


def test_eval_arrays_and_training_batches(folder):
  c = ml_collections.ConfigDict(dict(name="image_folder", folder_root=str(folder / "test"), image_size=8, num_workers=0,
                                     prefetch=0, crop_scale=(0.5, 1.0), flip=True, context_length=4))
  arrays = pipeline.make_eval_arrays(c, None, 12, "test")
  assert arrays["image"].shape == (12, 8, 8, 3) and arrays["image"].dtype == np.float32
  np.testing.assert_array_equal(arrays["label"], [0] * 4 + [1] * 4 + [2] * 4)
  it = pipeline.make_train_iterator(c, None, global_batch_size=4, seed=0)
  batches = [next(it) for _ in range(3)]
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {"image": ((4, 8, 8, 3), np.float32),
                                                                    "label": ((4,), np.int32)}
  assert sorted(np.concatenate([b["label"] for b in batches]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_zero_shot_and_probe_hooks(folder):
  from mmjax.evals import clip_evals, linear_probe
  from mmjax.evals.runner import EvalContext
  config = ml_collections.ConfigDict(dict(data=dict(image_size=8, data_dir="", fake_raw=0),
                                          model=dict(vision=dict(image_size=8)),
                                          evals=dict(num_examples=12)))
  ctx = EvalContext(config=config, model=None, tokenizer=None, mesh=None, cache={}, workdir="")
  images, labels, names = clip_evals._zero_shot_data_arrays(ctx, f"image_folder:{folder}")
  assert images.shape == (12, 8, 8, 3) and -1 <= images.min() and images.max() <= 1
  assert names == ["cat", "dog", "sea lion"] and sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
  train, test = linear_probe.probe_data_arrays(ctx, f"image_folder:{folder}")
  assert len(train["label"]) == len(test["label"]) == 6
  assert not set(train["image_id"]) & set(test["image_id"])
  assert sorted(train["label"].tolist()) == sorted(test["label"].tolist()) == [0, 0, 1, 1, 2, 2]
