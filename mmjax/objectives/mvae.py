"""Objective "mvae": the sub-sampled ELBO of the MVAE (Wu & Goodman 2018, eq. 4 and section 3.2), for the image +
labels model of mmjax/models/mvae.py.

For a subset X of the modalities, with the product-of-experts posterior q(z | X) (prior expert included):

  ELBO_X = E_{q(z|X)} [ sum_{m in X} lambda_m log p(x_m | z) ] - beta KL(q(z | X) || N(0, I))

(one reparameterised sample). With two modalities every subset is used: the loss is the batch mean of
-(ELBO_{image, labels} + ELBO_{image} + ELBO_{labels}). lambda_labels (config key model.label_weight, default 50,
the paper's label weight on MNIST) balances the 3072 image dimensions against the 4 labels, beta is model.beta;
evaluation reports the unweighted (lambda = 1, beta = 1) ELBOs in nats per example.

Not in the paper (model.cross_image_weight, default 0 = the paper's objective): ELBO_labels may also carry
cross_image_weight * E_{q(z|labels)} log p(image | z), i.e. with weight 1 it becomes the joint ELBO of (image,
labels) under the labels-only posterior, still a lower bound on log p(image, labels). It trains the image decoder on
the codes that labels -> image generation uses (as the cross-modal reconstructions of MMVAE, Shi et al. 2019);
without it the image decoder only ever sees codes of posteriors that include the image expert.

Log-likelihoods: image, a diagonal Gaussian with per-channel learned scale summed over H, W, C; labels, the sum of
one categorical log-probability per attribute. `kl_std_normal` is the closed form
KL(N(mu, diag var) || N(0, I)) = 1/2 sum (var + mu^2 - 1 - log var).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mmjax.models.mvae import first_column
from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES

LABEL_WEIGHT = 50.0
BETA = 1.0
BATCH_KEYS = ("image", "shape", "colour", "size", "position")
SUBSETS = ("joint", "image", "labels")


def kl_std_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, diag exp(logvar)) || N(0, I)) per example: [B, D] -> [B]."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """Diagonal Gaussian log-density summed over all but the first axis: x, mean [B, ...], log_scale broadcastable
  (e.g. [C] per channel) -> [B] in nats."""
  z = (x - mean) * jnp.exp(-log_scale)
  lp = -0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi)
  return jnp.sum(lp.reshape(x.shape[0], -1), axis=-1)


def categorical_log_prob(logits: dict[str, jax.Array], labels: dict[str, jax.Array]) -> jax.Array:
  """Sum over attributes of log softmax(logits[a])[label[a]] -> [B]."""
  total = 0.0
  for a, lg in logits.items():
    y = first_column(labels[a]).astype(jnp.int32)
    total = total + jnp.take_along_axis(jax.nn.log_softmax(lg.astype(jnp.float32)), y[:, None], axis=1)[:, 0]
  return total


def reparameterise(rng: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)


def _labels(batch: dict, model) -> dict:
  return {a: batch[a] for a in model.attributes}


def elbo_terms(params, model, batch: dict, rng: jax.Array, *, label_weight: float = 1.0, beta: float = 1.0,
               subsets=SUBSETS, cross_image_weight: float = 0.0) -> dict[str, jax.Array]:
  """Per-example ELBO pieces [B] for each subset: `elbo_<s>`, `kl_<s>`, and `ll_image_<s>` / `ll_labels_<s>`
  (log-likelihoods of the modalities in s under one sample of q(z | s)); lambda-weighted if label_weight != 1.
  cross_image_weight > 0 (not in the paper) also adds that weight times log p(image | z), z ~ q(z | labels), to
  ELBO_labels (reported as `ll_image_labels`)."""
  image, labels = batch["image"], _labels(batch, model)
  v = {"params": params}
  out = {}
  rngs = jax.random.split(rng, len(subsets))
  for s, key in zip(subsets, rngs):
    mu, logvar = model.apply(v, image if s in ("joint", "image") else None,
                             labels if s in ("joint", "labels") else None, method="posterior")
    z = reparameterise(key, mu, logvar)
    kl = kl_std_normal(mu, logvar)
    elbo = -beta * kl
    out[f"kl_{s}"] = kl
    if s in ("joint", "image") or (s == "labels" and cross_image_weight > 0):
      mean = model.apply(v, z, method="decode_image")
      ll = gaussian_log_prob(image.astype(jnp.float32), mean, model.apply(v, method="image_scale"))
      out[f"ll_image_{s}"] = ll
      elbo = elbo + (cross_image_weight if s == "labels" else 1.0) * ll
    if s in ("joint", "labels"):
      ll = categorical_log_prob(model.apply(v, z, method="decode_labels"), labels)
      out[f"ll_labels_{s}"] = ll
      elbo = elbo + label_weight * ll
    out[f"elbo_{s}"] = elbo
  return out


def mvae_loss(params, batch: dict, rng, *, model, train: bool = True, label_weight: float | None = None,
              beta: float | None = None):
  """-> (mean over the batch of -(ELBO_joint + ELBO_image + ELBO_labels) with weights, metrics)."""
  lw = getattr(model, "label_weight", LABEL_WEIGHT) if label_weight is None else label_weight
  b = getattr(model, "beta", BETA) if beta is None else beta
  cw = getattr(model, "cross_image_weight", 0.0)
  t = elbo_terms(params, model, batch, rng, label_weight=lw, beta=b, cross_image_weight=cw)
  loss = -jnp.mean(t["elbo_joint"] + t["elbo_image"] + t["elbo_labels"])
  metrics = {"loss": loss}
  for k, val in t.items():
    metrics[k] = jnp.mean(val)
  return loss, metrics


MVAE_OBJECTIVE = OBJECTIVES.register("mvae")(Objective(loss=mvae_loss, batch_keys=BATCH_KEYS))
