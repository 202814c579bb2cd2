"""Early and late fusion: the two baselines of every fusion table (Baltrušaitis, Ahuja & Morency 2019, "Multimodal
Machine Learning: A Survey and Taxonomy", section 5.1; MultiBench's EF / LF, Liang et al. 2021).

- `EarlyFusion`: concatenation of the (raw or lightly encoded) inputs along the feature axis,
  `[B, D_1] ... [B, D_M] -> [B, sum D_m]`, or `[B, T, D_m] -> [B, T, sum D_m]` for time-aligned sequences.
  In `FusionClassifier` early fusion is used with identity encoders, so one network sees all inputs.
- `LateFusion`: combines *unimodal representations or logits* (each modality fully encoded on its own):
  mode "concat": `[B, sum D_m]`, each block scaled by a learnable weight s_m (init 1);
  mode "mean":   `[B, D]`, sum_m softmax(a)_m h_m with learnable a (init 0, i.e. the plain mean);
  `features` (optional) first maps every modality with its own Dense to a common size (needed for "mean" when the
  D_m differ; with `features = num_classes` these are per-modality logits, averaged with learned weights).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.fusion.common import check_features


class EarlyFusion(nn.Module):
  """Concatenation of the inputs: vectors [B, D_m] -> [B, sum D_m]; sequences [B, T, D_m] -> [B, T, sum D_m]."""

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "early", min_modalities=1)
    ranks = {x.ndim for x in features}
    if len(ranks) > 1:
      raise MmjaxError(f"fusion 'early': cannot concatenate vectors and sequences {[tuple(x.shape) for x in features]}"
                       f"; pool the sequences first (model.encoders.<modality>.pool) or use a token-level fusion")
    if ranks == {3} and len({x.shape[1] for x in features}) > 1:
      raise MmjaxError(f"fusion 'early' needs time-aligned sequences, got lengths {[x.shape[1] for x in features]}; "
                       f"align them first (mmjax.alignment) or use 'mult' / 'mbt'")
    return jnp.concatenate(features, axis=-1)


class LateFusion(nn.Module):
  """Learnably weighted concatenation or mean of unimodal representations / logits: -> [B, M*D] or [B, D]."""
  mode: str = "concat"
  features: int | None = None
  learn_weights: bool = True

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    features = check_features(features, "late", min_modalities=1)
    if len({tuple(x.shape[:-1]) for x in features}) > 1:
      raise MmjaxError(f"fusion 'late': modalities must share all axes but the last, got "
                       f"{[tuple(x.shape) for x in features]}; pool the sequences first")
    if self.features is not None:
      features = [nn.Dense(self.features, name=f"proj_{i}")(x) for i, x in enumerate(features)]
    m = len(features)
    if self.mode == "concat":
      scale = (self.param("weights", nn.initializers.ones, (m,), jnp.float32) if self.learn_weights
               else jnp.ones((m,), jnp.float32))
      return jnp.concatenate([scale[i] * x for i, x in enumerate(features)], axis=-1)
    if self.mode == "mean":
      dims = {x.shape[-1] for x in features}
      if len(dims) > 1:
        raise MmjaxError(f"fusion 'late' mode 'mean' needs equal feature sizes, got {sorted(dims)}; set "
                         f"model.fusion_kwargs.features to project every modality to one size")
      logits = (self.param("weights", nn.initializers.zeros, (m,), jnp.float32) if self.learn_weights
                else jnp.zeros((m,), jnp.float32))
      w = jax.nn.softmax(logits)
      return sum(w[i] * x for i, x in enumerate(features))
    raise MmjaxError(f"fusion 'late': unknown mode {self.mode!r}; use 'concat' or 'mean'")
