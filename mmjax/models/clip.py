"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"),
parameter-for-parameter as OpenCLIP's `CLIP` with a ViT image tower (Cherti et al. 2023).
With `logit_bias_init` set it carries SigLIP's learned bias (Zhai et al. 2023).

Params: {"vision": ViT params, "text": TextTransformer params, "logit_scale": (), ["logit_bias": ()]}.

Mixed precision (Micikevicius et al. 2018): `dtype` is the compute dtype of both towers ("bfloat16": matmuls,
attention and layer norms in bf16), while parameters stay float32 (the master weights the optimizer updates),
and the embeddings are normalised, and the logits and loss computed, in float32. `remat` is the per-block
rematerialisation policy of both towers (mmjax.layers.transformer).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax import cpu_tuning
from mmjax.encoders import TextTransformer, ViT
from mmjax.encoders.vit import patches_dropped
from mmjax.errors import MmjaxError
from mmjax.layers import through_eot
from mmjax.registry import MODELS

Dtype = Any
_RESERVED = ("output_dim", "dtype", "param_dtype", "remat", "cpu_tuning", "parent", "name")
DTYPES = ("float32", "bfloat16", "float16")
# OpenAI CLIP's pixel statistics (open_clip.constants OPENAI_DATASET_MEAN / _STD), used by every OpenCLIP ViT.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INPUT_NORMS = ("none", "openai")


