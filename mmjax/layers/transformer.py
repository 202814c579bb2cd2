"""Pre-LN transformer (Vaswani et al. 2017; pre-LN as in Radford et al. 2019 / CLIP, Radford et al. 2021).

Block: x = x + attn(ln_1(x), mask); x = x + mlp(ln_2(x)); LayerNorm eps 1e-5, as OpenCLIP's ResidualAttentionBlock.
Parameter names: `transformer/resblocks_{i}/{ln_1, attn/{in_proj, out_proj}, ln_2, mlp/{c_fc, c_proj}}`.

Rematerialisation (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"): `remat` names a
`jax.checkpoint` policy applied per block (`nn.remat`), which decides what the backward pass keeps of each block's
forward and what it recomputes: "none" (keep everything; no remat), "full" (keep only the block inputs:
recompute the whole block), "dots" (keep matmul outputs, recompute the elementwise ops: layer norms, GELU,
softmax), "dots_no_batch" (keep only matmuls without batch dimensions: the projections, not attention scores).
Parameter names and values are the same with and without remat.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.layers.attention import MultiHeadAttention
from mmjax.layers.mlp import Mlp

Dtype = Any
LN_EPS = 1e-5
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def block_class(remat: str) -> type:
  """TransformerBlock, wrapped in `nn.remat` with the named policy unless remat == "none"."""
  if remat == "none":
    return TransformerBlock
  if remat not in REMAT_POLICIES:
    raise MmjaxError(f"unknown remat policy {remat!r} (config key model.remat); valid: none, "
                     f"{', '.join(REMAT_POLICIES)}")
  return nn.remat(TransformerBlock, policy=REMAT_POLICIES[remat])


class TransformerBlock(nn.Module):
  """x [B, T, w] -> [B, T, w] (or (out, attention weights [B, H, T, T]) with return_weights=True)."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cpu_tuning: str = "auto"                # mmjax/cpu_tuning.py

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, return_weights: bool = False,
               query_index: jax.Array | None = None):
    """query_index int [B]: compute the block's output for that token of each sequence only -> [B, 1, w]."""
    h = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="ln_1")(x)
    h, weights = MultiHeadAttention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                                    cpu_tuning=self.cpu_tuning, name="attn")(h, mask, return_weights=True, query_index=query_index)
    if query_index is not None:
      x = jnp.take_along_axis(x, query_index.reshape(-1, 1, 1), axis=1)
    x = x + h
    h = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="ln_2")(x)
    x = x + Mlp(self.mlp_ratio, dtype=self.dtype, param_dtype=self.param_dtype, cpu_tuning=self.cpu_tuning,
                name="mlp")(h)
    return (x, weights) if return_weights else x


class Transformer(nn.Module):
  """A stack of `depth` pre-LN blocks. x [B, T, w] -> [B, T, w]; mask as in MultiHeadAttention.
  remat: the per-block rematerialisation policy (module docstring)."""
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: str = "none"
  cpu_tuning: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               last_query_index: jax.Array | None = None) -> jax.Array:
    """last_query_index int [B]: the last block computes only that token of each sequence (its queries,
    attention row, out_proj and MLP; keys and values still come from every token) and the stack returns
    [B, 1, w]: the same values as that row of the full output, for a fraction of the last block's work."""
    block = block_class(self.remat)
    for i in range(self.depth):
      last = i == self.depth - 1 and last_query_index is not None
      mod = block(self.num_heads, self.mlp_ratio, dtype=self.dtype, param_dtype=self.param_dtype,
                  cpu_tuning=self.cpu_tuning, name=f"resblocks_{i}")
      x = mod(x, mask, query_index=last_query_index) if last else mod(x, mask)
    return x
