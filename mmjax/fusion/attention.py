"""Attention-based fusion (token level). Inputs: vectors `[B, D_m]` (one token each, or `tokens_per_vector` tokens
by a Dense to tokens*width) or sequences `[B, T_m, D_m]`; each modality is first projected to `width`.

- `CrossAttentionFusion`: the tokens of modality 0 attend to the concatenated tokens of all other modalities
  through `depth` pre-LN cross-attention blocks (Vaswani et al. 2017; as in the cross-attention layers of
  Flamingo / Perceiver). -> `[B, width]` (pool "mean"/"last"/"first") or `[B, T_0, width]` (pool "none").
- `CoAttentionFusion`: the two-stream co-attention of ViLBERT (Lu, Batra, Parikh & Lee 2019, "ViLBERT: Pretraining
  Task-Agnostic Visiolinguistic Representations for Vision-and-Language Tasks", NeurIPS): in every layer each
  stream's queries attend to the *other* stream's keys/values (both computed from the previous layer's states),
  then a self-attention block per stream. Exactly 2 modalities -> `[B, 2 width]` ("concat") or `[B, width]`
  ("product", the element-wise product of the pooled streams ViLBERT uses for its VQA/alignment heads).
- `MulT`: the Multimodal Transformer (Tsai, Bai, Liang, Kolter, Morency & Salakhutdinov 2019, "Multimodal
  Transformer for Unaligned Multimodal Language Sequences", ACL): each modality is embedded (kernel-1 temporal
  conv = Dense to `width`, scaled by sqrt(width), plus sinusoidal positions); for every ordered pair (α -> β) a
  crossmodal transformer of `depth` blocks updates Z (initialised with X_β) by attending from Z to X_α; the
  M - 1 outputs targeting β are concatenated, `[B, T_β, (M-1) width]`, passed through a self-attention transformer
  (`self_depth` blocks) and pooled ("last" time step as MulT, or "mean"); the M results are concatenated:
  `-> [B, M (M-1) width]`.
"""
from __future__ import annotations

import math
from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.fusion.common import check_features, pool_tokens, sinusoidal_positions
from mmjax.layers import LN_EPS, CrossAttention, Mlp, TransformerBlock


def embed_tokens(module: nn.Module, x: jax.Array, width: int, tokens_per_vector: int, name: str) -> jax.Array:
  """[B, D] -> [B, tokens_per_vector, width] (one Dense) or [B, T, D] -> [B, T, width] (token-wise Dense)."""
  if x.ndim == 2:
    y = nn.Dense(tokens_per_vector * width, name=name, parent=module)(x)
    return einops.rearrange(y, "b (t w) -> b t w", t=tokens_per_vector)
  return nn.Dense(width, name=name, parent=module)(x)


def positioned_tokens(module: nn.Module, features: Sequence[jax.Array], width: int, tokens_per_vector: int,
                      scale: float | None = None) -> list[jax.Array]:
  """Each modality's tokens (`embed_tokens`, Dense `proj_{i}`), times `scale` if given, plus sinusoidal positions:
  -> [[B, T_i, width] for each modality i]."""
  out = []
  for i, x in enumerate(features):
    t = embed_tokens(module, x, width, tokens_per_vector, f"proj_{i}")
    t = t if scale is None else t * scale
    out.append(t + sinusoidal_positions(t.shape[1], width).astype(t.dtype))
  return out


class CrossAttentionBlock(nn.Module):
  """Pre-LN cross-attention block: x = x + attn(LN(x), LN(ctx)); x = x + mlp(LN(x)). x [B, Tq, w], ctx [B, Tk, w]."""
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, train: bool = False) -> jax.Array:
    h = nn.LayerNorm(epsilon=LN_EPS, name="ln_q")(x)
    c = nn.LayerNorm(epsilon=LN_EPS, name="ln_kv")(context)
    h = CrossAttention(self.num_heads, name="attn")(h, c)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = Mlp(self.mlp_ratio, name="mlp")(nn.LayerNorm(epsilon=LN_EPS, name="ln_2")(x))
    return x + nn.Dropout(self.dropout, deterministic=not train)(h)


