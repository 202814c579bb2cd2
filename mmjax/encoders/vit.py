"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), laid out as OpenCLIP's
`VisionTransformer` (Radford et al. 2021; Cherti et al. 2023) so that its weights import one to one.

conv1 (patchify, no bias) -> prepend `cls` -> + `pos_embedding` -> `ln_pre` -> transformer -> `ln_post` on every
token -> pool ('cls': token 0, 'gap': mean of the patch tokens, 'none': all tokens) -> `proj` (no bias).
Applying ln_post before pooling is OpenCLIP's default (final_ln_after_pool=False); for 'cls' it is the same
as normalising the pooled token.

last_block_pooled_only=True (pool 'cls'): the last block is computed for the CLS token only (keys and values
from every token), since nothing else of it reaches the embedding: the same embedding and the same gradients
for ~22/24 less of that block's matmul work; `out` then holds "pooled" alone.

patch_dropout=p (FLIP, Li et al. 2023, "Scaling Language-Image Pre-training via Masking"): in training only, each
sample keeps a random subset of N - round(p N) of its N patch tokens (the CLS token always), drawn from the
"dropout" rng stream, after the positional embeddings are added (so kept tokens keep their positions) and before
ln_pre, as OpenCLIP's PatchDropout. Eval (train=False) never drops. `patch_ids` [B, K] (explicit kept patch indices,
e.g. an MAE mask) overrides it.

