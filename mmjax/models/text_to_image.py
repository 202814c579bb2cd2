"""Text-to-image generation by rectified flow / flow matching (Lipman et al. 2023, "Flow Matching for Generative
Modeling"; Liu et al. 2023, "Flow Straight and Fast") with a small DiT (Peebles & Xie 2023, "Scalable Diffusion
Models with Transformers") conditioned on a bidirectional text transformer, and classifier-free guidance
(Ho & Salimans 2022).

Convention (one for the whole package): t in [0, 1], t = 0 is data and t = 1 is noise,
  x_t = (1 - t) x0 + t eps,   eps ~ N(0, I),   velocity v = dx_t/dt = eps - x0.
The model predicts v(x_t, t, text). Sampling integrates dx/dt = v from t = 1 (noise) down to t = 0 (data).

DiT: images [B, H, W, 3] -> patchify (p x p, Dense to width) + learned positions -> `depth` blocks, each
adaLN-Zero (shift/scale/gate from c = emb(t) + pooled text, zero-initialised so every block starts as the
identity) around self-attention, an optional cross-attention to the text tokens, and an MLP -> adaLN final layer
(zero-initialised Dense to p*p*3) -> unpatchify -> v [B, H, W, 3].
U-Net (backbone="unet"; mmjax/layers/unet.py): a convolutional denoiser with `unet_channels` levels, every
residual block modulated by the same c, self- and (optionally) cross-attention to the text tokens at the lowest
resolution; patch_size, depth and mlp_ratio are unused. Convolutions learn small shapes far faster than a DiT on
4 px patches (the DiT renders the right colour as patch-aligned blobs after 800 CPU steps).
Text: `TextTransformer(causal=False)` over the caption tokens [B, L]; pooled EOT feature [B, w_t] and the tokens
[B, L, w_t] (both projected to the DiT width).
Classifier-free guidance: `drop` [B] bool replaces an example's text by a learned null text (null pooled vector,
one null context token), trained with probability `cond_drop_prob`; at sampling
  v = v_null + w (v_text - v_null)   (w = 1: the conditional prediction; w = 0: the unconditional one).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.encoders import TextTransformer
from mmjax.errors import MmjaxError
from mmjax.layers import LN_EPS, CrossAttention, MultiHeadAttention, padding_mask, through_eot
from mmjax.layers.unet import UNet
from mmjax.registry import MODELS

_TEXT_RESERVED = ("output_dim", "dtype", "param_dtype", "remat", "parent", "name")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """t [B] in [0, 1] -> sinusoidal features [B, dim] of 1000 t (DDPM / DiT convention)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
  """x [B, N, w], c [B, w] (, context [B, L, w], ctx_mask [B, 1, 1, L]) -> [B, N, w], adaLN-Zero."""
  num_heads: int
  mlp_ratio: float = 4.0
  cross_attention: bool = True

  @nn.compact
  def __call__(self, x, c, context=None, ctx_mask=None):
    w = x.shape[-1]
    mod = nn.Dense(6 * w, kernel_init=nn.initializers.zeros, name="adaln")(nn.silu(c))
    sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
    ln = lambda name: nn.LayerNorm(epsilon=LN_EPS, use_scale=False, use_bias=False, name=name)
    x = x + g1[:, None] * MultiHeadAttention(self.num_heads, name="attn")(_modulate(ln("ln1")(x), sh1, sc1))
    if self.cross_attention:
      x = x + CrossAttention(self.num_heads, name="cross_attn")(nn.LayerNorm(epsilon=LN_EPS, name="ln_cross")(x),
                                                                context, ctx_mask)
    h = _modulate(ln("ln2")(x), sh2, sc2)
    h = nn.Dense(int(w * self.mlp_ratio), name="fc1")(h)
    h = nn.Dense(w, name="fc2")(nn.gelu(h, approximate=True))
    return x + g2[:, None] * h


