"""Token-wise late interaction of FILIP (Yao et al. 2021, "FILIP: Fine-grained Interactive Language-Image
Pre-Training"): implicit alignment of image patches and words through their best-matching partners.

For image i with token features x_k (k over its valid tokens, n_i of them) and text j with token features y_r
(r over its non-padding tokens, m_j of them), all unit norm:
  image-to-text similarity  s_i2t[i, j] = (1 / n_i) sum_k max_r <x_k, y_r>
  text-to-image similarity  s_t2i[i, j] = (1 / m_j) sum_r max_k <x_k, y_r>
FILIP loss: (CE(s * s_i2t[i, :], i) + CE(s * s_t2i[:, j], j)) / 2 averaged over the batch, s = exp(logit_scale)
(the parameter clamped to [0, log 100] after each update by the train step, as CLIP's; not in the loss). Shapes: img_tokens [Bi, N, E], txt_tokens [Bt, L, E], masks [Bi, N] / [Bt, L].
`token_alignment` gives the [L, N] word-to-patch similarity of one pair (the implicit alignment map for plots).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError


def _f32(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mask(mask, shape: tuple) -> jax.Array:
  return jnp.ones(shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape)


def token_similarity(img_tokens: jax.Array, txt_tokens: jax.Array, img_mask=None,
                     txt_mask=None) -> tuple[jax.Array, jax.Array]:
  """img_tokens [Bi, N, E], txt_tokens [Bt, L, E] (+ masks [Bi, N], [Bt, L], True = real token)
  -> (s_i2t [Bi, Bt], s_t2i [Bi, Bt]) as in the module doc. Memory: one [Bi, Bt, N, L] similarity tensor."""
  x, y = _f32(img_tokens), _f32(txt_tokens)
  if x.ndim != 3 or y.ndim != 3 or x.shape[-1] != y.shape[-1]:
    raise MmjaxError(f"FILIP expects img_tokens [B, N, E] and txt_tokens [B, L, E] with the same E, got "
                     f"{tuple(x.shape)} and {tuple(y.shape)}")
  mi, mt = _mask(img_mask, x.shape[:2]), _mask(txt_mask, y.shape[:2])
  sim = jnp.einsum("ine,jle->ijnl", x, y)                                   # [Bi, Bt, N, L]
  neg = jnp.finfo(sim.dtype).min
  best_txt = jnp.max(jnp.where(mt[None, :, None, :], sim, neg), axis=3)      # [Bi, Bt, N]
  best_img = jnp.max(jnp.where(mi[:, None, :, None], sim, neg), axis=2)      # [Bi, Bt, L]
  wi = mi.astype(sim.dtype)[:, None, :]
  wt = mt.astype(sim.dtype)[None, :, :]
  s_i2t = jnp.sum(best_txt * wi, axis=2) / jnp.maximum(jnp.sum(wi, axis=2), 1.0)
  s_t2i = jnp.sum(best_img * wt, axis=2) / jnp.maximum(jnp.sum(wt, axis=2), 1.0)
  return s_i2t, s_t2i


def filip_loss(img_tokens: jax.Array, txt_tokens: jax.Array, logit_scale: jax.Array, img_mask=None,
               txt_mask=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """-> (loss (), metrics {loss, logit_scale, temperature, i2t_acc, t2i_acc}); matched pairs share an index."""
  s_i2t, s_t2i = token_similarity(img_tokens, txt_tokens, img_mask, txt_mask)
  if s_i2t.shape[0] != s_i2t.shape[1]:
    raise MmjaxError(f"filip_loss needs as many images as texts (pairs), got {s_i2t.shape[0]} and {s_i2t.shape[1]}")
  scale = jnp.exp(_f32(logit_scale))
  logits_i2t = scale * s_i2t            # row i: image i against every text
  logits_t2i = scale * s_t2i.T          # row j: text j against every image
  target = jnp.arange(s_i2t.shape[0])
  loss_i2t = jnp.mean(jax.nn.logsumexp(logits_i2t, axis=1) - jnp.diagonal(logits_i2t))
  loss_t2i = jnp.mean(jax.nn.logsumexp(logits_t2i, axis=1) - jnp.diagonal(logits_t2i))
  loss = 0.5 * (loss_i2t + loss_t2i)
  metrics = {"loss": loss, "logit_scale": scale, "temperature": 1.0 / scale,
             "i2t_acc": jnp.mean(jnp.argmax(logits_i2t, axis=1) == target).astype(jnp.float32),
             "t2i_acc": jnp.mean(jnp.argmax(logits_t2i, axis=1) == target).astype(jnp.float32)}
  return loss, metrics


def token_alignment(img_tokens: jax.Array, txt_tokens: jax.Array) -> jax.Array:
  """One pair: img_tokens [..., N, E], txt_tokens [..., L, E] -> word-to-patch similarities [..., L, N]."""
  return jnp.einsum("...le,...ne->...ln", _f32(txt_tokens), _f32(img_tokens))
