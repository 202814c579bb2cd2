"""Tests for the grain input pipelines (shuffle, process sharding, exact resume, eval arrays)."""
from __future__ import annotations

import json
import time

import chex
import numpy as np
import pytest

from mmjax.config import base_config
from mmjax.data import DatasetEntry, pipeline, shapes
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

# A finite dataset (20 examples) to exercise epochs: 2 global batches of 8 per epoch, 4 examples dropped.
DATASETS.register("tiny_shapes_test")(DatasetEntry(
    source=lambda cfg, split: shapes.ShapesSource(shapes.config_from_data(cfg), split, length=20),
    corpus=shapes.shapes_corpus))


def _data_cfg(**overrides):
  cfg = base_config().data
  cfg.update(dict(image_size=32, context_length=16, prefetch=2, **overrides))
  return cfg


@pytest.fixture(scope="module")
def tok():
  return pipeline.build_tokenizer(_data_cfg())


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_shapes_and_dtypes(tok):
  cfg = _data_cfg(max_shapes=2)
  batch = next(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0))
  assert set(batch) == {"image", "tokens", "shape", "colour", "size", "position", "count", "index"}
  chex.assert_shape(batch["image"], (8, 32, 32, 3))
  chex.assert_type(batch["image"], np.float32)
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  chex.assert_shape(batch["tokens"], (8, 16))
  chex.assert_type([batch["tokens"], batch["shape"], batch["count"]], np.int32)
  chex.assert_shape([batch["shape"], batch["colour"], batch["size"], batch["position"]], (8, 2))
  chex.assert_shape([batch["count"], batch["index"]], (8,))
  assert batch["index"].dtype == np.int64
  assert (batch["tokens"][:, 0] == tok.sot_id).all() and ((batch["tokens"] == tok.eot_id).sum(1) == 1).all()
  # Each row is the preprocessed example its `index` names.
  ex = shapes.render_example(int(batch["index"][3]), "train", shapes.config_from_data(cfg))
  np.testing.assert_allclose(batch["image"][3], ex["image"] / 127.5 - 1, atol=1e-6)
  np.testing.assert_array_equal(batch["tokens"][3], tok.encode([ex["caption"]], 16)[0])


def test_deterministic_and_seeded(tok):
  cfg = _data_cfg()
  a = _take(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=3), 2)
  b = _take(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=3), 2)
  _assert_batches_equal(a, b)
  c = next(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=4))
  assert not np.array_equal(a[0]["index"], c["index"])
  assert len(set(a[0]["index"].tolist()) | set(a[1]["index"].tolist())) == 16    # no repeats within an epoch


@pytest.mark.parametrize("name", ["shapes", "tiny_shapes_test"])
def test_exact_resume_from_json_state(tok, name):
  cfg = _data_cfg(name=name)
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0)
  first = _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  rest = _take(it, 4)
  resumed = pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 4), rest)
  assert not np.array_equal(first[0]["index"], rest[0]["index"])


@pytest.mark.parametrize("name,process_count", [("shapes", 2), ("shapes", 4), ("tiny_shapes_test", 2)])
def test_process_shards_concatenate_to_global_batch(tok, name, process_count):
  cfg = _data_cfg(name=name)
  steps = 5                                   # crosses epoch boundaries for the 20-example dataset
  whole = _take(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=1), steps)
  shards = [_take(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=1, process_index=p,
                                               process_count=process_count), steps)
            for p in range(process_count)]
  for step in range(steps):
    chex.assert_shape(shards[0][step]["image"], (8 // process_count, 32, 32, 3))
    joined = {k: np.concatenate([s[step][k] for s in shards]) for k in whole[step]}
    _assert_batches_equal([joined], [whole[step]])


def test_finite_dataset_epochs_are_reshuffled(tok):
  it = pipeline.make_train_iterator(_data_cfg(name="tiny_shapes_test"), tok, global_batch_size=8, seed=0)
  epochs = [np.concatenate([b["index"] for b in _take(it, 2)]) for _ in range(3)]
  for e in epochs:
    assert len(set(e.tolist())) == 16 and e.max() < 20
  assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])


def test_bad_batch_sizes(tok):
  with pytest.raises(MmjaxError, match="batch_size"):
    pipeline.make_train_iterator(_data_cfg(), tok, global_batch_size=10, seed=0, process_count=4)
  with pytest.raises(MmjaxError, match="batch_size"):
    pipeline.make_train_iterator(_data_cfg(name="tiny_shapes_test"), tok, global_batch_size=32, seed=0)
  with pytest.raises(MmjaxError, match="data.name"):
    pipeline.make_train_iterator(_data_cfg(name="shapez"), tok, global_batch_size=8, seed=0)


