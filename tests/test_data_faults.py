"""A failing or crashing data worker stops training within seconds with an error naming the example: never a hang."""
from __future__ import annotations

import os
import time

import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.data import DatasetEntry, pipeline, shapes
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS
from mmjax.train import loop

BAD_INDEX = 13


class ExplodingSource(shapes.ShapesSource):
  """32 shapes examples; reading example 13 raises (a corrupt record)."""

  def __getitem__(self, index):
    if int(index) == BAD_INDEX:
      raise ValueError("record checksum mismatch")
    return super().__getitem__(index)


def _dying_transform(example, rng, data_cfg):
  """Kills the worker process outright at example 13 (a segfault or an OOM kill looks like this)."""
  if example["index"] == BAD_INDEX:
    os._exit(3)
  return example


def _raising_transform(example, rng, data_cfg):
  if example["index"] == BAD_INDEX:
    raise KeyError("caption")
  return example


def _source(cfg, split):
  return ExplodingSource(shapes.config_from_data(cfg), split, length=32)


def _plain_source(cfg, split):
  return shapes.ShapesSource(shapes.config_from_data(cfg), split, length=32)


DATASETS.register("exploding_test")(DatasetEntry(source=_source, corpus=shapes.shapes_corpus))
DATASETS.register("dying_test")(DatasetEntry(source=_plain_source, corpus=shapes.shapes_corpus,
                                             train_transform=_dying_transform))
DATASETS.register("raising_test")(DatasetEntry(source=_plain_source, corpus=shapes.shapes_corpus,
                                               train_transform=_raising_transform))


def _config(name, workers):
  c = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_shapes.py"), "runlocal")
  c.data.name, c.data.num_workers = name, workers
  c.total_steps, c.checkpoint_every = 8, 2        # 4 steps an epoch: example 13 comes within the first 4
  return c


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_read_names_the_example(workers):
  cfg = _config("exploding_test", workers).data
  tok = pipeline.build_tokenizer(cfg)
  it = pipeline.make_train_iterator(cfg, tok, global_batch_size=8, seed=0)
  start = time.time()
  with pytest.raises(MmjaxError, match=r"data.name='exploding_test' \(train split\): reading example 13 failed "
                                       r"\(ValueError: record checksum mismatch\)"):
    for _ in range(5):
      next(it)
  assert time.time() - start < 60


def test_a_failing_transform_names_the_example():
  cfg = _config("raising_test", 2).data
  it = pipeline.make_train_iterator(cfg, pipeline.build_tokenizer(cfg), global_batch_size=8, seed=0)
  with pytest.raises(MmjaxError, match=r"preprocessing example 13 failed \(KeyError: 'caption'\)"):
    for _ in range(5):
      next(it)


def test_training_stops_with_the_error_and_keeps_checkpoints(tmp_path):
  with pytest.raises(MmjaxError, match=r"data pipeline failed at step \d: .*reading example 13 failed"):
    loop.Trainer(_config("exploding_test", 0), str(tmp_path)).train()


@pytest.mark.slow
def test_a_dead_worker_process_stops_training_within_seconds(tmp_path):
  start = time.time()
  with pytest.raises(MmjaxError, match=r"data pipeline failed at step \d .*exit code 3.*no checkpoint was written"
                                       r"|data pipeline failed at step \d .*exit code 3.*last checkpoint is step"):
    loop.Trainer(_config("dying_test", 2), str(tmp_path)).train()
  assert time.time() - start < 120
