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


def _linear_task(workdir, total_steps, spe=3, batch_size=4):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from mmjax.train.arrays import ArrayTask, array_config
  from mmjax.train.state import TrainState
  rng = np.random.default_rng(0)
  x = rng.normal(size=(spe * batch_size + 2, 3)).astype(np.float32)       # 2 left over: dropped each epoch
  arrays = {"x": x, "y": x @ np.asarray([1.0, -2.0, 0.5], np.float32)}
  tx = optax.sgd(0.1)

  @jax.jit
  def step_fn(state, batch):
    def loss_fn(w):
      return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    loss, g = jax.value_and_grad(loss_fn)(state.params)
    updates, opt = tx.update(g, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt),
            {"loss": loss, "finite": jnp.isfinite(loss)})
  w = jnp.zeros(3)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=w, opt_state=tx.init(w), rng=jax.random.PRNGKey(0))
  config = array_config(seed=3, total_steps=total_steps, eval_every=spe, select_best="dev/loss",
                        select_best_mode="min")
  return ArrayTask(config, str(workdir), state=state, step_fn=step_fn, arrays=arrays, batch_size=batch_size,
                   evaluate=lambda p: {"dev/loss": float(jnp.sum((p - jnp.asarray([1.0, -2.0, 0.5])) ** 2))})


def test_array_task_runs_resumes_exactly_and_keeps_the_best(tmp_path):
  """An ArrayTask through the loop body: 3 epochs straight == 1 epoch, then a resumed run to 3 (the epoch orders
  replayed from the seed); the kept best (the lowest dev loss: the last epoch here) is what best_params reads."""
  import numpy as np

  from mmjax.train import run
  straight = _linear_task(tmp_path / "a", 9)
  run.train(straight)
  first = _linear_task(tmp_path / "b", 3)
  run.train(first)
  resumed = _linear_task(tmp_path / "b", 9)
  assert resumed.start_step == 3
  run.train(resumed)
  np.testing.assert_array_equal(np.asarray(straight.state.params), np.asarray(resumed.state.params))
  assert [s for s, _ in straight.evals] == [3, 6, 9] and [s for s, _ in resumed.evals] == [6, 9]
  np.testing.assert_array_equal(np.asarray(straight.best_params()), np.asarray(straight.state.params))
