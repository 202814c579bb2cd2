"""PPOTrainer: the RL counterpart of `mmjax.train.loop.Trainer` (same workdir layout, checkpoints, metrics,
progress bar and preemption handling: both run the one loop body, `mmjax.train.run.train`, as its `Task`; it does
not import the supervised loop, and mmjax.train imports nothing of mmjax.rl), chosen by
`mmjax.trainers.make_trainer` when the config says `trainer = "ppo"`.

One training step = one jitted PPO update (`mmjax.rl.ppo.PPO.update`: rollout of num_envs x num_steps
environment steps + epochs of minibatch updates). The checkpoint holds the whole `Runner` (parameters, optimiser
state, environment states, observations, rng), so a resumed run continues exactly. Evaluation: the grounding
report (`mmjax.rl.grounding`): success on seen and held-out compositions, with and without the instruction.
"""
from __future__ import annotations

import contextlib

import jax

from mmjax import config as config_lib
from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.rl.config import rl_config
from mmjax.rl.envs.shapes_world import NUM_ACTIONS, WORDS, ShapesWorld, config_from
from mmjax.rl.grounding import grounding_report
from mmjax.rl.networks import ActorCritic
from mmjax.rl.ppo import PPO, PPOConfig
from mmjax.train import best as best_lib
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train import run as run_lib
from mmjax.train.metrics import MetricWriter
from mmjax.train.preemption import PreemptionGuard
from mmjax.train.workdir import check_workdir


def build_network(config) -> ActorCritic:
  m = config.model
  return ActorCritic(NUM_ACTIONS, len(WORDS), int(config.env.cell_px), channels=m.channels,
                     text_width=m.text_width, hidden=m.hidden, fusion=m.fusion,
                     fusion_kwargs=dict(m.fusion_kwargs) or None, blind=bool(config.mask_instruction))


class PPOTrainer:
  """`train(guard)` runs PPO to config.total_steps updates (resuming); `evaluate()` scores the latest checkpoint."""

  def __init__(self, config, workdir: str):
    config_lib.check_keys(config, rl_config())
    self.world = config_from(config.env)
    try:
      ppo_cfg = PPOConfig(**dict(config.ppo))
    except TypeError as e:
      raise MmjaxError(f"bad config section ppo: {e}") from None
    check_workdir(workdir)
    self.config, self.workdir = config, workdir
    self.env = ShapesWorld(self.world, "train")
    self.eval_envs = {"seen": self.env, "held_out": ShapesWorld(self.world, "held_out")}
    self.network = build_network(config)
    self.algo = PPO(self.env, self.network, ppo_cfg, config.total_steps)
    self.ckpt = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(self.algo.init, rng)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    self._abstract = ckpt_lib.abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    self.restored = self.ckpt.restore(self._abstract)
    if self.restored is None:
      self.runner, self.start_step = cpu_tuning.init_jit(self.algo.init)(rng), 0
    else:
      self.start_step, self.runner, _, _ = self.restored
      print(f"mmjax: resumed from {self.ckpt.directory}/{self.start_step}", flush=True)
    self.num_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    self.env_steps_per_update = ppo_cfg.num_envs * ppo_cfg.num_steps

  def meta(self) -> dict:
    return {"config": ckpt_lib.config_json(self.config), "tokenizer": None, "vocabulary": list(WORDS)}

  def train(self, guard: PreemptionGuard | None = None) -> dict[str, float]:
    """Runs PPO to config.total_steps updates (resuming) through the loop body (mmjax.train.run.train, with this
    trainer as its `Task`), evaluating at the end; returns the evaluation."""
    return run_lib.train(self, guard)

  # The Task hooks (mmjax/train/task.py) of the loop body: one step = one PPO update, no data.
  unit = "update"
  eval_every = 0                        # the grounding report runs at the end only

  @property
  def state(self):
    return self.runner

  @state.setter
  def state(self, runner) -> None:
    self.runner = runner

  def context(self):
    return contextlib.nullcontext()

  def next_input(self, step: int, last_saved: int | None) -> tuple[None, None]:
    return None, None

  def train_step(self, runner, inputs):
    return self.algo.update(runner)

  def input_state(self, step: int) -> dict:
    return {"env_steps": step * self.env_steps_per_update}

  def row(self, step: int, aux) -> dict[str, float]:
    return {"env_steps": step * self.env_steps_per_update}

  def rate(self, n: int, elapsed: float) -> dict[str, float]:
    # env_steps_per_s counts the updates' time, not the checkpoints' (StepTimer)
    return {"env_steps_per_s": n * self.env_steps_per_update / max(elapsed, 1e-9)}

  def progress(self, metrics) -> dict[str, float]:
    return {"success": float(metrics["success_rate"]), "loss": float(metrics["loss"])}

  def nonfinite_message(self, step: int, metrics, where: str) -> str:
    return f"non-finite PPO loss at update {step}; stopped, {where}; lower ppo.lr"

  def eval_state(self, runner, step: int, writer: MetricWriter) -> dict[str, float]:
    return self.run_evals(runner.params, step, writer)

  def run_evals(self, params, step: int, writer: MetricWriter | None = None) -> dict[str, float]:
    ev = self.config.evals
    policies = tuple(p.strip() for p in ev.policies.split(",") if p.strip())
    for p in policies:
      if p not in ("greedy", "sampled"):
        raise MmjaxError(f"config key evals.policies: unknown policy {p!r}; use greedy and/or sampled")
    results = grounding_report(self.eval_envs, self.network, params, jax.random.PRNGKey(ev.seed),
                               int(ev.num_episodes), policies)
    if writer is not None:
      writer.write(step, results, prefix="eval")
      writer.write_summary(results, prefix=f"eval (update {step}, {ev.num_episodes} episodes per condition)")
    return results

  def evaluate(self, best: bool = False) -> dict[str, float]:
    """Scores the latest checkpoint (`best`: the one config.select_best kept, workdir/best.json)."""
    if best:
      step = best_lib.best_step(self.workdir)
      params = self.ckpt.restore(self._abstract, step=best_lib.check_kept(self.ckpt, step))[1].params
    elif self.restored is None:
      raise MmjaxError(f"no checkpoint in {self.ckpt.directory} to evaluate; train first (--mode train)")
    else:
      step, params = self.start_step, self.runner.params
    with MetricWriter(self.workdir, total_steps=0, progress_bar=False) as writer:
      return self.run_evals(params, step, writer)
