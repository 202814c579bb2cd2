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
  workdir: str | None = None   # where evaluators may write files (figures); None: write nothing


_CACHE: dict[str, Any] = {}  # eval data survives between evaluations of one process


def run(config, params, *, model, tokenizer, mesh, workdir: str | None = None) -> dict[str, float]:
  import mmjax.evals.clip_evals  # noqa: F401  (registers "clip")
  import mmjax.evals.linear_probe  # noqa: F401  (registers "linear_probe")
  import mmjax.evals.masked_evals  # noqa: F401  (registers "masked", "reconstruction")
  names = [n.strip() for n in str(config.evals.names).split(",") if n.strip()]
  ctx = EvalContext(config=config, model=model, tokenizer=tokenizer, mesh=mesh, cache=_CACHE, workdir=workdir)
  results: dict[str, float] = {}
  for name in names:
    results.update(EVALUATORS.get(name, "evals.names")(params, ctx))
  return results
