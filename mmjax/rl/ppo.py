"""PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") as ONE jitted update over a vmap of
pure-JAX environments (the PureJaxRL layout: Lu et al. 2022, "Discovered Policy Optimisation").

`PPO(env, network, cfg).update(runner) -> (runner, metrics)`: a `lax.scan` over `num_steps` rollout steps of
`num_envs` environments (`vmap(env.step_autoreset)`), GAE (Schulman et al. 2016) on the [T, E] rollout, then a
`lax.scan` over `num_epochs` epochs of a `lax.scan` over `num_minibatches` shuffled minibatches of the T*E
transitions, each one Adam step on
  L = L_clip + vf_coef * L_value - ent_coef * H,
  L_clip = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)),  r = exp(logp - logp_old)   (A normalised per minibatch)
  L_value = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))   (or unclipped 0.5 (V - R)^2)
  H = mean entropy of the policy.
The loss terms are pure functions (`policy_loss`, `value_loss`, `entropy`, `gae`), tested against NumPy.
Time-outs are treated as terminal (the step count is not observed), as in PureJaxRL.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  num_envs: int = 128
  num_steps: int = 16
  num_epochs: int = 4
  num_minibatches: int = 4
  gamma: float = 0.97
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  clip_value: bool = True
  vf_coef: float = 0.5
  ent_coef: float = 0.01
  lr: float = 1e-3
  anneal_lr: bool = True
  max_grad_norm: float = 0.5
  normalize_advantages: bool = True


# ---------------------------------------------------------------------------------------------- loss terms
def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation on [T, E] arrays; `dones[t]` marks that the episode ended after step t.
  Returns (advantages [T, E], returns = advantages + values [T, E])."""
  def body(carry, xs):
    next_adv, next_value = carry
    r, v, d = xs
    live = 1.0 - d.astype(jnp.float32)
    delta = r + gamma * next_value * live - v
    adv = delta + gamma * lam * live * next_adv
    return (adv, v), adv
  _, adv = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
  return adv, adv + values


def policy_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, clip_eps: float) -> jax.Array:
  """Clipped surrogate objective, as a loss: -mean(min(r A, clip(r, 1-eps, 1+eps) A))."""
  ratio = jnp.exp(logp - old_logp)
  return -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv))


def value_loss(value: jax.Array, old_value: jax.Array, returns: jax.Array, clip_eps: float,
               clip: bool = True) -> jax.Array:
  """0.5 * mean squared error to the returns; with `clip`, the PPO2 pessimistic clipped form."""
  err = jnp.square(value - returns)
  if clip:
    clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    err = jnp.maximum(err, jnp.square(clipped - returns))
  return 0.5 * jnp.mean(err)


