"""Data: procedurally generated and downloaded datasets, the BPE tokenizer and grain input pipelines.

A dataset is registered in `mmjax.registry.DATASETS` as a `DatasetEntry` with two functions:

  source(data_cfg, split) -> a grain random-access source (`__len__`, `__getitem__`) of example dicts;
  corpus(data_cfg) -> list[str], the captions the tokenizer is trained on;
  train_transform(example, rng, data_cfg) -> example (optional): per-example random augmentation for training
    (e.g. random-resized crop, one of several captions), given a seeded `np.random.Generator`;
  eval_transform(example, data_cfg) -> example (optional): the deterministic counterpart for evaluation.

Example dicts hold NumPy arrays plus a raw `caption` string (after the transforms; before them an example may
carry `captions`, a list of str, which evaluation keeps all of); `mmjax.data.pipeline.preprocess` turns them
into model inputs. The module defining a dataset must be imported for it to be registered (see `pipeline.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """What `DATASETS.get(name)` returns: `.source(data_cfg, split)`, `.corpus(data_cfg)` and the transforms."""
  source: Callable[[Any, str], Any]
  corpus: Callable[[Any], list[str]]
  train_transform: Callable[[dict, Any, Any], dict] | None = None
  eval_transform: Callable[[dict, Any], dict] | None = None
