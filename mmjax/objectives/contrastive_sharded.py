"""Memory-bounded distributed contrastive losses, computed under `jax.shard_map`.

No device materialises the full [B, B] logits of the batch B = n * b sharded over the mesh axes ("data", "fsdp"):

chunked_clip_loss: the symmetric InfoNCE of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From
  Natural Language Supervision"). Each device all-gathers both embeddings and forms only the logits of its own b image
  rows against all B texts (and of its b text rows against all B images), optionally column chunk by column chunk with
  an online log-sum-exp (Milakov & Gimelshein 2018), so the live logits are [b, chunk].
ring_siglip_loss: the chunked sigmoid loss of SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image
  Pre-Training", Sec. 3.3): each device keeps its image block while the text blocks travel around a ring of
  `jax.lax.ppermute`s; only [b, b] logits are live at a time and nothing is all-gathered.

Both equal the naive `clip_loss` / `siglip_loss` of `mmjax.objectives.contrastive` (loss and gradients; autodiff
transposes all_gather into a reduce-scatter and ppermute into the reverse ppermute). The objectives
"clip_sharded" and "siglip_sharded" shard over the mesh of their ObjectiveContext (the train step's: the loop's
mesh), else that of the surrounding `jax.set_mesh` context, else all devices as `make_mesh({"data": -1, "fsdp": 1})`
(`ObjectiveContext.batch_mesh`; a different layout of the same devices only costs a reshard, the result is the same).
"""
from __future__ import annotations

import math
from typing import Sequence

import einops
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from mmjax.errors import MmjaxError
from mmjax.objectives.base import Objective
from mmjax.objectives.contrastive import _f32, image_text_features, loss_scalar
from mmjax.registry import OBJECTIVES
from mmjax.mesh import AXES

Axes = Sequence[str]


def _num_shards(mesh, axes: Axes, batch: int, what: str) -> int:
  missing = [a for a in axes if a not in mesh.shape]
  if missing:
    raise MmjaxError(f"{what}: mesh axes {list(mesh.shape)} lack {missing}; pass axes= a subset of the mesh axes")
  n = math.prod(mesh.shape[a] for a in axes)
  if batch % n:
    raise MmjaxError(f"{what}: batch size {batch} is not divisible by the {n} shards of mesh axes {tuple(axes)}")
  return n


def _check_pair(zimg: jax.Array, ztxt: jax.Array, what: str) -> None:
  if zimg.ndim != 2 or zimg.shape != ztxt.shape:
    raise MmjaxError(f"{what}: zimg and ztxt must both be [B, E], got {tuple(zimg.shape)} and {tuple(ztxt.shape)}")