def _tower_kwargs(cls: type, cfg: Mapping, key: str) -> dict[str, Any]:
  """Checks a vision/text kwargs mapping against the tower's fields; raises MmjaxError on unknown keys."""
  kwargs = dict(cfg)
  valid = [f.name for f in dataclasses.fields(cls) if f.name not in _RESERVED]
  for k in kwargs:
    if k not in valid:
      extra = "; the projection size is model.embed_dim" if k == "output_dim" else ""
      raise MmjaxError(f"unknown config key 'model.{key}.{k}'{extra} (valid keys under model.{key}: "
                       f"{', '.join(sorted(valid))})")
  required = [f.name for f in dataclasses.fields(cls) if f.name in valid
              and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
  missing = [k for k in required if k not in kwargs]
  if missing:
    raise MmjaxError(f"missing config key(s) {', '.join(f'model.{key}.{k}' for k in missing)}")
  return kwargs


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x [..., E] -> x / max(||x||, eps) along the last axis, in (at least) float32 (torch F.normalize)."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@MODELS.register("clip")
class CLIP(nn.Module):
  """Two towers and a learned temperature. images [B, H, W, 3], tokens int32 [B, L] -> [B, E] embeddings.

  vision: ViT kwargs without output_dim; text: TextTransformer kwargs without output_dim.
  """
  embed_dim: int
  vision: Mapping
  text: Mapping
  logit_scale_init: float = math.log(1 / 0.07)
  logit_bias_init: float | None = None
  dtype: Dtype = jnp.float32
  remat: str = "none"
  # "openai": images come in mmjax's [-1, 1] (the data pipeline's range) and enter the vision tower as OpenCLIP's
  # eval transform leaves them, ((x + 1) / 2 - OPENAI_MEAN) / OPENAI_STD (ToTensor then Normalize), so weights
  # imported from OpenCLIP see the inputs they were trained on. "none": images go in as they are.
  input_norm: str = "none"
  # The layers' CPU code paths (mmjax/cpu_tuning.py): "auto" (all when compiling for CPU, none elsewhere), "on",
  # "off" or a list of features; the same values either way.
  cpu_tuning: str = "auto"

  def __post_init__(self):
    if isinstance(self.dtype, str):
      if self.dtype not in DTYPES:
        raise MmjaxError(f"config key model.dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
      object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    cpu_tuning.check(self.cpu_tuning)
    if self.input_norm not in INPUT_NORMS:
      raise MmjaxError(f"config key model.input_norm={self.input_norm!r} is not one of {', '.join(INPUT_NORMS)}")
    # Hashable, plain mappings (ConfigDicts are neither); errors at construction, not first apply.
    object.__setattr__(self, "vision", FrozenDict(_tower_kwargs(ViT, self.vision, "vision")))
    object.__setattr__(self, "text", FrozenDict(_tower_kwargs(TextTransformer, self.text, "text")))
    super().__post_init__()

  def setup(self):
    self.vision_tower = ViT(**dict(self.vision), output_dim=self.embed_dim, dtype=self.dtype, remat=self.remat,
                            cpu_tuning=self.cpu_tuning, name="vision")
    self.text_tower = TextTransformer(**dict(self.text), output_dim=self.embed_dim, dtype=self.dtype,
                                      remat=self.remat, cpu_tuning=self.cpu_tuning, name="text")
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), (),
                                  jnp.float32)
    if self.logit_bias_init is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), (),
                                   jnp.float32)

  def encode_image(self, images: jax.Array, normalize: bool = True, train: bool = False) -> jax.Array:
    """images [B, H, W, 3] -> [B, E] (float32; unit norm when normalize)."""
    emb, _ = self.vision_tower(self._normalize_input(images), train=train)
    return l2_normalize(emb) if normalize else emb

  def _normalize_input(self, images: jax.Array) -> jax.Array:
    if self.input_norm == "none":
      return images
    mean, std = jnp.asarray(OPENAI_MEAN, jnp.float32), jnp.asarray(OPENAI_STD, jnp.float32)
    return ((images.astype(jnp.float32) + 1) * 0.5 - mean) / std

  def encode_text(self, tokens: jax.Array, normalize: bool = True, train: bool = False) -> jax.Array:
    """tokens int32 [B, L] -> [B, E] (float32; unit norm when normalize)."""
    emb, _ = self.text_tower(tokens, train=train)
    return l2_normalize(emb) if normalize else emb

  def _project_tokens(self, tower: nn.Module, tokens: jax.Array) -> jax.Array:
    """[B, T, w] -> [B, T, E] with the tower's own `proj` kernel (the map applied to its pooled token)."""
    kernel = tower.variables["params"]["proj"]["kernel"]
    return jnp.einsum("btw,we->bte", tokens.astype(self.dtype), kernel.astype(self.dtype))

  def encode_image_tokens(self, images: jax.Array, normalize: bool = True,
                          train: bool = False) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, 3] -> (tokens [B, N+1, E], mask [B, N+1] bool) for token-level alignment (FILIP).

    Every ViT token after ln_post (CLS first, then the N patches in row-major order), projected by vision/proj;
    unit norm per token when normalize (float32). The mask is all True (images have no padding).
    """
    _, out = self.vision_tower(self._normalize_input(images), train=train)
    tokens = self._project_tokens(self.vision_tower, out["normed_tokens"])
    tokens = l2_normalize(tokens) if normalize else tokens
    return tokens, jnp.ones(tokens.shape[:2], bool)

  def encode_text_tokens(self, tokens: jax.Array, normalize: bool = True,
                         train: bool = False) -> tuple[jax.Array, jax.Array]:
    """tokens int32 [B, L] -> (features [B, L, E], mask [B, L] bool, True up to and including the EOT).

    Every text token after ln_final, projected by text/proj; unit norm per token when normalize (float32).
    With the causal text tower token t has seen tokens <= t only.
    """
    _, out = self.text_tower(tokens, train=train)
    feats = self._project_tokens(self.text_tower, out["normed_tokens"])
    feats = l2_normalize(feats) if normalize else feats
    return feats, through_eot(tokens, self.text_tower.eot_id)

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
    """-> (zimg [B, E], ztxt [B, E], {"logit_scale": raw (), "logit_bias": raw () or None})."""
    zimg = self.encode_image(images, train=train)
    ztxt = self.encode_text(tokens, train=train)
    return zimg, ztxt, self.loss_scalars()

  def loss_scalars(self) -> dict[str, jax.Array | None]:
    """{"logit_scale": raw (), "logit_bias": raw () or None}: what the contrastive losses read."""
    return {"logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias if self.logit_bias_init is not None else None}


# The model.* keys of model "clip" with their defaults: base_config's model block (CLIP is the default model). The
# tower sizes are the default run's; the other defaults are CLIP's own field defaults (one copy). The other models'
# keys are the fields of their registered dataclasses (checked by mmjax.models.build_model).
CONFIG_KEYS = dict(
    embed_dim=128,
    vision=dict(image_size=64, patch_size=8, width=128, depth=3, num_heads=4, mlp_ratio=4.0, pool="cls"),
    text=dict(vocab_size=512, context_length=32, width=128, depth=3, num_heads=4, mlp_ratio=4.0),
    logit_scale_init=CLIP.logit_scale_init,
    logit_bias_init=CLIP.logit_bias_init,
    dtype=jnp.dtype(CLIP.dtype).name,     # compute dtype ("bfloat16": mixed precision, float32 weights and loss)
    remat=CLIP.remat,                     # per-block remat policy: none | full | dots | dots_no_batch
    cpu_tuning=CLIP.cpu_tuning,           # the layers' CPU code paths (mmjax/cpu_tuning.py): auto | on | off | list
)


def _tower_flops(n: int, w: int, depth: int, m: float, pooled_only: bool = False) -> float:
  """Forward matmul FLOPs of one pre-LN tower per sequence: depth * ((8 + 4m) n w^2 + 4 n^2 w).

  pooled_only (last_block_pooled_only): the last block computes its fused in_proj for every token (6 n w^2)
  but attention (4 n w), out_proj (2 w^2) and the MLP (4m w^2) for one token.
  """
  if not pooled_only:
    return depth * ((8 + 4 * m) * n * w ** 2 + 4 * n ** 2 * w)
  return _tower_flops(n, w, depth - 1, m) + 6 * n * w ** 2 + 4 * n * w + (2 + 4 * m) * w ** 2


def _patch_embed_flops(v: Mapping, n_patches: int) -> float:
  """Forward FLOPs per image of the patchify conv, or of a conv stem and its 1x1 conv (vision.stem_channels)."""
  stem = [3, *map(int, v.get("stem_channels", ()))]
  if len(stem) == 1:
    return 2 * n_patches * 3 * v["patch_size"] ** 2 * v["width"]
  convs = sum(2 * (v["image_size"] // 2 ** i) ** 2 * 9 * stem[i - 1] * stem[i] for i in range(1, len(stem)))
  return convs + 2 * n_patches * stem[-1] * v["width"]


def clip_flops_per_step(model_cfg: Mapping, batch_size: int) -> int:
  """Analytic train-step FLOPs (3 x forward matmul FLOPs), the formula of OpenCLIP anchor's `clip_flops_per_step`.

  Per sample: patch embed 2 P (3 p^2) w_v + vision tower (P + 1 tokens) + 2 w_v E + text tower (L tokens)
  + 2 w_t E; per batch: loss logits 2 * 2 B^2 E. LayerNorm/softmax/GELU/optimizer are ignored. A tower with
  last_block_pooled_only counts the work its last block does (see _tower_flops), so MFU stays honest. With FLIP's
  vision.patch_dropout = p the vision tower runs on the 1 + N - round(p N) kept tokens (the patch embedding still
  sees all N patches, as it runs before the drop). A convolutional stem (vision.stem_channels = (c_1, ..., c_k))
  replaces the patch embed by its convs, 2 (S / 2^i)^2 (9 c_{i-1} c_i) each (c_0 = 3, S = image_size), and the
  1x1 conv to the width, 2 P c_k w_v.
  """
  v, t, e = dict(model_cfg["vision"]), dict(model_cfg["text"]), model_cfg["embed_dim"]
  n_patches = (v["image_size"] // v["patch_size"]) ** 2
  n_kept = n_patches - patches_dropped(n_patches, float(v.get("patch_dropout", 0.0)))
  vis = (_patch_embed_flops(v, n_patches)
         + _tower_flops(n_kept + 1, v["width"], v["depth"], v.get("mlp_ratio", 4.0),
                        v.get("last_block_pooled_only", False))
         + 2 * v["width"] * e)
  txt = (_tower_flops(t["context_length"], t["width"], t["depth"], t.get("mlp_ratio", 4.0),
                      t.get("last_block_pooled_only", False))
         + 2 * t["width"] * e)
  fwd = batch_size * (vis + txt) + 2 * 2 * batch_size ** 2 * e
  return int(3 * fwd)
