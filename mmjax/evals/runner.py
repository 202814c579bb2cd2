"""Runs the evaluators named in `config.evals.names` ("clip,..."), each `fn(params, ctx) -> dict[str, float]`."""
from __future__ import annotations

import dataclasses
from typing import Any

from mmjax.registry import EVALUATORS


@dataclasses.dataclass
class EvalContext:
  config: Any
  model: Any
  tokenizer: Any
  mesh: Any
  cache: dict[str, Any]


_CACHE: dict[str, Any] = {}  # eval data survives between evaluations of one process


def run(config, params, *, model, tokenizer, mesh) -> dict[str, float]:
  import mmjax.evals.clip_evals  # noqa: F401  (registers "clip")
  names = [n.strip() for n in str(config.evals.names).split(",") if n.strip()]
  ctx = EvalContext(config=config, model=model, tokenizer=tokenizer, mesh=mesh, cache=_CACHE)
  results: dict[str, float] = {}
  for name in names:
    results.update(EVALUATORS.get(name, "evals.names")(params, ctx))
  return results
