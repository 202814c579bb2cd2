"""What every evaluator shares: the context it gets (`EvalContext`), the table of the `evals.*` config keys it
declares (`EVAL_KEYS`), the stand-in tokenizer of runs on data without text (`NoTokenizer`), the compiled predict
functions kept for the whole run (`predict_fn`, `apply_fn`: a periodic evaluation compiles once per run, not once
per call) and the data and batching helpers more than one evaluator uses (`eval_arrays`, `batched_apply`).

An evaluator is `fn(params, ctx: EvalContext) -> dict[str, float]`, registered by name in mmjax.registry.EVALUATORS;
its module may add `EVAL_KEYS[name] = {key: default}` for its own settings, which a config gives under the
evaluator's name (`config.evals.<name>.<key>`, e.g. `--config.evals.classification.split=dev`; read with
`setting`), so two evaluators' settings never clash; and `EVAL_CHECKS[name] = check(config, model)`, run at
start-up. The shared `evals.*` keys of the base config (names, num_examples, batch_size, ...) stay flat.
Evaluator modules import this module, never the runner (mmjax/evals/runner.py, which imports them all) and never
another evaluator's private helpers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax.data import pipeline
from mmjax.errors import MmjaxError
from mmjax.mesh import AXES, BATCH_SPEC

EVAL_KEYS: dict[str, dict[str, Any]] = {}   # evaluator name -> {key: default}, given as evals.<name>.<key>
# evaluator name -> check(config, model): raises MmjaxError when the evaluator cannot run on this run's data or
# model. The Trainer runs every configured evaluator's check at start-up, before anything compiles or trains
# (mmjax.evals.runner.check), so a run never fails at its first evaluation for a reason its config already shows.
EVAL_CHECKS: dict[str, Callable[[Any, Any], None]] = {}


def setting(config, evaluator: str, key: str) -> Any:
  """The evaluator's setting `key`: config.evals.<evaluator>.<key> if the config gives it, else the default its
  module declares in EVAL_KEYS[evaluator]."""
  defaults = EVAL_KEYS.get(evaluator, {})
  if key not in defaults:
    raise KeyError(f"evaluator {evaluator!r} declares no setting {key!r} in EVAL_KEYS")
  node = config.evals.get(evaluator, None) if hasattr(config.evals, "get") else None
  return node[key] if node is not None and key in node else defaults[key]


def moved_key_hint(key: str) -> str:
  """For a flat `evals.<key>` that is an evaluator's setting: where it is given now ('' if none declares it)."""
  owners = sorted(name for name, keys in EVAL_KEYS.items() if key in keys)
  if not owners:
    return ""
  return (f"config key evals.{key} is a setting of evaluator {' / '.join(map(repr, owners))}: give it as "
          f"{' or '.join(f'evals.{o}.{key}' for o in owners)} (each evaluator's settings are under its name)")


def needs_data(evaluator: str, config, names: Sequence[str], what: str) -> None:
  """`config.data.name` must be one of `names` for `evaluator` (which scores `what`)."""
  if str(config.data.name) not in names:
    raise MmjaxError(f"evaluator {evaluator!r} scores {what}; data.name={config.data.name!r} (use "
                     f"data.name={names[0]!r} or remove {evaluator!r} from evals.names)")


def needs_method(evaluator: str, config, model, method: str, what: str) -> None:
  """The model must have `method` for `evaluator` (`what`: the models that do)."""
  if not hasattr(model, method):
    raise MmjaxError(f"evaluator {evaluator!r} needs {what} (a model with `{method}`); model.name="
                     f"{config.model.name!r} has none (remove {evaluator!r} from evals.names)")


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


def shard_batch(tree, mesh):
  """Arrays [B, ...] (a pytree; every process holds the same full values, as eval data is read whole by each) ->
  global jax.Arrays on `mesh`: B split over the batch axes ("data", "fsdp") as the training batch is when it
  divides by their size, else replicated. mesh None: the tree unchanged."""
  if mesh is None:
    return tree
  n = math.prod(mesh.shape[a] for a in AXES)

  def put(x):
    x = np.asarray(x)
    x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
    spec = BATCH_SPEC if x.ndim and x.shape[0] % n == 0 else P()
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda idx: x[idx])

  return jax.tree.map(put, tree)


def predict_fn(ctx, name: str, fn: Callable, static: tuple = (), batch_argnums: Sequence[int] = (1,)) -> Callable:
  """`jax.jit(fn)` built once per run and reused by every later evaluation: kept in ctx.cache under (name, static)
  while ctx.model and ctx.mesh stay the same (a new model or mesh rebuilds it), so a periodic evaluation compiles
  nothing new after its first call (same shapes). `fn` may close over ctx.model and the values in `static` only.

  With a mesh, the returned function places its arguments at `batch_argnums` (arrays [B, ...] or pytrees of them)
  with `shard_batch` and jit takes the in-shardings from the placed arguments (params keep the train state's
  sharding); outputs come back replicated over the mesh (readable on every process). Other arguments (PRNG keys)
  are passed as they are."""
  key = ("predict_fn", name, *static)
  cached = ctx.cache.get(key)
  if cached is not None and cached[0] is ctx.model and cached[1] is ctx.mesh:
    return cached[2]
  mesh = ctx.mesh
  jitted = jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=NamedSharding(mesh, P()))

  def call(*args):
    args = [shard_batch(a, mesh) if i in batch_argnums else a for i, a in enumerate(args)]
    return jitted(*args)

  ctx.cache[key] = (ctx.model, mesh, call)
  return call


def apply_fn(ctx, method: str, prep: Callable | None = None) -> Callable:
  """(params, x [B, ...]) -> ctx.model.apply({"params": params}, x, method=method), as a `predict_fn` shared by
  every evaluator that calls `method` (e.g. "encode_image" [B, H, W, 3] -> [B, E]); `prep`, a module-level
  function applied to x first (named in the cache key), e.g. linear_probe.to_model_range."""
  model = ctx.model
  name = f"{method}:{prep.__module__}.{prep.__qualname__}" if prep is not None else method
  prep = prep or (lambda x: x)
  return predict_fn(ctx, "apply", lambda p, x: model.apply({"params": p}, prep(x), method=method), static=(name,))


def batched_apply(fn, params, x: np.ndarray, batch_size: int) -> jax.Array:
  """fn(params, x[i:i+bs]) over x [N, ...] -> [N, ...], padding the last chunk so that one compiled shape serves
  all (chunks are passed as NumPy arrays: a `predict_fn` places them on the mesh)."""
  out = []
  for i in range(0, len(x), batch_size):
    chunk = np.asarray(x[i:i + batch_size])
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    out.append(fn(params, chunk)[:n])
  return jnp.concatenate(out)


def eval_arrays(ctx) -> dict:
  """The `evals.num_examples` test examples of the run's data (`make_eval_arrays`), cached in ctx.cache."""
  cfg = ctx.config
  key = hashlib.sha1((cfg.data.to_json_best_effort() + ctx.tokenizer.to_json()
                      + str(cfg.evals.num_examples)).encode()).hexdigest()
  if key not in ctx.cache:
    ctx.cache[key] = pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, cfg.evals.num_examples, split="test")
  return ctx.cache[key]
