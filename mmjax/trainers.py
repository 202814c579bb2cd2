"""The trainer a config asks for: mmjax.rl's PPOTrainer for `trainer = "ppo"`, else the supervised loop's Trainer
(mmjax/train/loop.py). Both have the same interface: `train(guard)`, `evaluate()`, `start_step`. Kept above both
packages, so that neither imports the other (mmjax.rl.trainer uses mmjax.train's helpers; the loop knows no RL)."""
from __future__ import annotations


def config_schema(config):
  """The keys (with defaults) a config may set: mmjax.rl.config.rl_config for `trainer = "ppo"`, else the
  supervised loop's schema (mmjax.train.loop.config_schema: the base config + the data set's and evaluators' keys)."""
  from mmjax.rl.config import is_rl_config, rl_config
  if is_rl_config(config):
    return rl_config()
  from mmjax.train.loop import config_schema as loop_schema
  return loop_schema(config)


def make_trainer(config, workdir: str):
  from mmjax.rl.config import is_rl_config
  if is_rl_config(config):
    from mmjax.rl.trainer import PPOTrainer
    return PPOTrainer(config, workdir)
  from mmjax.train.loop import Trainer
  return Trainer(config, workdir)
