"""MCTN: Multimodal Cyclic Translation Network (Pham et al. 2019, "Found in Translation: Learning Robust Joint
Representations by Cyclic Translations Between Modalities", AAAI).

A sequence-to-sequence translator maps the source modality to the target modality and back; the encoder states of
the source are the joint representation the classifier reads, so at test time only the source is needed:

  e_S   = Enc(In_S(x_S))                    [B, T, H]   (joint representation)
  x̂_T   = Out_T(Dec_fwd(e_S))               [B, T, d_T]  forward translation  (loss: MSE to x_T)
  x̂_S   = Out_S(Dec_back(Enc'(In_T(x̂_T))))  [B, T, d_S]  back-translation     (cyclic loss: MSE to x_S)
  logits = Head(pool(e_S))                  [B, num_classes]

Enc' is Enc itself (`shared_encoder=True`, the paper's one encoder for both directions: each modality gets its
own input projection In_S / In_T to the encoder width) or a second encoder. Decoders are GRUs run over the
encoder states (aligned, non-autoregressive: the paper's data are word-aligned, so source and target have the
same T) followed by a Dense to the modality's token size.

Inputs: sequences `[B, T, D]`, or utterance-level vectors `[B, D]`, which are cut into `tokens_per_vector`
tokens of ceil(D / T) features (zero-padded at the end; `as_tokens` / `from_tokens`). Several target modalities
are concatenated along features into one target (the vectors) before tokenising. `modalities` is `(source,)`:
the loop initialises the model and the "classification" evaluator scores it from the source alone; the "mctn"
objective (mmjax/objectives/colearning.py) reads the targets from the batch for its losses only.

Config (`model.*`): source ("text"), targets (("audio", "video")), num_classes, width (input projection),
hidden (GRU size), tokens_per_vector, shared_encoder, head_hidden, dropout, pool ("mean" | "last"). The "mctn"
objective's settings (config.objective_kwargs) translation_weight (λ_t) and cycle_weight (λ_c) weigh its loss:
  loss = CE(logits, label) + λ_t · MSE(x̂_T, x_T) + λ_c · MSE(x̂_S, x_S).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.encoders.rnn import RNNEncoder
from mmjax.errors import MmjaxError
from mmjax.registry import MODELS


def as_tokens(x: jax.Array, num_tokens: int) -> jax.Array:
  """[B, D] -> [B, T, ceil(D / T)] (zero-padded at the end); [B, T, D] is returned as it is."""
  if x.ndim == 3:
    return x
  if x.ndim != 2:
    raise MmjaxError(f"mctn: inputs must be vectors [B, D] or sequences [B, T, D], got shape {tuple(x.shape)}")
  d = x.shape[-1]
  per = math.ceil(d / num_tokens)
  x = jnp.pad(x, ((0, 0), (0, per * num_tokens - d)))
  return einops.rearrange(x, "b (t d) -> b t d", t=num_tokens)


def from_tokens(x: jax.Array, dim: int | None) -> jax.Array:
  """Inverse of `as_tokens`: [B, T, d] -> [B, dim] (the padding cropped); dim None keeps the sequence."""
  if dim is None:
    return x
  return einops.rearrange(x, "b t d -> b (t d)")[:, :dim]


class Seq2Seq(nn.Module):
  """One translation direction after the encoder: GRU over encoder states -> Dense to `features` per step."""
  hidden: int
  features: int

  @nn.compact
  def __call__(self, states: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    h = RNNEncoder(hidden=self.hidden, cell="gru", pool="none", name="gru")(states, mask=mask)
    return nn.Dense(self.features, name="out")(h)


@MODELS.register("mctn")
class MCTN(nn.Module):
  """source `[B, D_S]` or `[B, T, D_S]` -> logits `[B, num_classes]` (with `return_aux`: also the translations)."""
  num_classes: int
  source: str = "text"
  targets: Sequence[str] = ("audio", "video")
  target_dims: Sequence[int] = ()        # feature sizes of the targets (vectors); () -> inferred from the batch
  width: int = 32
  hidden: int = 32
  tokens_per_vector: int = 4
  shared_encoder: bool = True
  head_hidden: Sequence[int] = (32,)
  dropout: float = 0.0
  pool: str = "mean"

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    object.__setattr__(self, "target_dims", tuple(int(d) for d in self.target_dims))
    object.__setattr__(self, "head_hidden", tuple(self.head_hidden))
    if not self.targets:
      raise MmjaxError("config key model.targets is empty; name the target modalities (batch keys) of MCTN")
    if self.source in self.targets:
      raise MmjaxError(f"config key model.source={self.source!r} is also in model.targets {list(self.targets)}")
    if self.target_dims and len(self.target_dims) != len(self.targets):
      raise MmjaxError(f"config key model.target_dims {list(self.target_dims)} must give one size per target "
                       f"{list(self.targets)}")
    if self.pool not in ("mean", "last"):
      raise MmjaxError(f"config key model.pool={self.pool!r}: use 'mean' or 'last'")
    super().__post_init__()

  @property
  def modalities(self) -> tuple[str, ...]:
    """The inputs the model needs at test time (the loop and the classification evaluator read this)."""
    return (self.source,)

  def target_dim(self) -> int:
    if not self.target_dims:
      raise MmjaxError("mctn: model.target_dims is unset; set it to the feature sizes of model.targets "
                       "(e.g. (73, 100) for MOSI audio and video)")
    return sum(self.target_dims)

  @nn.compact
  def __call__(self, x_s: jax.Array, lengths: Mapping[str, jax.Array] | None = None, train: bool = False,
               return_aux: bool = False):
    """`lengths` ({source: int [B]}, sequences only, as the loop passes `batch["<source>_length"]`): steps past
    the length are masked in every recurrence and left out of the pooled representation."""
    t = self.tokens_per_vector if x_s.ndim == 2 else x_s.shape[1]
    src = as_tokens(x_s, t)                                          # [B, T, d_S]
    length = (lengths or {}).get(self.source) if x_s.ndim == 3 else None
    mask = (jnp.arange(t)[None, :] < length[:, None]) if length is not None else jnp.ones(src.shape[:2], bool)
    d_t = self.target_dim()
    d_t_tok = math.ceil(d_t / t) if x_s.ndim == 2 else d_t
    enc = RNNEncoder(hidden=self.hidden, cell="gru", pool="none", name="encoder")
    enc_back = enc if self.shared_encoder else RNNEncoder(hidden=self.hidden, cell="gru", pool="none",
                                                          name="encoder_back")
    drop = nn.Dropout(self.dropout, deterministic=not train)
    e_s = enc(drop(nn.Dense(self.width, name="in_source")(src)), mask=mask)   # [B, T, H]: the joint representation
    y_t = Seq2Seq(self.hidden, d_t_tok, name="translate")(e_s, mask)          # [B, T, d_T]
    e_t = enc_back(nn.Dense(self.width, name="in_target")(y_t), mask=mask)
    y_s = Seq2Seq(self.hidden, src.shape[-1], name="back_translate")(e_t, mask)   # [B, T, d_S]
    m = mask[..., None].astype(e_s.dtype)
    if self.pool == "mean":
      h = jnp.sum(e_s * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    else:                                                            # the state at the last valid step
      last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
      h = jnp.take_along_axis(e_s, last[:, None, None], axis=1)[:, 0]
    for i, w in enumerate(self.head_hidden):
      h = nn.relu(nn.Dense(w, name=f"head_{i}")(drop(h)))
    logits = nn.Dense(self.num_classes, name="head_out")(drop(h))
    if not return_aux:
      return logits
    return logits, {"joint": e_s,
                    "target_hat": from_tokens(y_t, d_t if x_s.ndim == 2 else None),
                    "source_hat": from_tokens(y_s, x_s.shape[-1] if x_s.ndim == 2 else None)}
