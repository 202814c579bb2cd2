"""Classification objective "classify": softmax cross-entropy on batch["label"] (int [B]) with top-1 accuracy.

Per-example form (mmjax.objectives.Objective.loss). The model's inputs are the batch entries named by the model's
`modalities` attribute (e.g. FusionClassifier), falling back to the objective's `batch_keys`; for every modality m
with a `batch["<m>_length"]` entry the lengths are passed on (recurrent encoders).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.objectives.base import Objective
from mmjax.registry import OBJECTIVES


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """logits [B, C], labels int [B] -> per-example loss [B] = logsumexp(logits) - logits[label], in float32."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
  return jax.nn.logsumexp(logits, axis=1) - picked


def input_keys(model, fallback: tuple[str, ...] = ()) -> tuple[str, ...]:
  """The batch keys the model reads: `model.modalities` when it has one, else `fallback`."""
  return tuple(getattr(model, "modalities", None) or fallback)


def classify_loss(params, batch: dict, rng, *, model, train: bool = True):
  """-> (mean cross-entropy, {"loss", "accuracy"})."""
  keys = input_keys(model, CLASSIFY_OBJECTIVE.batch_keys)
  missing = [k for k in (*keys, "label") if k not in batch]
  if missing:
    raise MmjaxError(f"objective 'classify' needs batch keys {missing} (model.modalities={list(keys)}); "
                     f"batch has {sorted(batch)}")
  lengths = {k: batch[f"{k}_length"] for k in keys if f"{k}_length" in batch}
  kwargs = {"lengths": lengths} if lengths else {}
  logits = model.apply({"params": params}, *[batch[k] for k in keys], train=train, rngs={"dropout": rng}, **kwargs)
  labels = batch["label"]
  loss = jnp.mean(softmax_cross_entropy(logits, labels))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": accuracy}


CLASSIFY_OBJECTIVE = OBJECTIVES.register("classify")(Objective(loss=classify_loss, batch_keys=()))
