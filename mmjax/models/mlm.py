"""Masked language model (Devlin et al. 2019, "BERT"): a bidirectional text transformer (`TextTransformer`
with causal=False: every token attends to every non-pad token) and BERT's LM head
(Dense(w) -> GELU -> LayerNorm -> Dense(vocab)) on every position. The masking is in objectives/masked.py.

tokens int32 [B, L] -> logits float32 [B, L, V]. Params: {"text": TextTransformer params, "head_transform",
"head_norm", "head_logits"}. Config (`model.*`): text = TextTransformer kwargs (vocab_size, context_length,
width, depth, num_heads, mlp_ratio; causal and output_dim are fixed here).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.encoders import TextTransformer
from mmjax.errors import MmjaxError
from mmjax.layers import DEFAULT_EOT_ID, LN_EPS, through_eot
from mmjax.registry import MODELS

Dtype = Any
_FIXED = ("causal", "output_dim", "dtype", "param_dtype", "parent", "name")


@MODELS.register("mlm")
class MaskedLM(nn.Module):
  """tokens int32 [B, L] -> logits float32 [B, L, vocab_size]; `encode_text` -> mean of the valid tokens [B, w]."""
  text: Mapping
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    text = dict(self.text)
    valid = [f.name for f in dataclasses.fields(TextTransformer) if f.name not in _FIXED]
    unknown = [k for k in text if k not in valid]
    if unknown:
      raise MmjaxError(f"unknown config key 'model.text.{unknown[0]}' (valid keys under model.text: "
                       f"{', '.join(sorted(valid))})")
    missing = [k for k in ("vocab_size", "context_length", "width", "depth", "num_heads") if k not in text]
    if missing:
      raise MmjaxError(f"missing config key(s) {', '.join(f'model.text.{k}' for k in missing)}")
    object.__setattr__(self, "text", FrozenDict(text))
    super().__post_init__()

  @property
  def vocab_size(self) -> int:
    return int(self.text["vocab_size"])

  @property
  def pad_id(self) -> int:
    return int(self.text.get("pad_id", 0))

  @property
  def eot_id(self) -> int | None:
    return self.text.get("eot_id", DEFAULT_EOT_ID)

  def setup(self):
    w = int(self.text["width"])
    self.encoder = TextTransformer(**dict(self.text), causal=False, dtype=self.dtype, name="text")
    self.head_transform = nn.Dense(w, dtype=self.dtype)
    self.head_norm = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
    self.head_logits = nn.Dense(self.vocab_size, dtype=self.dtype)

  def hidden(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """[B, L, w] normed token states (pad keys are masked out of attention)."""
    _, out = self.encoder(tokens, train=train)
    return out["normed_tokens"]

  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    h = nn.gelu(self.head_transform(self.hidden(tokens, train)), approximate=False)
    return self.head_logits(self.head_norm(h)).astype(jnp.float32)

  def encode_text(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Mean of the normed states of the tokens up to the EOT [B, w] (features for a probe)."""
    h = self.hidden(tokens, train).astype(jnp.float32)
    valid = through_eot(tokens, self.eot_id).astype(jnp.float32)[:, :, None]
    return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
