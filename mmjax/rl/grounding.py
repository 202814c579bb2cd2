"""Grounding evaluation: does the agent follow the instruction?

`success_rate` runs `num_episodes` episodes in parallel (one `vmap` over environments, a `lax.scan` over
`max_steps` steps, episodes that ended are frozen) and returns their success rate, mean return and mean length.
Conditions (same trained agent): seen compositions (the "train" split's targets), held-out compositions (colour-
shape pairs never named in training), and either with the instruction masked (every token replaced by padding).
Policy: "greedy" (argmax of the logits) or "sampled" (from the softmax).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _act(network, params, obs, key, greedy, mask):
  """Actions [B]; `greedy` and `mask` may be traced booleans (one compiled evaluator serves every condition)."""
  tokens = jnp.where(mask, jnp.zeros_like(obs["tokens"]), obs["tokens"])
  logits, _ = network.apply({"params": params}, obs["image"], tokens)
  return jnp.where(greedy, jnp.argmax(logits, axis=-1), jax.random.categorical(key, logits))


def _evaluator(env, network, num_episodes: int):
  """The jitted episode runner for (env, network, num_episodes), built once and kept on the env."""
  cache = env.__dict__.setdefault("_eval_cache", {})
  key = (id(network), num_episodes)
  if key in cache:
    return cache[key][1]

  @jax.jit
  def run(params, k_reset, k_run, mask, greedy):
    obs, state = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))

    def body(carry, key):
      obs, state, alive, ret, length, success = carry
      action = _act(network, params, obs, key, greedy, mask)
      obs, state, reward, done, info = jax.vmap(env.step)(jax.random.split(key, num_episodes), state, action)
      ret = ret + jnp.where(alive, reward, 0.0)
      length = length + alive.astype(jnp.int32)
      success = success | (alive & info["success"])
      return (obs, state, alive & ~done, ret, length, success), None

    z = jnp.zeros(num_episodes)
    carry = (obs, state, jnp.ones(num_episodes, bool), z, z.astype(jnp.int32), z.astype(bool))
    (_, _, alive, ret, length, success), _ = jax.lax.scan(body, carry, jax.random.split(k_run, env.cfg.max_steps))
    return success, ret, length, alive

  cache[key] = (network, run)       # keeps the network alive so its id is not reused
  return run


def success_rate(env, network, params, key: jax.Array, num_episodes: int, *, mask_instruction: bool = False,
                 greedy: bool = True) -> dict[str, float]:
  """{"success", "return", "length"} averaged over `num_episodes` episodes of `env` (one per environment)."""
  k_reset, k_run = jax.random.split(key)
  run = _evaluator(env, network, num_episodes)
  success, ret, length, alive = jax.device_get(run(params, k_reset, k_run, jnp.asarray(mask_instruction),
                                                   jnp.asarray(greedy)))
  assert not alive.any(), "every episode ends within max_steps"
  return {"success": float(np.mean(success)), "return": float(np.mean(ret)), "length": float(np.mean(length))}


def grounding_report(envs: dict, network, params, key: jax.Array, num_episodes: int,
                     policies=("greedy",)) -> dict[str, float]:
  """Success of one agent on every split in `envs` ({"seen": env, "held_out": env}), with and without the
  instruction, for each policy: keys "<policy>/<split>_success", "<policy>/<split>_masked_success", ..."""
  out = {}
  for policy in policies:
    for i, (split, env) in enumerate(envs.items()):
      for masked in (False, True):
        k = jax.random.fold_in(key, i)      # the same episodes with and without the instruction
        r = success_rate(env, network, params, k, num_episodes, mask_instruction=masked, greedy=policy == "greedy")
        name = f"{policy}/{split}{'_masked' if masked else ''}"
        out[f"{name}_success"] = r["success"]
        out[f"{name}_length"] = r["length"]
  return out


def record_episode(env, network, params, key: jax.Array, *, mask_instruction: bool = False, greedy: bool = True):
  """One episode for figures: (frames uint8 [T+1, H, W, 3], actions [T], rewards [T], success bool, instruction)."""
  from mmjax.rl.envs.shapes_world import decode
  k_reset, key = jax.random.split(key)
  obs, state = env.reset(k_reset)
  frames, actions, rewards, success = [np.asarray(obs["image"])], [], [], False
  act = jax.jit(lambda p, o, k: _act(network, p, jax.tree.map(lambda x: x[None], o), k, jnp.asarray(greedy),
                                     jnp.asarray(mask_instruction)))
  step = jax.jit(env.step)
  for _ in range(env.cfg.max_steps):
    key, k = jax.random.split(key)
    a = act(params, obs, k)[0]
    obs, state, reward, done, info = step(k, state, a)
    frames.append(np.asarray(obs["image"]))
    actions.append(int(a))
    rewards.append(float(reward))
    if bool(done):
      success = bool(info["success"])
      break
  return np.stack(frames), actions, rewards, success, decode(state.tokens)
