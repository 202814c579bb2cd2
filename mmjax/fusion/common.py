"""Helpers shared by the fusion modules: input checks, vectors <-> token sequences, pooling.

Every fusion takes `features`, a sequence of M arrays, one per modality: vectors `[B, D_m]` or token
sequences `[B, T_m, D_m]` (B equal for all).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError


def check_features(features: Sequence[jax.Array], fusion: str, *, min_modalities: int = 2,
                   max_modalities: int | None = None, ranks: tuple[int, ...] = (2, 3)) -> list[jax.Array]:
  """Validates the modality list of fusion `fusion`; returns it as a list. Raises MmjaxError naming the problem."""
  features = list(features)
  m = len(features)
  if m < min_modalities or (max_modalities is not None and m > max_modalities):
    want = f"{min_modalities}" if max_modalities == min_modalities else (
        f"at least {min_modalities}" if max_modalities is None else f"{min_modalities} to {max_modalities}")
    raise MmjaxError(f"fusion {fusion!r} takes {want} modalities, got {m}; check config key model.modalities")
  batch = {int(x.shape[0]) for x in features}
  if len(batch) > 1:
    raise MmjaxError(f"fusion {fusion!r}: modalities have different batch sizes {[x.shape[0] for x in features]}")
  for i, x in enumerate(features):
    if x.ndim not in ranks:
      raise MmjaxError(f"fusion {fusion!r}: modality {i} has shape {tuple(x.shape)}; expected rank "
                       f"{' or '.join(map(str, ranks))} ([B, D] vectors or [B, T, D] tokens)")
  return features


def as_tokens(x: jax.Array) -> jax.Array:
  """[B, D] -> [B, 1, D]; [B, T, D] unchanged."""
  return x[:, None, :] if x.ndim == 2 else x


def pool_tokens(x: jax.Array, pool: str, fusion: str) -> jax.Array:
  """[B, T, D] -> [B, D] ("mean", "last", "first") or unchanged ("none")."""
  if pool == "mean":
    return jnp.mean(x, axis=1)
  if pool == "last":
    return x[:, -1]
  if pool == "first":
    return x[:, 0]
  if pool == "none":
    return x
  raise MmjaxError(f"fusion {fusion!r}: unknown pool {pool!r}; use 'mean', 'last', 'first' or 'none'")


def sinusoidal_positions(length: int, width: int) -> jax.Array:
  """Fixed sine/cosine position table [length, width] (Vaswani et al. 2017, section 3.5)."""
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  half = width // 2
  freq = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  table = jnp.concatenate([jnp.sin(pos * freq), jnp.cos(pos * freq)], axis=-1)
  return jnp.pad(table, ((0, 0), (0, width - 2 * half)))
