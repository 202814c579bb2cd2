"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"): NT-Xent
between two augmented views of each image, batch-coupled (features_fn + loss_from_features, so gradient
accumulation is exact). With "clip" it is SLIP (Mu et al. 2022, "SLIP: Self-supervision meets Language-Image
Pre-training": objective "clip+simclr", temperature 0.1).

The views are made on the device from the step rng (`random_views`): per sample a random resized crop (area
fraction in CROP_SCALE, aspect ratio log-uniform in [3/4, 4/3], bilinear resize back to H x W) and a horizontal
flip with probability 1/2. The model contract: `apply(variables, images [B, H, W, 3], train) -> z [B, E]`
(an image embedding after the SimCLR projection MLP; MultiTaskCLIP's `simclr_embed`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES

CROP_SCALE = (0.5, 1.0)   # SLIP uses (0.08, 1) on ImageNet-size images; the small shapes need most of the image
TEMPERATURE = 0.1         # SLIP's SimCLR temperature


def _crop_one(rng: jax.Array, image: jax.Array, crop_scale) -> jax.Array:
  """image [H, W, C] -> a random resized crop [H, W, C], flipped left-right with probability 1/2."""
  h, w = image.shape[0], image.shape[1]
  k_area, k_ratio, k_y, k_x, k_flip = jax.random.split(rng, 5)
  area = jax.random.uniform(k_area, (), minval=crop_scale[0], maxval=crop_scale[1])
  ratio = jnp.exp(jax.random.uniform(k_ratio, (), minval=math.log(3 / 4), maxval=math.log(4 / 3)))
  ch = jnp.clip(jnp.sqrt(area / ratio), 0.1, 1.0) * h          # crop height / width in pixels
  cw = jnp.clip(jnp.sqrt(area * ratio), 0.1, 1.0) * w
  y0 = jax.random.uniform(k_y, ()) * (h - ch)
  x0 = jax.random.uniform(k_x, ()) * (w - cw)
  scale = jnp.stack([h / ch, w / cw])
  out = jax.image.scale_and_translate(image, image.shape, (0, 1), scale, -jnp.stack([y0, x0]) * scale,
                                      "linear", antialias=False)
  return jnp.where(jax.random.bernoulli(k_flip), out[:, ::-1], out).astype(image.dtype)


def random_views(rng: jax.Array, images: jax.Array, crop_scale=CROP_SCALE) -> tuple[jax.Array, jax.Array]:
  """images [B, H, W, C] -> two independently augmented views, each [B, H, W, C]."""
  k1, k2 = jax.random.split(rng)
  crop = jax.vmap(lambda r, x: _crop_one(r, x, crop_scale))
  b = images.shape[0]
  return crop(jax.random.split(k1, b), images), crop(jax.random.split(k2, b), images)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = TEMPERATURE) -> tuple[jax.Array, dict]:
  """z1, z2 [B, E] (any norm) -> (loss, {"loss", "accuracy"}): NT-Xent over the 2B embeddings: each one's positive
  is the other view of its image, the other 2B - 2 are negatives (self-similarity excluded); mean CE over 2B."""
  z = jnp.concatenate([z1, z2]).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  n = z.shape[0]
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
  target = (jnp.arange(n) + n // 2) % n
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(n), target])
  acc = jnp.mean(jnp.argmax(logits, axis=1) == target).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": acc}


def simclr_features(params, batch: dict, rng: jax.Array, *, model, train: bool) -> dict[str, jax.Array]:
  """-> {"z1", "z2"} [B, E]: the embeddings of two random views of batch["image"]."""
  view_rng, d1, d2 = jax.random.split(rng, 3)
  v1, v2 = random_views(view_rng, batch["image"])
  z1 = model.apply({"params": params}, v1, train=train, rngs={"dropout": d1})
  z2 = model.apply({"params": params}, v2, train=train, rngs={"dropout": d2})
  return {"z1": z1, "z2": z2}


SIMCLR_OBJECTIVE = OBJECTIVES.register("simclr")(
    Objective(simclr_features, lambda f, *, ctx: nt_xent(f["z1"], f["z2"]), ("image",)))
