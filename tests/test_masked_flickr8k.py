"""MAE on Flickr8k with the CIFAR-10 linear probe (experiments/mae_flickr8k.py, evals/linear_probe.py `probe_data`):
a runlocal run through the loop on fake raw Flickr8k + CIFAR-10 files, and the probe's split rule, resizing and
labels against a re-implementation from the raw zip (zipfile + PIL), independent of TFDS and of the evaluator."""
from __future__ import annotations

import io
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, read_jsonl
from mmjax import config as config_lib
from mmjax.data import builders
from mmjax.data.builders import cifar10_test, flickr8k
from mmjax.errors import MmjaxError
from mmjax.evals import linear_probe as lp
from mmjax.evals.base import EvalContext
from mmjax.train import loop

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_CIFAR = 35          # 4 images in classes 0-4, 3 in classes 5-9: odd class sizes
IMAGE_SIZE = 64       # the model's size; the CIFAR images are 32 px


def expected_split(zip_path):
  """The documented rule, from the zip's member names: within each class the files sorted by name, the first
  floor(n_c / 2) -> probe-train, the rest -> probe-test; each half listed by (position in the class's half,
  label). Returns two lists of (member name, label)."""
  with zipfile.ZipFile(zip_path) as zf:
    names = [n for n in zf.namelist() if n.endswith(".jpg")]
  train, test = [], []
  for label, c in enumerate(CIFAR_CLASSES):
    files = sorted(n for n in names if n.split("/")[1] == c)
    cut = len(files) // 2
    train += [(k, label, f) for k, f in enumerate(files[:cut])]
    test += [(k, label, f) for k, f in enumerate(files[cut:])]
  return [[(f, label) for _, label, f in sorted(half)] for half in (train, test)]


