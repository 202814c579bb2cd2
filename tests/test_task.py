"""The one loop body (mmjax/train/run.py) and its Task hooks (mmjax/train/task.py): both trainers provide every
hook, and both reach the loop body through mmjax.train.run (PPO without the supervised loop module)."""
from __future__ import annotations

from test_layering import _repo_graph

from mmjax.rl.trainer import PPOTrainer
from mmjax.train.loop import Trainer
from mmjax.train.task import Task

HOOKS = [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]
ATTRIBUTES = ("unit", "eval_every")          # class-level; config, workdir, ckpt, state, ... are set by __init__


def test_both_trainers_provide_every_hook():
  assert {"next_input", "train_step", "eval_state", "context"} <= set(HOOKS)
  for cls in (Trainer, PPOTrainer):
    missing = [n for n in (*HOOKS, *ATTRIBUTES) if not hasattr(cls, n)]
    assert not missing, f"{cls.__name__} lacks Task hooks {missing}"
  assert (Trainer.unit, PPOTrainer.unit) == ("step", "update")


def test_both_trainers_run_the_one_loop_body():
  g = _repo_graph()
  assert "mmjax.train.run" in g["mmjax.train.loop"] and "mmjax.train.run" in g["mmjax.rl.trainer"]
  assert "mmjax.train.loop" not in g["mmjax.rl.trainer"]
  assert not any(d.startswith("mmjax.rl") for d in g["mmjax.train.run"] | g["mmjax.train.task"])