def _check_width(width: int, num_heads: int, fusion: str) -> None:
  if width % num_heads:
    raise MmjaxError(f"fusion {fusion!r}: width {width} is not divisible by num_heads {num_heads} "
                     f"(config keys model.fusion_kwargs.width / num_heads)")


class CrossAttentionFusion(nn.Module):
  """Modality 0 attends to modalities 1..M-1: -> [B, width] or [B, T_0, width]."""
  width: int = 64
  num_heads: int = 4
  depth: int = 1
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  pool: str = "mean"
  tokens_per_vector: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "cross_attention")
    _check_width(self.width, self.num_heads, "cross_attention")
    toks = positioned_tokens(self, features, self.width, self.tokens_per_vector)
    x, context = toks[0], jnp.concatenate(toks[1:], axis=1)
    for i in range(self.depth):
      x = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dropout, name=f"block_{i}")(x, context, train)
    x = nn.LayerNorm(epsilon=LN_EPS, name="ln_post")(x)
    return pool_tokens(x, self.pool, "cross_attention")


class CoAttentionFusion(nn.Module):
  """ViLBERT co-attention over exactly two streams: -> [B, 2 width] (concat) or [B, width] (product)."""
  width: int = 64
  num_heads: int = 4
  depth: int = 1
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  pool: str = "mean"
  combine: str = "concat"
  tokens_per_vector: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "co_attention", min_modalities=2, max_modalities=2)
    _check_width(self.width, self.num_heads, "co_attention")
    if self.combine not in ("concat", "product"):
      raise MmjaxError(f"fusion 'co_attention': unknown combine {self.combine!r}; use 'concat' or 'product'")
    a, b = positioned_tokens(self, features, self.width, self.tokens_per_vector)
    for i in range(self.depth):
      co_a = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dropout, name=f"co_a_{i}")
      co_b = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dropout, name=f"co_b_{i}")
      a, b = co_a(a, b, train), co_b(b, a, train)  # both from the previous layer's states
      a = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"self_a_{i}")(a)
      b = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"self_b_{i}")(b)
    a = pool_tokens(nn.LayerNorm(epsilon=LN_EPS, name="ln_a")(a), self.pool, "co_attention")
    b = pool_tokens(nn.LayerNorm(epsilon=LN_EPS, name="ln_b")(b), self.pool, "co_attention")
    return jnp.concatenate([a, b], axis=-1) if self.combine == "concat" else a * b


class MulT(nn.Module):
  """Pairwise crossmodal transformers + per-target self-attention: M >= 2 -> [B, M (M-1) width]."""
  width: int = 32
  num_heads: int = 4
  depth: int = 2
  self_depth: int = 1
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  pool: str = "last"
  tokens_per_vector: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "mult")
    _check_width(self.width, self.num_heads, "mult")
    m = len(features)
    if ((m - 1) * self.width) % self.num_heads:
      raise MmjaxError(f"fusion 'mult': (M-1)*width = {(m - 1) * self.width} is not divisible by num_heads "
                       f"{self.num_heads}")
    xs = [nn.Dropout(self.dropout, deterministic=not train)(t)
          for t in positioned_tokens(self, features, self.width, self.tokens_per_vector, math.sqrt(self.width))]
    outs = []
    for tgt in range(m):
      zs = []
      for src in range(m):
        if src == tgt:
          continue
        z = xs[tgt]
        for layer in range(self.depth):
          z = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dropout,
                                  name=f"cross_{src}_to_{tgt}_{layer}")(z, xs[src], train)
        zs.append(nn.LayerNorm(epsilon=LN_EPS, name=f"ln_{src}_to_{tgt}")(z))
      h = jnp.concatenate(zs, axis=-1)  # [B, T_tgt, (M-1) width]
      for layer in range(self.self_depth):
        h = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"self_{tgt}_{layer}")(h)
      h = nn.LayerNorm(epsilon=LN_EPS, name=f"ln_self_{tgt}")(h)
      outs.append(pool_tokens(h, self.pool, "mult"))
    return jnp.concatenate(outs, axis=-1)