def reference_images(zip_path, names, size):
  """float32 [N, size, size, 3] in [-1, 1]: PIL decode of the raw JPEG, PIL bicubic resize, x / 127.5 - 1."""
  out = []
  with zipfile.ZipFile(zip_path) as zf:
    for n in names:
      img = Image.open(io.BytesIO(zf.read(n))).convert("RGB").resize((size, size), Image.BICUBIC)
      out.append(np.asarray(img, np.float32) / 127.5 - 1.0)
  return np.stack(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A runlocal mae_flickr8k run (2 steps, 64 px model) on fake raw files in a temporary manual/data dir."""
  tmp = tmp_path_factory.mktemp("masked_flickr8k")
  raw = tmp / "raw"
  flickr8k.Flickr8k.make_fake_raw(raw / "flickr8k", n=16)
  cifar10_test.Cifar10Test.make_fake_raw(raw / "cifar10_test", n=N_CIFAR)
  mp = pytest.MonkeyPatch()
  mp.setenv(builders.RAW_ENV, str(raw))          # where the probe data set's raw files are looked for
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "mae_flickr8k.py"), "runlocal")
  config.data.fake_raw = 0
  config.data.manual_dir, config.data.data_dir = str(raw / "flickr8k"), str(tmp / "tfds")
  config.data.image_size = config.model.vision.image_size = IMAGE_SIZE
  config.evals.num_examples = 4                  # the fake Flickr8k test split
  config.evals.names = "linear_probe,masked"     # (the reconstruction PNG: tests/test_experiments.py)
  workdir = tmp / "workdir"
  trainer = loop.Trainer(config, str(workdir))
  results = trainer.train()
  yield {"trainer": trainer, "results": results, "workdir": workdir, "zip": raw / "cifar10_test" / "test.zip"}
  mp.undo()


def test_run_trains_and_writes_the_probe_to_metrics(run):
  rows = read_jsonl(run["workdir"] / "metrics.jsonl")
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
  evals = [r for r in rows if "eval/linear_probe/label" in r]
  assert len(evals) == 1 and evals[0]["step"] == 2
  train, test = expected_split(run["zip"])
  assert (len(train), len(test)) == (15, 20)     # 5 x 2 + 5 x 1, 5 x 2 + 5 x 2
  assert evals[0]["eval/linear_probe/train_examples"] == 15 and evals[0]["eval/linear_probe/test_examples"] == 20
  assert "masked/loss" in run["results"]


def test_probe_split_resize_and_labels_follow_the_documented_rule(run):
  trainer = run["trainer"]
  ctx = EvalContext(config=trainer.config, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh,
                    cache={})
  got = lp.probe_arrays(ctx)
  for half, exp in zip(got, expected_split(run["zip"])):
    names, labels = [n for n, _ in exp], [lab for _, lab in exp]
    assert list(half["image_id"]) == names
    np.testing.assert_array_equal(half["label"], labels)
    assert half["image"].shape == (len(names), IMAGE_SIZE, IMAGE_SIZE, 3)
    images = np.asarray(lp.to_model_range(jnp.asarray(half["image"])))
    np.testing.assert_allclose(images, reference_images(run["zip"], names, IMAGE_SIZE), atol=1e-6)


def test_probe_accuracy_matches_a_probe_on_reference_features(run):
  """The evaluator's accuracy = the probe fitted on features of the reference images in the reference order."""
  trainer = run["trainer"]
  train, test = expected_split(run["zip"])
  encode = jax.jit(lambda p, x: trainer.model.apply({"params": p}, x, method="encode_image"))
  feats = lambda names: np.asarray(encode(trainer.state.params,
                                          jnp.asarray(reference_images(run["zip"], names, IMAGE_SIZE))))
  ftr, fte = feats([n for n, _ in train]), feats([n for n, _ in test])
  r = lp.linear_probe(ftr, np.array([lab for _, lab in train]), fte, np.array([lab for _, lab in test]))
  assert abs(100 * r["accuracy"] - run["results"]["linear_probe/label"]) <= 100 / len(test) + 1e-9


def test_class_halves_on_the_cifar10_layout():
  """1,000 files per class, listed in a scrambled order: files 0000-0499 -> probe-train, 0500-0999 -> probe-test;
  the first k of probe-train hold k / 10 images of every class."""
  rng = np.random.default_rng(0)
  ids = np.array([f"test/{c}/{k:04d}.jpg" for c in CIFAR_CLASSES for k in range(1000)])
  labels = np.repeat(np.arange(10), 1000)
  perm = rng.permutation(len(ids))
  ids, labels = ids[perm], labels[perm]
  train, test = lp.class_halves(ids, labels)
  number = np.array([int(re.search(r"(\d{4})\.jpg", s).group(1)) for s in ids])
  assert len(train) == len(test) == 5000
  assert set(train.tolist()) == set(np.flatnonzero(number < 500).tolist())
  assert set(test.tolist()) == set(np.flatnonzero(number >= 500).tolist())
  np.testing.assert_array_equal(number[train], np.repeat(np.arange(500), 10))
  np.testing.assert_array_equal(labels[train], np.tile(np.arange(10), 500))
  np.testing.assert_array_equal(number[test], np.repeat(np.arange(500, 1000), 10))
  assert np.all(np.bincount(labels[train[:1230]], minlength=10) >= 123)


REAL_CIFAR = builders.default_manual_dir("cifar10_test") / cifar10_test.ZIP


@pytest.mark.skipif(not REAL_CIFAR.exists(), reason=f"real CIFAR-10 test zip not found at {REAL_CIFAR}")
def test_class_halves_on_the_real_cifar10_names():
  with zipfile.ZipFile(REAL_CIFAR) as zf:
    names = [n for n in zf.namelist() if n.endswith(".jpg")]
  labels = [CIFAR_CLASSES.index(n.split("/")[1]) for n in names]
  train, test = lp.class_halves(names, labels)
  assert len(train) == len(test) == 5000
  assert all(int(names[i][-8:-4]) < 500 for i in train) and all(int(names[i][-8:-4]) >= 500 for i in test)
  assert np.bincount(np.asarray(labels)[test], minlength=10).tolist() == [500] * 10


def test_unknown_probe_data_is_a_one_line_error(run):
  trainer = run["trainer"]
  config = trainer.config.copy_and_resolve_references()
  config.evals.linear_probe.probe_data = "svhn"
  ctx = EvalContext(config=config, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh, cache={})
  with pytest.raises(MmjaxError, match="evals.linear_probe.probe_data='svhn'"):
    lp.probe_arrays(ctx)
  with pytest.raises(MmjaxError, match="repeated image_ids"):
    lp.class_halves(["a", "a"], [0, 0])
