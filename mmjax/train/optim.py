"""Optimizer: AdamW (Loshchilov & Hutter 2019) with warmup + cosine, masked weight decay, global-norm clipping,
parameter clamps applied after the update (OpenCLIP's `logit_scale.clamp_(0, log 100)` after `optimizer.step()`)
and frozen parameters (`optim.frozen`: no update, no optimizer state)."""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mmjax.errors import MmjaxError


def path_str(path) -> str:
  """'/'-joined parameter path, e.g. 'vision/blocks_0/attn/qkv/kernel'."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def decay_mask(params: Any, no_decay_regex: str) -> Any:
  """True where weight decay applies: matrices and kernels, not biases, norms, temperature, 1-D tokens.

  Mirrors open_clip's rule (no decay for ndim < 2 or names of norms/biases/logit_scale).
  """
  pattern = re.compile(no_decay_regex)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x.ndim >= 2 and not pattern.search(path_str(p)), params)


def clamp_params(rules) -> optax.GradientTransformation:
  """Keeps every parameter whose path matches a rule's regex inside [lo, hi] after the update.

  rules: ((regex, lo, hi), ...), first match wins (config `optim.clamp`; default: logit_scale in [0, log 100], as
  OpenCLIP clamps its parameter after each optimizer step, so a saturated temperature keeps the loss's full
  gradient and momentum cannot carry it past the bound). The last transform of the chain: where p + u leaves
  [lo, hi] the update becomes clip(p + u) - p (p + that is the bound exactly for p within a factor 2 of it);
  elsewhere the update is unchanged, bit for bit.
  """
  compiled = [(re.compile(regex), float(lo), float(hi)) for regex, lo, hi in rules]

  def update_fn(updates, state, params=None):
    if params is None:
      raise MmjaxError("optim.clamp needs the parameters: call tx.update(grads, opt_state, params)")

    def one(path, u, p):
      name = path_str(path)
      for regex, lo, hi in compiled:
        if regex.search(name):
          new = (p + u).astype(p.dtype)
          bounded = jnp.clip(new, lo, hi)
          return jnp.where(bounded == new, u, (bounded - p).astype(u.dtype))
      return u

    return jax.tree_util.tree_map_with_path(one, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def freeze(tx: optax.GradientTransformation, frozen_regex: str) -> optax.GradientTransformation:
  """`tx` for the parameters whose path does not match `frozen_regex` (re.search); the matching ones get a zero
  update and no optimizer state (optax.multi_transform: `tx` is initialised on the other leaves only, so AdamW
  allocates no moments for a frozen tower; gradient clipping, weight decay and clamps see only trainable leaves,
  as in torch, where a parameter with requires_grad=False has no .grad). LiT (Zhai et al. 2022): "^vision/".
  An update of 0 leaves a parameter bitwise unchanged (x + 0.0 == x for every finite x but -0.0)."""
  pattern = re.compile(frozen_regex)

  def labels(params):
    lab = jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if pattern.search(path_str(p)) else "train", params)
    kinds = set(jax.tree.leaves(lab))
    if "frozen" not in kinds:
      first = path_str(jax.tree_util.tree_flatten_with_path(params)[0][0][0])
      raise MmjaxError(f"config key optim.frozen={frozen_regex!r} matches no parameter (paths look like "
                       f"{first!r}); fix the regex or set optim.frozen=''")
    if "train" not in kinds:
      raise MmjaxError(f"config key optim.frozen={frozen_regex!r} matches every parameter: nothing would train")
    return lab

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr`, then cosine to `lr * end_lr_factor` at `total_steps` (or constant)."""
  lr = optim_cfg.lr
  warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
  if optim_cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=lr * optim_cfg.end_lr_factor)
  if optim_cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  raise MmjaxError(f"unknown optim.schedule {optim_cfg.schedule!r}; use 'cosine' or 'constant'")


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (tx, schedule). `optim.name` is 'adamw' (decoupled decay) or 'sgd' (momentum b1)."""
  schedule = make_schedule(optim_cfg, total_steps)
  mask = lambda params: decay_mask(params, optim_cfg.no_decay_regex)
  if optim_cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                      weight_decay=optim_cfg.weight_decay, mask=mask)
  elif optim_cfg.name == "sgd":
    opt = optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay, mask),
                      optax.sgd(schedule, momentum=optim_cfg.b1))
  else:
    raise MmjaxError(f"unknown optim.name {optim_cfg.name!r}; use 'adamw' or 'sgd'")
  parts = [optax.clip_by_global_norm(optim_cfg.clip_grad_norm)] if optim_cfg.clip_grad_norm else []
  clamp = tuple(optim_cfg.get("clamp", ()) or ())
  tx = optax.chain(*parts, opt, *([clamp_params(clamp)] if clamp else []))
  frozen = optim_cfg.get("frozen", "") or ""
  return (freeze(tx, frozen) if frozen else tx), schedule
