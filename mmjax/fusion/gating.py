"""Gated / conditional fusion.

- `GatedMultimodalUnit` (GMU; Arevalo, Solorio, Montes-y-Gómez & González 2017, "Gated Multimodal Units for
  Information Fusion", ICLR workshop): h_m = tanh(W_m x_m); for two modalities z = σ(W_z [x_1; x_2]) and
  h = z h_1 + (1 - z) h_2; for M > 2 the paper's general form z_m = σ(W_zm [x_1; ...; x_M]), h = sum_m z_m h_m.
  `[B, D_m]` -> `[B, features]` (also token-wise on time-aligned `[B, T, D_m]`).
- `NonLocalGate` (MultiBench's "NL-gate", Liang et al. 2021, after section F4 of Wang, Tran & Feiszli 2020, "What
  Makes Training Multi-Modal Classification Networks Hard?", CVPR; the non-local block of Wang et al. 2018):
  queries q [B, Tq, C] from modality 0, keys/values k, v [B, Tk, C] from modality 1,
  out = flatten(q + softmax(q k^T) v) -> `[B, Tq * C]` (no 1/sqrt(C) scaling, as the original). A vector input
  `[B, D]` becomes `tokens` tokens by a Dense to tokens*C; token inputs `[B, T, D]` are projected token-wise to C.
  (MultiBench forms k by a `view(-1, C, Tk)` of the key matrix, i.e. a reshape, not a transpose; here k^T is the
  transpose, as the non-local formula states.)
- `FiLM` (Perez, Strub, de Vries, Dumoulin & Courville 2018, "FiLM: Visual Reasoning with a General Conditioning
  Layer", AAAI): modality 0 (x: `[B, D]`, `[B, T, D]` or `[B, H, W, D]`) is modulated feature-wise by the other
  modalities c (vectors; sequences are mean-pooled, then concatenated): FiLM(x) = γ(c) ⊙ x + β(c), with
  γ = 1 + Δγ(c) so that the layer starts near the identity. Output has the shape of x (after the optional Dense
  to `features`).
"""
from __future__ import annotations

from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.fusion.common import check_features


class GatedMultimodalUnit(nn.Module):
  """GMU: [B, D_m] (M >= 2) -> [B, features]."""
  features: int

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "gmu")
    if len({tuple(x.shape[:-1]) for x in features}) > 1:
      raise MmjaxError(f"fusion 'gmu': modalities must share all axes but the last, got "
                       f"{[tuple(x.shape) for x in features]}")
    hs = [jnp.tanh(nn.Dense(self.features, use_bias=False, name=f"hidden_{i}")(x)) for i, x in enumerate(features)]
    joint = jnp.concatenate(features, axis=-1)
    if len(features) == 2:
      z = jax.nn.sigmoid(nn.Dense(self.features, name="gate")(joint))
      return z * hs[0] + (1.0 - z) * hs[1]
    zs = [jax.nn.sigmoid(nn.Dense(self.features, name=f"gate_{i}")(joint)) for i in range(len(features))]
    return sum(z * h for z, h in zip(zs, hs))


class NonLocalGate(nn.Module):
  """NL-gate: query modality 0, key/value modality 1 -> [B, Tq * channels]."""
  channels: int = 32
  q_tokens: int = 4
  kv_tokens: int = 4

  def _tokens(self, x: jax.Array, tokens: int, name: str) -> jax.Array:
    if x.ndim == 2:
      y = nn.Dense(tokens * self.channels, name=name)(x)
      return einops.rearrange(y, "b (t c) -> b t c", t=tokens)
    return nn.Dense(self.channels, name=name)(x)

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    q_in, kv_in = check_features(features, "nlgate", min_modalities=2, max_modalities=2)
    q = self._tokens(q_in, self.q_tokens, "q_proj")
    k = self._tokens(kv_in, self.kv_tokens, "k_proj")
    v = self._tokens(kv_in, self.kv_tokens, "v_proj")
    scores = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.promote_types(q.dtype, jnp.float32))
    out = q + jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)
    return einops.rearrange(out, "b t c -> b (t c)")


class FiLM(nn.Module):
  """Feature-wise linear modulation of modality 0 by modalities 1..M-1: -> shape of modality 0 (last axis features)."""
  features: int | None = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    x, *conds = check_features(features, "film", ranks=(2, 3, 4))
    for i, c in enumerate(conds):
      if c.ndim == 4:
        raise MmjaxError(f"fusion 'film': conditioning modality {i + 1} has shape {tuple(c.shape)}; give a vector "
                         f"[B, D] or a sequence [B, T, D]")
    if self.features is not None:
      x = nn.Dense(self.features, name="proj")(x)
    c = jnp.concatenate([jnp.mean(c, axis=1) if c.ndim == 3 else c for c in conds], axis=-1)
    d = x.shape[-1]
    gb = nn.Dense(2 * d, name="film_generator")(c)  # [B, 2D]
    gb = gb.reshape(gb.shape[:1] + (1,) * (x.ndim - 2) + (2 * d,))
    dgamma, beta = jnp.split(gb, 2, axis=-1)
    return (1.0 + dgamma) * x + beta
