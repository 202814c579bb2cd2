"""A model's inputs from a batch: `model_inputs(model, batch, fallback) -> (args, kwargs)`, the one place that init
(mmjax.train.loop), the objectives (classify, distill, mctn) and the evaluators (classification, vqa) read them.

A model says what it reads with `modalities`: the batch keys of its positional inputs, in order (fusion
classifiers, VQA, MCTN, distillation students). A model without one reads the objective's `batch_keys` (the
`fallback`: ("image", "tokens") for CLIP). For every input m with a `batch["<m>_length"]` entry (variable-length
sequences, the recurrent encoders) kwargs carries `lengths={m: batch["<m>_length"]}`; otherwise kwargs is {}.
"""
from __future__ import annotations

from typing import Any, Mapping

from mmjax.errors import MmjaxError


def input_keys(model, fallback: tuple[str, ...] = ()) -> tuple[str, ...]:
  """The batch keys of the model's positional inputs: `model.modalities` when it has them, else `fallback`."""
  return tuple(getattr(model, "modalities", None) or fallback)


def input_entries(keys: tuple[str, ...], batch: Mapping[str, Any]) -> dict[str, Any]:
  """The entries of `batch` that feed a model with inputs `keys`: those keys and their `<m>_length` entries."""
  return {k: v for k, v in batch.items() if k in keys or (k.endswith("_length") and k[:-len("_length")] in keys)}


def length_kwargs(keys: tuple[str, ...], batch: Mapping[str, Any]) -> dict[str, Any]:
  """{"lengths": {m: batch["<m>_length"]}} for the keys that have a length entry; {} when none has."""
  lengths = {k: batch[f"{k}_length"] for k in keys if f"{k}_length" in batch}
  return {"lengths": lengths} if lengths else {}


def model_inputs(model, batch: Mapping[str, Any], fallback: tuple[str, ...] = (), *, also: tuple[str, ...] = (),
                 what: str = "the model") -> tuple[list[Any], dict[str, Any]]:
  """(args, kwargs) for `model.apply(variables, *args, **kwargs)` from `batch`. A missing key, of the model's inputs
  or of `also` (keys the caller reads itself, e.g. "label"), is one error naming what needs it, the model's inputs
  and the keys the batch has."""
  keys = input_keys(model, fallback)
  missing = [k for k in (*keys, *also) if k not in batch]
  if missing:
    raise MmjaxError(f"{what} needs batch keys {missing} (the model's inputs: {list(keys)}); the batch has "
                     f"{sorted(batch)}")
  return [batch[k] for k in keys], length_kwargs(keys, batch)
