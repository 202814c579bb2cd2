"""Evaluator "vqa": answer accuracy per question type on the "vqa_shapes" data (mmjax/data/vqa_shapes.py) of a model
trained with the "classify" objective (mmjax/models/vqa.py), plus the answer-prior baseline.

On the first `evals.num_examples` questions of `evals.vqa.split` (default "test"):
  vqa/accuracy, vqa/acc_<type>     top-1 accuracy overall and per question type (QTYPES)
  vqa/frac_<type>                  the share of the questions of each type
  vqa/prior_accuracy, vqa/prior_acc_<type>   the answer prior: for each question type, always answer the most
                                   frequent answer of that type among the first `evals.vqa.prior_train_examples` train
                                   questions (what a model that ignores both image and question wording can reach)
  vqa/num_examples
"""
from __future__ import annotations

import numpy as np

from mmjax.data import pipeline
from mmjax.evals.classify_evals import eval_split, predictor
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, needs_data, setting
from mmjax.models.inputs import input_entries, input_keys
from mmjax.objectives import get_objective
from mmjax.registry import EVALUATORS

EVAL_KEYS["vqa"] = {"split": "test", "prior_train_examples": 5000}


def per_type_accuracy(pred: np.ndarray, label: np.ndarray, qtype: np.ndarray, names) -> dict[str, float]:
  """-> {"accuracy", "acc_<name>", "frac_<name>"}; a type with no questions gets accuracy NaN."""
  correct = np.asarray(pred) == np.asarray(label)
  out = {"accuracy": float(correct.mean())}
  for t, name in enumerate(names):
    sel = np.asarray(qtype) == t
    out[f"acc_{name}"] = float(correct[sel].mean()) if sel.any() else float("nan")
    out[f"frac_{name}"] = float(sel.mean())
  return out


def majority_answers(label: np.ndarray, qtype: np.ndarray, num_types: int) -> np.ndarray:
  """The most frequent answer of each question type [num_types] (-1 for a type without questions; ties: the
  smallest answer id)."""
  out = np.full(num_types, -1, np.int64)
  for t in range(num_types):
    sel = np.asarray(label)[np.asarray(qtype) == t]
    if len(sel):
      out[t] = int(np.bincount(sel).argmax())
  return out


def check_vqa(cfg, model) -> None:
  needs_data("vqa", cfg, ("vqa_shapes",), "answers to shapes questions")


EVAL_CHECKS["vqa"] = check_vqa


@EVALUATORS.register("vqa")
def vqa_eval(params, ctx) -> dict[str, float]:
  from mmjax.data.vqa_shapes import QTYPES
  cfg, model = ctx.config, ctx.model
  check_vqa(cfg, model)
  keys = input_keys(model, get_objective(cfg.objective).batch_keys)
  arrays = eval_split(ctx, "vqa")
  inputs = input_entries(keys, arrays)
  labels, qtype = np.asarray(arrays["label"]), np.asarray(arrays["qtype"])
  bs = max(1, min(int(cfg.evals.batch_size), len(labels)))
  logits = predictor(ctx, params, keys, bs)(inputs)
  results = per_type_accuracy(logits.argmax(-1), labels, qtype, QTYPES)

  n_train = int(setting(cfg, "vqa", "prior_train_examples"))
  key = f"vqa_prior:{cfg.data.to_json_best_effort()}:{n_train}"
  if key not in ctx.cache:
    train = pipeline.make_eval_arrays(cfg.data, None, n_train, split="train")
    ctx.cache[key] = majority_answers(train["label"], train["qtype"], len(QTYPES))
  prior = ctx.cache[key][qtype]
  results.update({f"prior_{k}": v for k, v in per_type_accuracy(prior, labels, qtype, QTYPES).items()
                  if not k.startswith("frac_")})
  results["num_examples"] = float(len(labels))
  return {f"vqa/{k}": float(v) for k, v in results.items()}