def test_eval_arrays_use_the_test_split(tok):
  cfg = _data_cfg(max_shapes=3)
  ev = pipeline.make_eval_arrays(cfg, tok, 12)
  chex.assert_shape(ev["image"], (12, 32, 32, 3))
  chex.assert_shape(ev["tokens"], (12, 16))
  chex.assert_shape(ev["shape"], (12, 3))
  assert isinstance(ev["caption"], list) and len(ev["caption"]) == 12
  np.testing.assert_array_equal(ev["index"], np.arange(12))
  np.testing.assert_array_equal(ev["tokens"], tok.encode(ev["caption"], 16))
  train = pipeline.make_eval_arrays(cfg, tok, 12, split="train")
  for i in range(12):
    assert not np.array_equal(ev["image"][i], train["image"][i])
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0)
  train_images = np.concatenate([b["image"] for b in _take(it, 2)])
  assert not any(np.array_equal(t, e) for t in train_images for e in ev["image"])
  with pytest.raises(MmjaxError, match="num_examples"):
    pipeline.make_eval_arrays(_data_cfg(name="tiny_shapes_test"), tok, 21)


@pytest.mark.slow
def test_worker_processes_resume_exactly(tok):
  cfg = _data_cfg(num_workers=2)
  start = time.time()
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=2)
  in_process = _take(pipeline.make_train_iterator(_data_cfg(), tok, global_batch_size=8, seed=2), 5)
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  rest = _take(it, 3)
  _assert_batches_equal(rest, in_process[2:])    # workers do not change the data order
  it.set_state(state)                           # rewinding restarts the workers from the saved state
  _assert_batches_equal(_take(it, 3), rest)
  it.close()
  assert time.time() - start < 30


@pytest.mark.parametrize("name", ["tiny_shapes_test", "vqa_shapes"])
def test_train_element_spec_is_the_batches_spec(tok, name):
  """The spec the loop initialises the model for (pipeline.train_element_spec) is that of the iterator's batches:
  the same keys, [b, ...] shapes and dtypes, for a captioned data set and one with its own `preprocess`."""
  from mmjax.train.loop import batch_spec
  cfg = _data_cfg(name=name, max_shapes=2)
  text = tok if name != "vqa_shapes" else None
  it = pipeline.make_train_iterator(cfg, text, global_batch_size=8, seed=0, process_count=2)
  want = batch_spec(next(it))
  assert batch_spec(pipeline.train_element_spec(cfg, text, batch_size=4)) == want
  assert want["image"][0] == (4, 32, 32, 3)


class _BrokenAt:
  """shapes' test split whose example `bad` cannot be read."""

  def __init__(self, cfg, split, bad=5):
    self.inner, self.bad = shapes.ShapesSource(shapes.config_from_data(cfg), split, length=20), bad

  def __len__(self):
    return len(self.inner)

  def __getitem__(self, i):
    if i == self.bad:
      raise OSError("disk read error")
    return self.inner[i]


DATASETS.register("broken_shapes_test")(DatasetEntry(source=_BrokenAt, corpus=shapes.shapes_corpus))


def test_eval_arrays_read_through_grain_threads_in_order(tok):
  """The eval path reads with grain's reader threads (data.prefetch): the examples come in index order, equal to
  rendering each one directly, and a read error names the data set, split and example."""
  cfg = _data_cfg(max_shapes=2)
  cfg.prefetch = 4
  ev = pipeline.make_eval_arrays(cfg, tok, 40)
  for i in range(40):
    ex = shapes.render_example(i, "test", shapes.config_from_data(cfg))
    np.testing.assert_allclose(ev["image"][i], ex["image"] / 127.5 - 1, atol=1e-6)
    assert ev["caption"][i] == ex["caption"]
  with pytest.raises(MmjaxError, match=r"broken_shapes_test' \(test split\): reading example 5 failed \(OSError"):
    pipeline.make_eval_arrays(_data_cfg(name="broken_shapes_test"), tok, 12)


@pytest.mark.parametrize("path", ["train", "eval"])
def test_a_negative_prefetch_is_an_error_on_both_paths(tok, path):
  """data.prefetch < 0 is refused by the training iterator and by the eval arrays alike (not clamped to 0)."""
  cfg = _data_cfg()
  cfg.prefetch = -1
  with pytest.raises(MmjaxError, match=r"data\.prefetch=-1 must be >= 0"):
    if path == "train":
      next(pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0))
    else:
      pipeline.make_eval_arrays(cfg, tok, 4)
