"""FILIP objective (Yao et al. 2021): CLIP's two towers trained with the token-wise late-interaction loss of
mmjax.alignment.tokens instead of the pooled-embedding InfoNCE. Registered as "filip".

Tokens: image = the ViT's patch tokens (`CLIP.encode_image_tokens` without the CLS token), text = every
non-padding token (<sot> ... <eot>, `CLIP.encode_text_tokens`), each projected by its tower's `proj` and
unit-normalised. With `model.vision.pool = "gap"` (experiments/filip_shapes.py) the pooled image embedding that the
"clip" evaluator uses (zero-shot, retrieval via encode_image / encode_text) is the mean of exactly these patch
features, and the pooled text embedding is the EOT token's, so those evaluations measure the FILIP-trained
features. (With CLS kept among the image tokens, a 300-step trial let every word match CLS and left the patches
unaligned: word-to-patch pointing game 11 % vs 10.5 % chance; without it, 99-100 %, experiments/tables/alignment.md.)
The loss couples the batch, so it is split into per-example features and a batch loss (exact gradient
accumulation, see mmjax.objectives).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.alignment.tokens import filip_loss
from mmjax.objectives.base import Objective
from mmjax.objectives.contrastive import loss_scalar, loss_scalars
from mmjax.registry import OBJECTIVES


def filip_features(params, batch: dict, rng, *, model, train: bool) -> dict[str, jax.Array]:
  """-> {"img_tokens": [B, N, E], "img_mask": [B, N], "txt_tokens": [B, L, E], "txt_mask": [B, L],
  "logit_scale": [B]} (N patches; the model's raw logit scale per example, mmjax.objectives.contrastive).

  Masks are float32 (1 = real token) so that every feature is differentiable for gradient accumulation.
  """
  variables = {"params": params}
  img, img_mask = model.apply(variables, batch["image"], train=train, method="encode_image_tokens",
                              rngs={"dropout": rng})
  txt, txt_mask = model.apply(variables, batch["tokens"], train=train, method="encode_text_tokens",
                              rngs={"dropout": rng})
  scalars = model.apply(variables, method="loss_scalars")
  return {"img_tokens": img[:, 1:], "img_mask": img_mask[:, 1:].astype(jnp.float32),
          "txt_tokens": txt, "txt_mask": txt_mask.astype(jnp.float32), **loss_scalars(scalars, img.shape[0])}


def _filip_from_features(features, *, ctx):
  return filip_loss(features["img_tokens"], features["txt_tokens"], loss_scalar(features, "logit_scale", "filip"),
                    jax.lax.stop_gradient(features["img_mask"]) > 0.5,
                    jax.lax.stop_gradient(features["txt_mask"]) > 0.5)


FILIP_OBJECTIVE = OBJECTIVES.register("filip")(
    Objective(filip_features, _filip_from_features, ("image", "tokens")))
