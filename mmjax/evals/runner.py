"""Runs the evaluators named in `config.evals.names` ("clip,..."), each `fn(params, ctx) -> dict[str, float]`.

An evaluator module may declare its own settings, with defaults, in `mmjax.evals.base.EVAL_KEYS[name]`; a config
gives them under the evaluator's name, `evals.<name>.<key>` (mmjax.config.base_config holds every evaluator's
namespace with its defaults, so `--config.evals.<name>.<key>=...` works on any experiment).
Runs on data without text have no tokenizer: evaluators then see `ctx.tokenizer` as a `NoTokenizer`, falsy,
whose every use raises a one-line MmjaxError naming the evaluator.
"""
from __future__ import annotations

from typing import Any

from mmjax.errors import MmjaxError
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, EvalContext, NoTokenizer, moved_key_hint  # noqa: F401
from mmjax.registry import EVALUATORS

_CACHE: dict[str, Any] = {}  # eval data survives between evaluations of one process


def _import_evaluators() -> None:
  import mmjax.evals.classify_evals  # noqa: F401  (registers "classification")
  import mmjax.evals.clip_evals  # noqa: F401  (registers "clip")
  import mmjax.evals.linear_probe  # noqa: F401  (registers "linear_probe")
  import mmjax.evals.masked_evals  # noqa: F401  (registers "masked", "reconstruction")
  import mmjax.evals.captioning  # noqa: F401  (registers "captioning")
  import mmjax.evals.generation  # noqa: F401  (registers "generation")
  import mmjax.evals.generative_evals  # noqa: F401  (registers "mvae")
  import mmjax.evals.vqa_evals  # noqa: F401  (registers "vqa")
  import mmjax.evals.zero_shot_suite  # noqa: F401  (registers "zero_shot_suite")
  import mmjax.evals.retrieval_suite  # noqa: F401  (registers "retrieval_suite")


def _names(names: str) -> list[str]:
  return [n.strip() for n in str(names).split(",") if n.strip()]


def evaluator_keys() -> dict[str, dict[str, Any]]:
  """{evaluator: {key: default}}: the settings every registered evaluator declares (config.evals.<name>.<key>)."""
  _import_evaluators()
  return {name: dict(keys) for name, keys in EVAL_KEYS.items()}


def check_moved_keys(config) -> None:
  """A flat `evals.<key>` that is an evaluator's setting fails with where to give it (evals.<evaluator>.<key>)."""
  _import_evaluators()
  for key in config.evals.keys():
    hint = moved_key_hint(key) if key not in EVAL_KEYS else ""
    if hint:
      raise MmjaxError(hint)


def check(config, model) -> None:
  """Every evaluator of `config.evals.names` exists and can run on this data and model (its EVAL_CHECKS entry):
  run by the Trainer at start-up, before anything compiles."""
  _import_evaluators()
  for name in _names(config.evals.names):
    EVALUATORS.get(name, "evals.names")
    if name in EVAL_CHECKS:
      EVAL_CHECKS[name](config, model)


def run(config, params, *, model, tokenizer, mesh, workdir: str | None = None) -> dict[str, float]:
  _import_evaluators()
  results: dict[str, float] = {}
  for name in _names(config.evals.names):
    fn = EVALUATORS.get(name, "evals.names")
    tok = tokenizer if tokenizer is not None else NoTokenizer(name, str(config.data.name))
    ctx = EvalContext(config=config, model=model, tokenizer=tok, mesh=mesh, cache=_CACHE, workdir=workdir)
    results.update(fn(params, ctx))
  return results
