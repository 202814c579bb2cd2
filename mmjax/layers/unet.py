"""A small conditional U-Net (Ronneberger et al. 2015) in the style of the DDPM / ADM denoisers (Ho et al. 2020;
Dhariwal & Nichol 2021): residual blocks whose GroupNorm is modulated by the conditioning vector (scale/shift, as
ADM's adaptive group norm), one resolution level per entry of `channels` (stride-2 convolutions down, nearest
upsampling + convolution up, skip connections concatenated), and at the lowest resolution self-attention plus an
optional cross-attention to a context sequence (the text tokens of Stable Diffusion's U-Net, Rombach et al. 2022).

x [B, H, W, C_in], c [B, d] (e.g. time + pooled text embedding), context [B, L, w_ctx], ctx_mask [B, 1, 1, L]
-> [B, H, W, out_channels]. H and W must be divisible by 2^(len(channels) - 1). The output convolution is
zero-initialised (the network starts by predicting 0, as the DiT's adaLN-Zero does).
"""
from __future__ import annotations

from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.transformer import LN_EPS
from mmjax.layers.attention import CrossAttention, MultiHeadAttention


def _groups(c: int) -> int:
  return next(g for g in (8, 4, 2, 1) if c % g == 0)


class ResBlock(nn.Module):
  """x [B, H, W, c_in], c [B, d] -> [B, H, W, out]: GN-SiLU-Conv, GN modulated by c, SiLU, Conv (zero init) + skip."""
  out: int

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    h = nn.Conv(self.out, (3, 3), name="conv1")(nn.silu(nn.GroupNorm(_groups(x.shape[-1]), name="gn1")(x)))
    scale, shift = jnp.split(nn.Dense(2 * self.out, name="film")(nn.silu(c)), 2, axis=-1)
    h = nn.GroupNorm(_groups(self.out), name="gn2")(h) * (1 + scale[:, None, None]) + shift[:, None, None]
    h = nn.Conv(self.out, (3, 3), kernel_init=nn.initializers.zeros, name="conv2")(nn.silu(h))
    skip = x if x.shape[-1] == self.out else nn.Conv(self.out, (1, 1), name="skip")(x)
    return skip + h


class UNet(nn.Module):
  """See the module docstring."""
  channels: Sequence[int] = (32, 64, 64)
  out_channels: int = 3
  num_heads: int = 4

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, context: jax.Array | None = None,
               ctx_mask: jax.Array | None = None) -> jax.Array:
    chans = tuple(int(ch) for ch in self.channels)
    h = nn.Conv(chans[0], (3, 3), name="stem")(x)
    skips = []
    for i, ch in enumerate(chans):
      h = ResBlock(ch, name=f"down_{i}")(h, c)
      skips.append(h)
      if i < len(chans) - 1:
        h = nn.Conv(chans[i + 1], (3, 3), strides=(2, 2), name=f"downsample_{i}")(h)
    h = ResBlock(chans[-1], name="mid_1")(h, c)
    b, gh, gw, w = h.shape
    tokens = einops.rearrange(h, "b h w c -> b (h w) c")
    tokens = tokens + self.param("mid_pos", nn.initializers.normal(0.02), (gh * gw, w))[None]
    tokens = tokens + MultiHeadAttention(self.num_heads, name="mid_attn")(
        nn.LayerNorm(epsilon=LN_EPS, name="ln_attn")(tokens))
    if context is not None:
      tokens = tokens + CrossAttention(self.num_heads, name="mid_cross_attn")(
          nn.LayerNorm(epsilon=LN_EPS, name="ln_cross")(tokens), context, ctx_mask)
    h = einops.rearrange(tokens, "b (h w) c -> b h w c", h=gh, w=gw)
    h = ResBlock(chans[-1], name="mid_2")(h, c)
    for i in reversed(range(len(chans))):
      h = ResBlock(chans[i], name=f"up_{i}")(jnp.concatenate([h, skips[i]], axis=-1), c)
      if i > 0:
        h = jax.image.resize(h, (h.shape[0], h.shape[1] * 2, h.shape[2] * 2, h.shape[3]), "nearest")
        h = nn.Conv(chans[i - 1], (3, 3), name=f"upsample_{i}")(h)
    h = nn.silu(nn.GroupNorm(_groups(chans[0]), name="gn_out")(h))
    return nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="out")(h)
