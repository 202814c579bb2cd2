"""The trainer a config asks for: mmjax.rl's PPOTrainer for `trainer = "ppo"`, else the supervised loop's Trainer
(mmjax/train/loop.py). Both have the same interface: `train(guard)`, `evaluate()`, `start_step`. Kept above both
packages, so that neither imports the other (mmjax.rl.trainer uses mmjax.train's helpers; the loop knows no RL)."""
from __future__ import annotations


def make_trainer(config, workdir: str):
  from mmjax.rl.config import is_rl_config
  if is_rl_config(config):
    from mmjax.rl.trainer import PPOTrainer
    return PPOTrainer(config, workdir)
  from mmjax.train.loop import Trainer
  return Trainer(config, workdir)