def _row_lse_argmax(rows: jax.Array, cols: jax.Array, scale: jax.Array, chunk: int | None,
                    axes: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
  """rows [b, E], cols [B, E] -> (logsumexp_j scale rows.cols_j [b], argmax_j [b]), live logits [b, chunk]."""
  big = cols.shape[0]
  if chunk is None or chunk >= big:
    logits = scale * rows @ cols.T
    return jax.nn.logsumexp(logits, axis=1), jnp.argmax(logits, axis=1)
  if big % chunk:
    raise MmjaxError(f"chunked_clip_loss: chunk_size {chunk} does not divide the batch size {big}")
  blocks = einops.rearrange(cols, "(k c) e -> k c e", c=chunk)

  @jax.checkpoint  # keep only the carry per chunk for the backward pass, not the [b, chunk] logits
  def body(carry, inp):
    m, s, best, arg = carry
    k, blk = inp
    logits = scale * rows @ blk.T                                       # [b, c]
    # The running max is only a stabiliser: lse = m + log sum exp(l - m) has the right gradient for any m.
    m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(logits, axis=1)))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
    cmax, carg = jnp.max(logits, axis=1), jnp.argmax(logits, axis=1) + k * chunk
    better = cmax > best                                                # strict: ties keep the first column
    return (m_new, s, jnp.where(better, cmax, best), jnp.where(better, carg, arg)), None

  b = rows.shape[0]
  init = (jnp.full((b,), -jnp.inf, rows.dtype), jnp.zeros((b,), rows.dtype),
          jnp.full((b,), -jnp.inf, rows.dtype), jnp.zeros((b,), jnp.int32))
  init = jax.lax.pcast(init, axes, to="varying")                        # the carry varies across devices
  (m, s, _, arg), _ = jax.lax.scan(body, init, (jnp.arange(big // chunk), blocks))
  return m + jnp.log(s), arg


def chunked_clip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array, *, mesh: Mesh,
                      axes: Axes = AXES, chunk_size: int | None = None) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E] (unit norm), logit_scale () raw -> (loss (), metrics), equal to `clip_loss`.

  The rows of zimg and ztxt are sharded over `axes` of `mesh` (B divisible by their size n). Each device forms
  [B/n, chunk_size] logits at a time (chunk_size=None: [B/n, B]; it must divide B). metrics as `clip_loss`:
  loss, logit_scale, temperature, i2t_acc, t2i_acc.
  """
  what = "chunked_clip_loss"
  _check_pair(zimg, ztxt, what)
  big = zimg.shape[0]
  _num_shards(mesh, axes, big, what)
  axes = tuple(axes)
  zimg, ztxt, logit_scale = _f32(zimg), _f32(ztxt), _f32(logit_scale)

  def local(zi: jax.Array, zt: jax.Array, t: jax.Array):
    b = zi.shape[0]
    scale = jnp.exp(t)   # unclamped, as clip_loss
    all_img = jax.lax.all_gather(zi, axes, tiled=True)                  # [B, E]
    all_txt = jax.lax.all_gather(zt, axes, tiled=True)                  # [B, E]
    target = jax.lax.axis_index(axes) * b + jnp.arange(b)               # global index of the local rows
    diag = scale * jnp.sum(zi * zt, axis=1)                             # [b]
    lse_i2t, arg_i2t = _row_lse_argmax(zi, all_txt, scale, chunk_size, axes)
    lse_t2i, arg_t2i = _row_lse_argmax(zt, all_img, scale, chunk_size, axes)
    sums = jnp.stack([jnp.sum(lse_i2t - diag), jnp.sum(lse_t2i - diag),
                      jnp.sum(arg_i2t == target).astype(jnp.float32),
                      jnp.sum(arg_t2i == target).astype(jnp.float32)])
    return jax.lax.psum(sums, axes) / big, scale

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P()), out_specs=(P(), P()))
  means, scale = fn(zimg, ztxt, logit_scale)
  loss = 0.5 * (means[0] + means[1])
  metrics = {"loss": loss, "logit_scale": scale, "temperature": 1.0 / scale,
             "i2t_acc": means[2], "t2i_acc": means[3]}
  return loss, metrics


def _vary(tree, axes: tuple[str, ...]):
  """Marks each leaf as varying over `axes` (scan carries inside shard_map must match their per-device updates)."""
  def one(x):
    aval = jax.typeof(x)
    varying = aval.vma if hasattr(aval, "vma") else aval.mat.varying   # the attribute's name moved in jax 0.10
    missing = tuple(a for a in axes if a not in varying)
    return jax.lax.pcast(x, missing, to="varying") if missing else x
  return jax.tree.map(one, tree)


def _sig_chunks(txt: jax.Array, cols: jax.Array, chunk: int | None):
  """A text block [b, E] and its global indices [b] -> chunks [k, c, E], [k, c] (c = chunk, or b)."""
  c = txt.shape[0] if chunk is None or chunk >= txt.shape[0] else chunk
  if txt.shape[0] % c:
    raise MmjaxError(f"ring_siglip_loss: chunk_size {chunk} does not divide the per-device batch {txt.shape[0]}")
  return (einops.rearrange(txt, "(k c) e -> k c e", c=c), einops.rearrange(cols, "(k c) -> k c", c=c))


def _sig_logits(zi, tc, rows, cc, scale, bias):
  """[b, c] logits of local images vs one text chunk and their labels (+1 where the global indices match)."""
  logits = scale * zi @ tc.T + bias
  return logits, jnp.where(rows[:, None] == cc[None, :], 1.0, -1.0).astype(logits.dtype)


def _sig_forward_block(zi, txt, rows, cols, scale, bias, chunk, i_best, i_arg, axes):
  """One ring step's loss sum and argmax bookkeeping, [b, chunk] logits at a time.
  -> (loss sum, i_best, i_arg (per local image), t_best, t_arg (per text of the block))."""
  def body(carry, inp):
    total, i_best, i_arg = carry
    tc, cc = inp
    logits, labels = _sig_logits(zi, tc, rows, cc, scale, bias)
    total = total - jnp.sum(jax.nn.log_sigmoid(labels * logits))
    # Accuracies with jnp.argmax's tie rule (the smallest index wins), whatever order the blocks come in.
    cmax, carg = jnp.max(logits, axis=1), cc[jnp.argmax(logits, axis=1)]
    take = (cmax > i_best) | ((cmax == i_best) & (carg < i_arg))
    i_best, i_arg = jnp.where(take, cmax, i_best), jnp.where(take, carg, i_arg)
    return (total, i_best, i_arg), (jnp.max(logits, axis=0), rows[jnp.argmax(logits, axis=0)])

  init = _vary((jnp.zeros((), zi.dtype), i_best, i_arg), axes)
  (total, i_best, i_arg), (rmax, rarg) = jax.lax.scan(body, init, _sig_chunks(txt, cols, chunk))
  return total, i_best, i_arg, rmax.reshape(-1), rarg.reshape(-1)


def _chunk_size(b: int, chunk: int | None, what: str) -> int:
  c = b if chunk is None or chunk >= b else chunk
  if b % c:
    raise MmjaxError(f"{what}: chunk_size {chunk} does not divide the per-device batch {b}")
  return c


def _sig_backward_block(zi, txt, rows, cols, scale, bias, chunk, g, acc):
  """Adds the gradients of one ring step's loss sum (times g) to acc = (d zi [b, E], d txt [b, E], d scale,
  d bias), chunk by chunk, updating d txt in place (no stacked copy)."""
  c = _chunk_size(txt.shape[0], chunk, "ring_siglip_loss")

  def body(j, acc):
    dzi, dtxt, dscale, dbias = acc
    tc, cc = jax.lax.dynamic_slice_in_dim(txt, j * c, c), jax.lax.dynamic_slice_in_dim(cols, j * c, c)
    logits, labels = _sig_logits(zi, tc, rows, cc, scale, bias)
    dl = -g * labels * jax.nn.sigmoid(-labels * logits)                 # d/dl of -log sigmoid(y l) = -y sigmoid(-y l)
    dtc = jax.lax.dynamic_slice_in_dim(dtxt, j * c, c) + scale * dl.T @ zi
    return (dzi + scale * dl @ tc, jax.lax.dynamic_update_slice_in_dim(dtxt, dtc, j * c, 0),
            dscale + jnp.sum(dl * (logits - bias)) / scale, dbias + jnp.sum(dl))

  return jax.lax.fori_loop(0, txt.shape[0] // c, body, acc)


def _ring_siglip_local(axes: tuple[str, ...], n: int, chunk: int | None):
  """The per-device ring with a custom VJP: (zi [b, E], zt [b, E], scale (), bias ()) -> (loss sum over the local
  images and all texts, correct i2t, correct t2i). The backward runs the ring again, recomputing each [b, chunk]
  block of logits, with each text block's gradient travelling along with it; it keeps nothing of the forward but
  its inputs, so memory is O(b E + b chunk) per device in both passes."""
  ring = [(j, (j + 1) % n) for j in range(n)]

  def positions(b):
    me = jax.lax.axis_index(axes)
    return me, me * b + jnp.arange(b)

  def forward(zi, zt, scale, bias):
    b = zi.shape[0]
    me, rows = positions(b)

    def step(k, carry):   # a loop, not unrolled: one set of [b, E] buffers per device whatever n is
      total, i_best, i_arg, txt, t_best, t_arg = carry
      cols = ((me - k) % n) * b + jnp.arange(b)                         # the text block seen at step k
      part, i_best, i_arg, rmax, rarg = _sig_forward_block(zi, txt, rows, cols, scale, bias, chunk, i_best, i_arg,
                                                           axes)
      take = (rmax > t_best) | ((rmax == t_best) & (rarg < t_arg))
      t_best, t_arg = jnp.where(take, rmax, t_best), jnp.where(take, rarg, t_arg)
      txt, t_best, t_arg = jax.lax.ppermute((txt, t_best, t_arg), axes, ring)   # pass the block (n-th: home)
      return total + part, i_best, i_arg, txt, t_best, t_arg

    init = _vary((jnp.zeros((), zi.dtype), jnp.full((b,), -jnp.inf, zi.dtype), jnp.zeros((b,), jnp.int32), zt,
                  jnp.full((b,), -jnp.inf, zi.dtype), jnp.zeros((b,), jnp.int32)), axes)
    total, _, i_arg, _, _, t_arg = jax.lax.fori_loop(0, n, step, init)
    # After n hops every text block (with its best image) is back on its owner.
    return (total, jnp.sum(i_arg == rows).astype(zi.dtype), jnp.sum(t_arg == rows).astype(zi.dtype))

  @jax.custom_vjp
  def loss(zi, zt, scale, bias):
    return forward(zi, zt, scale, bias)

  def loss_fwd(zi, zt, scale, bias):
    return forward(zi, zt, scale, bias), (zi, zt, scale, bias)

  def loss_bwd(res, cotangents):
    zi, zt, scale, bias = res
    g = cotangents[0]                                                   # the accuracy counts have no gradient
    b = zi.shape[0]
    me, rows = positions(b)

    def step(k, carry):
      dzi, dscale, dbias, txt, dtxt = carry
      cols = ((me - k) % n) * b + jnp.arange(b)
      dzi, dtxt, dscale, dbias = _sig_backward_block(zi, txt, rows, cols, scale, bias, chunk, g,
                                                     (dzi, dtxt, dscale, dbias))
      txt, dtxt = jax.lax.ppermute((txt, dtxt), axes, ring)             # the n-th hop brings dtxt home
      return dzi, dscale, dbias, txt, dtxt

    init = _vary((jnp.zeros_like(zi), jnp.zeros_like(scale), jnp.zeros_like(bias), zt, jnp.zeros_like(zt)), axes)
    dzi, dscale, dbias, _, dtxt = jax.lax.fori_loop(0, n, step, init)
    return dzi, dtxt, dscale, dbias

  loss.defvjp(loss_fwd, loss_bwd)
  return loss


def ring_siglip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array, *,
                     mesh: Mesh, axes: Axes = AXES, chunk_size: int | None = None) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E], logit_scale t' () and logit_bias b () raw -> (loss (), metrics), equal to `siglip_loss`.

  Rows sharded over `axes` (size n, B divisible by n). Device i keeps its image block and sees text block
  (i - k) mod n at ring step k = 0..n-1 (a `fori_loop` of ppermutes; the n-th brings each block home), forming
  [B/n, chunk_size] logits at a time
  (chunk_size=None: [B/n, B/n]; it must divide B/n); labels are +1 where image and text indices match. A custom VJP
  (`_ring_siglip_local`) makes the backward pass memory-bounded too: it recomputes the logits in a second ring
  instead of keeping them. metrics as `siglip_loss`: loss, logit_scale, logit_bias, i2t_acc, t2i_acc.
  """
  what = "ring_siglip_loss"
  _check_pair(zimg, ztxt, what)
  big = zimg.shape[0]
  n = _num_shards(mesh, axes, big, what)
  axes = tuple(axes)
  zimg, ztxt = _f32(zimg), _f32(ztxt)
  logit_scale, logit_bias = _f32(logit_scale), _f32(logit_bias)
  ring_loss = _ring_siglip_local(axes, n, chunk_size)

  def local(zi: jax.Array, zt: jax.Array, t: jax.Array, bias: jax.Array):
    scale = jnp.exp(t)
    # Per-device copies: their cotangents are per-device partial sums, which autodiff psums for the replicated inputs.
    total, i_ok, t_ok = ring_loss(zi, zt, *jax.lax.pcast((scale, bias), axes, to="varying"))
    return jax.lax.psum(jnp.stack([total, i_ok, t_ok]), axes) / big, scale

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P(), P()), out_specs=(P(), P()))
  means, scale = fn(zimg, ztxt, logit_scale, logit_bias)
  metrics = {"loss": means[0], "logit_scale": scale, "logit_bias": logit_bias,
             "i2t_acc": means[1], "t2i_acc": means[2]}
  return means[0], metrics


