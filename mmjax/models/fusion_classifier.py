"""Multimodal classifier: one encoder per modality (by name), one fusion (by name, mmjax.fusion.FUSIONS), one head.

  logits = head(fusion([enc_1(x_1), ..., enc_M(x_M)]))   x_m = batch[modalities[m]]

Config (`model.*`):
  modalities: batch keys of the inputs, in order, e.g. ("text", "audio", "video"); one modality = unimodal baseline.
  encoders: {modality: {"name": "mlp" | "linear" | "lstm" | "gru" | "cnn" | "identity" | "flatten", **kwargs}};
    a modality without an entry uses "identity" (early fusion: model.fusion = "early" with identity encoders;
    "flatten" makes raw inputs of any shape vectors, e.g. images and spectrograms for early fusion).
  fusion / fusion_kwargs: the fusion module and its fields (see mmjax/fusion/__init__.py).
  head_hidden: hidden sizes of the MLP head (() = linear head); use_head=False returns the fusion output itself
    as logits (late fusion of per-modality logits: fusion "late", fusion_kwargs features=num_classes, mode "mean").
Token-level fusion outputs `[B, T, D]` are mean-pooled before the head. Sequence inputs for "lstm"/"gru" encoders
take optional lengths (`lengths={modality: [B] int}`; the "classify" objective passes batch["<modality>_length"]).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.encoders.cnn import CNNEncoder
from mmjax.encoders.mlp import MLPEncoder
from mmjax.encoders.rnn import RNNEncoder
from mmjax.errors import MmjaxError
from mmjax.fusion import build_fusion
from mmjax.registry import MODELS


class Identity(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return x


class Flatten(nn.Module):
  """[B, ...] -> [B, prod(...)]: raw inputs of any shape as vectors (early fusion of images and spectrograms)."""
  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return x.reshape(x.shape[0], -1)


ENCODERS: dict[str, Any] = {
    "identity": Identity,
    "flatten": Flatten,
    "mlp": MLPEncoder,
    "linear": functools.partial(MLPEncoder, hidden=()),
    "lstm": functools.partial(RNNEncoder, cell="lstm"),
    "gru": functools.partial(RNNEncoder, cell="gru"),
    "cnn": CNNEncoder,
}
_RECURRENT = ("lstm", "gru")


def build_encoder(modality: str, cfg: Mapping | None) -> nn.Module:
  cfg = dict(cfg or {"name": "identity"})
  name = cfg.pop("name", "identity")
  if name not in ENCODERS:
    raise MmjaxError(f"unknown encoder {name!r} in config key model.encoders.{modality}.name; "
                     f"known: {', '.join(sorted(ENCODERS))}")
  cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
  try:
    return ENCODERS[name](**cfg, name=f"enc_{modality}")
  except TypeError as e:
    raise MmjaxError(f"bad config key under model.encoders.{modality} for encoder {name!r}: {e}") from None


@MODELS.register("fusion_classifier")
class FusionClassifier(nn.Module):
  """inputs (one array per modality, in `modalities` order) -> logits [B, num_classes]."""
  modalities: Sequence[str]
  num_classes: int
  fusion: str = "early"
  fusion_kwargs: Mapping = FrozenDict()
  encoders: Mapping = FrozenDict()
  head_hidden: Sequence[int] = (64,)
  dropout: float = 0.0
  use_head: bool = True

  def __post_init__(self):
    object.__setattr__(self, "modalities", tuple(self.modalities))
    object.__setattr__(self, "head_hidden", tuple(self.head_hidden))
    object.__setattr__(self, "fusion_kwargs", FrozenDict(dict(self.fusion_kwargs or {})))
    object.__setattr__(self, "encoders", FrozenDict({k: FrozenDict(dict(v)) for k, v in
                                                     dict(self.encoders or {}).items()}))
    unknown = set(self.encoders) - set(self.modalities)
    if unknown:
      raise MmjaxError(f"config key model.encoders names {sorted(unknown)}, which are not in model.modalities "
                       f"{list(self.modalities)}")
    if not self.modalities:
      raise MmjaxError("config key model.modalities is empty; list the batch keys of the inputs")
    super().__post_init__()

  @nn.compact
  def __call__(self, *inputs: jax.Array, lengths: Mapping[str, jax.Array] | None = None, train: bool = False,
               return_fused: bool = False):
    if len(inputs) != len(self.modalities):
      raise MmjaxError(f"fusion_classifier got {len(inputs)} inputs for modalities {list(self.modalities)}")
    lengths = dict(lengths or {})
    feats = []
    for modality, x in zip(self.modalities, inputs):
      cfg = self.encoders.get(modality)
      enc = build_encoder(modality, cfg)
      if cfg is not None and cfg.get("name") in _RECURRENT:
        feats.append(enc(x, lengths.get(modality), train=train))
      else:
        feats.append(enc(x, train=train))
    fused = build_fusion(self.fusion, self.fusion_kwargs, name="fusion")(feats, train=train)
    if fused.ndim == 3:
      fused = jnp.mean(fused, axis=1)
    if not self.use_head:
      if fused.shape[-1] != self.num_classes:
        raise MmjaxError(f"model.use_head=False needs the fusion output to have num_classes={self.num_classes} "
                         f"features, got {fused.shape[-1]}")
      logits = fused
    else:
      h = fused
      for i, width in enumerate(self.head_hidden):
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.relu(nn.Dense(width, name=f"head_{i}")(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      logits = nn.Dense(self.num_classes, name="head_out")(h)
    return (logits, fused) if return_fused else logits