def entropy(logits: jax.Array) -> jax.Array:
  """Mean entropy (nats) of the categorical distributions with these logits [..., A]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1))


def ppo_loss(params, apply_fn, batch: dict[str, jax.Array], cfg: PPOConfig) -> tuple[jax.Array, dict]:
  logits, value = apply_fn({"params": params}, batch["image"], batch["tokens"])
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, batch["action"][:, None], axis=-1)[:, 0]
  adv = batch["advantage"]
  if cfg.normalize_advantages:
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
  lp = policy_loss(logp, batch["logp"], adv, cfg.clip_eps)
  lv = value_loss(value, batch["value"], batch["return"], cfg.clip_eps, cfg.clip_value)
  ent = entropy(logits)
  total = lp + cfg.vf_coef * lv - cfg.ent_coef * ent
  ratio = jnp.exp(logp - batch["logp"])
  return total, {"loss": total, "policy_loss": lp, "value_loss": lv, "entropy": ent,
                 "approx_kl": jnp.mean((ratio - 1.0) - (logp - batch["logp"])),
                 "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > cfg.clip_eps).astype(jnp.float32))}


# ---------------------------------------------------------------------------------------------- the update
@flax.struct.dataclass
class Runner:
  """Everything the update carries (and a checkpoint stores): a pure pytree."""
  step: jax.Array          # int32 [] updates done
  params: Any
  opt_state: Any
  env_state: Any           # [E, ...] environment states
  obs: Any                 # [E, ...] current observations
  ep_return: jax.Array     # float32 [E] return so far of each running episode
  rng: jax.Array


class PPO:
  """Builds `init(rng) -> Runner` and the jitted `update(runner) -> (runner, metrics)`."""

  def __init__(self, env, network, cfg: PPOConfig, total_updates: int):
    self.env, self.network, self.cfg, self.total_updates = env, network, cfg, total_updates
    batch = cfg.num_envs * cfg.num_steps
    if batch % cfg.num_minibatches:
      from mmjax.errors import MmjaxError
      raise MmjaxError(f"config keys ppo.num_envs * ppo.num_steps = {batch} is not divisible by "
                       f"ppo.num_minibatches={cfg.num_minibatches}")
    steps = max(total_updates * cfg.num_epochs * cfg.num_minibatches, 1)
    lr = optax.linear_schedule(cfg.lr, 0.0, steps) if cfg.anneal_lr else cfg.lr
    self.lr = lr
    self.tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5))
    self.update = jax.jit(self._update)

  def init_params(self, rng: jax.Array):
    obs, _ = self.env.reset(jax.random.PRNGKey(0))
    return self.network.init(rng, obs["image"][None], obs["tokens"][None])["params"]

  def init(self, rng: jax.Array) -> Runner:
    k_params, k_env, rng = jax.random.split(rng, 3)
    params = self.init_params(k_params)
    obs, env_state = jax.vmap(self.env.reset)(jax.random.split(k_env, self.cfg.num_envs))
    return Runner(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                  env_state=env_state, obs=obs, ep_return=jnp.zeros(self.cfg.num_envs, jnp.float32), rng=rng)

  def _rollout(self, runner: Runner):
    cfg, env = self.cfg, self.env

    def env_step(carry, _):
      env_state, obs, ep_return, rng = carry
      rng, k_act, k_env = jax.random.split(rng, 3)
      logits, value = self.network.apply({"params": runner.params}, obs["image"], obs["tokens"])
      action = jax.random.categorical(k_act, logits)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
      next_obs, env_state, reward, done, info = jax.vmap(env.step_autoreset)(
          jax.random.split(k_env, cfg.num_envs), env_state, action)
      ep_return = ep_return + reward
      tr = {"image": obs["image"], "tokens": obs["tokens"], "action": action, "logp": logp, "value": value,
            "reward": reward, "done": done, "success": info["success"], "length": info["length"],
            "ep_return": ep_return}
      return (env_state, next_obs, jnp.where(done, 0.0, ep_return), rng), tr

    (env_state, obs, ep_return, rng), traj = jax.lax.scan(
        env_step, (runner.env_state, runner.obs, runner.ep_return, runner.rng), None, cfg.num_steps)
    return env_state, obs, ep_return, rng, traj

  def _update(self, runner: Runner) -> tuple[Runner, dict[str, jax.Array]]:
    cfg = self.cfg
    env_state, obs, ep_return, rng, traj = self._rollout(runner)
    _, last_value = self.network.apply({"params": runner.params}, obs["image"], obs["tokens"])
    adv, ret = gae(traj["reward"], traj["value"], traj["done"], last_value, cfg.gamma, cfg.gae_lambda)
    keys = ("image", "tokens", "action", "logp", "value")
    data = {k: traj[k] for k in keys}
    data["advantage"], data["return"] = adv, ret
    n = cfg.num_envs * cfg.num_steps
    data = jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), data)
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)

    def minibatch_step(carry, mb):
      params, opt_state = carry
      (_, metrics), grads = grad_fn(params, self.network.apply, mb, cfg)
      updates, opt_state = self.tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, key):
      perm = jax.random.permutation(key, n)
      mbs = jax.tree.map(lambda x: x[perm].reshape((cfg.num_minibatches, -1) + x.shape[1:]), data)
      return jax.lax.scan(minibatch_step, carry, mbs)

    rng, k_perm = jax.random.split(rng)
    (params, opt_state), metrics = jax.lax.scan(epoch, (runner.params, runner.opt_state),
                                                jax.random.split(k_perm, cfg.num_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)
    done = traj["done"].astype(jnp.float32)
    episodes = jnp.sum(done)
    metrics.update(
        episodes=episodes,
        success_rate=jnp.sum(traj["success"] * done) / jnp.maximum(episodes, 1.0),
        episode_return=jnp.sum(traj["ep_return"] * done) / jnp.maximum(episodes, 1.0),
        episode_length=jnp.sum(traj["length"] * done) / jnp.maximum(episodes, 1.0),
        value_mean=jnp.mean(traj["value"]),
        finite=jnp.isfinite(metrics["loss"]))
    runner = Runner(step=runner.step + 1, params=params, opt_state=opt_state, env_state=env_state, obs=obs,
                    ep_return=ep_return, rng=rng)
    return runner, metrics
