"""What every evaluator shares: the context it gets (`EvalContext`), the table of the `evals.*` config keys it
declares (`EVAL_KEYS`), the stand-in tokenizer of runs on data without text (`NoTokenizer`), and the data and
batching helpers more than one evaluator uses (`eval_arrays`, `batched_apply`).

An evaluator is `fn(params, ctx: EvalContext) -> dict[str, float]`, registered by name in mmjax.registry.EVALUATORS;
its module may add `EVAL_KEYS[name] = {key: default}` for the `evals.*` keys it reads beyond the base config's.
Evaluator modules import this module, never the runner (mmjax/evals/runner.py, which imports them all) and never
another evaluator's private helpers.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data import pipeline
from mmjax.errors import MmjaxError

EVAL_KEYS: dict[str, dict[str, Any]] = {}   # evaluator name -> {evals.<key>: default}


@dataclasses.dataclass
class EvalContext:
  config: Any
  model: Any
  tokenizer: Any
  mesh: Any
  cache: dict[str, Any]
  workdir: str | None = None   # where evaluators may write files (figures); None: write nothing


class NoTokenizer:
  """Stands for the missing tokenizer of a run on data without text: any attribute raises MmjaxError."""

  def __init__(self, evaluator: str, data_name: str):
    self._evaluator, self._data_name = evaluator, data_name

  def __bool__(self) -> bool:
    return False

  def __getattr__(self, attr: str):
    if attr.startswith("__"):
      raise AttributeError(attr)
    raise MmjaxError(f"evaluator {self._evaluator!r} needs a tokenizer, but data.name={self._data_name!r} has no "
                     f"text, so the run has none; remove {self._evaluator!r} from config key evals.names")


def batched_apply(fn, params, x: np.ndarray, batch_size: int) -> jax.Array:
  """fn(params, x[i:i+bs]) over x, padding the last chunk so that one compiled shape serves all."""
  out = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    out.append(fn(params, jnp.asarray(chunk))[:n])
  return jnp.concatenate(out)


def eval_arrays(ctx) -> dict:
  """The `evals.num_examples` test examples of the run's data (`make_eval_arrays`), cached in ctx.cache."""
  cfg = ctx.config
  key = hashlib.sha1((cfg.data.to_json_best_effort() + ctx.tokenizer.to_json()
                      + str(cfg.evals.num_examples)).encode()).hexdigest()
  if key not in ctx.cache:
    ctx.cache[key] = pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, cfg.evals.num_examples, split="test")
  return ctx.cache[key]
