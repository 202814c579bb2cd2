"""Masked-modeling objectives (per-example `Objective.loss` form).

mae: pixel MSE on the masked patches only (He et al. 2022), targets optionally normalised per patch
  (`model.norm_pix_loss`): loss = sum_b,n mask * mean_d (pred - target)^2 / sum mask.
mlm: BERT's masked language modeling (Devlin et al. 2019): each non-special token is selected with probability
  0.15 (independently, as HuggingFace's DataCollatorForLanguageModeling; BERT's data script picks a fixed count);
  a selected token becomes <mask> with p 0.8, a uniformly random non-special token with p 0.1, stays with p 0.1;
  cross-entropy on the selected tokens only, averaged over all selected tokens of the batch.
m3ae: image loss (as mae) + model.text_loss_weight (default 0.5) * cross-entropy on the masked non-pad tokens
  (Geng et al. 2022).

Randomness: the step rng given to the loss is split into the masking rng and the dropout rng, so every step and
every sample gets a different mask, reproducibly. With grad_accum_steps > 1 each micro-batch gets its own rng
(masks differ from the unaccumulated run), and mlm/m3ae text losses are averaged per micro-batch (token counts
differ slightly between micro-batches).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.layers import through_eot
from mmjax.vocab import SPECIAL_TOKENS
from mmjax.models.mae import pixel_targets
from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES

MASK_ID = SPECIAL_TOKENS.index("<mask>")
NUM_SPECIAL = len(SPECIAL_TOKENS)       # ids 0..3 (<pad>, <sot>, <eot>, <mask>) are never selected


def masked_pixel_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """pred, target [B, N, P], mask [B, N] (1 = masked) -> () mean over masked patches of the per-patch MSE."""
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_token_loss(logits: jax.Array, tokens: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logits [B, L, V], target tokens int [B, L], weights [B, L] (1 = scored) -> (mean CE, accuracy) over the
  scored tokens (0 when there are none)."""
  logits = logits.astype(jnp.float32)
  ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
  return jnp.sum(ce * weights) / count, jnp.sum(correct * weights) / count


def mlm_corrupt(rng: jax.Array, tokens: jax.Array, *, vocab_size: int, select_prob: float = 0.15,
                mask_prob: float = 0.8, random_prob: float = 0.1, mask_id: int = MASK_ID,
                num_special: int = NUM_SPECIAL) -> tuple[jax.Array, jax.Array]:
  """BERT corruption. tokens int [B, L] -> (inputs int [B, L], selected bool [B, L]).

  Tokens with id < num_special (pad, sot, eot, mask) are never selected. Of the selected: u < mask_prob ->
  mask_id; u < mask_prob + random_prob -> uniform in [num_special, vocab_size) (may equal the original); else kept.
  """
  k_sel, k_kind, k_rand = jax.random.split(rng, 3)
  selectable = tokens >= num_special
  selected = jax.random.bernoulli(k_sel, select_prob, tokens.shape) & selectable
  u = jax.random.uniform(k_kind, tokens.shape)
  random_tokens = jax.random.randint(k_rand, tokens.shape, num_special, vocab_size, dtype=tokens.dtype)
  corrupted = jnp.where(u < mask_prob, jnp.asarray(mask_id, tokens.dtype),
                        jnp.where(u < mask_prob + random_prob, random_tokens, tokens))
  return jnp.where(selected, corrupted, tokens), selected


def mae_loss(params, batch: dict, rng: jax.Array, *, model, train: bool = True):
  """batch["image"] [B, H, W, 3] -> (loss, {"loss", "mask_ratio"})."""
  mask_rng, dropout_rng = jax.random.split(rng)
  images = batch["image"]
  pred, mask = model.apply({"params": params}, images, train=train, rngs={"mask": mask_rng, "dropout": dropout_rng})
  loss = masked_pixel_loss(pred, pixel_targets(images, model.patch_size, model.norm_pix_loss), mask)
  return loss, {"loss": loss, "mask_ratio": jnp.mean(mask)}


def mlm_loss(params, batch: dict, rng: jax.Array, *, model, train: bool = True):
  """batch["tokens"] int32 [B, L] -> (loss, {"loss", "accuracy", "selected_frac"})."""
  mask_rng, dropout_rng = jax.random.split(rng)
  tokens = batch["tokens"]
  inputs, selected = mlm_corrupt(mask_rng, tokens, vocab_size=model.vocab_size)
  logits = model.apply({"params": params}, inputs, train=train, rngs={"dropout": dropout_rng})
  loss, acc = masked_token_loss(logits, tokens, selected)
  valid = through_eot(tokens, model.eot_id).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": acc,
                "selected_frac": jnp.sum(selected) / jnp.maximum(jnp.sum(valid), 1.0)}


def m3ae_loss(params, batch: dict, rng: jax.Array, *, model, train: bool = True):
  """batch["image"], batch["tokens"] -> (image_loss + w * text_loss, metrics), w = model.text_loss_weight."""
  mask_rng, dropout_rng = jax.random.split(rng)
  images, tokens = batch["image"], batch["tokens"]
  out = model.apply({"params": params}, images, tokens, train=train,
                    rngs={"mask": mask_rng, "dropout": dropout_rng})
  image_loss = masked_pixel_loss(out["pixel_pred"], pixel_targets(images, model.patch_size, model.norm_pix_loss),
                                 out["image_mask"])
  text_loss, text_acc = masked_token_loss(out["text_logits"], tokens, out["text_mask"])
  loss = image_loss + model.text_loss_weight * text_loss
  return loss, {"loss": loss, "image_loss": image_loss, "text_loss": text_loss, "text_accuracy": text_acc}


MAE_OBJECTIVE = OBJECTIVES.register("mae")(Objective(loss=mae_loss, batch_keys=("image",)))
MLM_OBJECTIVE = OBJECTIVES.register("mlm")(Objective(loss=mlm_loss, batch_keys=("tokens",)))
M3AE_OBJECTIVE = OBJECTIVES.register("m3ae")(Objective(loss=m3ae_loss, batch_keys=("image", "tokens")))
