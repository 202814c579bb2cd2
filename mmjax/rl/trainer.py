"""PPOTrainer: the RL counterpart of `mmjax.train.loop.Trainer` (same workdir layout, checkpoints, metrics,
progress bar and preemption handling, with the helpers of mmjax/train/workdir.py and preemption.py; it does not
import the loop), chosen by `mmjax.trainers.make_trainer` when the config says `trainer = "ppo"`.

One training step = one jitted PPO update (`mmjax.rl.ppo.PPO.update`: rollout of num_envs x num_steps
environment steps + epochs of minibatch updates). The checkpoint holds the whole `Runner` (parameters, optimiser
state, environment states, observations, rng), so a resumed run continues exactly. Evaluation: the grounding
report (`mmjax.rl.grounding`): success on seen and held-out compositions, with and without the instruction.
"""
from __future__ import annotations

import json
import os

import jax

from mmjax import config as config_lib
from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.rl.config import rl_config
from mmjax.rl.envs.shapes_world import NUM_ACTIONS, WORDS, ShapesWorld, config_from
from mmjax.rl.grounding import grounding_report
from mmjax.rl.networks import ActorCritic
from mmjax.rl.ppo import PPO, PPOConfig
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train.metrics import MetricWriter, StepTimer
from mmjax.train.preemption import Preempted, PreemptionGuard, stop_requested
from mmjax.train.workdir import atomic_write, check_workdir


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
    self.restored = self.ckpt.restore(ckpt_lib.abstract_like(abstract, jax.tree.map(lambda _: device, abstract)))
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
    config = self.config
    atomic_write(os.path.join(self.workdir, "config.json"), json.dumps(json.loads(self.meta()["config"]), indent=1))
    writer = MetricWriter(self.workdir, total_steps=config.total_steps, progress_bar=config.progress_bar,
                          initial_step=self.start_step)
    runner, results, pending = self.runner, {}, []
    last_saved = self.start_step if self.restored is not None else None
    if self.start_step >= config.total_steps:
      print(f"mmjax: {self.workdir} already finished {self.start_step} updates (total_steps={config.total_steps}); "
            f"evaluating the last checkpoint", flush=True)
    own_guard = guard is None
    guard = PreemptionGuard().__enter__() if own_guard else guard
    timer = StepTimer()
    try:
      for step in range(self.start_step, config.total_steps):
        runner, metrics = self.algo.update(runner)
        pending.append((step + 1, metrics))
        if len(pending) >= 2:
          jax.block_until_ready(pending[-2][1]["loss"])
        done = step + 1
        writer.update_progress(done)
        last = done == config.total_steps
        if done % config.log_every == 0 or last:
          self._flush(pending, writer, last_saved, timer)
        if done % config.checkpoint_every == 0 or last:
          self._flush(pending, writer, last_saved, timer)
          with timer.excluded():            # env_steps_per_s counts the updates' time, not the checkpoint's
            self.ckpt.save(done, runner, {"env_steps": done * self.env_steps_per_update}, self.meta())
          last_saved = done
        if stop_requested(guard, done, config.preemption_check_every):   # all processes stop after one step
          self._flush(pending, writer, last_saved, timer)
          if last_saved != done:
            self.ckpt.save(done, runner, {"env_steps": done * self.env_steps_per_update}, self.meta())
          self.ckpt.close()
          writer.close()
          raise Preempted(f"preempted by {guard.signal_name} at update {done}; checkpoint saved to "
                          f"{self.ckpt.directory}/{done}; rerun the same command to resume", step=done,
                          signal_name=guard.signal_name or "SIGTERM")
      self.runner = runner
      results = self.run_evals(runner.params, config.total_steps if config.total_steps > self.start_step
                               else self.start_step, writer)
    finally:
      if own_guard:
        guard.__exit__(None, None, None)
    self.ckpt.close()
    writer.close()
    return results

  def _flush(self, pending, writer: MetricWriter, last_saved, timer: StepTimer) -> None:
    """As the supervised loop's `_flush`: writes the buffered updates' metrics (env_steps_per_s over `timer.lap()`)."""
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    elapsed = timer.lap()
    for (step, _), m in zip(pending, fetched):
      if not m["finite"]:
        self.ckpt.wait()
        where = (f"the last good checkpoint is step {last_saved} in {self.ckpt.directory}" if last_saved
                 else "no checkpoint was written")
        raise MmjaxError(f"non-finite PPO loss at update {step}; stopped, {where}; lower ppo.lr")
    n = len(pending)
    for (step, _), m in zip(pending, fetched):
      row = {k: float(v) for k, v in m.items() if k != "finite"}
      row["env_steps"] = step * self.env_steps_per_update
      if step == pending[-1][0]:
        row["env_steps_per_s"] = n * self.env_steps_per_update / max(elapsed, 1e-9)
      writer.write(step, row, prefix="train")
    last = fetched[-1]
    writer.update_progress(pending[-1][0], {"success": float(last["success_rate"]), "loss": float(last["loss"])})
    pending.clear()

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

  def evaluate(self) -> dict[str, float]:
    if self.restored is None:
      raise MmjaxError(f"no checkpoint in {self.ckpt.directory} to evaluate; train first (--mode train)")
    with MetricWriter(self.workdir, total_steps=0, progress_bar=False) as writer:
      return self.run_evals(self.runner.params, self.start_step, writer)
