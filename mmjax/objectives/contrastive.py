"""Image-text contrastive objectives.

clip: symmetric InfoNCE of CLIP (Radford et al. 2021) with scale exp(logit_scale).
The scale is *not* clamped in the loss: as OpenCLIP, the train step clamps the parameter logit_scale to [0, log 100]
after each optimizer update (`optim.clamp`, mmjax.train.optim.clamp_params), so the loss and its gradient equal
OpenCLIP's everywhere, including at a saturated logit_scale = log 100 (where a clamp inside the loss would halve
the gradient, and zero it above).
siglip: pairwise sigmoid loss of SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").
Both compute the logits and their log-normalisers in (at least) float32.

The loss's scalars come from the model, not from the parameter tree by name: the model's third output
{"logit_scale", "logit_bias"} (raw) rides in the features broadcast to one copy per example ([B], like every
feature, so gradient accumulation's split/merge of features keeps it), and the loss reads copy 0, whose cotangent
is then the scalar's whole gradient (`loss_scalars`, `loss_scalar`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES

MAX_LOGIT_SCALE = math.log(100.0)   # OpenCLIP's clamp of the parameter (applied by the train step, not here)


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


def _accuracies(logits: jax.Array) -> dict[str, jax.Array]:
  """In-batch top-1 retrieval accuracy of the logits [B, B] (row i = image i, column j = text j)."""
  target = jnp.arange(logits.shape[0])
  return {"i2t_acc": jnp.mean(jnp.argmax(logits, axis=1) == target).astype(jnp.float32),
          "t2i_acc": jnp.mean(jnp.argmax(logits, axis=0) == target).astype(jnp.float32)}


def clip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E] (unit norm), logit_scale () raw -> (loss (), metrics).

  loss = (CE(s zimg ztxt^T, arange) + CE(s ztxt zimg^T, arange)) / 2 with s = exp(logit_scale), as OpenCLIP's
  `ClipLoss` given `logit_scale.exp()` (the parameter is clamped after the update, see the module docstring).
  metrics: loss, logit_scale (= s), temperature (= 1/s), i2t_acc, t2i_acc.
  """
  zimg, ztxt, logit_scale = _f32(zimg), _f32(ztxt), _f32(logit_scale)
  scale = jnp.exp(logit_scale)
  logits = scale * zimg @ ztxt.T
  diag = jnp.diagonal(logits)
  loss_i2t = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag)
  loss_t2i = jnp.mean(jax.nn.logsumexp(logits, axis=0) - diag)
  loss = 0.5 * (loss_i2t + loss_t2i)
  metrics = {"loss": loss, "logit_scale": scale, "temperature": 1.0 / scale, **_accuracies(logits)}
  return loss, metrics


def siglip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array,
                logit_bias: jax.Array) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E], logit_scale t' () and logit_bias b () raw -> (loss (), metrics).

  logits = exp(t') zimg ztxt^T + b; labels +1 on the diagonal, -1 elsewhere;
  loss = -sum(log_sigmoid(labels * logits)) / B. metrics: loss, logit_scale (= exp t'), logit_bias, accuracies.
  """
  zimg, ztxt = _f32(zimg), _f32(ztxt)
  scale, bias = jnp.exp(_f32(logit_scale)), _f32(logit_bias)
  logits = scale * zimg @ ztxt.T + bias
  b = logits.shape[0]
  labels = 2.0 * jnp.eye(b, dtype=logits.dtype) - 1.0
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / b
  metrics = {"loss": loss, "logit_scale": scale, "logit_bias": bias, **_accuracies(logits)}
  return loss, metrics


def loss_scalars(extra: dict, batch_size: int) -> dict[str, jax.Array]:
  """The model's loss scalars ({"logit_scale": (), "logit_bias": () or None}) as per-example features [B]."""
  return {k: jnp.broadcast_to(v, (batch_size,)) for k, v in extra.items()
          if k in ("logit_scale", "logit_bias") and v is not None}


def loss_scalar(features: dict, key: str, objective: str) -> jax.Array:
  """The scalar `key` of the features (copy 0 of its [B] broadcast); a model without it is a clear error."""
  if key not in features:
    hint = " set model.logit_bias_init (e.g. -10.0)" if key == "logit_bias" else ""
    raise MmjaxError(f"objective {objective!r} needs a {key} parameter, which the model's outputs lack;{hint}")
  return features[key][0]


def image_text_features(params, batch: dict, rng, *, model, train: bool) -> dict[str, jax.Array]:
  """-> {"zimg": [B, E], "ztxt": [B, E], "logit_scale": [B][, "logit_bias": [B]]}: unit-norm embeddings of
  batch["image"] and batch["tokens"] and the model's loss scalars (`loss_scalars`)."""
  zimg, ztxt, extra = model.apply({"params": params}, batch["image"], batch["tokens"], train=train,
                                  rngs={"dropout": rng})
  return {"zimg": zimg, "ztxt": ztxt, **loss_scalars(extra, zimg.shape[0])}


def _clip_from_features(features, *, ctx):
  return clip_loss(features["zimg"], features["ztxt"], loss_scalar(features, "logit_scale", "clip"))


def _siglip_from_features(features, *, ctx):
  bias = loss_scalar(features, "logit_bias", "siglip")
  return siglip_loss(features["zimg"], features["ztxt"], loss_scalar(features, "logit_scale", "siglip"), bias)


CLIP_OBJECTIVE = OBJECTIVES.register("clip")(
    Objective(image_text_features, _clip_from_features, ("image", "tokens")))
SIGLIP_OBJECTIVE = OBJECTIVES.register("siglip")(
    Objective(image_text_features, _siglip_from_features, ("image", "tokens")))