def _clip_forward_block(zi, txt, rows, cols, scale, chunk, m, s, i_best, i_arg, axes):
  """One ring step of CLIP: online log-sum-exp over the text block for each local image (running max m, sum s)
  and, for each text of the block, its log-sum-exp and argmax over the local images ([b, chunk] at a time).
  -> (m, s, i_best, i_arg, col_lse [b], col_max [b], col_arg [b])."""
  def body(carry, inp):
    m, s, i_best, i_arg = carry
    tc, cc = inp
    logits = scale * zi @ tc.T                                          # [b, c]
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
    cmax, carg = jnp.max(logits, axis=1), cc[jnp.argmax(logits, axis=1)]
    take = (cmax > i_best) | ((cmax == i_best) & (carg < i_arg))
    i_best, i_arg = jnp.where(take, cmax, i_best), jnp.where(take, carg, i_arg)
    return (m_new, s, i_best, i_arg), (jax.nn.logsumexp(logits, axis=0), jnp.max(logits, axis=0),
                                       rows[jnp.argmax(logits, axis=0)])

  (m, s, i_best, i_arg), (lse, cmax, carg) = jax.lax.scan(body, _vary((m, s, i_best, i_arg), axes),
                                                          _sig_chunks(txt, cols, chunk))
  return m, s, i_best, i_arg, lse.reshape(-1), cmax.reshape(-1), carg.reshape(-1)


