"""Multiplicative (tensor) fusion.

- `TensorFusion`: Tensor Fusion Network (Zadeh, Chen, Poria, Cambria & Morency 2017, "Tensor Fusion Network for
  Multimodal Sentiment Analysis", EMNLP): z = vec([h_1; 1] ⊗ [h_2; 1] ⊗ ... ⊗ [h_M; 1]), the outer product of the
  unimodal vectors each extended by a constant 1, so z holds the unimodal, bimodal, ..., M-modal interactions.
  `[B, D_m]` -> `[B, prod_m (D_m + 1)]` (row-major: index (i_1, ..., i_M) -> i_1 (D_2+1)...(D_M+1) + ...);
  with `features` set, a Dense layer (the TFN's first post-fusion layer) maps it to `[B, features]`.
  Leading axes beyond B are kept: `[B, T, D_m]` -> `[B, T, prod (D_m + 1)]`.
- `LowRankFusion`: Low-rank Multimodal Fusion (Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency 2018, "Efficient
  Low-rank Multimodal Fusion with Modality-Specific Factors", ACL): the TFN layer's weight tensor
  W [D_1+1, ..., D_M+1, d] is constrained to sum_r lambda_r ⊗_m W_m^(r), so
  h = sum_r lambda_r prod_m ([h_m; 1] W_m^(r)) + b without ever forming z: `[B, D_m]` -> `[B, d]`.
  Params: `factor_{m}` [R, D_m + 1, d], `rank_weights` [R] (lambda, as the authors' code), `bias` [d].
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.fusion.common import check_features


def append_one(x: jax.Array) -> jax.Array:
  """[..., D] -> [..., D + 1], the vector extended by a constant 1."""
  return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def _check_leading(features: Sequence[jax.Array], fusion: str) -> None:
  lead = {tuple(x.shape[:-1]) for x in features}
  if len(lead) > 1:
    raise MmjaxError(f"fusion {fusion!r}: modalities must share all axes but the last, got "
                     f"{[tuple(x.shape) for x in features]}; pool the sequences first")


def tensor_fusion(features: Sequence[jax.Array]) -> jax.Array:
  """vec(⊗_m [h_m; 1]): [..., D_m] -> [..., prod_m (D_m + 1)] (pure function, no parameters)."""
  z = append_one(features[0])
  for x in features[1:]:
    x = append_one(x)
    z = (z[..., :, None] * x[..., None, :]).reshape(z.shape[:-1] + (z.shape[-1] * x.shape[-1],))
  return z


class TensorFusion(nn.Module):
  """TFN: [B, D_m] (M >= 2) -> [B, prod (D_m + 1)], or [B, features] with the post-fusion Dense."""
  features: int | None = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "tfn")
    _check_leading(features, "tfn")
    z = tensor_fusion(features)
    return z if self.features is None else nn.Dense(self.features, name="post_fusion")(z)


class LowRankFusion(nn.Module):
  """LMF with rank R: [B, D_m] (M >= 2) -> [B, features]."""
  features: int
  rank: int = 4

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "lmf")
    _check_leading(features, "lmf")
    if self.rank < 1:
      raise MmjaxError(f"fusion 'lmf': rank must be >= 1, got {self.rank} (config key model.fusion_kwargs.rank)")
    init = nn.initializers.xavier_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    prod = None
    for i, x in enumerate(features):
      w = self.param(f"factor_{i}", init, (self.rank, x.shape[-1] + 1, self.features), jnp.float32)
      y = jnp.einsum("...i,rio->...ro", append_one(x), w.astype(x.dtype))  # [..., R, d]
      prod = y if prod is None else prod * y
    # torch's xavier_normal_ on the authors' [1, R] fusion_weights: std sqrt(2 / (1 + R)).
    lam = self.param("rank_weights", nn.initializers.normal((2.0 / (1 + self.rank)) ** 0.5), (self.rank,),
                     jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return jnp.einsum("...ro,r->...o", prod, lam.astype(prod.dtype)) + bias.astype(prod.dtype)
