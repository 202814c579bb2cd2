"""`ArrayTask`: a `Task` (mmjax/train/task.py) over in-memory NumPy arrays, for the report protocols that train small
models on whole splits held in memory (experiments/reports/avmnist.py): epochs of seeded permutations (epoch e's
order is the e-th `np.random.default_rng(config.seed).permutation(n)`; the last partial batch of an epoch is
dropped), a caller-given jitted step and initial state, and an evaluation callback. `mmjax.train.run.train` runs it
with the loop's metrics, checkpoints and best-checkpoint selection (config.select_best): `best_params()` then reads
the selected step back.

    task = ArrayTask(array_config(seed=0, total_steps=e * spe, eval_every=spe, select_best="dev/accuracy"),
                     workdir, state=state, step_fn=step_fn, arrays=train, batch_size=64,
                     evaluate=lambda params: {"dev/accuracy": ...})
    run.train(task)
    params = task.best_params()
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.train import best as best_lib
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train.metrics import MetricWriter
from mmjax.train.workdir import check_workdir


def array_config(*, seed: int, total_steps: int, eval_every: int = 0, select_best: str = "",
                 select_best_mode: str = "max", log_every: int | None = None,
                 checkpoint_every: int | None = None, keep_checkpoints: int = 1) -> ml_collections.ConfigDict:
  """The loop keys an ArrayTask run reads (defaults: log and evaluate per `eval_every`, checkpoint at the end only,
  keep the last checkpoint and the best one)."""
  return ml_collections.ConfigDict(dict(
      seed=seed, total_steps=total_steps, eval_every=eval_every, select_best=select_best,
      select_best_mode=select_best_mode, log_every=log_every or eval_every or total_steps or 1,
      checkpoint_every=checkpoint_every or total_steps or 1, keep_checkpoints=keep_checkpoints,
      progress_bar=False, preemption_check_every=1))


class ArrayTask:
  """The Task of a run over in-memory arrays (see the module docstring); resumes from `workdir` like the trainers."""

  unit = "step"

  def __init__(self, config, workdir: str, *, state, step_fn: Callable, arrays: dict[str, np.ndarray],
               batch_size: int, evaluate: Callable[[Any], dict[str, float]]):
    best_lib.check_config(config)
    check_workdir(workdir)
    self.config, self.workdir, self.eval_every = config, workdir, config.eval_every
    self.arrays, self.batch_size, self.step_fn, self.evaluate = arrays, batch_size, step_fn, evaluate
    self.n = len(next(iter(arrays.values())))
    self.steps_per_epoch = self.n // batch_size
    if self.steps_per_epoch < 1:
      raise MmjaxError(f"batch_size={batch_size} is larger than the {self.n} training examples")
    self.ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.eval_shape(lambda: state)
    self._abstract = ckpt_lib.abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    self.restored = self.ckpt.restore(self._abstract)
    if self.restored is None:
      self.state, self.start_step = state, 0
    else:
      self.start_step, self.state, _, _ = self.restored
    self._order, self._epoch, self._perm = np.random.default_rng(config.seed), -1, None
    self.evals: list[tuple[int, dict[str, float]]] = []     # (step, results) of this process's evaluations
    self.last_metrics: dict[str, Any] | None = None

  # The Task hooks.
  def context(self):
    return contextlib.nullcontext()

  def next_input(self, step: int, last_saved: int | None) -> tuple[dict[str, np.ndarray], None]:
    epoch, s = divmod(step, self.steps_per_epoch)
    while self._epoch < epoch:        # a resumed run replays the orders of the epochs before it
      self._perm, self._epoch = self._order.permutation(self.n), self._epoch + 1
    idx = self._perm[s * self.batch_size:(s + 1) * self.batch_size]
    return {k: v[idx] for k, v in self.arrays.items()}, None

  def train_step(self, state, batch):
    state, self.last_metrics = self.step_fn(state, batch)
    return state, self.last_metrics

  def input_state(self, step: int) -> dict:
    return {"seed": int(self.config.seed), "step": int(step)}     # the order is a function of both

  def row(self, step: int, aux) -> dict[str, float]:
    return {}

  def rate(self, n: int, elapsed: float) -> dict[str, float]:
    return {"steps_per_s": n / max(elapsed, 1e-9)}

  def progress(self, metrics) -> dict[str, float]:
    return {"loss": float(metrics["loss"])}

  def nonfinite_message(self, step: int, m, where: str) -> str:
    return f"non-finite loss at step {step} (loss={float(m['loss'])}); stopped, {where}; lower the learning rate"

  def eval_state(self, state, step: int, writer: MetricWriter) -> dict[str, float]:
    results = {k: float(v) for k, v in self.evaluate(state.params).items()}
    writer.write(step, results, prefix="eval")
    self.evals.append((step, results))
    return results

  def meta(self) -> dict[str, Any]:
    return {"config": ckpt_lib.config_json(self.config), "tokenizer": None}

  # After the run.
  def best_params(self):
    """The parameters of the step config.select_best kept (workdir/best.json)."""
    ckpt = ckpt_lib.Checkpointer(self.workdir, keep=None)
    try:
      step = best_lib.check_kept(ckpt, best_lib.best_step(self.workdir))
      return ckpt.restore(self._abstract, step=step)[1].params
    finally:
      ckpt.close()