def _clip_backward_block(zi, txt, col_lse, row_lse, rows, cols, scale, chunk, g_row, g_col, acc):
  """Adds one ring step's gradients to acc = (d zi [b, E], d txt [b, E], d scale), chunk by chunk:
  dL/dl_ij = g_row (softmax_row_ij - [i = j]) + g_col (softmax_col_ij - [i = j]) (softmax over the texts of
  image i, and over the images of text j: exp(l_ij - lse))."""
  c = _chunk_size(txt.shape[0], chunk, "ring_clip_loss")

  def body(j, acc):
    dzi, dtxt, dscale = acc
    tc, cc = jax.lax.dynamic_slice_in_dim(txt, j * c, c), jax.lax.dynamic_slice_in_dim(cols, j * c, c)
    lse_c = jax.lax.dynamic_slice_in_dim(col_lse, j * c, c)
    logits = scale * zi @ tc.T
    eye = (rows[:, None] == cc[None, :]).astype(logits.dtype)
    dl = g_row * (jnp.exp(logits - row_lse[:, None]) - eye) + g_col * (jnp.exp(logits - lse_c[None, :]) - eye)
    dtc = jax.lax.dynamic_slice_in_dim(dtxt, j * c, c) + scale * dl.T @ zi
    return (dzi + scale * dl @ tc, jax.lax.dynamic_update_slice_in_dim(dtxt, dtc, j * c, 0),
            dscale + jnp.sum(dl * logits) / scale)

  return jax.lax.fori_loop(0, txt.shape[0] // c, body, acc)


def _ring_clip_local(axes: tuple[str, ...], n: int, chunk: int | None):
  """Per-device ring CLIP with a custom VJP: (zi [b, E], zt [b, E], scale ()) -> (sum_i (lse_i2t - diag),
  sum_j (lse_t2i - diag), correct i2t, correct t2i) over the local rows. The forward ring carries each text block
  with its running column log-sum-exp; the backward ring recomputes the logits from the two saved [b] lse vectors
  (each text block's gradient travelling with it), so nothing [b, b] is kept."""
  ring = [(j, (j + 1) % n) for j in range(n)]

  def forward(zi, zt, scale):
    b = zi.shape[0]
    me = jax.lax.axis_index(axes)
    rows = me * b + jnp.arange(b)

    def step(k, carry):
      m, s, i_best, i_arg, txt, t_lse, t_best, t_arg = carry
      cols = ((me - k) % n) * b + jnp.arange(b)
      m, s, i_best, i_arg, lse, cmax, carg = _clip_forward_block(zi, txt, rows, cols, scale, chunk, m, s, i_best,
                                                                 i_arg, axes)
      t_lse = jnp.logaddexp(t_lse, lse)
      take = (cmax > t_best) | ((cmax == t_best) & (carg < t_arg))
      t_best, t_arg = jnp.where(take, cmax, t_best), jnp.where(take, carg, t_arg)
      txt, t_lse, t_best, t_arg = jax.lax.ppermute((txt, t_lse, t_best, t_arg), axes, ring)
      return m, s, i_best, i_arg, txt, t_lse, t_best, t_arg

    neg = jnp.full((b,), -jnp.inf, zi.dtype)
    idx = jnp.zeros((b,), jnp.int32)
    init = _vary((neg, jnp.zeros((b,), zi.dtype), neg, idx, zt, neg, neg, idx), axes)
    m, s, _, i_arg, _, t_lse, _, t_arg = jax.lax.fori_loop(0, n, step, init)
    row_lse = m + jnp.log(s)
    diag = scale * jnp.sum(zi * zt, axis=1)
    out = (jnp.sum(row_lse - diag), jnp.sum(t_lse - diag),
           jnp.sum(i_arg == rows).astype(zi.dtype), jnp.sum(t_arg == rows).astype(zi.dtype))
    return out, (row_lse, t_lse)

  @jax.custom_vjp
  def loss(zi, zt, scale):
    return forward(zi, zt, scale)[0]

  def loss_fwd(zi, zt, scale):
    out, (row_lse, col_lse) = forward(zi, zt, scale)
    return out, (zi, zt, scale, row_lse, col_lse)

  def loss_bwd(res, cotangents):
    zi, zt, scale, row_lse, col_lse = res
    g_row, g_col = cotangents[0], cotangents[1]                         # the accuracy counts have no gradient
    b = zi.shape[0]
    me = jax.lax.axis_index(axes)
    rows = me * b + jnp.arange(b)

    def step(k, carry):
      dzi, dscale, txt, t_lse, dtxt = carry
      cols = ((me - k) % n) * b + jnp.arange(b)
      dzi, dtxt, dscale = _clip_backward_block(zi, txt, t_lse, row_lse, rows, cols, scale, chunk, g_row, g_col,
                                               (dzi, dtxt, dscale))
      txt, t_lse, dtxt = jax.lax.ppermute((txt, t_lse, dtxt), axes, ring)
      return dzi, dscale, txt, t_lse, dtxt

    init = _vary((jnp.zeros_like(zi), jnp.zeros_like(scale), zt, col_lse, jnp.zeros_like(zt)), axes)
    dzi, dscale, _, _, dtxt = jax.lax.fori_loop(0, n, step, init)
    return dzi, dtxt, dscale

  loss.defvjp(loss_fwd, loss_bwd)
  return loss


def ring_clip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array, *, mesh: Mesh, axes: Axes = AXES,
                   chunk_size: int | None = None) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E] (unit norm), logit_scale () raw -> (loss (), metrics), equal to `clip_loss`, with nothing
  gathered: the text blocks travel around a ring of ppermutes (as `ring_siglip_loss`), each carrying its running
  column log-sum-exp, and the local image rows keep an online log-sum-exp; [B/n, chunk_size] logits at a time.
  A custom VJP reruns the ring in the backward pass from the two saved [B/n] log-sum-exp vectors, so memory is
  O(b E + b chunk) per device in both passes (the all-gather of `chunked_clip_loss` holds [B, E] per device).
  Slower than `chunked_clip_loss` (the logits are computed twice); for batches whose [B, E] copies do not fit.
  """
  what = "ring_clip_loss"
  _check_pair(zimg, ztxt, what)
  big = zimg.shape[0]
  n = _num_shards(mesh, axes, big, what)
  axes = tuple(axes)
  zimg, ztxt, logit_scale = _f32(zimg), _f32(ztxt), _f32(logit_scale)
  ring_loss = _ring_clip_local(axes, n, chunk_size)

  def local(zi: jax.Array, zt: jax.Array, t: jax.Array):
    scale = jnp.exp(t)   # unclamped, as clip_loss
    row, col, i_ok, t_ok = ring_loss(zi, zt, jax.lax.pcast(scale, axes, to="varying"))
    return jax.lax.psum(jnp.stack([row + col, i_ok, t_ok]), axes) / big, scale

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P()), out_specs=(P(), P()))
  means, scale = fn(zimg, ztxt, logit_scale)
  loss = 0.5 * means[0]
  metrics = {"loss": loss, "logit_scale": scale, "temperature": 1.0 / scale,
             "i2t_acc": means[1], "t2i_acc": means[2]}
  return loss, metrics


def _clip_sharded_from_features(features, *, ctx):
  return chunked_clip_loss(features["zimg"], features["ztxt"], loss_scalar(features, "logit_scale", "clip_sharded"),
                           mesh=ctx.batch_mesh(), axes=ctx.axes)


def _siglip_sharded_from_features(features, *, ctx):
  bias = loss_scalar(features, "logit_bias", "siglip_sharded")
  return ring_siglip_loss(features["zimg"], features["ztxt"], loss_scalar(features, "logit_scale", "siglip_sharded"),
                          bias, mesh=ctx.batch_mesh(), axes=ctx.axes)


CLIP_SHARDED_OBJECTIVE = OBJECTIVES.register("clip_sharded")(
    Objective(image_text_features, _clip_sharded_from_features, ("image", "tokens")))
SIGLIP_SHARDED_OBJECTIVE = OBJECTIVES.register("siglip_sharded")(
    Objective(image_text_features, _siglip_sharded_from_features, ("image", "tokens")))
