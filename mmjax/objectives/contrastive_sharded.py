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
"clip_sharded" and "siglip_sharded" use the mesh of the surrounding `jax.set_mesh` context if it has the axes,
and otherwise a mesh over all devices, `make_mesh({"data": -1, "fsdp": 1})` (a different layout of the same devices
only costs a reshard, the result is the same).
"""
from __future__ import annotations

import math
from typing import Sequence

import einops
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from mmjax.errors import MmjaxError
from mmjax.objectives import Objective
from mmjax.objectives.contrastive import MAX_LOGIT_SCALE, _f32, image_text_features
from mmjax.registry import OBJECTIVES
from mmjax.train.sharding import AXES, make_mesh

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
    scale = jnp.exp(jnp.minimum(t, MAX_LOGIT_SCALE))
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


def ring_siglip_loss(zimg: jax.Array, ztxt: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array, *,
                     mesh: Mesh, axes: Axes = AXES) -> tuple[jax.Array, dict]:
  """zimg, ztxt [B, E], logit_scale t' () and logit_bias b () raw -> (loss (), metrics), equal to `siglip_loss`.

  Rows sharded over `axes` (size n, B divisible by n). Device i keeps its image block and sees text block
  (i - k) mod n at ring step k = 0..n-1 (n-1 ppermutes), forming [B/n, B/n] logits per step; labels are +1 on the
  diagonal of step 0 (its own texts) only. metrics as `siglip_loss`: loss, logit_scale, logit_bias, i2t_acc, t2i_acc.
  """
  what = "ring_siglip_loss"
  _check_pair(zimg, ztxt, what)
  big = zimg.shape[0]
  n = _num_shards(mesh, axes, big, what)
  axes = tuple(axes)
  zimg, ztxt = _f32(zimg), _f32(ztxt)
  logit_scale, logit_bias = _f32(logit_scale), _f32(logit_bias)
  ring = [(j, (j + 1) % n) for j in range(n)]

  def local(zi: jax.Array, zt: jax.Array, t: jax.Array, bias: jax.Array):
    b = zi.shape[0]
    scale = jnp.exp(t)
    me = jax.lax.axis_index(axes)
    rows = me * b + jnp.arange(b)                                       # global indices of the local images
    total = jnp.zeros((), zi.dtype)
    # i2t: best text so far for each local image; t2i: best image so far for each travelling text (carried along).
    i_best, i_arg = jnp.full((b,), -jnp.inf, zi.dtype), jnp.zeros((b,), jnp.int32)
    t_best, t_arg = jnp.full((b,), -jnp.inf, zi.dtype), jnp.zeros((b,), jnp.int32)
    txt = zt
    for k in range(n):
      if k:
        txt, t_best, t_arg = jax.lax.ppermute((txt, t_best, t_arg), axes, ring)
      src = (me - k) % n                                                # owner of the text block seen now
      cols = src * b + jnp.arange(b)
      logits = scale * zi @ txt.T + bias                                # [b, b]
      labels = (2.0 * jnp.eye(b, dtype=logits.dtype) - 1.0) if k == 0 else -jnp.ones_like(logits)
      total = total - jnp.sum(jax.nn.log_sigmoid(labels * logits))
      logits = jax.lax.stop_gradient(logits)
      # Accuracies with jnp.argmax's tie rule (the smallest index wins), whatever order the blocks come in.
      cmax, carg = jnp.max(logits, axis=1), cols[jnp.argmax(logits, axis=1)]
      take = (cmax > i_best) | ((cmax == i_best) & (carg < i_arg))
      i_best, i_arg = jnp.where(take, cmax, i_best), jnp.where(take, carg, i_arg)
      rmax, rarg = jnp.max(logits, axis=0), rows[jnp.argmax(logits, axis=0)]
      take = (rmax > t_best) | ((rmax == t_best) & (rarg < t_arg))
      t_best, t_arg = jnp.where(take, rmax, t_best), jnp.where(take, rarg, t_arg)
    last_cols = ((me - (n - 1)) % n) * b + jnp.arange(b)                # the text block held after the last step
    sums = jnp.stack([total, jnp.sum(i_arg == rows).astype(jnp.float32),
                      jnp.sum(t_arg == last_cols).astype(jnp.float32)])
    return jax.lax.psum(sums, axes) / big, scale

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P(), P()), out_specs=(P(), P()))
  means, scale = fn(zimg, ztxt, logit_scale, logit_bias)
  metrics = {"loss": means[0], "logit_scale": scale, "logit_bias": logit_bias,
             "i2t_acc": means[1], "t2i_acc": means[2]}
  return means[0], metrics


def current_mesh(axes: Axes = AXES):
  """The mesh of the surrounding `jax.set_mesh` context if it has `axes`, else all devices as {"data": -1, "fsdp": 1}."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and all(a in mesh.shape for a in axes):
    return mesh
  return make_mesh({"data": -1, "fsdp": 1})


def _clip_sharded_from_features(params, features):
  return chunked_clip_loss(features["zimg"], features["ztxt"], params["logit_scale"], mesh=current_mesh())


def _siglip_sharded_from_features(params, features):
  if "logit_bias" not in params:
    raise MmjaxError("objective 'siglip_sharded' needs a logit_bias parameter: set model.logit_bias_init (e.g. -10.0)")
  return ring_siglip_loss(features["zimg"], features["ztxt"], params["logit_scale"], params["logit_bias"],
                          mesh=current_mesh())


CLIP_SHARDED_OBJECTIVE = OBJECTIVES.register("clip_sharded")(
    Objective(image_text_features, _clip_sharded_from_features, ("image", "tokens")))
SIGLIP_SHARDED_OBJECTIVE = OBJECTIVES.register("siglip_sharded")(
    Objective(image_text_features, _siglip_sharded_from_features, ("image", "tokens")))
