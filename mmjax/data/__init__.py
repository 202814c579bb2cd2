"""Data: procedurally generated and downloaded datasets, the BPE tokenizer and grain input pipelines.

A dataset is registered in `mmjax.registry.DATASETS` as a `DatasetEntry` with these functions:

  source(data_cfg, split) -> a grain random-access source (`__len__`, `__getitem__`) of example dicts;
  corpus(data_cfg) -> list[str], the captions the tokenizer is trained on; None (the default): the data set has
    no text, and a run on it has no tokenizer (`Trainer.tokenizer` is None);
  train_transform(example, rng, data_cfg) -> example (optional): per-example random augmentation for training
    (e.g. random-resized crop, one of several captions), given a seeded `np.random.Generator`;
  eval_transform(example, data_cfg) -> example (optional): the deterministic counterpart for evaluation;
  preprocess(example, data_cfg) -> example (optional): turns an example into model inputs (NumPy arrays with
    fixed shapes), for training and evaluation; None (the default): image-caption data, whose examples hold an
    `image` (uint8) and a raw `caption` string (after the transforms; before them an example may carry
    `captions`, a list of str, which evaluation keeps all of), turned into model inputs by
    `mmjax.data.pipeline.preprocess` (image in [-1, 1], caption tokens);
  stream(data_cfg, *, seed, process_index, process_count) -> a grain IterDataset of this process's raw training
    examples (optional; e.g. webdataset shards, which have no random access): when set, training reads it instead of
    shuffling `source(data_cfg, "train")`; its examples carry `_rng`, the seed of their augmentation, and its
    iterator state is checkpointed as grain's is (`source` still serves evaluation and the first batch's shapes);
  config_keys: the `data.*` config keys the data set reads beyond the base config's, with their defaults
    (the training loop accepts them in a config; see `mmjax.train.loop.config_schema`).

The module defining a dataset must be imported for it to be registered (see `pipeline.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """What `DATASETS.get(name)` returns: `.source(data_cfg, split)`, `.corpus(data_cfg)` and the transforms."""
  source: Callable[[Any, str], Any]
  corpus: Callable[[Any], list[str]] | None = None
  train_transform: Callable[[dict, Any, Any], dict] | None = None
  eval_transform: Callable[[dict, Any], dict] | None = None
  preprocess: Callable[[dict, Any], dict] | None = None
  stream: Callable[..., Any] | None = None
  config_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)