stem_channels=(c_1, ..., c_k) (a convolutional stem, Xiao et al. 2021, "Early Convolutions Help Transformers See
Better"): the patchify conv is replaced by k 3x3 stride-2 convs (c_i channels each, no bias) -> LayerNorm -> ReLU,
then a 1x1 conv (`conv1`, no bias) to the width; 2^k must equal patch_size, so the tokens are the same N patches.
Local shape (edges, corners) then reaches the transformer in a few hundred steps where a linear p x p patch
embedding learns it slowly. () (the default) is OpenCLIP's patchify conv.
"""
from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.layers import LN_EPS, Transformer

Dtype = Any
POOLS = ("cls", "gap", "none")


def patches_dropped(n: int, p: float) -> int:
  """Patches FLIP drops out of n at rate p: round(p n) (Python's round), at most n - 1 (one patch is kept)."""
  if not 0.0 <= p < 1.0:
    raise MmjaxError(f"config key model.vision.patch_dropout={p} must be in [0, 1)")
  return min(int(round(p * n)), n - 1)


def patch_dropout_ids(rng: jax.Array, batch: int, n: int, p: float) -> jax.Array:
  """Kept patch indices int32 [B, K], K = n - patches_dropped(n, p): per sample the K patches with the smallest
  uniform noise (an independent random subset per row), in ascending (row-major) order."""
  keep = n - patches_dropped(n, p)
  ids = jnp.argsort(jax.random.uniform(rng, (batch, n)), axis=1)[:, :keep]
  return jnp.sort(ids, axis=1).astype(jnp.int32)


def keep_patches(x: jax.Array, ids: jax.Array) -> jax.Array:
  """x [B, 1 + N, w] (CLS first), ids int [B, K] patch indices -> [B, 1 + K, w]: CLS, then x[b, 1 + ids[b]]."""
  kept = jnp.take_along_axis(x[:, 1:], ids[:, :, None].astype(jnp.int32), axis=1)
  return jnp.concatenate([x[:, :1], kept], axis=1)


class ViT(nn.Module):
  """images [B, H, W, 3] (NHWC, H = W = image_size) -> (embedding, out).

  embedding: [B, output_dim or width] ([B, N+1, output_dim or width] with pool='none').
  out: "tokens" [B, N+1, w] after the last block (before ln_post), "normed_tokens" [B, N+1, w] after ln_post,
  "patch_tokens" [B, N, w] (normed, CLS dropped), "pooled" (normed, before proj). N = (image_size/patch_size)^2.
  """
  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  pool: str = "cls"
  output_dim: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: str = "none"               # per-block rematerialisation policy (mmjax.layers.transformer)
  last_block_pooled_only: bool = False   # see the module docstring
  patch_dropout: float = 0.0        # FLIP's training-time patch dropout rate (see the module docstring)
  stem_channels: tuple[int, ...] = ()   # convolutional stem (see the module docstring); (): patchify conv
  cpu_tuning: str = "auto"          # the layers' CPU code paths (mmjax/cpu_tuning.py)

  def _check(self, images: jax.Array) -> None:
    if self.pool not in POOLS:
      raise MmjaxError(f"unknown vision pool {self.pool!r} (model.vision.pool); valid: {', '.join(POOLS)}")
    if self.last_block_pooled_only and self.pool != "cls":
      raise MmjaxError(f"model.vision.last_block_pooled_only needs model.vision.pool='cls' (got "
                       f"{self.pool!r}): with '{self.pool}' pooling every token of the last block is used")
    if self.image_size % self.patch_size:
      divisors = [d for d in range(1, self.image_size + 1) if self.image_size % d == 0]
      raise MmjaxError(f"model.vision.patch_size={self.patch_size} does not divide model.vision.image_size="
                       f"{self.image_size}; valid patch sizes: {divisors}")
    if self.stem_channels and 2 ** len(self.stem_channels) != self.patch_size:
      raise MmjaxError(f"model.vision.stem_channels={tuple(self.stem_channels)} has {len(self.stem_channels)} "
                       f"stride-2 convs (2^{len(self.stem_channels)} = {2 ** len(self.stem_channels)}) but "
                       f"model.vision.patch_size={self.patch_size}; give log2(patch_size) channel counts")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise MmjaxError(f"ViT expects images [B, H, W, 3] (NHWC), got shape {tuple(images.shape)}")
    if tuple(images.shape[1:3]) != (self.image_size, self.image_size):
      raise MmjaxError(f"images are {images.shape[1]}x{images.shape[2]} but model.vision.image_size="
                       f"{self.image_size}; resize to {self.image_size}x{self.image_size} or set "
                       f"model.vision.image_size={images.shape[1]} (square images only)")

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               patch_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """patch_ids: optional int [B, K] patch indices to keep (then "tokens" etc. are [B, 1 + K, w])."""
    self._check(images)
    w, p = self.width, self.patch_size
    scale = w ** -0.5
    conv = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    x = images.astype(self.dtype)
    for i, c in enumerate(self.stem_channels):
      x = nn.Conv(int(c), (3, 3), strides=(2, 2), padding="SAME", **conv, name=f"stem_conv_{i}")(x)
      x = nn.relu(nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype,
                               name=f"stem_ln_{i}")(x))
    k = 1 if self.stem_channels else p
    x = nn.Conv(w, (k, k), strides=(k, k), padding="VALID", **conv, name="conv1")(x)
    x = einops.rearrange(x, "b h w c -> b (h w) c")
    n = x.shape[1]
    cls = self.param("cls", nn.initializers.normal(scale), (w,), self.param_dtype)
    pos = self.param("pos_embedding", nn.initializers.normal(scale), (1, n + 1, w), self.param_dtype)
    cls = einops.repeat(cls.astype(self.dtype), "c -> b 1 c", b=x.shape[0])
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(self.dtype)
    if patch_ids is None and train and self.patch_dropout > 0:
      patch_ids = patch_dropout_ids(self.make_rng("dropout"), x.shape[0], n, self.patch_dropout)
    if patch_ids is not None:
      x = keep_patches(x, patch_ids)
    ln = dict(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.LayerNorm(**ln, name="ln_pre")(x)
    transformer = Transformer(self.depth, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                              param_dtype=self.param_dtype, remat=self.remat, cpu_tuning=self.cpu_tuning,
                              name="transformer")
    if self.last_block_pooled_only:
      cls_out = transformer(x, last_query_index=jnp.zeros((x.shape[0],), jnp.int32))
      pooled = nn.LayerNorm(**ln, name="ln_post")(cls_out)[:, 0]
      return self._project(pooled, scale), PooledOnly(pooled=pooled)
    tokens = transformer(x)
    normed = nn.LayerNorm(**ln, name="ln_post")(tokens)
    if self.pool == "cls":
      pooled = normed[:, 0]
    elif self.pool == "gap":
      pooled = jnp.mean(normed[:, 1:], axis=1)
    else:
      pooled = normed
    out = {"tokens": tokens, "normed_tokens": normed, "patch_tokens": normed[:, 1:], "pooled": pooled}
    return self._project(pooled, scale), out

  def _project(self, pooled: jax.Array, scale: float) -> jax.Array:
    if self.output_dim is None:
      return pooled
    return nn.Dense(self.output_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=nn.initializers.normal(scale), name="proj")(pooled)


class PooledOnly(dict):
  """A tower's `out` when its last block ran for the pooled token only: asking for a token-level key raises."""

  def __missing__(self, key):
    raise MmjaxError(f"the tower was built with last_block_pooled_only=True, so its last block computed the "
                     f"pooled token only and {key!r} does not exist; set model.vision/text."
                     f"last_block_pooled_only=False for token-level outputs (FILIP, captioning, MLM)")
