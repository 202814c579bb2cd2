"""Small convolutional encoder for images `[B, H, W, C]` and spectrograms `[B, T, F]` (LeCun et al. 1998; the LeNet-style
image / audio encoders MultiBench uses on AV-MNIST, Liang et al. 2021).

Per stage: Conv(k x k, c_i, 'SAME') -> [GroupNorm] -> ReLU -> max-pool 2x2 (stride 2). Then global average pooling
and an optional Dense to `features`: -> `[B, features]` (or `[B, channels[-1]]`). A 3-D input `[B, T, F]` is treated
as a one-channel image (time x frequency). With `tokens=True` the last feature map `[B, H', W', C]` is returned as a
token sequence `[B, H' W', features or C]` (row-major over H', W'; the Dense applied per token) instead of being
pooled, for token-level fusions such as MBT (mmjax/fusion/bottleneck.py).
"""
from __future__ import annotations

from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2 x 2 max-pool, stride 2, 'VALID' (an odd last row / column is dropped): [B, H, W, C] -> [B, H // 2, W // 2, C].

  The values of `nn.max_pool(x, (2, 2), strides=(2, 2))`, computed as a reshape and a max reduction: its gradient
  is a reduction's, not the select-and-scatter of a pooling window, which XLA's CPU backend compiles into slow
  loops (several times slower at low optimisation levels). Where one window holds tied maxima the gradient is
  split among them instead of going to the first (after a ReLU, ties are zeros whose gradient the ReLU stops).
  """
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return einops.reduce(x[:, :h, :w], "b (h p) (w q) c -> b h w c", "max", p=2, q=2)


class CNNEncoder(nn.Module):
  """[B, H, W, C] or [B, T, F] -> [B, features] (or [B, channels[-1]] with features=None; [B, H' W', .] tokens)."""
  channels: Sequence[int] = (16, 32)
  kernel_size: int = 3
  features: int | None = None
  group_norm: bool = False
  pool: bool = True
  tokens: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise MmjaxError(f"cnn encoder expects images [B, H, W, C] or spectrograms [B, T, F], got {tuple(x.shape)}")
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (self.kernel_size, self.kernel_size), padding="SAME", name=f"conv_{i}")(x)
      if self.group_norm:
        x = nn.GroupNorm(num_groups=min(8, c), name=f"gn_{i}")(x)
      x = nn.relu(x)
      if self.pool and min(x.shape[1:3]) >= 2:
        x = max_pool_2x2(x)
    x = einops.rearrange(x, "b h w c -> b (h w) c") if self.tokens else jnp.mean(x, axis=(1, 2))
    if self.features is not None:
      x = nn.Dense(self.features, name="out")(x)
    return x
