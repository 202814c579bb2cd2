"""The one training loop: config -> data -> model + objective -> sharded, jitted step -> metrics/checkpoints/evals.

Nothing here knows which modality or paper runs: the objective (by name), the model (by name), the dataset (by name)
and the evaluators (by name) come from the registries. A data set without text (`DatasetEntry.corpus` None: MOSI,
AV-MNIST) runs without a tokenizer (`Trainer.tokenizer` is None; its checkpoints store `"tokenizer": null`).
"""
from __future__ import annotations

import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import config as config_lib
from mmjax import cpu_tuning
from mmjax.data import pipeline
from mmjax.data.tokenizer import Tokenizer
from mmjax.errors import MmjaxError
from mmjax.evals import runner as eval_runner
from mmjax.models import build_model
from mmjax.models.inputs import model_inputs
from mmjax.objectives import get_objective
from mmjax.registry import DATASETS
from mmjax.train import best as best_lib
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train import init_from as init_from_lib
from mmjax.train import optim, sharding
from mmjax.train import run as run_lib
from mmjax.train import teacher as teacher_lib
from mmjax.train.metrics import MetricWriter
from mmjax.train.preemption import PreemptionGuard
from mmjax.train.state import TrainState
from mmjax.train.step import make_train_step
from mmjax.train.workdir import check_workdir


def _get(config, key: str) -> Any:
  """config value at a dotted key, or None where any part is missing."""
  node = config
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return None
    node = node[part]
  return node


def check_model_data(config) -> None:
  """Model/data shape agreement, checked up front where the keys exist (models without them are skipped)."""
  image, patch = _get(config, "model.vision.image_size"), _get(config, "model.vision.patch_size")
  if image is not None and patch is not None:
    if patch < 1 or image % patch:
      ok = sharding.divisors(image)
      sizes = sharding.nearby_multiples(image, patch) if patch > 0 else []
      raise MmjaxError(f"config key model.vision.image_size={image} is not divisible by model.vision.patch_size="
                       f"{patch}; use an image size that is a multiple of {patch} (e.g. "
                       f"{' or '.join(map(str, sizes))}) or a patch size in {ok}")
  data_image = _get(config, "data.image_size")
  if image is not None and data_image is not None and data_image != image:
    raise MmjaxError(f"config key data.image_size={data_image} differs from model.vision.image_size={image}; "
                     f"set both to the same value (e.g. --config.data.image_size={image})")
  ctx, data_ctx = _get(config, "model.text.context_length"), _get(config, "data.context_length")
  if ctx is not None and data_ctx is not None and ctx != data_ctx:
    raise MmjaxError(f"config key data.context_length={data_ctx} differs from model.text.context_length={ctx}; "
                     f"set both to the same value (e.g. --config.data.context_length={ctx})")


def check_tokenizer_vocab(config, tokenizer) -> None:
  """The tokenizer's ids must fit the model's token embedding. A larger id is no error inside jit: flax's nn.Embed
  returns a NaN row for it (a plain gather clamps it to the last row), so a too-small model.text/decoder.vocab_size
  shows up steps later as a non-finite loss, or trains silently on wrong tokens. Checked before anything compiles."""
  if tokenizer is None or getattr(tokenizer, "vocab_size", None) is None:
    return
  for key in ("model.text.vocab_size", "model.decoder.vocab_size"):
    vocab = _get(config, key)
    if vocab is not None and int(tokenizer.vocab_size) > int(vocab):
      kind = _get(config, "tokenizer.kind") or "bpe_trained"
      made = f", data.vocab_size={_get(config, 'data.vocab_size')}" if kind == "bpe_trained" else ""
      raise MmjaxError(f"the tokenizer has {tokenizer.vocab_size} tokens (tokenizer.kind={kind!r}{made}) but config "
                       f"key {key}={vocab}: ids >= {vocab} fall outside the token embedding; set "
                       f"--config.{key}={tokenizer.vocab_size} (or more)")


