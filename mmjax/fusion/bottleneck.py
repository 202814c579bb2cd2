"""Attention bottlenecks (MBT; Nagrani, Yang, Arnab, Jansen, Schmid & Sun 2021, "Attention Bottlenecks for Multimodal
Fusion", NeurIPS).

Each modality m is a token sequence (vectors `[B, D]` become `tokens_per_vector` tokens) projected to `width`, with
its own learned CLS token and learned positional embedding, and its own transformer (pre-LN blocks of mmjax.layers).
Layers 0 .. fusion_layer-1 run per modality only. From layer L_f = `fusion_layer` on, `num_bottlenecks` shared
tokens z (learned initial value `[n, width]`) carry all cross-modal information: for every modality
  [x_m^{l+1}; ẑ_m^{l+1}] = Block_m^l([x_m^l; z^l]),   z^{l+1} = mean_m ẑ_m^{l+1}
Output: the final CLS tokens, concatenated `[B, M width]` ("concat") or averaged `[B, width]`
("mean"; MBT averages per-modality logits). num_bottlenecks = 0 or fusion_layer >= depth is late fusion.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.fusion.attention import embed_tokens
from mmjax.fusion.common import check_features
from mmjax.layers import LN_EPS, TransformerBlock


class BottleneckFusion(nn.Module):
  """MBT: M >= 2 modalities -> [B, M width] or [B, width]."""
  width: int = 64
  num_heads: int = 4
  depth: int = 4
  fusion_layer: int = 2
  num_bottlenecks: int = 4
  mlp_ratio: float = 4.0
  combine: str = "concat"
  tokens_per_vector: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "mbt")
    if self.width % self.num_heads:
      raise MmjaxError(f"fusion 'mbt': width {self.width} is not divisible by num_heads {self.num_heads}")
    if self.combine not in ("concat", "mean"):
      raise MmjaxError(f"fusion 'mbt': unknown combine {self.combine!r}; use 'concat' or 'mean'")
    if not 0 <= self.fusion_layer:
      raise MmjaxError(f"fusion 'mbt': fusion_layer must be >= 0, got {self.fusion_layer}")
    init = nn.initializers.normal(0.02)
    xs = []
    for i, x in enumerate(features):
      t = embed_tokens(self, x, self.width, self.tokens_per_vector, f"proj_{i}")
      cls = self.param(f"cls_{i}", init, (1, 1, self.width), jnp.float32)
      t = jnp.concatenate([jnp.broadcast_to(cls.astype(t.dtype), (t.shape[0], 1, self.width)), t], axis=1)
      pos = self.param(f"pos_embedding_{i}", init, (t.shape[1], self.width), jnp.float32)
      xs.append(t + pos.astype(t.dtype))
    batch = xs[0].shape[0]
    z = None
    if self.num_bottlenecks > 0 and self.fusion_layer < self.depth:
      z0 = self.param("bottleneck", init, (self.num_bottlenecks, self.width), jnp.float32)
      z = jnp.broadcast_to(z0.astype(xs[0].dtype), (batch, self.num_bottlenecks, self.width))
    for layer in range(self.depth):
      fuse = z is not None and layer >= self.fusion_layer
      new_xs, new_zs = [], []
      for i, x in enumerate(xs):
        block = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"block_{i}_{layer}")
        if fuse:
          y = block(jnp.concatenate([x, z], axis=1))
          new_xs.append(y[:, :x.shape[1]])
          new_zs.append(y[:, x.shape[1]:])
        else:
          new_xs.append(block(x))
      xs = new_xs
      if fuse:
        z = jnp.mean(jnp.stack(new_zs), axis=0)
    cls_out = [nn.LayerNorm(epsilon=LN_EPS, name=f"ln_{i}")(x[:, 0]) for i, x in enumerate(xs)]
    if self.combine == "concat":
      return jnp.concatenate(cls_out, axis=-1)
    return jnp.mean(jnp.stack(cls_out), axis=0)
