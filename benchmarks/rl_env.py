"""ShapesWorld environment throughput and PPO-update throughput on this machine (issue 13).

  python benchmarks/rl_env.py [--envs 1,64,1024,4096 --steps 64 --repeats 3 --ppo_updates 3]

Env: `jit(scan over --steps of vmap(env.step_autoreset))` with uniformly random actions over N parallel
environments (the default config of experiments/rl_shapes_world.py: 5x5 grid, 4 px cells, egocentric 36x36x3
uint8 images, rendering included); env_steps_per_s = N * steps / best time of --repeats calls after a compiling
call. PPO: one full jitted update of the experiment's config (rollout + GAE + epochs of minibatch Adam steps),
env_steps_per_s = num_envs * num_steps / best update time. One JSON line per measurement; `loadavg_1min` says
how idle the machine was (the numbers scale with the cores left free by other processes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.rl.envs.shapes_world import ShapesWorld, config_from  # noqa: E402
from mmjax.rl.ppo import PPO, PPOConfig  # noqa: E402
from mmjax.rl.trainer import build_network  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load() -> float:
  return float(open("/proc/loadavg").read().split()[0])


def best_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times)


def bench_env(env, n: int, steps: int, repeats: int) -> dict:
  @jax.jit
  def run(key):
    k_reset, k_run = jax.random.split(key)
    _, state = jax.vmap(env.reset)(jax.random.split(k_reset, n))

    def body(state, key):
      k_act, k_env = jax.random.split(key)
      action = jax.random.randint(k_act, (n,), 0, 4)
      obs, state, reward, done, _ = jax.vmap(env.step_autoreset)(jax.random.split(k_env, n), state, action)
      return state, (jnp.sum(reward), jnp.sum(obs["image"][:, 0, 0, 0].astype(jnp.int32)))
    return jax.lax.scan(body, state, jax.random.split(k_run, steps))[1]

  t = best_time(run, jax.random.PRNGKey(0), repeats=repeats)
  return {"what": "env_step", "num_envs": n, "steps": steps, "seconds": round(t, 4),
          "env_steps_per_s": round(n * steps / t, 1)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--envs", default="1,64,1024,4096")
  ap.add_argument("--steps", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--ppo_updates", type=int, default=3)
  args = ap.parse_args()
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "rl_shapes_world.py"))
  env = ShapesWorld(config_from(config.env))
  common = {"backend": jax.default_backend(), "cpus": os.cpu_count(), "image": list(env.image_shape)}
  for n in [int(x) for x in args.envs.split(",")]:
    print(json.dumps({**bench_env(env, n, args.steps, args.repeats), **common, "loadavg_1min": _load()}), flush=True)
  if args.ppo_updates:
    algo = PPO(env, build_network(config), PPOConfig(**dict(config.ppo)), 100)
    runner = algo.init(jax.random.PRNGKey(0))
    runner, m = algo.update(runner)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.ppo_updates):
      t = time.perf_counter()
      runner, m = algo.update(runner)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    per = config.ppo.num_envs * config.ppo.num_steps
    print(json.dumps({"what": "ppo_update", "num_envs": config.ppo.num_envs, "num_steps": config.ppo.num_steps,
                      "epochs": config.ppo.num_epochs, "minibatches": config.ppo.num_minibatches,
                      "seconds_per_update": round(min(times), 4), "env_steps_per_s": round(per / min(times), 1),
                      **common, "loadavg_1min": _load()}), flush=True)


if __name__ == "__main__":
  main()
