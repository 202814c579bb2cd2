"""Image captioner: a ViT encoder (Dosovitskiy et al. 2021) whose every token is the memory of a causal pre-LN
Transformer decoder with cross-attention (Vaswani et al. 2017), as in "Show, Attend and Tell" (Xu et al. 2015)
with a Transformer in place of the LSTM (e.g. the CoCa / SimVLM captioning decoders, Yu et al. 2022, Wang et al.
2022, without their text-only layers).

images [B, H, W, 3], tokens int32 [B, T] (T <= decoder.context_length) -> logits float32 [B, T, V]: the logits at
position t predict token t + 1 (teacher forcing; objectives/caption.py shifts). Tokens are the tokenizer's
`<sot> ... <eot> <pad>...` (mmjax.data.tokenizer).

Cached decoding (mmjax.decoding): `caption_memory(images)` = `encode_image(images) -> memory [B, N+1, c]`,
`init_cache(memory, max_len)` -> a pytree of per-block caches, `decode_step(cache, token [B], position) -> (logits
[B, V], cache)`. The cross-attention keys/values of the memory are computed once, in `init_cache`, so `decode_step` needs no memory.

Params: {"vision": ViT (pool "none", no proj), "token_embedding", "pos_embedding" [L, w], "blocks_{i}"
(mmjax.layers.decoder.DecoderBlock), "ln_final", ["head" when tie_embeddings=False]}.
Config (`model.*`): vision = ViT kwargs (image_size, patch_size, width, depth, num_heads, mlp_ratio), or
{kind: "cnn", image_size, channels, width, group_norm}: the last feature map of a small CNN
([B, H/2^k, W/2^k, width] for k = len(channels) stride-2 stages) + learned positions + LayerNorm
as the memory tokens (the convolutional encoders of "Show, Attend and Tell"; a CNN sees small shapes better than a
shallow ViT trained briefly);
decoder = vocab_size, context_length, width, depth, num_heads, mlp_ratio; tie_embeddings (the output head is
the transposed token embedding, Press & Wolf 2017).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.vocab import SPECIAL_TOKENS
from mmjax.encoders import ViT
from mmjax.errors import MmjaxError
from mmjax.layers import LN_EPS
from mmjax.layers.decoder import DecoderBlock
from mmjax.registry import MODELS

Dtype = Any
_VIT_FIXED = ("pool", "output_dim", "dtype", "param_dtype", "parent", "name")
DECODER_KEYS = ("vocab_size", "context_length", "width", "depth", "num_heads", "mlp_ratio")
_DECODER_REQUIRED = ("vocab_size", "context_length", "width", "depth", "num_heads")
CNN_KEYS = ("kind", "image_size", "channels", "width", "group_norm")


class CNNTokens(nn.Module):
  """images [B, H, W, 3] -> tokens [B, (H/2^k)(W/2^k), width]: k stride-2 3x3 convolutions (GroupNorm, ReLU;
  strided rather than max-pooled: XLA's CPU max-pool gradient is ~5x slower), a Dense to `width` per position,
  learned positions, LayerNorm."""
  channels: tuple[int, ...] = (32, 64, 128)
  width: int = 128
  group_norm: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = images.astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.Conv(int(c), (3, 3), strides=(2, 2), dtype=self.dtype, name=f"conv_{i}")(x)
      if self.group_norm:
        x = nn.GroupNorm(num_groups=min(8, int(c)), dtype=self.dtype, name=f"gn_{i}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.width, dtype=self.dtype, name="proj")(einops.rearrange(x, "b h w c -> b (h w) c"))
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), x.shape[1:])
    return nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln")(x + pos.astype(self.dtype))


@MODELS.register("captioner")
class Captioner(nn.Module):
  """ViT memory + causal cross-attending decoder; see the module docstring."""
  vision: Mapping
  decoder: Mapping
  tie_embeddings: bool = True
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    vision, decoder = dict(self.vision), dict(self.decoder)
    if vision.get("kind", "vit") not in ("vit", "cnn"):
      raise MmjaxError(f"config key model.vision.kind={vision['kind']!r}: use 'vit' or 'cnn'")
    if vision.get("kind", "vit") == "cnn":
      valid, vision_required = CNN_KEYS, ("channels", "width")
    else:
      valid = ["kind"] + [f.name for f in dataclasses.fields(ViT) if f.name not in _VIT_FIXED]
      vision_required = ("image_size", "patch_size", "width", "depth", "num_heads")
    for key, cfg, ok, required in (("vision", vision, valid, vision_required),
                                   ("decoder", decoder, DECODER_KEYS, _DECODER_REQUIRED)):
      unknown = [k for k in cfg if k not in ok]
      if unknown:
        raise MmjaxError(f"unknown config key 'model.{key}.{unknown[0]}' (valid keys under model.{key}: "
                         f"{', '.join(sorted(ok))})")
      missing = [k for k in required if k not in cfg]
      if missing:
        raise MmjaxError(f"missing config key(s) {', '.join(f'model.{key}.{k}' for k in missing)}")
    if isinstance(self.dtype, str):
      object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "vision", FrozenDict(vision))
    object.__setattr__(self, "decoder", FrozenDict(decoder))
    super().__post_init__()

  @property
  def vocab_size(self) -> int:
    return int(self.decoder["vocab_size"])

  @property
  def context_length(self) -> int:
    return int(self.decoder["context_length"])

  pad_id = SPECIAL_TOKENS.index("<pad>")
  sot_id = SPECIAL_TOKENS.index("<sot>")
  eot_id = SPECIAL_TOKENS.index("<eot>")

  def setup(self):
    d = self.decoder
    w = int(d["width"])
    vision = {k: v for k, v in self.vision.items() if k != "kind"}
    if self.vision.get("kind", "vit") == "cnn":
      vision.pop("image_size", None)
      self.encoder = CNNTokens(**vision, dtype=self.dtype, name="vision")
    else:
      self.encoder = ViT(**vision, pool="none", output_dim=None, dtype=self.dtype, name="vision")
    self.token_embedding = nn.Embed(self.vocab_size, w, embedding_init=nn.initializers.normal(0.02),
                                    dtype=self.dtype)
    self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(0.01), (self.context_length, w))
    self.blocks = [DecoderBlock(w, int(d["num_heads"]), float(d.get("mlp_ratio", 4.0)), dtype=self.dtype,
                                name=f"blocks_{i}") for i in range(int(d["depth"]))]
    self.ln_final = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
    if not self.tie_embeddings:
      self.head = nn.Dense(self.vocab_size, dtype=self.dtype)

  def _logits(self, x: jax.Array) -> jax.Array:
    x = self.ln_final(x)
    logits = self.token_embedding.attend(x) if self.tie_embeddings else self.head(x)
    return logits.astype(jnp.float32)

  def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, 3] -> memory [B, N, c]: every ViT token (CLS first) after ln_post, or the CNN tokens."""
    if self.vision.get("kind", "vit") == "cnn":
      return self.encoder(images, train=train)
    _, out = self.encoder(images, train=train)
    return out["normed_tokens"]

  def caption_memory(self, images: jax.Array, train: bool = False) -> jax.Array:
    """The memory mmjax.decoding starts from: encode_image's."""
    return self.encode_image(images, train=train)

  can_caption = True          # the captioning evaluator's test (mmjax.models.multitask: only with a caption head)

  def decode(self, tokens: jax.Array, memory: jax.Array) -> jax.Array:
    """tokens int32 [B, T], memory [B, N, c] -> logits [B, T, V] (teacher forcing)."""
    t = tokens.shape[1]
    if tokens.ndim != 2 or t > self.context_length:
      raise MmjaxError(f"captioner tokens have shape {tuple(tokens.shape)}; expected [B, T] with T <= "
                       f"model.decoder.context_length={self.context_length}")
    x = self.token_embedding(tokens) + self.pos_embedding[:t].astype(self.dtype)[None]
    for block in self.blocks:
      x = block(x, memory)
    return self._logits(x)

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False) -> jax.Array:
    return self.decode(tokens, self.encode_image(images, train=train))

  def init_cache(self, memory: jax.Array, max_len: int | None = None) -> list[dict[str, jax.Array]]:
    """memory [B, N, c] -> one cache per block (mmjax.layers.decoder) for max_len (<= context_length) positions."""
    max_len = self.context_length if max_len is None else int(max_len)
    if max_len > self.context_length:
      raise MmjaxError(f"decoding max_len={max_len} exceeds model.decoder.context_length={self.context_length}")
    return [block.init_cache(memory, max_len) for block in self.blocks]

  def decode_step(self, cache: list[dict[str, jax.Array]], token: jax.Array,
                  position: jax.Array) -> tuple[jax.Array, list[dict[str, jax.Array]]]:
    """cache, token int32 [B] at `position` (scalar) -> (logits [B, V] for the next token, updated cache)."""
    pos = jnp.asarray(position, jnp.int32)
    x = self.token_embedding(token[:, None]) + jax.lax.dynamic_slice_in_dim(
        self.pos_embedding, pos, 1, axis=0).astype(self.dtype)[None]
    new_cache = []
    for block, c in zip(self.blocks, cache):
      x, c = block.step(x, pos, c)
      new_cache.append(c)
    return self._logits(x)[:, 0], new_cache
