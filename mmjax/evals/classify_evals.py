"""Evaluator "classification": accuracy and F1 of a classifier (models/fusion_classifier.py) on a data split, and
optionally its robustness curve for one modality (MultiBench's protocol, evals/robustness.py).

The model's inputs are the split's entries named by `model.modalities` (else the objective's `batch_keys`), with
`<modality>_length` entries passed as `lengths`; labels are `label` (int [N]). Logits come from the jitted
`model.apply(..., train=False)` over batches of `evals.batch_size` (the last one padded, so one compiled shape).

Config keys (under `evals`): `split` ("test"), `batch_size`, `num_examples` (the first N examples of the split;
0, or more than the split has: all of it) and `robustness_modality` ("": none; else that modality is corrupted
at levels 0, 0.1, ..., 1 with the default noise of its rank (robustness.noise_for: vectors, time series, images),
the others kept clean, and the curve is written to `<workdir>/robustness_<modality>.png` and `.json`).

Results (fractions in [0, 1]): "classification/accuracy"; "classification/f1": for 2 classes the binary F1 of
class 1 (the positive class, as MOSI papers report), else the macro F1; "classification/f1_macro" (unweighted
mean over the classes present in labels or predictions, as sklearn's average="macro"); "classification/f1_weighted"
(support-weighted mean over the classes of the labels, sklearn's average="weighted"); "classification/num_examples";
with robustness: "classification/robustness_<m>_auc" (relative robustness, the area under the curve) and
"classification/robustness_<m>_at_1.0" (accuracy at the highest level).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data import pipeline
from mmjax.errors import MmjaxError
from mmjax.evals import robustness as rb
from mmjax.evals.base import EVAL_KEYS, NoTokenizer, predict_fn, setting
from mmjax.models.inputs import input_entries, input_keys, length_kwargs
from mmjax.objectives import get_objective
from mmjax.registry import DATASETS, EVALUATORS

EVAL_KEYS["classification"] = {"split": "test", "robustness_modality": ""}


# ------------------------------------------------------------------------------------------------ metrics
def f1_scores(pred: np.ndarray, label: np.ndarray, num_classes: int) -> dict[str, float]:
  """Accuracy and F1 from the confusion counts (see the module docstring for the averages)."""
  pred, label = np.asarray(pred).astype(np.int64), np.asarray(label).astype(np.int64)
  f1, support = np.zeros(num_classes), np.zeros(num_classes)
  for c in range(num_classes):
    tp = np.sum((pred == c) & (label == c))
    n_pred, n_true = np.sum(pred == c), np.sum(label == c)
    f1[c] = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0   # = 2PR / (P + R)
    support[c] = n_true
  present = np.isin(np.arange(num_classes), np.concatenate([pred, label]))
  out = {"accuracy": float(np.mean(pred == label)), "f1_macro": float(f1[present].mean()),
         "f1_weighted": float(np.sum(f1 * support) / max(support.sum(), 1))}
  out["f1"] = float(f1[1]) if num_classes == 2 else out["f1_macro"]
  return out


# ------------------------------------------------------------------------------------------------ evaluator
def eval_split(ctx, evaluator: str = "classification") -> dict[str, np.ndarray]:
  """The preprocessed arrays of the `evaluator`'s split (evals.<evaluator>.split; the first `evals.num_examples`),
  cached per process."""
  cfg = ctx.config
  split = str(setting(cfg, evaluator, "split"))
  n_all = len(DATASETS.get(cfg.data.name, "data.name").source(cfg.data, split))
  n = int(cfg.evals.num_examples)
  n = n_all if n <= 0 or n > n_all else n
  key = f"classification:{cfg.data.to_json_best_effort()}:{split}:{n}"
  if key not in ctx.cache:
    ctx.cache[key] = pipeline.make_eval_arrays(
        cfg.data, None if isinstance(ctx.tokenizer, NoTokenizer) else ctx.tokenizer, n, split=split)
  return ctx.cache[key]


def predictor(ctx, params, keys: tuple[str, ...], batch_size: int):
  """inputs dict of [N, ...] -> logits [N, C] (NumPy) of ctx.model: its apply (a `predict_fn`, compiled once per
  run) over fixed-size batches, the last one padded."""
  model = ctx.model
  apply = predict_fn(ctx, "classification", lambda p, xs, kw: model.apply({"params": p}, *xs, train=False, **kw),
                     batch_argnums=(1, 2))

  def predict(inputs: dict) -> np.ndarray:
    n = len(inputs[keys[0]])
    out = []
    for i in range(0, n, batch_size):
      chunk = {k: np.asarray(v[i:i + batch_size]) for k, v in inputs.items()}
      m = len(chunk[keys[0]])
      if m < batch_size:
        chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - m, axis=0)]) for k, v in chunk.items()}
      logits = apply(params, [chunk[k] for k in keys], length_kwargs(keys, chunk))
      out.append(np.asarray(jax.device_get(logits))[:m])
    return np.concatenate(out)

  return predict


@EVALUATORS.register("classification")
def classification_eval(params, ctx) -> dict[str, float]:
  cfg, model = ctx.config, ctx.model
  keys = input_keys(model, get_objective(cfg.objective).batch_keys)
  if not keys:
    raise MmjaxError(f"evaluator 'classification' needs a model with inputs: model.name={cfg.model.name!r} has "
                     f"no `modalities` and objective {cfg.objective!r} no batch_keys")
  arrays = eval_split(ctx)
  missing = [k for k in (*keys, "label") if k not in arrays]
  if missing:
    raise MmjaxError(f"evaluator 'classification': the {setting(cfg, 'classification', 'split')} split of data.name="
                     f"{cfg.data.name!r} has no {missing}; it has {sorted(arrays)}")
  inputs = input_entries(keys, arrays)
  labels = np.asarray(arrays["label"])
  bs = max(1, min(int(cfg.evals.batch_size), len(labels)))
  predict = predictor(ctx, params, keys, bs)
  logits = predict(inputs)
  scores = f1_scores(logits.argmax(-1), labels, logits.shape[-1])
  results = {f"classification/{k}": v for k, v in scores.items()}
  results["classification/num_examples"] = float(len(labels))
  modality = str(setting(cfg, "classification", "robustness_modality") or "")
  if modality:
    if modality not in keys:
      raise MmjaxError(f"config key evals.classification.robustness_modality={modality!r} is not one of the "
                       f"model's inputs {list(keys)}")
    curve = rb.robustness_curve(predict, {k: jnp.asarray(v) for k, v in inputs.items()}, labels, modality)
    results[f"classification/robustness_{modality}_auc"] = rb.relative_robustness(curve)
    results[f"classification/robustness_{modality}_at_1.0"] = float(curve[-1])
    if ctx.workdir is not None and jax.process_index() == 0:
      base = os.path.join(ctx.workdir, f"robustness_{modality}")
      split = setting(cfg, "classification", "split")
      rb.plot_robustness({cfg.model.get("fusion", cfg.model.name): curve}, base + ".png",
                         title=f"{cfg.data.name}: noise on {modality} ({split} split)")
      tmp = base + ".json.tmp"
      with open(tmp, "w") as f:
        json.dump({"levels": list(rb.LEVELS), "accuracy": curve.tolist()}, f)
      os.replace(tmp, base + ".json")
  return results