@MODELS.register("text_to_image")
class TextToImage(nn.Module):
  """Velocity model v(x_t [B, H, W, 3], tokens int32 [B, L], t [B], drop [B] bool) -> [B, H, W, 3].

  text: TextTransformer kwargs (vocab_size, context_length, width, depth, num_heads[, mlp_ratio]); it is
  bidirectional unless text.causal is set.
  """
  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  text: Mapping
  mlp_ratio: float = 4.0
  cross_attention: bool = True
  cond_drop_prob: float = 0.1      # the objective's text-drop probability (classifier-free guidance)
  channels: int = 3
  backbone: str = "dit"            # "dit" | "unet"
  unet_channels: tuple[int, ...] = (32, 64, 64)

  def __post_init__(self):
    text = dict(self.text)
    valid = [f.name for f in dataclasses.fields(TextTransformer) if f.name not in _TEXT_RESERVED]
    for k in text:
      if k not in valid:
        raise MmjaxError(f"unknown config key 'model.text.{k}' (valid keys under model.text: "
                         f"{', '.join(sorted(valid))})")
    text.setdefault("causal", False)
    object.__setattr__(self, "text", FrozenDict(text))
    if self.patch_size < 1 or self.image_size % self.patch_size:
      raise MmjaxError(f"config key model.image_size={self.image_size} is not divisible by model.patch_size="
                       f"{self.patch_size}")
    if self.backbone not in ("dit", "unet"):
      raise MmjaxError(f"config key model.backbone={self.backbone!r}: use 'dit' or 'unet'")
    if self.backbone == "unet" and self.image_size % 2 ** (len(self.unet_channels) - 1):
      raise MmjaxError(f"config key model.image_size={self.image_size} must be divisible by 2^(len("
                       f"model.unet_channels) - 1) = {2 ** (len(self.unet_channels) - 1)}")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise MmjaxError(f"config key model.cond_drop_prob={self.cond_drop_prob} must be in [0, 1)")
    super().__post_init__()

  def setup(self):
    self.text_tower = TextTransformer(**dict(self.text), name="text")
    self.text_pool_proj = nn.Dense(self.width, name="text_pool_proj")
    self.text_tok_proj = nn.Dense(self.width, name="text_tok_proj")
    self.null_pooled = self.param("null_pooled", nn.initializers.normal(0.02), (self.width,))
    self.null_token = self.param("null_token", nn.initializers.normal(0.02), (self.width,))
    self.t_fc1 = nn.Dense(self.width, name="t_fc1")
    self.t_fc2 = nn.Dense(self.width, name="t_fc2")
    if self.backbone == "unet":
      self.unet = UNet(tuple(self.unet_channels), self.channels, self.num_heads, name="unet")
      return
    n = (self.image_size // self.patch_size) ** 2
    self.patch_embed = nn.Dense(self.width, name="patch_embed")
    self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(0.02), (n, self.width))
    self.blocks = [DiTBlock(self.num_heads, self.mlp_ratio, self.cross_attention, name=f"block_{i}")
                   for i in range(self.depth)]
    self.final_adaln = nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros, name="final_adaln")
    self.final_ln = nn.LayerNorm(epsilon=LN_EPS, use_scale=False, use_bias=False, name="final_ln")
    self.final = nn.Dense(self.patch_size ** 2 * self.channels, kernel_init=nn.initializers.zeros, name="final")

  def encode_text(self, tokens: jax.Array, drop: jax.Array | None = None) -> dict[str, jax.Array]:
    """tokens int32 [B, L], drop [B] bool -> {"pooled" [B, w], "context" [B, L, w], "valid" [B, L] bool}.

    Dropped rows get the null text: the learned null pooled vector and one valid null context token."""
    _, out = self.text_tower(tokens)
    pooled = self.text_pool_proj(out["pooled"])
    context = self.text_tok_proj(out["normed_tokens"])
    valid = through_eot(tokens, self.text_tower.eot_id)
    if drop is not None:
      d = drop.astype(bool)
      pooled = jnp.where(d[:, None], self.null_pooled[None], pooled)
      context = jnp.where(d[:, None, None], self.null_token[None, None], context)
      first = jnp.arange(tokens.shape[1]) == 0
      valid = jnp.where(d[:, None], first[None], valid)
    return {"pooled": pooled, "context": context, "valid": valid}

  def velocity(self, x_t: jax.Array, t: jax.Array, cond: Mapping[str, jax.Array]) -> jax.Array:
    """x_t [B, H, W, C], t [B], cond from `encode_text` -> v [B, H, W, C] (float32)."""
    b, h, w_, ch = x_t.shape
    if h != self.image_size or w_ != self.image_size or ch != self.channels:
      raise MmjaxError(f"text_to_image got images {tuple(x_t.shape)} but model.image_size={self.image_size}, "
                       f"{self.channels} channels; set model.image_size = data.image_size")
    temb = self.t_fc2(nn.silu(self.t_fc1(timestep_embedding(jnp.broadcast_to(t, (b,)), self.width))))
    c = temb + cond["pooled"]
    mask = padding_mask(cond["valid"])
    if self.backbone == "unet":
      context = cond["context"] if self.cross_attention else None
      return self.unet(x_t, c, context, mask).astype(jnp.float32)
    p = self.patch_size
    x = einops.rearrange(x_t, "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)
    x = self.patch_embed(x) + self.pos_embedding[None]
    for blk in self.blocks:
      x = blk(x, c, cond["context"], mask)
    shift, scale = jnp.split(self.final_adaln(nn.silu(c)), 2, axis=-1)
    x = self.final(_modulate(self.final_ln(x), shift, scale))
    g = self.image_size // p
    return einops.rearrange(x, "b (h w) (p q c) -> b (h p) (w q) c", h=g, w=g, p=p, q=p).astype(jnp.float32)

  def __call__(self, x_t: jax.Array, tokens: jax.Array, t: jax.Array | None = None, drop: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    """x_t [B, H, W, C], tokens [B, L], t [B] (default 0.5), drop [B] bool (default none) -> v [B, H, W, C]."""
    if t is None:
      t = jnp.full((x_t.shape[0],), 0.5, jnp.float32)
    return self.velocity(x_t, t, self.encode_text(tokens, drop))


# ---------------------------------------------------------------------------------------------------- sampling
def euler_sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array], x1: jax.Array, steps: int) -> jax.Array:
  """Integrates dx/dt = velocity_fn(x, t) from t = 1 (x1) to t = 0 with `steps` Euler steps (lax.fori_loop):
  x_{t - 1/steps} = x_t - (1/steps) v(x_t, t); t is passed as a [B] array. Returns x_0, same shape as x1."""
  if steps < 1:
    raise MmjaxError(f"sampling steps={steps} must be >= 1")
  dt = 1.0 / steps
  b = x1.shape[0]

  def body(i, x):
    t = jnp.full((b,), 1.0 - i * dt, jnp.float32)
    return x - dt * velocity_fn(x, t).astype(x.dtype)

  return jax.lax.fori_loop(0, steps, body, x1)


