"""Multimodal masked autoencoder (Geng et al. 2022, "Multimodal Masked Autoencoders Learn Transferable
Representations"), after the reference code (young-geng/m3ae, m3ae/model.py), with masks drawn per sample.

Encoder input, one sequence: [cls, K_i visible image patches, K_t text slots]. Image patches: linear patch embedding
+ 2-D sin-cos positions + the image type embedding, masked as in MAE (`masking_from_noise`, ratio
`image_mask_ratio`). Text: token embedding + 1-D sin-cos positions + the text type embedding; per sample, of its
n_valid non-pad tokens the keep = len_keep_text(n_valid) with the smallest noise stay visible (pad positions
always sort last), gathered into K_t = floor(L (1 - text_mask_ratio)) slots; slots beyond a sample's `keep` are
masked out of attention. Decoder: Dense to the decoder width, image mask tokens unshuffled back to N patches, text
mask tokens at the masked positions, decoder positions + type embeddings, a transformer over [cls, N, L] with pad
keys masked, a pixel head on the patches and a vocabulary head on the text.

Outputs (`__call__`): pixel_pred [B, N, p*p*3], image_mask [B, N] (1 = masked), text_logits [B, L, V] float32,
text_mask [B, L] (1 = masked non-pad token: the positions the text loss is taken on).
Config (`model.*`): vision = {image_size, patch_size}; text = {vocab_size, context_length}; encoder/decoder =
{width, depth, num_heads, mlp_ratio}; image_mask_ratio, text_mask_ratio (0.75 each, the reference defaults);
norm_pix_loss; text_loss_weight (read by the "m3ae" objective; 0.5 here, the reference script's flag defaults to
0.1); probe_pool; pad_id.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.layers import DEFAULT_EOT_ID, LN_EPS, Transformer, padding_mask, through_eot
from mmjax.models.mae import (TOWER_DEFAULTS, gather_tokens, len_keep, masking_from_noise, patchify,
                              pool_features, reconstruction_images, sincos_1d, sincos_2d, sub_config, unshuffle)
from mmjax.registry import MODELS

Dtype = Any


def text_masking(noise: jax.Array, valid: jax.Array, ratio: float) -> dict[str, jax.Array]:
  """Per-sample masking of the non-pad tokens. noise [B, L] float, valid [B, L] bool.

  keep_b = floor(n_valid_b (1 - ratio)) (1e-6 tolerance, as `len_keep`; may be 0 for very short texts) tokens with
  the smallest noise among the valid ones stay visible. Returns ids_keep int32 [B, K_t] (slot j holds position
  ids_keep[b, j]), slot_valid bool [B, K_t] (j < keep_b), ids_restore int32 [B, L] (rank of each position),
  visible bool [B, L] and mask float32 [B, L] (1 = valid and not visible), K_t = floor(L (1 - ratio)).
  """
  length = noise.shape[1]
  slots = len_keep(length, ratio)
  valid = valid.astype(bool)
  n_valid = jnp.sum(valid, axis=1)
  keep = jnp.floor(n_valid * (1.0 - ratio) + 1e-6).astype(jnp.int32)
  ids_shuffle = jnp.argsort(jnp.where(valid, noise, 2.0 + noise), axis=1).astype(jnp.int32)  # pads last
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  visible = ids_restore < keep[:, None]
  return {"ids_keep": ids_shuffle[:, :slots], "slot_valid": jnp.arange(slots)[None] < keep[:, None],
          "ids_restore": ids_restore, "visible": visible, "mask": (valid & ~visible).astype(jnp.float32)}


@MODELS.register("m3ae")
class M3AE(nn.Module):
  """(images [B, H, W, 3], tokens int32 [B, L]) -> dict (see the module docstring).

  Masks come from `image_noise` [B, N] / `text_noise` [B, L] if given, else from the "mask" rng stream.
  `encode_image` gives image-only probe features [B, width] (no text, no masking).
  """
  vision: Mapping
  text: Mapping
  encoder: Mapping
  decoder: Mapping
  image_mask_ratio: float = 0.75
  text_mask_ratio: float = 0.75
  norm_pix_loss: bool = True
  text_loss_weight: float = 0.5
  probe_pool: str = "cls"
  pad_id: int = 0
  eot_id: int | None = DEFAULT_EOT_ID   # text positions after the first EOT are padding (mmjax.layers.through_eot)
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, "vision", sub_config(self.vision, "vision", ("image_size", "patch_size")))
    object.__setattr__(self, "text", sub_config(self.text, "text", ("vocab_size", "context_length")))
    tower = ("width", "depth", "num_heads")
    object.__setattr__(self, "encoder", sub_config(self.encoder, "encoder", tower, TOWER_DEFAULTS))
    object.__setattr__(self, "decoder", sub_config(self.decoder, "decoder", tower, TOWER_DEFAULTS))
    if self.vision["image_size"] % self.vision["patch_size"]:
      raise MmjaxError(f"model.vision.patch_size={self.vision['patch_size']} does not divide "
                       f"model.vision.image_size={self.vision['image_size']}")
    len_keep(self.num_patches, self.image_mask_ratio)
    len_keep(int(self.text["context_length"]), self.text_mask_ratio)
    super().__post_init__()

  @property
  def patch_size(self) -> int:
    return int(self.vision["patch_size"])

  @property
  def num_patches(self) -> int:
    return (int(self.vision["image_size"]) // int(self.vision["patch_size"])) ** 2

  def setup(self):
    enc, dec = self.encoder, self.decoder
    length, vocab = int(self.text["context_length"]), int(self.text["vocab_size"])
    grid = int(self.vision["image_size"]) // self.patch_size
    dense = dict(dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform())
    ln = dict(epsilon=LN_EPS, dtype=self.dtype)
    normal = nn.initializers.normal(0.02)
    w, dw = enc["width"], dec["width"]
    self.patch_embed = nn.Dense(w, **dense)
    self.token_embedding = nn.Embed(vocab, w, embedding_init=normal, dtype=self.dtype)
    self.cls = self.param("cls", normal, (1, 1, w), jnp.float32)
    self.image_type = self.param("image_type", normal, (1, 1, w), jnp.float32)
    self.text_type = self.param("text_type", normal, (1, 1, w), jnp.float32)
    self.image_pos = jnp.asarray(sincos_2d(w, grid))[None]
    self.text_pos = jnp.asarray(sincos_1d(w, np.arange(length)))[None]
    self.encoder_tf = Transformer(enc["depth"], enc["num_heads"], enc["mlp_ratio"], dtype=self.dtype)
    self.encoder_norm = nn.LayerNorm(**ln)
    self.decoder_embed = nn.Dense(dw, **dense)
    self.image_mask_token = self.param("image_mask_token", normal, (1, 1, dw), jnp.float32)
    self.text_mask_token = self.param("text_mask_token", normal, (1, 1, dw), jnp.float32)
    self.decoder_image_type = self.param("decoder_image_type", normal, (1, 1, dw), jnp.float32)
    self.decoder_text_type = self.param("decoder_text_type", normal, (1, 1, dw), jnp.float32)
    self.decoder_image_pos = jnp.asarray(sincos_2d(dw, grid))[None]
    self.decoder_text_pos = jnp.asarray(sincos_1d(dw, np.arange(length)))[None]
    self.decoder_tf = Transformer(dec["depth"], dec["num_heads"], dec["mlp_ratio"], dtype=self.dtype)
    self.decoder_norm = nn.LayerNorm(**ln)
    self.decoder_pixels = nn.Dense(self.patch_size ** 2 * 3, **dense)
    self.decoder_logits = nn.Dense(vocab, **dense)

  def _check(self, images: jax.Array, tokens: jax.Array | None) -> None:
    s, length = int(self.vision["image_size"]), int(self.text["context_length"])
    if images.ndim != 4 or tuple(images.shape[1:]) != (s, s, 3):
      raise MmjaxError(f"M3AE expects images [B, {s}, {s}, 3] (model.vision.image_size={s}), got shape "
                       f"{tuple(images.shape)}")
    if tokens is not None and (tokens.ndim != 2 or tokens.shape != (images.shape[0], length)):
      raise MmjaxError(f"M3AE expects tokens [B={images.shape[0]}, {length}] (model.text.context_length="
                       f"{length}), got shape {tuple(tokens.shape)}")

  def embed_image(self, images: jax.Array) -> jax.Array:
    x = self.patch_embed(patchify(images.astype(self.dtype), self.patch_size))
    return x + (self.image_pos + self.image_type).astype(x.dtype)

  def embed_text(self, tokens: jax.Array) -> jax.Array:
    x = self.token_embedding(tokens)
    return x + (self.text_pos + self.text_type).astype(x.dtype)

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Tokens [B, T, w] -> normed [cls, tokens] [B, 1 + T, w]; mask: key validity [B, 1 + T] or None."""
    cls = jnp.broadcast_to(self.cls.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
    attn = None if mask is None else padding_mask(mask)
    return self.encoder_norm(self.encoder_tf(jnp.concatenate([cls, x], axis=1), attn))

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False,
               image_noise: jax.Array | None = None, text_noise: jax.Array | None = None) -> dict[str, jax.Array]:
    self._check(images, tokens)
    b, length = tokens.shape
    if image_noise is None:
      image_noise = jax.random.uniform(self.make_rng("mask"), (b, self.num_patches))
    if text_noise is None:
      text_noise = jax.random.uniform(self.make_rng("mask"), (b, length))
    valid = through_eot(tokens, self.eot_id)
    mi = masking_from_noise(image_noise, self.image_mask_ratio)
    mt = text_masking(text_noise, valid, self.text_mask_ratio)
    xi = gather_tokens(self.embed_image(images), mi["ids_keep"])
    xt = gather_tokens(self.embed_text(tokens), mt["ids_keep"])
    k_i = xi.shape[1]
    keys = jnp.concatenate([jnp.ones((b, 1 + k_i), bool), mt["slot_valid"]], axis=1)
    latent = self.encode(jnp.concatenate([xi, xt], axis=1), keys)

    y = self.decoder_embed(latent)
    yi = unshuffle(y[:, 1:1 + k_i], self.image_mask_token, mi["ids_restore"])
    yt = unshuffle(y[:, 1 + k_i:], self.text_mask_token, mt["ids_restore"])
    yt = jnp.where(mt["visible"][:, :, None], yt, self.text_mask_token.astype(yt.dtype))
    yi = yi + (self.decoder_image_pos + self.decoder_image_type).astype(y.dtype)
    yt = yt + (self.decoder_text_pos + self.decoder_text_type).astype(y.dtype)
    keys = jnp.concatenate([jnp.ones((b, 1 + self.num_patches), bool), valid], axis=1)
    y = self.decoder_tf(jnp.concatenate([y[:, :1], yi, yt], axis=1), padding_mask(keys))
    y = self.decoder_norm(y)
    n = self.num_patches
    return {"pixel_pred": self.decoder_pixels(y[:, 1:1 + n]).astype(jnp.float32), "image_mask": mi["mask"],
            "text_logits": self.decoder_logits(y[:, 1 + n:]).astype(jnp.float32), "text_mask": mt["mask"]}

  def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Image-only probe features [B, width] (float32): all patches, no text, no masking, `probe_pool`."""
    self._check(images, None)
    return pool_features(self.encode(self.embed_image(images)), self.probe_pool).astype(jnp.float32)

  def reconstruct(self, images: jax.Array, tokens: jax.Array, train: bool = False, **noise) -> dict:
    """Figure panels as `MAE.reconstruct`, plus "text_pred" int32 [B, L] (argmax at masked tokens, else the
    input token) and "text_mask" [B, L]."""
    out = self(images, tokens, train=train, **noise)
    panels = reconstruction_images(images, out["pixel_pred"], out["image_mask"], self.patch_size,
                                   self.norm_pix_loss)
    pred = jnp.argmax(out["text_logits"], axis=-1).astype(tokens.dtype)
    panels["text_pred"] = jnp.where(out["text_mask"] > 0, pred, tokens)
    panels["text_mask"] = out["text_mask"]
    return panels
