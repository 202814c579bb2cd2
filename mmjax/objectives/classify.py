"""Classification objective "classify": softmax cross-entropy on batch["label"] (int [B]) with top-1 accuracy.

Per-example form (mmjax.objectives.Objective.loss). The model's inputs: mmjax.models.inputs.model_inputs (the
batch entries named by the model's `modalities`, with their `<m>_length` entries as `lengths`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.models.inputs import model_inputs
from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """logits [B, C], labels int [B] -> per-example loss [B] = logsumexp(logits) - logits[label], in float32."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
  return jax.nn.logsumexp(logits, axis=1) - picked


def classify_loss(params, batch: dict, rng, *, model, train: bool = True):
  """-> (mean cross-entropy, {"loss", "accuracy"})."""
  args, kwargs = model_inputs(model, batch, CLASSIFY_OBJECTIVE.batch_keys, also=("label",),
                              what="objective 'classify'")
  logits = model.apply({"params": params}, *args, train=train, rngs={"dropout": rng}, **kwargs)
  labels = batch["label"]
  loss = jnp.mean(softmax_cross_entropy(logits, labels))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": accuracy}


CLASSIFY_OBJECTIVE = OBJECTIVES.register("classify")(Objective(loss=classify_loss, batch_keys=()))
