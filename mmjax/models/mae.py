"""Masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"), after the official
code (facebookresearch/mae, models_mae.py).

images [B, H, W, 3] -> patches [B, N, p*p*3] (N = (H/p)^2, row-major, pixels (p1 p2 c) inside a patch) -> linear
patch embedding + fixed 2-D sin-cos positions -> a random subset of K = len_keep(N, ratio) patches per sample
(argsort of uniform noise, `masking_from_noise`) -> [cls, K visible] -> pre-LN transformer -> LayerNorm
-> decoder: Dense to the decoder width, mask tokens appended and unshuffled back to N, its own sin-cos positions,
a shallow transformer, a Dense head predicting the p*p*3 pixels of every patch. The loss (objectives/masked.py)
is the mean squared error on the masked patches only, optionally against per-patch normalised pixels
(`norm_pix_loss`, the paper's default).

Params: {"patch_embed", "cls", ["pos_embedding"], "encoder", "encoder_norm", "decoder_embed", "mask_token",
["decoder_pos_embedding"], "decoder", "decoder_norm", "decoder_pred"} (positions are params only when learned).
Config (`model.*`): vision = {image_size, patch_size}; encoder = {width, depth, num_heads, mlp_ratio};
decoder = {width, depth, num_heads, mlp_ratio}; mask_ratio; norm_pix_loss; pos_embedding ("sincos" | "learned");
probe_pool ("gap" | "cls": the features `encode_image` returns for the linear probe).
"""
from __future__ import annotations

from typing import Any, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.layers import LN_EPS, Transformer
from mmjax.registry import MODELS

Dtype = Any
TOWER_DEFAULTS = {"mlp_ratio": 4.0}
POOLS = ("gap", "cls")
NORM_PIX_EPS = 1e-6   # as the official code: (x - mean) / sqrt(var + 1e-6)


def sub_config(value: Mapping, key: str, required: tuple[str, ...], defaults: Mapping | None = None) -> FrozenDict:
  """A model sub-config (`model.<key>`) checked against its allowed keys, with defaults filled in."""
  out = dict(defaults or {})
  value = dict(value)
  allowed = set(required) | set(out)
  unknown = sorted(set(value) - allowed)
  if unknown:
    raise MmjaxError(f"unknown config key 'model.{key}.{unknown[0]}' (valid keys under model.{key}: "
                     f"{', '.join(sorted(allowed))})")
  missing = [k for k in required if k not in value]
  if missing:
    raise MmjaxError(f"missing config key(s) {', '.join(f'model.{key}.{k}' for k in missing)}")
  out.update(value)
  return FrozenDict(out)


# ----------------------------------------------------------------------------------------------- patches
def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """images [B, H, W, C] -> patches [B, (H/p)(W/p), p*p*C]; patch n = row-major (h, w), pixels in (p1, p2, c)."""
  b, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise MmjaxError(f"patchify: image {h}x{w} is not divisible by patch_size={patch_size}")
  return einops.rearrange(images, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: jax.Array, patch_size: int, channels: int = 3) -> jax.Array:
  """patches [B, N, p*p*C] (N a square) -> images [B, sqrt(N) p, sqrt(N) p, C]; the inverse of `patchify`."""
  n = patches.shape[1]
  g = int(round(n ** 0.5))
  if g * g != n or patches.shape[2] != patch_size * patch_size * channels:
    raise MmjaxError(f"unpatchify: patches of shape {tuple(patches.shape)} are not [B, g*g, "
                     f"{patch_size}*{patch_size}*{channels}]")
  return einops.rearrange(patches, "b (h w) (p1 p2 c) -> b (h p1) (w p2) c", h=g, p1=patch_size, p2=patch_size)


def pixel_targets(images: jax.Array, patch_size: int, norm_pix: bool) -> jax.Array:
  """images [B, H, W, 3] -> reconstruction targets [B, N, p*p*3]; with norm_pix each patch is standardised over
  its p*p*3 values: (x - mean) / sqrt(var + 1e-6) (biased variance, as the official code)."""
  target = patchify(images.astype(jnp.float32), patch_size)
  if norm_pix:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True)
    target = (target - mean) / jnp.sqrt(var + NORM_PIX_EPS)
  return target


