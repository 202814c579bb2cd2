"""Jitted, batched autoregressive decoding: greedy and beam search (with GNMT length normalisation, Wu et al.
2016, "Google's Neural Machine Translation System", eq. 14: lp(Y) = ((5 + |Y|) / 6)^alpha).

Both work on any step function `step_fn(cache, token int32 [B'], position int32 ()) -> (logits [B', V], cache)`
whose cache is a pytree of arrays with a leading [B'] axis (B' = B for greedy, B * K for beam search), e.g.
`Captioner.decode_step` (mmjax.models.captioner); `caption_greedy` / `caption_beam` wire a captioner to them.

Sequences are laid out as the tokenizer's (mmjax.data.tokenizer): int32 [B, max_len], `<sot>` at position 0,
then the generated tokens, the first `<eot>` included, then `<pad>`. A row that emits no `<eot>` within max_len
has none. Greedy decoding stops (lax.while_loop) as soon as every row has emitted `<eot>`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
NEG_INF = -1e30


def greedy_decode(step_fn: StepFn, cache: Any, batch_size: int, *, max_len: int, sot_id: int, eot_id: int,
                  pad_id: int) -> jax.Array:
  """Argmax decoding -> tokens int32 [B, max_len]; after a row's `<eot>` its tokens are pad_id."""
  tokens = jnp.full((batch_size, max_len), pad_id, jnp.int32).at[:, 0].set(sot_id)
  done = jnp.zeros((batch_size,), bool)

  def cond(state):
    t, _, _, done = state
    return (t < max_len - 1) & ~jnp.all(done)

  def body(state):
    t, tokens, cache, done = state
    logits, cache = step_fn(cache, tokens[:, t], t)
    nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, pad_id, nxt)
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (jnp.zeros((), jnp.int32), t + 1))
    return t + 1, tokens, cache, done | (nxt == eot_id)

  _, tokens, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), tokens, cache, done))
  return tokens


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's lp = ((5 + length) / 6)^alpha (length = generated tokens, `<eot>` included)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(step_fn: StepFn, cache: Any, batch_size: int, *, beam_size: int, max_len: int, sot_id: int,
                eot_id: int, pad_id: int, alpha: float = 0.6) -> tuple[jax.Array, jax.Array]:
  """Beam search -> (best sequence per row int32 [B, max_len], its score [B]).

  `cache` holds B * beam_size rows (each row's beams contiguous: row b, beam k at b * K + k). Each step expands
  every alive beam by every token, keeps the best K non-`<eot>` extensions alive (by log-probability) and moves
  the `<eot>` extensions into a per-row pool of the K best finished beams, scored log p / lp(length). A row stops
  when its worst finished score beats the best score any alive beam could still reach (its log-prob with the
  largest length penalty); rows with no finished beam at max_len return their best alive beam (scored likewise).
  """
  b, k = batch_size, beam_size
  seqs = jnp.full((b, k, max_len), pad_id, jnp.int32).at[:, :, 0].set(sot_id)
  alive_logp = jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))   # one start beam
  fin_seqs = seqs
  fin_scores = jnp.full((b, k), NEG_INF, jnp.float32)
  max_lp = length_penalty(max_len - 1, alpha)

  def row_done(alive_logp, fin_scores):
    return jnp.min(fin_scores, axis=1) >= jnp.max(alive_logp, axis=1) / max_lp

  def cond(state):
    t, _, alive_logp, _, fin_scores, _ = state
    return (t < max_len - 1) & ~jnp.all(row_done(alive_logp, fin_scores))

  def body(state):
    t, seqs, alive_logp, fin_seqs, fin_scores, cache = state
    logits, cache = step_fn(cache, seqs[:, :, t].reshape(b * k), t)
    v = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    cand = (alive_logp[:, :, None] + logp).reshape(b, k * v)
    top_logp, top_idx = jax.lax.top_k(cand, 2 * k)                      # [B, 2K]
    beam, tok = top_idx // v, (top_idx % v).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(seqs, beam[:, :, None], axis=1)
    top_seqs = jax.lax.dynamic_update_slice(top_seqs, tok[:, :, None], (0, 0, t + 1))
    is_eot = tok == eot_id
    # Alive: the K best extensions that did not end.
    alive_cand = jnp.where(is_eot, NEG_INF, top_logp)
    new_logp, keep = jax.lax.top_k(alive_cand, k)
    new_seqs = jnp.take_along_axis(top_seqs, keep[:, :, None], axis=1)
    src = (jnp.arange(b)[:, None] * k + jnp.take_along_axis(beam, keep, axis=1)).reshape(b * k)
    cache = jax.tree.map(lambda x: x[src], cache)
    # Finished: merge the ended extensions into the pool, keep the K best by normalised score. Rows already done
    # take nothing more (their pool is final).
    done = row_done(alive_logp, fin_scores)
    fin_cand = jnp.where(is_eot & ~done[:, None], top_logp / length_penalty(t + 1, alpha), NEG_INF)
    pool_scores = jnp.concatenate([fin_scores, fin_cand], axis=1)
    pool_seqs = jnp.concatenate([fin_seqs, top_seqs], axis=1)
    fin_scores, pick = jax.lax.top_k(pool_scores, k)
    fin_seqs = jnp.take_along_axis(pool_seqs, pick[:, :, None], axis=1)
    return t + 1, new_seqs, new_logp, fin_seqs, fin_scores, cache

  state = (jnp.zeros((), jnp.int32), seqs, alive_logp, fin_seqs, fin_scores, cache)
  t, seqs, alive_logp, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, body, state)
  any_fin = fin_scores[:, 0] > NEG_INF / 2
  alive_scores = alive_logp[:, 0] / length_penalty(t, alpha)
  best = jnp.where(any_fin[:, None], fin_seqs[:, 0], seqs[:, 0])
  return best, jnp.where(any_fin, fin_scores[:, 0], alive_scores)


def _captioner_step(model, params):
  return lambda cache, token, pos: model.apply({"params": params}, cache, token, pos, method="decode_step")


def caption_greedy(model, params, images: jax.Array, max_len: int | None = None) -> jax.Array:
  """A captioner's greedy captions of images [B, H, W, 3] -> tokens int32 [B, max_len] (jit it with the model
  closed over: `jax.jit(lambda p, x: caption_greedy(model, p, x))`)."""
  max_len = model.context_length if max_len is None else max_len
  memory = model.apply({"params": params}, images, method="caption_memory")
  cache = model.apply({"params": params}, memory, max_len, method="init_cache")
  return greedy_decode(_captioner_step(model, params), cache, images.shape[0], max_len=max_len,
                       sot_id=model.sot_id, eot_id=model.eot_id, pad_id=model.pad_id)


def caption_beam(model, params, images: jax.Array, *, beam_size: int = 4, alpha: float = 0.6,
                 max_len: int | None = None) -> tuple[jax.Array, jax.Array]:
  """A captioner's beam-search captions -> (tokens int32 [B, max_len], scores [B])."""
  max_len = model.context_length if max_len is None else max_len
  memory = model.apply({"params": params}, images, method="caption_memory")
  memory = jnp.repeat(memory, beam_size, axis=0)                     # row b, beam k at b * K + k
  cache = model.apply({"params": params}, memory, max_len, method="init_cache")
  return beam_search(_captioner_step(model, params), cache, images.shape[0], beam_size=beam_size,
                     max_len=max_len, sot_id=model.sot_id, eot_id=model.eot_id, pad_id=model.pad_id, alpha=alpha)
