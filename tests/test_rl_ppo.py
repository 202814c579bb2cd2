"""PPO (mmjax/rl/ppo.py): GAE and the loss terms (clipped ratio, value loss, entropy) against a NumPy reference
on fixed inputs; one jitted update of a tiny agent runs, stays finite and changes the parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.rl import ppo


def _np_gae(rewards, values, dones, last_value, gamma, lam):
  t_max, n = rewards.shape
  adv = np.zeros((t_max, n))
  for e in range(n):
    running = 0.0
    for t in reversed(range(t_max)):
      next_v = last_value[e] if t == t_max - 1 else values[t + 1, e]
      nonterminal = 1.0 - dones[t, e]
      delta = rewards[t, e] + gamma * next_v * nonterminal - values[t, e]
      running = delta + gamma * lam * nonterminal * running
      adv[t, e] = running
  return adv, adv + values


def test_gae_matches_numpy_loop():
  rng = np.random.default_rng(0)
  r, v = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
  d = rng.random((7, 3)) < 0.3
  last = rng.normal(size=3)
  adv, ret = ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), jnp.asarray(last), 0.97, 0.9)
  want_adv, want_ret = _np_gae(r, v, d.astype(float), last, 0.97, 0.9)
  np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-6)
  # lambda = 1, no terminals: the advantage is the discounted return minus the value (a closed form)
  adv1, _ = ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.zeros((7, 3), bool), jnp.asarray(last), 0.9, 1.0)
  disc = sum(0.9 ** k * r[k] for k in range(7)) + 0.9 ** 7 * last
  np.testing.assert_allclose(adv1[0], disc - v[0], rtol=1e-5)


def test_policy_loss_matches_numpy():
  rng = np.random.default_rng(1)
  logp, old = rng.normal(-1.5, 0.4, 64), rng.normal(-1.5, 0.4, 64)
  adv = rng.normal(size=64)
  ratio = np.exp(logp - old)
  want = -np.mean([min(r * a, np.clip(r, 0.8, 1.2) * a) for r, a in zip(ratio, adv)])
  np.testing.assert_allclose(ppo.policy_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2), want,
                             rtol=1e-5)
  assert np.any(np.abs(ratio - 1) > 0.2)       # the clip is exercised on these inputs
  # hand case: ratio 2 with A > 0 is capped at 1.2 A; ratio 0.5 with A < 0 is capped at 0.8 A
  got = ppo.policy_loss(jnp.log(jnp.asarray([2.0, 0.5])), jnp.zeros(2), jnp.asarray([1.0, -1.0]), 0.2)
  np.testing.assert_allclose(got, -np.mean([1.2, -0.8]), rtol=1e-6)


@pytest.mark.parametrize("clip", [True, False])
def test_value_loss_matches_numpy(clip):
  rng = np.random.default_rng(2)
  v, old, ret = rng.normal(size=50), rng.normal(size=50), rng.normal(size=50)
  if clip:
    vc = old + np.clip(v - old, -0.2, 0.2)
    want = 0.5 * np.mean(np.maximum((v - ret) ** 2, (vc - ret) ** 2))
  else:
    want = 0.5 * np.mean((v - ret) ** 2)
  np.testing.assert_allclose(ppo.value_loss(jnp.asarray(v), jnp.asarray(old), jnp.asarray(ret), 0.2, clip), want,
                             rtol=1e-5)


def test_entropy_matches_numpy():
  logits = np.random.default_rng(3).normal(size=(10, 4)) * 3
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(ppo.entropy(jnp.asarray(logits)), np.mean(-np.sum(p * np.log(p), -1)), rtol=1e-5)
  np.testing.assert_allclose(ppo.entropy(jnp.zeros((2, 4))), np.log(4), rtol=1e-6)   # uniform: log A


@pytest.mark.slow
def test_one_update_runs_and_moves_params():
  from mmjax.rl.envs.shapes_world import NUM_ACTIONS, WORDS, ShapesWorld, WorldConfig
  from mmjax.rl.networks import ActorCritic
  env = ShapesWorld(WorldConfig(grid=4, cell_px=3, num_distractors=2, max_steps=6))
  net = ActorCritic(NUM_ACTIONS, len(WORDS), 3, channels=4, text_width=8, hidden=16)
  algo = ppo.PPO(env, net, ppo.PPOConfig(num_envs=8, num_steps=4, num_epochs=2, num_minibatches=2), 10)
  runner = algo.init(jax.random.PRNGKey(0))
  before = jax.tree.map(np.asarray, runner.params)
  runner, metrics = algo.update(runner)
  assert int(runner.step) == 1
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert 0 <= float(metrics["success_rate"]) <= 1 and float(metrics["entropy"]) <= np.log(4) + 1e-5
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), runner.params, before)
  assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_trainer_checkpoints_resumes_and_evaluates(tmp_path):
  """experiments/rl_shapes_world.py:runlocal through PPOTrainer: 2 updates, a checkpoint, metrics rows; a second
  trainer on the same workdir resumes at update 2 with the same parameters and only evaluates."""
  import os

  from conftest import ROOT, read_jsonl
  from mmjax import config as config_lib
  from mmjax.errors import MmjaxError
  from mmjax.rl.trainer import PPOTrainer
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "rl_shapes_world.py"), "runlocal")
  trainer = PPOTrainer(config, str(tmp_path))
  results = trainer.train()
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
  assert set(results) >= {"greedy/seen_success", "greedy/held_out_masked_success", "sampled/held_out_success"}
  assert all(0.0 <= results[k] <= 1.0 for k in results if k.endswith("_success"))
  again = PPOTrainer(config, str(tmp_path))
  assert again.start_step == 2
  jax.tree.map(np.testing.assert_array_equal, again.runner.params, trainer.runner.params)
  assert again.evaluate()["greedy/seen_success"] == results["greedy/seen_success"]   # same fixed eval episodes
  with config.unlocked():
    config.ppo.lrr = 1.0
  with pytest.raises(MmjaxError, match="ppo.lrr"):
    PPOTrainer(config, str(tmp_path / "other"))
