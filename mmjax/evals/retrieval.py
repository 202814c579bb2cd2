"""Cross-modal retrieval recall@K (image->text and text->image), as reported for CLIP (Radford et al. 2021,
"Learning Transferable Visual Models From Natural Language Supervision", Table 13) and computed by open_clip's
`get_clip_metrics`, extended to several captions per image (Flickr30k / COCO: 5 captions per image).

Similarity is the plain dot product `img_emb @ txt_emb.T`: pass L2-normalised embeddings (cosine similarity);
nothing is renormalised here. The similarity matrix is built `chunk_size` rows at a time inside a `lax.map`, so
N = M = 100k never materialises an N x M matrix; memory is O(chunk_size * max(N, M)).

Ties are counted pessimistically: a wrong item whose score equals the correct one ranks ahead of it, so
constant embeddings score 0 rather than a lucky 100.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import MmjaxError


def _chunked_map(fn, xs: tuple[jax.Array, ...], chunk_size: int) -> jax.Array:
  """Applies `fn` to `chunk_size`-row chunks of `xs` (all [n, ...]) sequentially; returns the [n] results."""
  n = xs[0].shape[0]
  c = min(chunk_size, n)
  pad = -n % c
  xs = tuple(jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) for x in xs)
  xs = tuple(x.reshape((-1, c) + x.shape[1:]) for x in xs)
  return jax.lax.map(lambda args: fn(*args), xs).reshape(-1)[:n]


@partial(jax.jit, static_argnames="chunk_size")
def retrieval_ranks(img_emb: jax.Array, txt_emb: jax.Array, txt_to_img: jax.Array,
                    chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Pessimistic 0-based rank of the best correct item, per query.

  Args: img_emb [N, D], txt_emb [M, D], txt_to_img int [M] (index of each caption's image, in [0, N)).
  Returns (i2t [N], t2i [M]) int32: i2t[i] = number of captions of OTHER images scoring >= the best caption of
  image i (M for an image with no caption); t2i[j] = number of other images scoring >= caption j's own image.
  A query is a hit at K iff its rank < K.
  """
  dtype = jnp.promote_types(jnp.result_type(img_emb, txt_emb), jnp.float32)
  img_emb, txt_emb = img_emb.astype(dtype), txt_emb.astype(dtype)
  txt_to_img = txt_to_img.astype(jnp.int32)
  dot = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)

  def i2t(img, idx):                                          # [c, D], [c]
    sim = dot(img, txt_emb.T)                                 # [c, M]
    mine = txt_to_img[None, :] == idx[:, None]                # [c, M]
    best = jnp.max(jnp.where(mine, sim, -jnp.inf), axis=1)    # [c]; -inf when image has no caption
    return jnp.sum((sim >= best[:, None]) & ~mine, axis=1, dtype=jnp.int32)

  def t2i(txt, target, idx):                                  # [c, D], [c], [c]
    sim = dot(txt, img_emb.T)                                 # [c, N]
    own = jnp.take_along_axis(sim, target[:, None], axis=1)   # [c, 1], from the same matrix: exact tie with itself
    other = jnp.arange(img_emb.shape[0])[None, :] != target[:, None]
    return jnp.sum((sim >= own) & other, axis=1, dtype=jnp.int32)

  n, m = img_emb.shape[0], txt_emb.shape[0]
  r_i2t = _chunked_map(i2t, (img_emb, jnp.arange(n, dtype=jnp.int32)), chunk_size)
  r_t2i = _chunked_map(t2i, (txt_emb, txt_to_img, jnp.arange(m, dtype=jnp.int32)), chunk_size)
  return r_i2t, r_t2i


def retrieval_metrics(img_emb: jax.Array, txt_emb: jax.Array, txt_to_img: jax.Array,
                      ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
  """Recall@K in percent: {"i2t_R@K", "t2i_R@K" for K in ks, "mean_R": mean of all of them}.

  img_emb [N, D] and txt_emb [M, D] are L2-normalised embeddings; txt_to_img int [M] gives each caption's image.
  Image->text: image i is a hit at K if ANY of its captions ranks in its top K (images without captions are left
  out of the i2t average). Text->image: caption j is a hit if image txt_to_img[j] ranks in its top K.
  """
  img_emb, txt_emb, txt_to_img = jnp.asarray(img_emb), jnp.asarray(txt_emb), jnp.asarray(txt_to_img)
  if img_emb.ndim != 2 or img_emb.shape[0] == 0:
    raise MmjaxError(f"retrieval_metrics: img_emb must be [N, D] with N > 0, got shape {img_emb.shape}")
  if txt_emb.ndim != 2 or txt_emb.shape[0] == 0 or txt_emb.shape[1] != img_emb.shape[1]:
    raise MmjaxError(f"retrieval_metrics: txt_emb must be [M, D={img_emb.shape[1]}] with M > 0, "
                     f"got shape {txt_emb.shape}")
  if txt_to_img.shape != (txt_emb.shape[0],) or not jnp.issubdtype(txt_to_img.dtype, jnp.integer):
    raise MmjaxError(f"retrieval_metrics: txt_to_img must be int [M={txt_emb.shape[0]}], "
                     f"got {txt_to_img.dtype} {txt_to_img.shape}")
  lo, hi = int(txt_to_img.min()), int(txt_to_img.max())
  if lo < 0 or hi >= img_emb.shape[0]:
    raise MmjaxError(f"retrieval_metrics: txt_to_img values must be in [0, N={img_emb.shape[0]}), got [{lo}, {hi}]")
  if not ks or any(int(k) != k or k < 1 for k in ks):
    raise MmjaxError(f"retrieval_metrics: ks must be positive integers, got {tuple(ks)}")
  if int(chunk_size) < 1:
    raise MmjaxError(f"retrieval_metrics: chunk_size must be >= 1, got {chunk_size}")

  r_i2t, r_t2i = retrieval_ranks(img_emb, txt_emb, txt_to_img, chunk_size=int(chunk_size))
  has_caption = jnp.zeros(img_emb.shape[0], bool).at[txt_to_img].set(True)
  ks_arr = jnp.asarray([int(k) for k in ks])
  i2t_hits = jnp.sum((r_i2t[None, :] < ks_arr[:, None]) & has_caption, axis=1)   # [len(ks)] counts
  t2i_hits = jnp.sum(r_t2i[None, :] < ks_arr[:, None], axis=1)
  i2t = np.asarray(i2t_hits, np.float64) * 100 / int(jnp.sum(has_caption))
  t2i = np.asarray(t2i_hits, np.float64) * 100 / txt_emb.shape[0]
  out = {f"i2t_R@{int(k)}": float(v) for k, v in zip(ks, i2t)}
  out.update({f"t2i_R@{int(k)}": float(v) for k, v in zip(ks, t2i)})
  out["mean_R"] = float(np.mean(list(out.values())))
  return out