def config_schema(config):
  """The base config (with every evaluator's settings, `evals.<evaluator>.*`) extended by the `data.*` keys the
  configured data set declares (`DatasetEntry.config_keys`): what `check_keys` accepts.
  RL configs (`trainer = "ppo"`) have their own schema, mmjax.rl.config.rl_config (mmjax.trainers.config_schema
  picks the one a config needs)."""
  schema = config_lib.base_config()
  name = _get(config, "data.name")
  if isinstance(name, str):
    try:
      extra = DATASETS.get(name, "data.name").config_keys
    except MmjaxError:
      extra = {}          # an unknown data set is reported by the data pipeline, with suggestions
    for k, v in extra.items():
      if k not in schema.data:
        schema.data[k] = v
  return schema


def load_or_build_tokenizer(config, workdir: str, ckpt: ckpt_lib.Checkpointer, step: int | None) -> Tokenizer | None:
  """The checkpoint's tokenizer when resuming; else the one `config.tokenizer.kind` names ("clip_bpe", "hf"); else
  (kind "bpe_trained") workdir/tokenizer.json, or one trained on the data's text; None for a data set without text
  (and when resuming a checkpoint saved without a tokenizer)."""
  if step is not None:
    text = ckpt.read_meta(step).get("tokenizer")
    return pipeline.tokenizer_from_json(text) if text is not None else None
  kind = (config.get("tokenizer", None) or {}).get("kind", "bpe_trained")
  if kind != "bpe_trained":          # OpenCLIP's BPE or a tokenizer.json: nothing to train (config.tokenizer.*)
    return pipeline.tokenizer_for(config)
  if not pipeline.has_text(config.data):
    return None
  path = os.path.join(workdir, "tokenizer.json")
  if os.path.exists(path):
    return Tokenizer.load(path)
  tok = pipeline.build_tokenizer(config.data)
  if jax.process_index() == 0:
    tok.save(path)
  return tok


def batch_spec(batch: dict[str, Any]) -> dict[str, tuple]:
  """{key: (shape, dtype str)} of a batch of arrays (or of ShapeDtypeStructs: an element spec)."""
  return {k: (tuple(np.shape(v)), np.dtype(v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype).str)
          for k, v in batch.items()}


def check_batch(batch: dict[str, np.ndarray], spec: dict[str, tuple], step: int) -> None:
  """A one-line error naming the first key whose shape/dtype differs from `spec` (a `batch_spec`)."""
  got = batch_spec(batch)
  if got != spec:
    bad = sorted(k for k in set(got) | set(spec) if got.get(k) != spec.get(k))
    k = bad[0]
    raise MmjaxError(f"batch at step {step}: key {k!r} has shape/dtype {got.get(k)}, expected {spec.get(k)}; "
                     f"the data pipeline must give fixed shapes (check config keys data.*)")


def fingerprint(batch: dict[str, np.ndarray]) -> float:
  """crc32 of the example indices of a batch (else of its tokens): proves which examples a step saw
  (exact-resume tests)."""
  key = "index" if "index" in batch else "tokens" if "tokens" in batch else None
  return float(zlib.crc32(np.ascontiguousarray(batch[key]).tobytes())) if key else 0.0


