"""Pre-LN Transformer decoder block with cross-attention (Vaswani et al. 2017, "Attention Is All You Need"),
with an explicit key/value cache for one-token-at-a-time decoding.

Block: x = x + self_attn(ln_1(x), causal); x = x + cross_attn(ln_2(x), memory); x = x + mlp(ln_3(x)).
Parameter names: `ln_1, attn/{in_proj, out_proj}` (fused q|k|v as mmjax.layers.attention.MultiHeadAttention),
`ln_2, cross_attn/{q_proj, kv_proj, out_proj}` (as CrossAttention), `ln_3, mlp/{c_fc, c_proj}`.

Cache of one block (a plain dict pytree, so it passes through jit / while_loop / beam gathers):
  "k", "v": [B, H, L_max, d] self-attention keys/values of the positions decoded so far (zeros beyond);
  "ck", "cv": [B, H, N, d] cross-attention keys/values of the memory, computed once by `init_cache`.
`step` writes position `position` (a scalar, the same for every row) and attends to keys 0..position.
"""
from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.attention import _check_heads, causal_mask, dot_product_attention
from mmjax.layers.mlp import Mlp
from mmjax.layers.transformer import LN_EPS

Dtype = Any


class DecoderBlock(nn.Module):
  """x [B, T, w], memory [B, N, c] -> [B, T, w]; `init_cache` / `step` for cached decoding."""
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_tuning: str = "auto"          # the MLP's CPU code paths (mmjax/cpu_tuning.py)

  def setup(self):
    _check_heads(self.width, self.num_heads)
    w = self.width
    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    ln = dict(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype)
    self.ln_1, self.ln_2, self.ln_3 = nn.LayerNorm(**ln), nn.LayerNorm(**ln), nn.LayerNorm(**ln)
    self.attn = _SelfAttnParams(w, **dense, name="attn")
    self.cross_attn = _CrossAttnParams(w, **dense, name="cross_attn")
    self.mlp = Mlp(self.mlp_ratio, **dense, cpu_tuning=self.cpu_tuning)

  def _heads(self, x):
    return einops.rearrange(x, "b t (h d) -> b h t d", h=self.num_heads)

  def _merge(self, x):
    return einops.rearrange(x, "b h t d -> b t (h d)")

  def memory_kv(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """memory [B, N, c] -> cross-attention (k, v), each [B, H, N, d]."""
    kv = self.cross_attn.kv_proj(memory)
    k, v = einops.rearrange(kv, "b t (two h d) -> two b h t d", two=2, h=self.num_heads)
    return k, v

  def _cross(self, x, ck, cv, memory_mask):
    q = self._heads(self.cross_attn.q_proj(self.ln_2(x)))
    out, _ = dot_product_attention(q, ck, cv, memory_mask, self.dtype)
    return x + self.cross_attn.out_proj(self._merge(out))

  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None = None) -> jax.Array:
    """Teacher-forced: causal self-attention over x's T positions, cross-attention to all of memory."""
    qkv = self.attn.in_proj(self.ln_1(x))
    q, k, v = einops.rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
    out, _ = dot_product_attention(q, k, v, causal_mask(x.shape[1])[None, None], self.dtype)
    x = x + self.attn.out_proj(self._merge(out))
    ck, cv = self.memory_kv(memory)
    x = self._cross(x, ck, cv, memory_mask)
    return x + self.mlp(self.ln_3(x))

  def init_cache(self, memory: jax.Array, max_len: int) -> dict[str, jax.Array]:
    """An empty self-attention cache for max_len positions plus the memory's cross-attention keys/values."""
    b, d = memory.shape[0], self.width // self.num_heads
    ck, cv = self.memory_kv(memory)
    zeros = jnp.zeros((b, self.num_heads, max_len, d), self.dtype)
    return {"k": zeros, "v": zeros, "ck": ck, "cv": cv}

  def step(self, x: jax.Array, position: jax.Array, cache: dict[str, jax.Array],
           memory_mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x [B, 1, w] at `position` (int scalar) -> (out [B, 1, w], cache with position's keys/values written)."""
    qkv = self.attn.in_proj(self.ln_1(x))
    q, k, v = einops.rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
    zero = jnp.zeros((), jnp.int32)
    pos = jnp.asarray(position, jnp.int32)
    keys = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (zero, zero, pos, zero))
    values = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (zero, zero, pos, zero))
    visible = (jnp.arange(keys.shape[2]) <= pos)[None, None, None, :]
    out, _ = dot_product_attention(q, keys, values, visible, self.dtype)
    x = x + self.attn.out_proj(self._merge(out))
    x = self._cross(x, cache["ck"], cache["cv"], memory_mask)
    x = x + self.mlp(self.ln_3(x))
    return x, {**cache, "k": keys, "v": values}


class _SelfAttnParams(nn.Module):
  """The projections of causal self-attention: `in_proj` (w -> 3w, q | k | v) and `out_proj` (w -> w)."""
  width: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.in_proj = nn.Dense(3 * self.width, kernel_init=nn.initializers.xavier_uniform(), **kw)
    self.out_proj = nn.Dense(self.width, kernel_init=nn.initializers.lecun_normal(), **kw)


class _CrossAttnParams(nn.Module):
  """The projections of cross-attention: `q_proj` (w -> w), `kv_proj` (c -> 2w, k | v), `out_proj` (w -> w)."""
  width: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.q_proj = nn.Dense(self.width, kernel_init=nn.initializers.xavier_uniform(), **kw)
    self.kv_proj = nn.Dense(2 * self.width, kernel_init=nn.initializers.xavier_uniform(), **kw)
    self.out_proj = nn.Dense(self.width, kernel_init=nn.initializers.lecun_normal(), **kw)
