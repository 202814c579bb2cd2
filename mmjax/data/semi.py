"""Few-label versions of the classification data sets, for distillation and semi-supervised runs.

"avmnist_semi": AV-MNIST (mmjax/data/fusion_data.py, every `data.*` key of "avmnist" applies) whose train split
carries `labeled` float32 [] (1 for the labelled examples, else 0): a stratified `data.label_fraction` of each
class (round(fraction x class count), at least 1 per class), drawn with `np.random.default_rng(data.label_seed)`.
The other splits are unchanged (`labeled` all 1). With `data.labeled_only=True` the train split is only the
labelled examples (the "labels alone" baseline; `index` is then the row in that subset).
"""
from __future__ import annotations

import numpy as np

from mmjax.data import DatasetEntry
from mmjax.data.fusion_data import AVMNIST_KEYS, ArraySource, as_inputs, avmnist_arrays
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

SEMI_KEYS = {"label_fraction": 0.02, "label_seed": 0, "labeled_only": False}


def labeled_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """float32 [N]: 1 on a stratified random `fraction` of each class (at least one example per class)."""
  if not 0.0 < fraction <= 1.0:
    raise MmjaxError(f"config key data.label_fraction={fraction} must be in (0, 1]")
  rng = np.random.default_rng(int(seed))
  mask = np.zeros(len(labels), np.float32)
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    k = max(1, int(round(fraction * len(rows))))
    mask[rng.choice(rows, size=k, replace=False)] = 1.0
  return mask


def _get(data_cfg, key: str):
  return data_cfg.get(key, SEMI_KEYS[key]) if hasattr(data_cfg, "get") else SEMI_KEYS[key]


def avmnist_semi_source(data_cfg, split: str) -> ArraySource:
  arrays = dict(avmnist_arrays(data_cfg, split))
  n = len(arrays["label"])
  if split != "train":
    arrays["labeled"] = np.ones(n, np.float32)
    return ArraySource(arrays, f"avmnist_semi {split}")
  fraction, seed = float(_get(data_cfg, "label_fraction")), int(_get(data_cfg, "label_seed"))
  arrays["labeled"] = labeled_mask(arrays["label"], fraction, seed)
  if bool(_get(data_cfg, "labeled_only")):
    keep = np.flatnonzero(arrays["labeled"])
    arrays = {k: v[keep] for k, v in arrays.items()}
  return ArraySource(arrays, f"avmnist_semi {split} ({fraction:g} labelled, seed {seed})")


DATASETS.register("avmnist_semi")(DatasetEntry(source=avmnist_semi_source, preprocess=as_inputs,
                                                config_keys={**AVMNIST_KEYS, **SEMI_KEYS}))
