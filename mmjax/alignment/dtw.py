"""Dynamic time warping with its warping path (Sakoe & Chiba 1978), soft-DTW (Cuturi & Blondel 2017, "Soft-DTW:
a Differentiable Loss Function for Time-Series") and the soft-DTW divergence (Blondel, Mensch & Vert 2021,
"Differentiable Divergences Between Time Series").

Shapes: `x [..., T1, D]`, `y [..., T2, D]` (or a cost matrix `cost [..., T1, T2]`); leading axes are batch axes.
Sequences of different lengths are zero-padded to T1 / T2 and passed with `x_lengths` / `y_lengths` `[...]` (or
prefix masks `x_mask [..., T1]`, `y_mask [..., T2]`, True = real frame). The public functions are jitted (`metric`
is static; `band` may be a traced int, so one compiled program serves every band radius) and vmappable; soft-DTW is
differentiable (reverse mode) w.r.t. x, y, cost and gamma.

Recursion (0-based, R[-1, -1] = 0, R[-1, j] = R[i, -1] = inf):
  R[i, j] = C[i, j] + min_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1]),
with min_0 = min (DTW) and min_gamma(a) = -gamma log sum exp(-a / gamma) (soft-DTW); the value is
R[nx-1, ny-1]. It runs as one `lax.scan` over the T1 + T2 - 1 anti-diagonals i + j = d, each a vector over i,
so no Python loop runs over time. A batch of N pairs is one scan over [T1, N] diagonals (batch last, so that the
shifts along i move whole contiguous rows; on CPU this layout is faster than vmapping a single-pair scan).

Sakoe-Chiba band of radius `band` (None: no constraint): cell (i, j) is allowed iff
  i - j <= band + max(0, nx - ny)  and  j - i <= band + max(0, ny - nx),
i.e. |i - j| <= band, widened by the length difference so that the end cell is always reachable (tslearn's
`sakoe_chiba_mask`; dtaidistance's `window=w` is `band=w-1`). band=0 with nx = ny is the Euclidean matching.

Warping path: the cells (i, j) of an optimal path from (0, 0) to (nx-1, ny-1), found by backtracking the
argmin of each cell's predecessors (ties: diagonal, then (i-1, j), then (i, j-1)), returned as a boolean matrix
`path [..., T1, T2]` and as index pairs `pairs [..., T1 + T2 - 1, 2]` in path order, padded with -1, with
`path_length [...]`.

Soft-DTW gradient: a custom VJP whose backward pass is Algorithm 2 of Cuturi & Blondel (2017), run backwards over
the anti-diagonals: it computes the expected alignment matrix E = d sdtw / d C [T1, T2] in O(T1 T2) time and
memory (autodiff through the forward scan would store each step's soft-min). `soft_dtw_alignment` returns E
(e.g. for plots). The gradient w.r.t. gamma follows from the 1-homogeneity sdtw(tC, t gamma) = t sdtw(C, gamma):
d sdtw / d gamma = (sdtw - <E, C>) / gamma. Forward-mode differentiation (jvp) is not defined.

ott-jax: `ott.geometry.costs.SoftDTW` (ott-jax 0.6.0) computes the soft-DTW value with the same anti-diagonal
scan (and its `debiased=True` is the divergence), but it has no lengths/masks, no band, no hard DTW or path, and
differentiates by autodiff through the scan (no custom VJP, no access to E). So the recursion here is our own;
ott's implementation serves as an independent reference in tests/test_soft_dtw.py. The local costs are our own
too (batched [N, T1, T2] in one matmul, which ott's pairwise `all_pairs` is not).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError

METRICS = ("sqeuclidean", "cosine", "l1")


class DTWResult(NamedTuple):
  """distance [...]; path [..., T1, T2] bool; pairs [..., T1 + T2 - 1, 2] int32 (-1 padded); path_length [...]."""
  distance: jax.Array
  path: jax.Array
  pairs: jax.Array
  path_length: jax.Array


# ---------------------------------------------------------------------------------------------- local costs
def cost_matrix(x: jax.Array, y: jax.Array, metric: str = "sqeuclidean", eps: float = 1e-12) -> jax.Array:
  """Local costs between frames: x [..., T1, D], y [..., T2, D] -> C [..., T1, T2] (float32 or wider).

  sqeuclidean: |x - y|^2, computed as |x'|^2 + |y'|^2 - 2 x'.y' on x' = x - m, y' = y - m (m: the mean frame of
  both, which keeps the cancellation error small) and clamped at 0; l1: sum_d |x_d - y_d|;
  cosine: 1 - <x, y> / (max(|x|, eps) max(|y|, eps)).
  """
  x, y = _check_xy(x, y)
  batch = x.shape[:-2]
  out = _cost_batch_last(x.reshape((-1,) + x.shape[-2:]), y.reshape((-1,) + y.shape[-2:]), metric, eps)
  return jnp.moveaxis(out, -1, 0).reshape(batch + out.shape[:2])   # XLA cancels the two transposes


def _check_xy(x, y):
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-1]:
    raise MmjaxError(f"DTW expects x [..., T1, D] and y [..., T2, D] with the same D, got x {tuple(x.shape)} "
                     f"and y {tuple(y.shape)}")
  if x.shape[:-2] != y.shape[:-2]:
    shape = jnp.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    x, y = jnp.broadcast_to(x, shape + x.shape[-2:]), jnp.broadcast_to(y, shape + y.shape[-2:])
  dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
  return x.astype(dtype), y.astype(dtype)


DIRECT_MAX_DIM = 64   # hard DTW with D <= this computes the costs by a loop over D (see _cost_batch_last)


def _cost_batch_last(x: jax.Array, y: jax.Array, metric: str, eps: float = 1e-12, direct: bool = False) -> jax.Array:
  """x [N, T1, D], y [N, T2, D] -> C [T1, T2, N] (the layout of the recursions).

  direct=False: batched matmuls [N, T1, T2], transposed once at the end (differentiable at the cost of one
  [N, T1, T2] matmul; an einsum straight to "ijn" is slower on CPU). direct=True (small D, no gradient
  needed): a `lax.scan` over the D features accumulating [T1, T2, N] in place, which never transposes the big
  array (on CPU faster for the whole DTW at small D) and, for sqeuclidean, is exact (no cancellation).
  """
  if direct:
    xt, yt = jnp.transpose(x, (2, 1, 0)), jnp.transpose(y, (2, 1, 0))       # [D, T, N]
    if metric == "cosine":
      xt = xt * jax.lax.rsqrt(jnp.maximum(jnp.sum(xt * xt, axis=0, keepdims=True), eps * eps))
      yt = yt * jax.lax.rsqrt(jnp.maximum(jnp.sum(yt * yt, axis=0, keepdims=True), eps * eps))
    elif metric not in METRICS:
      raise MmjaxError(f"unknown DTW metric {metric!r}; valid: {', '.join(METRICS)} (or pass cost=[T1, T2])")
    local = {"sqeuclidean": lambda a, b: jnp.square(a - b), "l1": lambda a, b: jnp.abs(a - b),
             "cosine": lambda a, b: a * b}[metric]

    def body(acc, ab):
      return acc + local(ab[0][:, None, :], ab[1][None, :, :]), None

    acc0 = jnp.zeros((x.shape[1], y.shape[1], x.shape[0]), x.dtype)
    acc, _ = jax.lax.scan(body, acc0, (xt, yt))
    return 1.0 - acc if metric == "cosine" else acc
  if metric == "sqeuclidean":
    m = jax.lax.stop_gradient(0.5 * (jnp.mean(x, axis=1, keepdims=True) + jnp.mean(y, axis=1, keepdims=True)))
    x, y = x - m, y - m
    sq = (jnp.sum(x * x, axis=-1)[:, :, None] + jnp.sum(y * y, axis=-1)[:, None, :]
          - 2.0 * jnp.einsum("nid,njd->nij", x, y))
    out = jnp.maximum(sq, 0.0)
  elif metric == "l1":
    out = jnp.sum(jnp.abs(x[:, :, None, :] - y[:, None, :, :]), axis=-1)
  elif metric == "cosine":
    # sqrt(max(|x|^2, eps^2)): the same as max(|x|, eps) but with a finite gradient at zero (padding) frames
    xn = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))
    yn = y * jax.lax.rsqrt(jnp.maximum(jnp.sum(y * y, axis=-1, keepdims=True), eps * eps))
    out = 1.0 - jnp.einsum("nid,njd->nij", xn, yn)
  else:
    raise MmjaxError(f"unknown DTW metric {metric!r}; valid: {', '.join(METRICS)} (or pass cost=[T1, T2])")
  return jnp.moveaxis(out, 0, -1)


def band_mask(t1: int, t2: int, nx, ny, band=None) -> jax.Array:
  """Allowed cells [..., T1, T2] bool for lengths nx, ny [...]: i < nx, j < ny and the Sakoe-Chiba band."""
  nx, ny = jnp.asarray(nx), jnp.asarray(ny)
  return jnp.moveaxis(_band_mask_batch_last(t1, t2, nx.reshape(-1), ny.reshape(-1), band), -1, 0).reshape(
      jnp.broadcast_shapes(nx.shape, ny.shape) + (t1, t2))


def _band_mask_batch_last(t1: int, t2: int, nx, ny, band=None) -> jax.Array:
  """nx, ny [N] -> allowed cells [T1, T2, N]."""
  nx, ny = nx[None, None, :], ny[None, None, :]
  i = jnp.arange(t1)[:, None, None]
  j = jnp.arange(t2)[None, :, None]
  ok = (i < nx) & (j < ny)
  if band is not None:
    ok &= (i - j <= band + jnp.maximum(0, nx - ny)) & (j - i <= band + jnp.maximum(0, ny - nx))
  return ok


# ---------------------------------------------------------------------------------------------- layout
# Internally a batch of N pairs is laid out batch-last: costs [T1, T2, N], skewed diagonals [K, T1, N] with
# K = T1 + T2 - 1 and skewed[d, i, n] = C[i, d - i, n].
def _skew(a: jax.Array, fill) -> jax.Array:
  """a [T1, T2, N] -> [T1 + T2 - 1, T1, N] with out[d, i] = a[i, d - i] (fill where d - i is outside [0, T2)).

  The shear as pad + reshape (no gather): rows padded to T1 + T2 and re-read with stride T1 + T2 - 1 start one
  element earlier each row, so row i is shifted right by i.
  """
  t1, t2 = a.shape[:2]
  rest = a.shape[2:]
  b = jnp.pad(a, ((0, 0), (0, t1)) + ((0, 0),) * len(rest), constant_values=fill)     # [T1, T1 + T2, N]
  flat = b.reshape((t1 * (t1 + t2),) + rest)[:t1 * (t1 + t2 - 1)]
  return jnp.swapaxes(flat.reshape((t1, t1 + t2 - 1) + rest), 0, 1)


def _unskew(s: jax.Array, t2: int) -> jax.Array:
  """s [T1 + T2 - 1, T1, N] -> [T1, T2, N] with out[i, j] = s[i + j, i]."""
  t1 = s.shape[1]
  i = jnp.arange(t1)[:, None]
  j = jnp.arange(t2)[None, :]
  return s[i + j, i]


def _shift_down(v: jax.Array, fill) -> jax.Array:
  """v [T1, N] -> out[i] = v[i - 1], out[0] = fill."""
  return jnp.concatenate([jnp.full((1,) + v.shape[1:], fill, v.dtype), v[:-1]])


def _shift_up(v: jax.Array, fill) -> jax.Array:
  """v [T1, N] -> out[i] = v[i + 1], out[-1] = fill."""
  return jnp.concatenate([v[1:], jnp.full((1,) + v.shape[1:], fill, v.dtype)])


def _softmin3(stacked: jax.Array, gamma) -> tuple[jax.Array, jax.Array]:
  """stacked [3, ...] -> (-gamma log sum_k exp(-stacked_k / gamma) [...], weights softmax(-stacked / gamma) [3, ...]).

  inf (weights 0) where all three are inf.
  """
  lo = jnp.min(stacked, axis=0)
  finite = jnp.isfinite(lo)
  w = jnp.exp(-(stacked - jnp.where(finite, lo, 0.0)) / gamma)     # exp(0) = 1 at the minimum
  total = jnp.sum(w, axis=0)
  value = jnp.where(finite, lo - gamma * jnp.log(jnp.where(finite, total, 1.0)), jnp.inf)
  return value, jnp.where(finite, w / jnp.where(finite, total, 1.0), 0.0)


def _pick(r: jax.Array, i: jax.Array) -> jax.Array:
  """r [T1, N], i [N] -> r[i[n], n] [N]."""
  return jnp.take_along_axis(r, i[None, :], axis=0)[0]


def _forward(cs: jax.Array, nx, ny, gamma=None, *, allowed=None, full: bool = False, keep_weights: bool = False,
             keep_dirs: bool = False):
  """DP over skewed costs cs [K, T1, N] (inf = forbidden cell), min (gamma None) or soft-min (gamma [N]).

  allowed: None, or a function d -> bool [T1, N] of the cells of diagonal d to keep (the others count as inf),
  so that masks need not be written into a copy of the costs. full: nx = T1 and ny = T2 for every pair (the value
  is then the last cell of the last diagonal, with no per-step pick).
  Returns (R[nx-1, ny-1] [N], soft-min weights [K, 3, T1, N] or None, dirs [K, T1, N] int8 or None).
  Index 0 / 1 / 2 of the weights and dirs: predecessor (i-1, j-1) / (i-1, j) / (i, j-1); weights[d, k, i] is the
  share of predecessor k in the soft-min of cell (i, d - i) (0 where the cell is unreachable).
  """
  k, t1, n = cs.shape
  inf = jnp.asarray(jnp.inf, cs.dtype)
  r0 = jnp.full((t1, n), inf, cs.dtype).at[0].set(cs[0, 0])     # cell (0, 0) is always allowed
  d_end, i_end = nx + ny - 2, nx - 1
  out0 = jnp.where(d_end == 0, _pick(r0, i_end), inf)

  def step(carry, inp):
    r2, r1, out = carry
    c, d = inp
    if allowed is not None:
      c = jnp.where(allowed(d), c, inf)
    diag, up, left = _shift_down(r2, inf), _shift_down(r1, inf), r1
    weights, dirs = None, None
    if gamma is None:
      up_left = jnp.minimum(up, left)
      best = jnp.minimum(diag, up_left)
      if keep_dirs:   # argmin with ties to the first of (diag, up, left)
        dirs = jnp.where(diag <= up_left, 0, jnp.where(up <= left, 1, 2)).astype(jnp.int8)
    else:
      best, weights = _softmin3(jnp.stack([diag, up, left]), gamma)
    r = c + best
    if not full:
      out = jnp.where(d == d_end, _pick(r, i_end), out)
    if keep_weights:
      weights = jnp.where(jnp.isfinite(r)[None], weights, 0.0)
    return (r1, r, out), (weights if keep_weights else None, dirs)

  init = (jnp.full((t1, n), inf, cs.dtype), r0, out0)
  (_, r_last, out), (weights, dirs) = jax.lax.scan(step, init, (cs[1:], jnp.arange(1, k)))
  if full:
    out = r_last[-1] if k > 1 else r0[-1]
  if keep_weights:
    weights = jnp.concatenate([jnp.zeros((1, 3, t1, n), cs.dtype), weights])
  if keep_dirs:
    dirs = jnp.concatenate([jnp.zeros((1, t1, n), jnp.int8), dirs])
  return out, weights, dirs


def _allowed_on_diagonals(t1: int, nx, ny, band, full: bool):
  """d -> bool [T1, N]: cell (i, d - i) inside the lengths and the band (None when nothing is masked).

  The skew already makes d - i outside [0, T2) inf; lengths only matter for the soft-DTW backward and for NaN
  padding (R[nx-1, ny-1] never depends on a cell past the lengths), so they are applied when given.
  """
  if full and band is None:
    return None
  i = jnp.arange(t1)[:, None]
  nx, ny = nx[None, :], ny[None, :]

  def allowed(d):
    j = d - i
    ok = jnp.ones((t1, nx.shape[1]), bool) if full else (i < nx) & (j < ny)
    if band is not None:
      ok &= (i - j <= band + jnp.maximum(0, nx - ny)) & (j - i <= band + jnp.maximum(0, ny - nx))
    return ok

  return allowed


def _backtrack(dirs: jax.Array, nx, ny, reachable) -> tuple[jax.Array, jax.Array]:
  """Optimal paths from skewed argmin directions dirs [K, T1, N]
  -> (pairs [N, K, 2] int32 in path order from (0, 0), -1 padded; lengths [N] int32)."""
  k, _, n = dirs.shape
  cols = jnp.arange(n)

  def step(carry, _):
    i, j, done = carry
    emit = jnp.where(done[:, None], -1, jnp.stack([i, j], axis=-1))
    step_dir = dirs[i + j, i, cols]
    ni = jnp.where(step_dir == 2, i, i - 1)
    nj = jnp.where(step_dir == 1, j, j - 1)
    done_next = done | ((i == 0) & (j == 0))
    return (jnp.where(done_next, i, ni), jnp.where(done_next, j, nj), done_next), emit

  start = (jnp.asarray(nx - 1, jnp.int32), jnp.asarray(ny - 1, jnp.int32), ~reachable)
  _, rev = jax.lax.scan(step, start, None, length=k)               # [K, N, 2], end -> start
  length = jnp.sum(rev[:, :, 0] >= 0, axis=0).astype(jnp.int32)   # [N]
  idx = jnp.arange(k)[:, None]
  src = jnp.clip(length[None, :] - 1 - idx, 0, k - 1)              # [K, N]
  pairs = jnp.where((idx < length[None, :])[..., None], rev[src, cols[None, :]], -1)
  return jnp.transpose(pairs, (1, 0, 2)), length


# ---------------------------------------------------------------------------------------------- cores (batch last)
def _dtw_core(cost: jax.Array, nx, ny, band, full: bool, return_path: bool):
  """cost [T1, T2, N] (unmasked); nx, ny [N]; band None or an int; full: no lengths were given."""
  t1, t2, n = cost.shape
  cs = _skew(cost, jnp.inf)
  allowed = _allowed_on_diagonals(t1, nx, ny, band, full)
  dist, _, dirs = _forward(cs, nx, ny, None, allowed=allowed, full=full, keep_dirs=return_path)
  if not return_path:
    return dist
  pairs, length = _backtrack(dirs, nx, ny, jnp.isfinite(dist))
  rows = jnp.where(pairs[..., 0] >= 0, pairs[..., 0], t1)          # -1 -> out of bounds, dropped
  batch = jnp.broadcast_to(jnp.arange(n)[:, None], rows.shape)
  path = jnp.zeros((n, t1, t2), bool).at[batch, rows, pairs[..., 1]].set(True, mode="drop")
  return DTWResult(dist, path, pairs, length)


def _sdtw_fwd(cost, gamma, nx, ny):
  cs = _skew(cost, jnp.inf)
  value, weights, _ = _forward(cs, nx, ny, gamma, keep_weights=True)
  return value, (cs, weights, gamma, value, nx, ny)


def _expected_alignment(weights: jax.Array, nx, ny) -> jax.Array:
  """Algorithm 2 of Cuturi & Blondel (2017) on the anti-diagonals -> skewed E [K, T1, N], 1 at the end cell.

  E[i, j] = E[i+1, j] a + E[i, j+1] b + E[i+1, j+1] c, where a, b, c are the shares of (i, j) in the soft-mins of
  its successors. The paper recomputes them as exp((R[succ] - C[succ] - R[i, j]) / gamma); here they are the
  forward pass's soft-min weights (the same numbers, but without the cancellation in R - C, which in float32 at
  small gamma costs ~1e-3 relative error).
  """
  k, _, t1, n = weights.shape
  pad = jnp.zeros((2, 3, t1, n), weights.dtype)
  w_p = jnp.concatenate([weights, pad])
  d_end, at_end = nx + ny - 2, jnp.arange(t1)[:, None] == (nx - 1)[None, :]

  def step(carry, d):
    e1, e2 = carry                                            # E on diagonals d + 1 and d + 2
    w1, w2 = w_p[d + 1], w_p[d + 2]
    e = (_shift_up(e1 * w1[1], 0.0)                           # successor (i + 1, j) reached from (i-1, j)
         + e1 * w1[2]                                         # successor (i, j + 1) reached from (i, j-1)
         + _shift_up(e2 * w2[0], 0.0))                        # successor (i + 1, j + 1) from (i-1, j-1)
    e = jnp.where((d == d_end)[None, :] & at_end, 1.0, e)
    return (e, e1), e

  zeros = jnp.zeros((t1, n), weights.dtype)
  _, es = jax.lax.scan(step, (zeros, zeros), jnp.arange(k), reverse=True)
  return es


def _sdtw_bwd(res, g):
  cs, weights, gamma, value, nx, ny = res
  es = jnp.where(jnp.isfinite(value)[None, None, :], _expected_alignment(weights, nx, ny), 0.0)
  e = _unskew(es, cs.shape[0] - cs.shape[1] + 1)
  # <E, C> over the reachable cells; d value / d gamma from 1-homogeneity (module doc).
  e_dot_c = jnp.sum(jnp.where(es > 0, es * jnp.where(jnp.isfinite(cs), cs, 0.0), 0.0), axis=(0, 1))
  g_gamma = jnp.where(jnp.isfinite(value), (value - e_dot_c) / gamma, 0.0)
  return g[None, None, :] * e, g * g_gamma, None, None


@jax.custom_vjp
def _sdtw_core(cost, gamma, nx, ny):
  """Soft-DTW values [N] of costs [T1, T2, N] (inf at forbidden cells), gamma, nx, ny [N]; Algorithm-2 VJP."""
  return _sdtw_fwd(cost, gamma, nx, ny)[0]


_sdtw_core.defvjp(_sdtw_fwd, _sdtw_bwd)


# ---------------------------------------------------------------------------------------------- batching
def _lengths(lengths, mask, t: int, batch_shape: tuple, name: str) -> jax.Array:
  if lengths is not None and mask is not None:
    raise MmjaxError(f"give {name}_lengths or {name}_mask, not both")
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape[-1] != t:
      raise MmjaxError(f"{name}_mask has {mask.shape[-1]} frames but the sequence has {t}; masks are [..., T]")
    lengths = jnp.sum(mask.astype(jnp.int32), axis=-1)
  if lengths is None:
    return jnp.full(batch_shape, t, jnp.int32)
  return jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), batch_shape)


def _prepare(x, y, cost, metric, x_lengths, y_lengths, x_mask, y_mask, direct: bool = False):
  """-> (cost [T1, T2, N] (batch last, unmasked), nx [N], ny [N], batch shape, full = no lengths/masks given).

  direct: the costs need no gradient (hard DTW); small D then uses the transpose-free loop of _cost_batch_last.
  """
  if cost is None:
    if x is None or y is None:
      raise MmjaxError("DTW needs x [..., T1, D] and y [..., T2, D], or cost=[..., T1, T2]")
    x, y = _check_xy(x, y)
    batch, t1, t2 = x.shape[:-2], x.shape[-2], y.shape[-2]
    cost = _cost_batch_last(x.reshape((-1,) + x.shape[-2:]), y.reshape((-1,) + y.shape[-2:]), metric,
                            direct=direct and x.shape[-1] <= DIRECT_MAX_DIM)
  else:
    if x is not None or y is not None:
      raise MmjaxError("give either x and y, or cost=, not both")
    cost = jnp.asarray(cost)
    if cost.ndim < 2:
      raise MmjaxError(f"DTW cost must be [..., T1, T2], got shape {tuple(cost.shape)}")
    batch, (t1, t2) = cost.shape[:-2], cost.shape[-2:]
    cost = jnp.moveaxis(cost.reshape((-1, t1, t2)), 0, -1).astype(jnp.promote_types(cost.dtype, jnp.float32))
  full = all(v is None for v in (x_lengths, y_lengths, x_mask, y_mask))
  nx = _lengths(x_lengths, x_mask, t1, batch, "x").reshape(-1)
  ny = _lengths(y_lengths, y_mask, t2, batch, "y").reshape(-1)
  return cost, nx, ny, batch, full


def _masked(cost, nx, ny, band):
  """cost [T1, T2, N] with inf outside the lengths and the band (soft-DTW: keeps NaN padding out of E)."""
  return jnp.where(_band_mask_batch_last(cost.shape[0], cost.shape[1], nx, ny, band), cost, jnp.inf)


def _unflatten(tree, batch: tuple):
  return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), tree)


# ---------------------------------------------------------------------------------------------- public API
@functools.partial(jax.jit, static_argnames=("metric", "return_path"))
def dtw(x=None, y=None, *, cost=None, metric: str = "sqeuclidean", band: int | None = None,
        x_lengths=None, y_lengths=None, x_mask=None, y_mask=None, return_path: bool = True):
  """DTW distance and warping path. x [..., T1, D], y [..., T2, D] (or cost [..., T1, T2]).

  Returns a DTWResult(distance [...], path [..., T1, T2] bool, pairs [..., T1+T2-1, 2] int32, path_length [...]),
  or only the distance [...] with return_path=False. The distance is the sum of the local costs along the path
  (sqeuclidean: the square of dtaidistance's `distance`); inf when the band leaves no path.
  """
  cost, nx, ny, batch, full = _prepare(x, y, cost, metric, x_lengths, y_lengths, x_mask, y_mask, direct=True)
  return _unflatten(_dtw_core(cost, nx, ny, band, full, return_path), batch)


def dtw_distance(x=None, y=None, **kwargs) -> jax.Array:
  """`dtw(..., return_path=False)`: the distance [...] only (cheapest; what the benchmark times)."""
  return dtw(x, y, return_path=False, **kwargs)


@functools.partial(jax.jit, static_argnames=("metric", "batch_size"))
def dtw_cdist(xs: jax.Array, ys: jax.Array, *, x_lengths=None, y_lengths=None, metric: str = "sqeuclidean",
              band: int | None = None, batch_size: int | None = None) -> jax.Array:
  """All-pairs DTW distances: xs [A, T1, D], ys [B, T2, D] -> [A, B] (lengths [A], [B]).

  `lax.map` over xs (`batch_size` rows at a time, vmapped) of one batched DTW against all of ys:
  memory ~ batch_size * B * (T1 + T2) * T1 floats.
  """
  xs, ys = jnp.asarray(xs), jnp.asarray(ys)
  nxs = _lengths(x_lengths, None, xs.shape[1], xs.shape[:1], "x")
  nys = _lengths(y_lengths, None, ys.shape[1], ys.shape[:1], "y")

  def row(args):
    x, nx = args
    return dtw_distance(x[None], ys, metric=metric, band=band, x_lengths=jnp.broadcast_to(nx, nys.shape),
                        y_lengths=nys)

  return jax.lax.map(row, (xs, nxs), batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("metric",))
def soft_dtw(x=None, y=None, *, cost=None, gamma=1.0, metric: str = "sqeuclidean", band: int | None = None,
             x_lengths=None, y_lengths=None, x_mask=None, y_mask=None) -> jax.Array:
  """Soft-DTW value [...] (Cuturi & Blondel 2017): DTW - gamma log(#warping paths) <= sdtw <= DTW, so sdtw -> DTW
  as gamma -> 0.

  Differentiable w.r.t. x, y (through the local cost), cost and gamma (scalar or [...]) with the Algorithm-2
  custom VJP.
  """
  cost, nx, ny, batch, _ = _prepare(x, y, cost, metric, x_lengths, y_lengths, x_mask, y_mask)
  cost = _masked(cost, nx, ny, band)
  gamma = jnp.broadcast_to(jnp.asarray(gamma, cost.dtype), batch).reshape(-1)
  return _sdtw_core(cost, gamma, nx, ny).reshape(batch)


@functools.partial(jax.jit, static_argnames=("metric",))
def soft_dtw_alignment(x=None, y=None, *, cost=None, gamma=1.0, metric: str = "sqeuclidean",
                       band: int | None = None, x_lengths=None, y_lengths=None, x_mask=None, y_mask=None):
  """(soft-DTW value [...], expected alignment E [..., T1, T2]): E = d sdtw / d C, the mean alignment matrix under
  the Gibbs distribution p(A) ~ exp(-<A, C> / gamma) over warping paths; zero outside the lengths and band.
  As gamma -> 0 it tends to the DTW path matrix."""
  cost, nx, ny, batch, _ = _prepare(x, y, cost, metric, x_lengths, y_lengths, x_mask, y_mask)
  cost = _masked(cost, nx, ny, band)
  gamma = jnp.broadcast_to(jnp.asarray(gamma, cost.dtype), batch).reshape(-1)
  value, vjp = jax.vjp(lambda c: _sdtw_core(c, gamma, nx, ny), cost)
  (e,) = vjp(jnp.ones_like(value))
  return value.reshape(batch), jnp.moveaxis(e, -1, 0).reshape(batch + e.shape[:2])


@functools.partial(jax.jit, static_argnames=("metric",))
def soft_dtw_divergence(x, y, *, gamma=1.0, metric: str = "sqeuclidean", band: int | None = None,
                        x_lengths=None, y_lengths=None, x_mask=None, y_mask=None) -> jax.Array:
  """Soft-DTW divergence (Blondel, Mensch & Vert 2021): sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2, [...].

  Zero for x = y and non-negative for the sqeuclidean cost (exp(-C / gamma) is then a positive-definite kernel).
  ott's `SoftDTW(gamma, debiased=True)` is the same quantity for unpadded, unbanded sequences.
  """
  kw = dict(gamma=gamma, metric=metric, band=band)
  xy = soft_dtw(x, y, **kw, x_lengths=x_lengths, x_mask=x_mask, y_lengths=y_lengths, y_mask=y_mask)
  xx = soft_dtw(x, x, **kw, x_lengths=x_lengths, x_mask=x_mask, y_lengths=x_lengths, y_mask=x_mask)
  yy = soft_dtw(y, y, **kw, x_lengths=y_lengths, x_mask=y_mask, y_lengths=y_lengths, y_mask=y_mask)
  return xy - 0.5 * (xx + yy)


__all__ = ["DTWResult", "METRICS", "band_mask", "cost_matrix", "dtw", "dtw_cdist", "dtw_distance", "soft_dtw",
           "soft_dtw_alignment", "soft_dtw_divergence"]
