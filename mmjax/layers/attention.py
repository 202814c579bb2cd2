"""Multi-head scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need").

Parameter layout follows torch.nn.MultiheadAttention as used by OpenCLIP (Cherti et al. 2023): one fused
input projection `in_proj` (kernel [w, 3w] = in_proj_weight.T, columns q | k | v, heads contiguous inside each)
with bias, and `out_proj` with bias. Softmax runs in float32 whatever the computation dtype.

Masks: a boolean mask (True = may attend) or an additive float mask (0 / -inf, torch style), any shape
broadcastable to [B, H, Tq, Tk], e.g. [Tq, Tk] (causal) or [B, 1, 1, Tk] (key padding).

`cpu_tuning` (mmjax/cpu_tuning.py, default "auto"): the projections' CPU code path.
"""
from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax import cpu_tuning as tuning

Dtype = Any


def causal_mask(length: int) -> jax.Array:
  """Boolean [L, L] mask, True where query i may attend to key j (j <= i)."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))


# The <eot> id of mmjax's own tokenizer (mmjax.data.tokenizer.SPECIAL_TOKENS; not imported: layers import no data).
DEFAULT_EOT_ID = 2


def eot_positions(tokens: jax.Array, eot_id: int | None = DEFAULT_EOT_ID) -> jax.Array:
  """tokens int [B, L] -> int32 [B]: the position of each row's first `eot_id` (L - 1 in a row without one).

  eot_id=None: argmax of the ids, OpenCLIP's text pooling (`text.argmax(dim=-1)`): the first EOT when EOT has the
  largest id, as in CLIP's BPE (49407). The pad id plays no part: in CLIP's BPE id 0 is "!", a real token.
  """
  if eot_id is None:
    return jnp.argmax(tokens, axis=-1).astype(jnp.int32)
  is_eot = tokens == eot_id
  return jnp.where(jnp.any(is_eot, axis=-1), jnp.argmax(is_eot, axis=-1), tokens.shape[-1] - 1).astype(jnp.int32)


def through_eot(tokens: jax.Array, eot_id: int | None = DEFAULT_EOT_ID) -> jax.Array:
  """tokens int [B, L] -> bool [B, L]: True up to and including the first EOT (`eot_positions`); False after it,
  where the padding is (whatever its id)."""
  return jnp.arange(tokens.shape[-1])[None, :] <= eot_positions(tokens, eot_id)[:, None]


def padding_mask(valid: jax.Array) -> jax.Array:
  """[B, Tk] bool (True = real token) -> [B, 1, 1, Tk] key mask."""
  return einops.rearrange(valid.astype(bool), "b k -> b 1 1 k")


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """Logical AND of boolean masks (None entries are skipped); None when all are None."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                          dtype: Dtype = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """q [B, H, Tq, d], k/v [B, H, Tk, d] -> (out [B, H, Tq, d], weights [B, H, Tq, Tk] float32)."""
  scale = q.shape[-1] ** -0.5
  scores = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(scale, q.dtype), k)
  scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
  if mask is not None:
    if mask.dtype == jnp.bool_:
      scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    else:
      scores = scores + mask.astype(scores.dtype)
  weights = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(dtype), v)
  return out, weights


def split_heads(x: jax.Array, parts: int, num_heads: int) -> tuple[jax.Array, ...]:
  """x [B, T, parts * H * d] (parts | heads | d, as in_proj's columns) -> `parts` arrays [B, H, T, d]."""
  return tuple(einops.rearrange(x, "b t (parts h d) -> parts b h t d", parts=parts, h=num_heads))


def select_queries(q: jax.Array, mask: jax.Array | None, index: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """q [B, H, T, d], mask broadcastable to [B, H, T, Tk], index int [B] -> (q [B, H, 1, d], the mask's rows)."""
  b = q.shape[0]
  q = jnp.take_along_axis(q, index.reshape(b, 1, 1, 1), axis=2)
  if mask is not None and mask.shape[-2] != 1:
    mask = jnp.broadcast_to(mask, (b,) + mask.shape[1:])
    mask = jnp.take_along_axis(mask, index.reshape(b, 1, 1, 1), axis=2)
  return q, mask


def _check_heads(width: int, num_heads: int) -> None:
  if width % num_heads:
    raise MmjaxError(f"attention width {width} is not divisible by num_heads {num_heads}; "
                     f"choose num_heads among the divisors of {width}")


class MultiHeadAttention(nn.Module):
  """Self-attention. x [B, T, w] -> [B, T, w] (or (out, weights [B, H, T, T]) with return_weights=True)."""
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()
  out_kernel_init: Any = nn.initializers.lecun_normal()
  cpu_tuning: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, return_weights: bool = False,
               query_index: jax.Array | None = None):
    """query_index int [B]: only that token of each sequence queries (keys/values are all tokens); the output
    is then [B, 1, w], equal to row query_index[b] of the full output."""
    w = x.shape[-1]
    _check_heads(w, self.num_heads)
    t = self.cpu_tuning
    qkv = tuning.dense(nn.Dense(3 * w, dtype=self.dtype, param_dtype=self.param_dtype,
                                kernel_init=self.kernel_init, name="in_proj"), x, t)
    q, k, v = split_heads(qkv, 3, self.num_heads)
    if query_index is not None:
      q, mask = select_queries(q, mask, query_index)
    out, weights = dot_product_attention(q, k, v, mask, self.dtype)
    out = tuning.dense(nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype,
                                kernel_init=self.out_kernel_init, name="out_proj"),
                       einops.rearrange(out, "b h t d -> b t (h d)"), t)
    return (out, weights) if return_weights else out


