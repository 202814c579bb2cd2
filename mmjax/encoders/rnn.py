"""Recurrent encoders for sequences: LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)
and GRU (Cho et al. 2014), unrolled with `nn.scan` over flax's `LSTMCell` / `GRUCell`.

x `[B, T, D]` with optional `lengths` `[B]` (int, valid steps from the start) or `mask` `[B, T]` (bool, True = real
step; must be a prefix for the backward direction). Padded steps leave the state unchanged and output zeros, so the
final state is the state after each sequence's last real step. LSTM step (flax LSTMCell, params ii/if/ig/io without
bias, hi/hf/hg/ho with bias):
  i = σ(x W_ii + h W_hi + b_i), f = σ(x W_if + h W_hf + b_f), g = tanh(x W_ig + h W_hg + b_g),
  o = σ(x W_io + h W_ho + b_o), c' = f c + i g, h' = o tanh(c').
Outputs (`pool`): "last" -> final hidden state `[B, H]` ([B, 2H] bidirectional: forward final state, backward state
after reading the sequence backwards); "mean" -> masked mean of the outputs `[B, H]`; "none" -> outputs `[B, T, H]`
(zeros at padding). `num_layers` > 1 stacks layers on the output sequence.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


class _MaskedStep(nn.Module):
  """One recurrent step that keeps the carry (and outputs zeros) where mask is False."""
  cell: str
  hidden: int

  @nn.compact
  def __call__(self, carry, inputs):
    x, m = inputs
    new_carry, y = CELLS[self.cell](self.hidden, name="cell")(carry, x)
    keep = lambda new, old: jnp.where(m[:, None], new, old)
    return jax.tree.map(keep, new_carry, carry), jnp.where(m[:, None], y, 0.0)


_ScanStep = nn.scan(_MaskedStep, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses the first lengths[b] steps of every sequence x[b] ([B, T, ...]); the padding stays in place."""
  t = jnp.arange(x.shape[1])
  idx = jnp.where(t[None, :] < lengths[:, None], lengths[:, None] - 1 - t[None, :], t[None, :])
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


class RNNLayer(nn.Module):
  """One (uni-directional) recurrent layer: x [B, T, D], mask [B, T] -> (final carry, outputs [B, T, H])."""
  cell: str = "lstm"
  hidden: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array):
    carry = CELLS[self.cell](self.hidden).initialize_carry(jax.random.PRNGKey(0), x[:, 0].shape)
    carry = jax.tree.map(lambda c: c.astype(x.dtype), carry)
    return _ScanStep(self.cell, self.hidden, name="scan")(carry, (x, mask))


def _final_hidden(cell: str, carry):
  return carry[1] if cell == "lstm" else carry  # LSTM carry is (c, h)


class RNNEncoder(nn.Module):
  """LSTM/GRU encoder: [B, T, D] (+ lengths [B] or mask [B, T]) -> [B, H(*2)] or [B, T, H(*2)]."""
  hidden: int = 64
  cell: str = "lstm"
  num_layers: int = 1
  bidirectional: bool = False
  pool: str = "last"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None, mask: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    if self.cell not in CELLS:
      raise MmjaxError(f"unknown recurrent cell {self.cell!r}; use 'lstm' or 'gru'")
    if self.pool not in ("last", "mean", "none"):
      raise MmjaxError(f"rnn encoder: unknown pool {self.pool!r}; use 'last', 'mean' or 'none'")
    if x.ndim != 3:
      raise MmjaxError(f"rnn encoder expects sequences [B, T, D], got shape {tuple(x.shape)}")
    b, t = x.shape[:2]
    if mask is None:
      mask = (jnp.ones((b, t), bool) if lengths is None else jnp.arange(t)[None, :] < lengths[:, None])
    mask = mask.astype(bool)
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
    h = x
    finals = []
    for layer in range(self.num_layers):
      carry, out = RNNLayer(self.cell, self.hidden, name=f"fwd_{layer}")(h, mask)
      finals = [_final_hidden(self.cell, carry)]
      if self.bidirectional:
        carry_b, out_b = RNNLayer(self.cell, self.hidden, name=f"bwd_{layer}")(reverse_valid(h, lengths), mask)
        out = jnp.concatenate([out, reverse_valid(out_b, lengths)], axis=-1)
        finals.append(_final_hidden(self.cell, carry_b))
      h = out
      if layer < self.num_layers - 1:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    if self.pool == "last":
      return jnp.concatenate(finals, axis=-1)
    if self.pool == "mean":
      denom = jnp.maximum(lengths, 1)[:, None].astype(h.dtype)
      return jnp.sum(h, axis=1) / denom
    return h