def guided_velocity(model: TextToImage, params, tokens: jax.Array, guidance: float):
  """-> velocity_fn(x, t) = v_null + guidance (v_text - v_null), one batched forward pass of [2B] per call."""
  b = tokens.shape[0]
  drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
  cond = model.apply({"params": params}, jnp.concatenate([tokens, tokens]), drop, method="encode_text")

  def fn(x, t):
    v = model.apply({"params": params}, jnp.concatenate([x, x]), jnp.concatenate([t, t]), cond,
                    method="velocity")
    v_text, v_null = v[:b], v[b:]
    return v_null + guidance * (v_text - v_null)

  return fn


def generate(model: TextToImage, params, tokens: jax.Array, rng: jax.Array, *, steps: int = 20,
             guidance: float = 3.0) -> jax.Array:
  """tokens int32 [B, L], PRNG key -> images [B, H, W, C] (model space, about [-1, 1]); deterministic in rng.
  Jit it with steps/guidance bound (e.g. `jax.jit(functools.partial(generate, model, steps=20, guidance=3.))`)."""
  x1 = jax.random.normal(rng, (tokens.shape[0], model.image_size, model.image_size, model.channels), jnp.float32)
  return euler_sample(guided_velocity(model, params, tokens, guidance), x1, steps)


__all__ = ["TextToImage", "euler_sample", "generate", "guided_velocity", "timestep_embedding"]
