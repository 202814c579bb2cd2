"""The RL config schema: every key a `trainer = "ppo"` run may set, with its default (the counterpart of
`mmjax.config.base_config` for the supervised loop; `PPOTrainer` checks configs against it)."""
from __future__ import annotations

import dataclasses

import ml_collections

from mmjax.rl.envs.shapes_world import WorldConfig
from mmjax.rl.ppo import PPOConfig


def rl_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "ppo"
  c.seed = 0
  c.total_steps = 300              # PPO updates (each: num_envs * num_steps environment steps)
  c.log_every = 10
  c.checkpoint_every = 100
  c.keep_checkpoints = 2
  c.progress_bar = True
  c.preemption_check_every = 10    # several processes: agree on a stop signal every this many updates
  c.mask_instruction = False       # True: the agent never sees the instruction (the language-free baseline)
  world = {f.name: f.default for f in dataclasses.fields(WorldConfig)}
  world["colours"], world["shapes"] = ",".join(world["colours"]), ",".join(world["shapes"])
  world["held_out"] = ",".join(f"{c_}:{s}" for c_, s in world["held_out"])
  c.env = ml_collections.ConfigDict(world)
  c.model = ml_collections.ConfigDict(dict(channels=16, text_width=32, hidden=64, fusion="film",
                                           fusion_kwargs=ml_collections.ConfigDict()))
  c.ppo = ml_collections.ConfigDict({f.name: f.default for f in dataclasses.fields(PPOConfig)})
  c.evals = ml_collections.ConfigDict(dict(num_episodes=1000, policies="greedy,sampled", seed=1234))
  return c


def is_rl_config(config) -> bool:
  return "trainer" in config and config.trainer == "ppo"