class CrossAttention(nn.Module):
  """Cross-attention: queries from x [B, Tq, w], keys/values from context [B, Tk, c] -> [B, Tq, w].

  Separate `q_proj` (w -> w) and fused `kv_proj` (c -> 2w), both with bias; `out_proj` w -> w.
  With return_weights=True returns (out, weights [B, H, Tq, Tk]).
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()
  out_kernel_init: Any = nn.initializers.lecun_normal()
  cpu_tuning: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array | None = None,
               return_weights: bool = False):
    w = x.shape[-1]
    _check_heads(w, self.num_heads)
    dense, t = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init), self.cpu_tuning
    q, = split_heads(tuning.dense(nn.Dense(w, name="q_proj", **dense), x, t), 1, self.num_heads)
    k, v = split_heads(tuning.dense(nn.Dense(2 * w, name="kv_proj", **dense), context, t), 2, self.num_heads)
    out, weights = dot_product_attention(q, k, v, mask, self.dtype)
    out = tuning.dense(nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype,
                                kernel_init=self.out_kernel_init, name="out_proj"),
                       einops.rearrange(out, "b h t d -> b t (h d)"), t)
    return (out, weights) if return_weights else out


def attention_weights(module: nn.Module, variables, *args, method=None, **kwargs) -> dict[str, jax.Array]:
  """Runs `module.apply(variables, *args, method=method, **kwargs)` and returns the attention weights of every
  MultiHeadAttention / CrossAttention inside it: {"/"-joined module path: weights [B, H, Tq, Tk] (float32)}.

  Uses flax's `capture_intermediates`, so no module changes: it sees the attention layers that compute their
  weights, i.e. those called with return_weights=True (every TransformerBlock does, so all ViT / text tower
  layers are included). E.g. `attention_weights(clip, {"params": p}, images, method="encode_image")` ->
  {"vision/transformer/resblocks_0/attn": [B, H, N+1, N+1], ...}; row 0 is the CLS token's attention.
  """
  def is_attention(mdl, method_name):
    return isinstance(mdl, (MultiHeadAttention, CrossAttention)) and method_name == "__call__"

  _, state = module.apply(variables, *args, method=method, capture_intermediates=is_attention,
                          mutable=["intermediates"], **kwargs)
  found: dict[str, jax.Array] = {}

  def walk(tree, path):
    for key, value in tree.items():
      if key == "__call__":
        for out in value:
          if isinstance(out, tuple) and len(out) == 2:
            found["/".join(path)] = out[1]
      elif hasattr(value, "items"):
        walk(value, path + [key])

  walk(state.get("intermediates", {}), [])
  return found
