"""Data: procedurally generated and downloaded datasets, the BPE tokenizer and grain input pipelines.

A dataset is registered in `mmjax.registry.DATASETS` as a `DatasetEntry` with two functions:

  source(data_cfg, split) -> a grain random-access source (`__len__`, `__getitem__`) of example dicts;
  corpus(data_cfg) -> list[str], the captions the tokenizer is trained on.

Example dicts hold NumPy arrays plus a raw `caption` string; `mmjax.data.pipeline.preprocess` turns them into
model inputs. The module defining a dataset must be imported for it to be registered (see `pipeline.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """What `DATASETS.get(name)` returns: `.source(data_cfg, split)` and `.corpus(data_cfg)`."""
  source: Callable[[Any, str], Any]
  corpus: Callable[[Any], list[str]]
