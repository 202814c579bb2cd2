"""Captioning objective (per-example `Objective.loss` form): teacher-forced next-token cross-entropy
(Vinyals et al. 2015, "Show and Tell"; Xu et al. 2015) of a captioner (mmjax.models.captioner).

tokens int32 [B, L] = `<sot> w_1 .. w_n <eot> <pad>...`: the model reads tokens[:, :-1] and predicts
tokens[:, 1:]; a target is scored when it is not `<pad>` and no `<eot>` comes before it (so whatever follows the
first `<eot>` is ignored). loss = sum of the scored cross-entropies / number of scored targets (the mean over the
real tokens of the batch, `<eot>` included); metrics: loss, accuracy (argmax = target, over the same tokens).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.vocab import SPECIAL_TOKENS
from mmjax.objectives.base import Objective
from mmjax.objectives.masked import masked_token_loss
from mmjax.registry import OBJECTIVES

EOT_ID = SPECIAL_TOKENS.index("<eot>")


def target_weights(tokens: jax.Array, eot_id: int = EOT_ID) -> jax.Array:
  """tokens int [B, L] -> weights float32 [B, L - 1] of the targets tokens[:, 1:] (1 = scored).

  Scored: every target up to and including the first <eot>; the padding after it is not, whatever its id (in CLIP's
  BPE the pad id 0 is also "!", a real target)."""
  is_eot = (tokens == eot_id).astype(jnp.int32)
  eot_before = (jnp.cumsum(is_eot, axis=1) - is_eot) > 0           # an <eot> strictly earlier in the row
  return (~eot_before[:, 1:]).astype(jnp.float32)


def caption_loss(params, batch: dict, rng: jax.Array, *, model, train: bool = True):
  """batch["image"] [B, H, W, 3], batch["tokens"] int32 [B, L] -> (loss, {"loss", "accuracy"})."""
  tokens = batch["tokens"]
  logits = model.apply({"params": params}, batch["image"], tokens[:, :-1], train=train, rngs={"dropout": rng})
  loss, acc = masked_token_loss(logits, tokens[:, 1:], target_weights(tokens, model.eot_id))
  return loss, {"loss": loss, "accuracy": acc}


CAPTION_OBJECTIVE = OBJECTIVES.register("caption")(Objective(loss=caption_loss, batch_keys=("image", "tokens")))