def denormalize_patches(pred: jax.Array, images: jax.Array, patch_size: int) -> jax.Array:
  """Per-patch normalised predictions [B, N, P] -> pixels, using each patch's mean/std in `images` (for figures
  only: this restores the true mean colour of masked patches, which the model did not predict)."""
  ref = patchify(images.astype(jnp.float32), patch_size)
  return pred * jnp.sqrt(ref.var(axis=-1, keepdims=True) + NORM_PIX_EPS) + ref.mean(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------- masking
def len_keep(n: int, ratio: float) -> int:
  """Patches kept visible out of n: floor(n (1 - ratio)), the official `int(L * (1 - mask_ratio))`, computed with a
  1e-6 tolerance so that float rounding cannot drop one (10 * (1 - 0.9) = 0.9999... keeps 1, not 0)."""
  if not 0.0 <= ratio < 1.0:
    raise MmjaxError(f"mask ratio {ratio} must be in [0, 1) (config key model.*mask_ratio)")
  keep = int(np.floor(n * (1.0 - ratio) + 1e-6))
  if keep < 1:
    raise MmjaxError(f"mask ratio {ratio} keeps no patch of {n}; lower the mask ratio below {1 - 1 / n:.3f}")
  return keep


def masking_from_noise(noise: jax.Array, ratio: float) -> dict[str, jax.Array]:
  """Per-sample random masking from noise [B, N] (each row its own permutation), as the official `random_masking`.

  ids_shuffle = argsort(noise) (ascending: small noise is kept), ids_restore = argsort(ids_shuffle).
  Returns ids_keep int32 [B, K] (the kept patch indices, in shuffled order), ids_restore int32 [B, N] (rank of
  each patch in the shuffle) and mask float32 [B, N] (1 = masked/removed, 0 = visible), K = len_keep(N, ratio).
  """
  n = noise.shape[1]
  keep = len_keep(n, ratio)
  ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  return {"ids_keep": ids_shuffle[:, :keep], "ids_restore": ids_restore,
          "mask": (ids_restore >= keep).astype(jnp.float32)}


def random_masking(rng: jax.Array, batch: int, n: int, ratio: float) -> dict[str, jax.Array]:
  """`masking_from_noise` with uniform noise [batch, n] drawn from rng: an independent mask per sample."""
  return masking_from_noise(jax.random.uniform(rng, (batch, n)), ratio)


def gather_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
  """x [B, N, D], ids int [B, K] -> x[b, ids[b]] [B, K, D]."""
  return jnp.take_along_axis(x, ids[:, :, None], axis=1)


def unshuffle(visible: jax.Array, mask_token: jax.Array, ids_restore: jax.Array) -> jax.Array:
  """Decoder input: visible [B, K, D] (shuffled order) + mask tokens -> [B, N, D] in patch order."""
  b, k, d = visible.shape
  n = ids_restore.shape[1]
  filler = jnp.broadcast_to(mask_token.astype(visible.dtype), (b, n - k, d))
  return gather_tokens(jnp.concatenate([visible, filler], axis=1), ids_restore)


# ----------------------------------------------------------------------------------------------- positions
def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """Fixed sin-cos embedding (Vaswani et al. 2017) [M, dim] of positions [M]: [sin(p w_i), cos(p w_i)],
  w_i = 10000^(-i / (dim/2)), as MAE's get_1d_sincos_pos_embed_from_grid."""
  if dim % 2:
    raise MmjaxError(f"sin-cos position embedding needs an even width, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", np.asarray(positions, np.float64).reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
  """[grid*grid, dim] for row-major patches: half the channels encode the row, half the column (MAE's
  get_2d_sincos_pos_embed, without the cls row)."""
  if dim % 4:
    raise MmjaxError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  return np.concatenate([sincos_1d(dim // 2, rows.ravel()), sincos_1d(dim // 2, cols.ravel())], axis=1)


def positions(module: nn.Module, name: str, kind: str, table: np.ndarray) -> jax.Array:
  """[1, M, D] position embedding: the fixed sin-cos `table` or a learned param `name` (initialised normal 0.02)."""
  if kind == "sincos":
    return jnp.asarray(table)[None]
  if kind == "learned":
    return module.param(name, nn.initializers.normal(0.02), (1,) + table.shape, jnp.float32)
  raise MmjaxError(f"unknown config key value model.pos_embedding={kind!r}; use 'sincos' or 'learned'")


def pool_features(tokens: jax.Array, pool: str) -> jax.Array:
  """Normed encoder tokens [B, 1 + T, D] (cls first) -> [B, D]: 'gap' = mean of the T others, 'cls' = token 0."""
  if pool == "gap":
    return tokens[:, 1:].mean(axis=1)
  if pool == "cls":
    return tokens[:, 0]
  raise MmjaxError(f"unknown config key value model.probe_pool={pool!r}; use one of {', '.join(POOLS)}")


# ----------------------------------------------------------------------------------------------- model
@MODELS.register("mae")
class MAE(nn.Module):
  """images [B, H, W, 3] -> (pred [B, N, p*p*3], mask [B, N] float32, 1 = masked).

  The mask comes from `noise` [B, N] if given, else from uniform noise of the "mask" rng stream (falling back to
  "params" during init). `encode_image` gives probe features [B, width] of the unmasked image.
  """
  vision: Mapping
  encoder: Mapping
  decoder: Mapping
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True
  pos_embedding: str = "sincos"
  probe_pool: str = "cls"
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, "vision", sub_config(self.vision, "vision", ("image_size", "patch_size")))
    tower = ("width", "depth", "num_heads")
    object.__setattr__(self, "encoder", sub_config(self.encoder, "encoder", tower, TOWER_DEFAULTS))
    object.__setattr__(self, "decoder", sub_config(self.decoder, "decoder", tower, TOWER_DEFAULTS))
    if self.vision["image_size"] % self.vision["patch_size"]:
      raise MmjaxError(f"model.vision.patch_size={self.vision['patch_size']} does not divide "
                       f"model.vision.image_size={self.vision['image_size']}")
    len_keep(self.num_patches, self.mask_ratio)   # fails early on a ratio that keeps nothing
    super().__post_init__()

  @property
  def patch_size(self) -> int:
    return int(self.vision["patch_size"])

  @property
  def num_patches(self) -> int:
    return (int(self.vision["image_size"]) // int(self.vision["patch_size"])) ** 2

  def setup(self):
    enc, dec = self.encoder, self.decoder
    dense = dict(dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform())
    ln = dict(epsilon=LN_EPS, dtype=self.dtype)
    grid = int(self.vision["image_size"]) // self.patch_size
    self.patch_embed = nn.Dense(enc["width"], **dense)
    self.cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, enc["width"]), jnp.float32)
    self.pos = positions(self, "pos_embedding", self.pos_embedding, sincos_2d(enc["width"], grid))
    self.encoder_tf = Transformer(enc["depth"], enc["num_heads"], enc["mlp_ratio"], dtype=self.dtype)
    self.encoder_norm = nn.LayerNorm(**ln)
    self.decoder_embed = nn.Dense(dec["width"], **dense)
    self.mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, dec["width"]), jnp.float32)
    self.decoder_pos = positions(self, "decoder_pos_embedding", self.pos_embedding, sincos_2d(dec["width"], grid))
    self.decoder_tf = Transformer(dec["depth"], dec["num_heads"], dec["mlp_ratio"], dtype=self.dtype)
    self.decoder_norm = nn.LayerNorm(**ln)
    self.decoder_pred = nn.Dense(self.patch_size ** 2 * 3, **dense)

  def _check(self, images: jax.Array) -> None:
    s = int(self.vision["image_size"])
    if images.ndim != 4 or tuple(images.shape[1:]) != (s, s, 3):
      raise MmjaxError(f"MAE expects images [B, {s}, {s}, 3] (model.vision.image_size={s}), got shape "
                       f"{tuple(images.shape)}")

  def embed(self, images: jax.Array) -> jax.Array:
    """images -> patch embeddings + positions [B, N, w]."""
    self._check(images)
    x = self.patch_embed(patchify(images.astype(self.dtype), self.patch_size))
    return x + self.pos.astype(x.dtype)

  def encode(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Tokens [B, T, w] -> [cls, tokens] through the encoder and its final LayerNorm: [B, 1 + T, w]."""
    cls = jnp.broadcast_to(self.cls.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
    return self.encoder_norm(self.encoder_tf(jnp.concatenate([cls, x], axis=1), mask))

  def decode(self, latent: jax.Array, ids_restore: jax.Array) -> jax.Array:
    """Encoder output [B, 1 + K, w] -> pixel predictions [B, N, p*p*3] for every patch."""
    y = self.decoder_embed(latent)
    patches = unshuffle(y[:, 1:], self.mask_token, ids_restore) + self.decoder_pos.astype(y.dtype)
    y = self.decoder_norm(self.decoder_tf(jnp.concatenate([y[:, :1], patches], axis=1)))
    return self.decoder_pred(y[:, 1:]).astype(jnp.float32)

  def masking(self, batch: int, noise: jax.Array | None) -> dict[str, jax.Array]:
    if noise is None:
      noise = jax.random.uniform(self.make_rng("mask"), (batch, self.num_patches))
    return masking_from_noise(noise, self.mask_ratio)

  def __call__(self, images: jax.Array, train: bool = False, noise: jax.Array | None = None):
    x = self.embed(images)
    m = self.masking(x.shape[0], noise)
    latent = self.encode(gather_tokens(x, m["ids_keep"]))
    return self.decode(latent, m["ids_restore"]), m["mask"]

  def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Probe features [B, width] (float32) of all N patches, no masking: `probe_pool` of the normed tokens."""
    return pool_features(self.encode(self.embed(images)), self.probe_pool).astype(jnp.float32)

  def reconstruct(self, images: jax.Array, train: bool = False, noise: jax.Array | None = None) -> dict:
    """For figures: {"prediction", "reconstruction" (visible patches from the input), "masked"} images
    [B, H, W, 3] in the input's range, and "mask" [B, N]. Normalised predictions are mapped back to pixels with
    each patch's true mean/std (`denormalize_patches`)."""
    pred, mask = self(images, train=train, noise=noise)
    return reconstruction_images(images, pred, mask, self.patch_size, self.norm_pix_loss)


def reconstruction_images(images: jax.Array, pred: jax.Array, mask: jax.Array, patch_size: int,
                          norm_pix: bool) -> dict[str, jax.Array]:
  """images [B, H, W, 3], pred [B, N, P], mask [B, N] -> figure panels (see `MAE.reconstruct`)."""
  patches = patchify(images.astype(jnp.float32), patch_size)
  pix = denormalize_patches(pred, images, patch_size) if norm_pix else pred
  m = mask[:, :, None]
  return {"prediction": unpatchify(pix, patch_size),
          "reconstruction": unpatchify(m * pix + (1 - m) * patches, patch_size),
          "masked": unpatchify((1 - m) * patches, patch_size),
          "mask": mask}