class Trainer:
  """Builds everything a run needs; `train()` runs it (through the one loop body, mmjax/train/run.py, as its
  `Task`), `evaluate()` scores the latest checkpoint (or, `best=True`, the one config.select_best kept)."""

  def __init__(self, config, workdir: str):
    # Every config check runs before anything is written or compiled.
    eval_runner.check_moved_keys(config)
    config_lib.check_keys(config, config_schema(config))
    check_model_data(config)
    best_lib.check_config(config)
    self.mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(config.batch_size, self.mesh, jax.process_count())
    sharding.check_grad_accum(config.grad_accum_steps, config.batch_size, self.mesh)
    check_workdir(workdir)
    self.config, self.workdir = config, workdir
    self.ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    self.model = build_model(config.model)
    eval_runner.check(config, self.model)     # every configured evaluator can run on this data and model
    self.objective = get_objective(config.objective, config.get("objective_weights"),
                                   config.get("objective_kwargs"))
    self.tx, self.schedule = optim.make_optimizer(config.optim, config.total_steps)
    self.start_step = self.ckpt.latest_step()
    self.tokenizer = load_or_build_tokenizer(config, workdir, self.ckpt, self.start_step)
    check_tokenizer_vocab(config, self.tokenizer)
    self._build_state()

  # ---------------------------------------------------------------- state
  def init_state(self, rng, inputs, kwargs=None) -> TrainState:
    """A fresh train state of the model for the model inputs `inputs` (+ keyword inputs `kwargs`)."""
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    params = self.model.init({"params": params_rng, "dropout": dropout_rng}, *inputs, **(kwargs or {}),
                             train=False)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params), rng=state_rng)

  def _build_state(self) -> None:
    # The model is initialised for the training batches' element spec (not for an eval split's arrays).
    self.input_spec = pipeline.train_element_spec(self.config.data, self.tokenizer, seed=self.config.seed,
                                                  batch_size=self.config.batch_size // jax.process_count())
    self._batch_spec = batch_spec(self.input_spec)     # what every batch is checked against
    sample = {k: np.zeros((2, *s.shape[1:]), s.dtype) for k, s in self.input_spec.items()}
    self.model = teacher_lib.attach(self.model, sample)   # a distillation student's frozen teacher, read once here
    args, kwargs = model_inputs(self.model, sample, self.objective.batch_keys,
                                what=f"model.name={self.config.model.name!r} (the data: config key data.name)")
    inputs, kwargs = [jnp.asarray(x) for x in args], jax.tree.map(jnp.asarray, kwargs)
    self._init_inputs = (inputs, kwargs)
    rng = jax.random.PRNGKey(self.config.seed)
    abstract = jax.eval_shape(self.init_state, rng, inputs, kwargs)
    self.state_shardings = sharding.shardings(abstract, self.mesh, self.config.sharding_rules)
    self._abstract = ckpt_lib.abstract_like(abstract, self.state_shardings)
    self.restored = self.ckpt.restore(self._abstract)
    init_from = self.config.model.get("init_from", "") or ""
    if self.restored is None:
      init = cpu_tuning.init_jit(self.init_state, out_shardings=self.state_shardings)
      self.state, self.data_state, self.start_step = init(rng, inputs, kwargs), None, 0
      if init_from:      # the loaded values, then a fresh optimizer state for them
        params = init_from_lib.load_into(self.state.params, init_from, self.config.model.get("init_from_keys", ""))
        opt_init = cpu_tuning.init_jit(self.tx.init, out_shardings=self.state_shardings.opt_state)
        self.state = self.state.replace(params=params, opt_state=opt_init(params))
    else:
      self.start_step, self.state, self.data_state, _ = self.restored
      if jax.process_index() == 0:
        print(f"mmjax: resumed from {self.ckpt.directory}/{self.start_step}"
              f"{' (model.init_from is ignored when resuming)' if init_from else ''}", flush=True)
    self.num_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    if jax.process_index() == 0 and self.config.print_sharding:
      print(f"mmjax: train state placement on mesh {dict(self.mesh.shape)}\n"
            f"{sharding.sharding_table(abstract, self.state_shardings)}", flush=True)

  def init_params(self, seed: int):
    """The model's parameters at initialisation with `seed`, as a fresh run of this config with `seed` starts
    (before model.init_from is applied): e.g. the random-init baselines of a report."""
    inputs, kwargs = self._init_inputs
    init = cpu_tuning.init_jit(self.init_state, out_shardings=self.state_shardings)
    return init(jax.random.PRNGKey(seed), inputs, kwargs).params

  def meta(self) -> dict[str, Any]:
    return {"config": ckpt_lib.config_json(self.config),
            "tokenizer": self.tokenizer.to_json() if self.tokenizer is not None else None}

  # ---------------------------------------------------------------- train
  def train(self, guard: PreemptionGuard | None = None) -> dict[str, float]:
    """Trains to config.total_steps (resuming), evaluating on the way; returns the last evaluation.

    `guard`: an already-entered PreemptionGuard (`mmjax.main` enters one before building the Trainer, so that a
    signal during start-up or compilation also stops the run cleanly); by default one is entered here.
    The loop body is `mmjax.train.run.train`, with this Trainer as its `Task` (the hooks below).
    """
    config, mesh = self.config, self.mesh
    step_fn = make_train_step(self.objective, self.model, self.tx, self.schedule,
                              grad_accum_steps=config.grad_accum_steps, mesh=mesh)
    replicated = sharding.replicated(mesh)
    self._step_fn = jax.jit(step_fn, in_shardings=(self.state_shardings, sharding.batch_sharding(mesh)),
                            out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
    data = pipeline.make_train_iterator(
        config.data, self.tokenizer, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    if self.data_state is not None:
      data.set_state(self.data_state)
    self._data = data
    results = run_lib.train(self, guard)
    counts = pipeline.data_counters(data)
    if counts and jax.process_index() == 0:
      dropped = (f", and {counts['data_dropped']} rows without a path or caption dropped when the file was read"
                 if counts.get("data_dropped") else "")
      print(f"mmjax: data: {counts['data_bad']} bad examples skipped of {counts['data_seen']} read{dropped} (this "
            f"process; train/data_bad in metrics.jsonl)", flush=True)
    return results

  # The Task hooks (mmjax/train/task.py) of the loop body.
  unit = "step"

  @property
  def eval_every(self) -> int:
    return self.config.eval_every

  def context(self):
    return jax.set_mesh(self.mesh)

  def next_input(self, step: int, last_saved: int | None) -> tuple[Any, float]:
    """The next batch, checked against the element spec the model was initialised for and placed on the mesh, and
    its fingerprint."""
    local = self._next_batch(self._data, step, last_saved)
    check_batch(local, self._batch_spec, step)
    return sharding.global_batch(local, self.mesh), fingerprint(local)

  def train_step(self, state, batch):
    return self._step_fn(state, batch)

  def input_state(self, step: int):
    return self._data.get_state()

  def row(self, step: int, fp: float) -> dict[str, float]:
    return {"batch_fingerprint": fp}

  def rate(self, n: int, elapsed: float) -> dict[str, float]:
    return {"steps_per_s": n / max(elapsed, 1e-9), **pipeline.data_counters(self._data)}

  def progress(self, metrics) -> dict[str, float]:
    return {"loss": float(metrics["loss"]), "lr": float(metrics["lr"])}

  def nonfinite_message(self, step: int, m, where: str) -> str:
    return (f"non-finite loss at step {step} (loss={float(m['loss'])}, grad_norm={float(m['grad_norm'])}); "
            f"stopped, {where}; lower optim.lr or set optim.clip_grad_norm")

  def eval_state(self, state, step: int, writer: MetricWriter) -> dict[str, float]:
    return self.run_evals(state.params, step, writer)

  def _next_batch(self, data, step: int, last_saved: int | None) -> dict:
    """The next batch; a failing data worker (an exception, or a worker process that died) stops the run with
    one line naming the step and the example (the checkpoints are left as they are)."""
    try:
      return next(data)
    except MmjaxError as e:
      raise MmjaxError(f"data pipeline failed at step {step + 1}: {e}; {self._ckpt_hint(last_saved)}") from None
    except Exception as e:  # grain: "Worker process was terminated unexpectedly with exit code N", ...
      raise MmjaxError(f"data pipeline failed at step {step + 1} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); {self._ckpt_hint(last_saved)}") from None

  def _ckpt_hint(self, last_saved: int | None) -> str:
    return (f"the last checkpoint is step {last_saved} in {self.ckpt.directory}; fix the data and rerun to "
            f"resume" if last_saved else "no checkpoint was written")

  # ---------------------------------------------------------------- eval
  def run_evals(self, params, step: int, writer: MetricWriter | None = None) -> dict[str, float]:
    results = eval_runner.run(self.config, params, model=self.model, tokenizer=self.tokenizer, mesh=self.mesh,
                              workdir=self.workdir)
    if writer is not None and results:
      writer.write(step, results, prefix="eval")
      writer.write_summary(results, prefix=f"eval (step {step})")
    return results

  def evaluate(self, best: bool = False) -> dict[str, float]:
    """Scores the latest checkpoint; without one, the model.init_from parameters (e.g. an imported OpenCLIP).
    `best`: the checkpoint that config.select_best kept (workdir/best.json) instead."""
    if best:
      step = best_lib.best_step(self.workdir)
      params = self.ckpt.restore(self._abstract, step=best_lib.check_kept(self.ckpt, step))[1].params
    elif self.restored is None and not self.config.model.get("init_from", ""):
      raise MmjaxError(f"no checkpoint in {self.ckpt.directory} to evaluate; train first (--mode train) or set "
                       f"model.init_from")
    else:
      step, params = self.start_step, self.state.params
    with MetricWriter(self.workdir, total_steps=0, enabled=jax.process_index() == 0, progress_bar=False) as writer:
      return self.run_evals(params, step, writer)
