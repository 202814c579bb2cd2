"""Canonical correlation analysis: linear CCA in closed form and the Deep CCA objective (its contrastive
counterpart, which needs a CLIP loss, is mmjax.objectives.colearning.contrastive_coordination_loss).

CCA (Hotelling 1936): for centred views H1 [N, o1], H2 [N, o2] with ridge-regularised covariances
  Σ11 = H1ᵀH1 / (N-1) + r1 I,  Σ22 = H2ᵀH2 / (N-1) + r2 I,  Σ12 = H1ᵀH2 / (N-1),
the canonical correlations are the singular values of T = Σ11^-1/2 Σ12 Σ22^-1/2 = U S Vᵀ, and the canonical
directions are Wx = Σ11^-1/2 U, Wy = Σ22^-1/2 V (so that xᵀWx and yᵀWy are uncorrelated within each view, unit
variance, and correlated pairwise by S).

Deep CCA (Andrew, Arora, Bilmes & Livescu 2013, "Deep Canonical Correlation Analysis", ICML): two networks f1, f2
are trained to maximise corr(H1, H2) = sum of the top-k singular values of T (k = o, all of them, is the trace
norm ||T||_tr = tr((TᵀT)^1/2)). `dcca_loss` returns -corr. (MultiBench's `use_all_singular_values` branch computes
sqrt(tr(TᵀT)), the Frobenius norm, instead of the trace norm; this is the paper's objective.)

Numerics (float32-safe): inverse square roots come from `eigh` with eigenvalues floored at `eps`, and both
non-smooth-looking steps have explicit derivative rules, so gradients stay finite even for repeated eigenvalues:
  d(S^-1/2) = V (L ∘ (Vᵀ dS V)) Vᵀ with L_ij = -1 / (√λi √λj (√λi + √λj))   (Daleckii-Krein; no 1/(λi-λj) terms),
  d(sum_{i<=k} s_i(T)) = tr(U_kᵀ dT V_k).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError

EIG_EPS = 1e-12


def _f32(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _sym(x: jax.Array) -> jax.Array:
  return 0.5 * (x + jnp.swapaxes(x, -1, -2))


@jax.custom_jvp
def inv_sqrtm(s: jax.Array) -> jax.Array:
  """S^-1/2 of a symmetric positive (semi-)definite matrix [..., n, n], eigenvalues floored at EIG_EPS."""
  w, v = jnp.linalg.eigh(_sym(s))
  w = jnp.maximum(w, EIG_EPS)
  return (v * w[..., None, :] ** -0.5) @ jnp.swapaxes(v, -1, -2)


@inv_sqrtm.defjvp
def _inv_sqrtm_jvp(primals, tangents):
  (s,), (ds,) = primals, tangents
  w, v = jnp.linalg.eigh(_sym(s))
  r = jnp.sqrt(jnp.maximum(w, EIG_EPS))
  vt = jnp.swapaxes(v, -1, -2)
  out = (v / r[..., None, :]) @ vt
  ri, rj = r[..., :, None], r[..., None, :]
  loewner = -1.0 / (ri * rj * (ri + rj))
  dout = v @ (loewner * (vt @ _sym(ds) @ v)) @ vt
  return out, dout


def _top_k_sum_impl(t, k):
  return jnp.sum(jnp.linalg.svd(t, compute_uv=False)[..., :k], axis=-1)


_top_k_sum = jax.custom_jvp(_top_k_sum_impl, nondiff_argnums=(1,))


@_top_k_sum.defjvp
def _top_k_sum_jvp(k, primals, tangents):
  (t,), (dt,) = primals, tangents
  u, s, vh = jnp.linalg.svd(t, full_matrices=False)
  uk, vk = u[..., :, :k], jnp.swapaxes(vh, -1, -2)[..., :, :k]
  return jnp.sum(s[..., :k], axis=-1), jnp.sum(uk * (dt @ vk), axis=(-2, -1))


def top_k_singular_value_sum(t: jax.Array, k: int | None = None) -> jax.Array:
  """Sum of the k largest singular values of t [..., m, n] (all of them, the trace norm, for k=None)."""
  k = min(t.shape[-2:]) if k is None else int(k)
  if not 1 <= k <= min(t.shape[-2:]):
    raise MmjaxError(f"CCA: k={k} must be between 1 and min{tuple(t.shape[-2:])}")
  return _top_k_sum(t, k)


def covariances(h1: jax.Array, h2: jax.Array, r1: float = 0.0, r2: float = 0.0):
  """Centred, ridge-regularised (Σ11 + r1 I, Σ22 + r2 I, Σ12) of views [N, o1], [N, o2] (1/(N-1) normalisation)."""
  if h1.ndim != 2 or h2.ndim != 2 or h1.shape[0] != h2.shape[0]:
    raise MmjaxError(f"CCA needs two views [N, o1] and [N, o2] with the same N, got {tuple(h1.shape)} and "
                     f"{tuple(h2.shape)}")
  n = h1.shape[0]
  if n < 2:
    raise MmjaxError(f"CCA needs at least 2 examples, got {n}")
  h1, h2 = _f32(h1), _f32(h2)
  h1 = h1 - jnp.mean(h1, axis=0)
  h2 = h2 - jnp.mean(h2, axis=0)
  s11 = h1.T @ h1 / (n - 1) + r1 * jnp.eye(h1.shape[1], dtype=h1.dtype)
  s22 = h2.T @ h2 / (n - 1) + r2 * jnp.eye(h2.shape[1], dtype=h2.dtype)
  s12 = h1.T @ h2 / (n - 1)
  return s11, s22, s12


def whitened_cross_covariance(h1: jax.Array, h2: jax.Array, r1: float = 0.0, r2: float = 0.0):
  """T = Σ11^-1/2 Σ12 Σ22^-1/2 [o1, o2], and the two inverse square roots."""
  s11, s22, s12 = covariances(h1, h2, r1, r2)
  a, b = inv_sqrtm(s11), inv_sqrtm(s22)
  return a @ s12 @ b, a, b


def canonical_correlations(h1: jax.Array, h2: jax.Array, k: int | None = None, r1: float = 0.0,
                           r2: float = 0.0) -> jax.Array:
  """The top-k canonical correlations [k] (descending) of views [N, o1], [N, o2]."""
  t, _, _ = whitened_cross_covariance(h1, h2, r1, r2)
  s = jnp.linalg.svd(t, compute_uv=False)
  return s if k is None else s[:k]


def dcca_loss(h1: jax.Array, h2: jax.Array, k: int | None = None, r1: float = 1e-4,
              r2: float = 1e-4) -> tuple[jax.Array, dict]:
  """Deep CCA objective: -(sum of the top-k singular values of T), differentiable w.r.t. both views.

  h1 [N, o1], h2 [N, o2] are the two networks' outputs on the same N examples (the whole batch is one estimate of
  the covariances, so use large batches). -> (loss (), {"loss", "corr"}).
  """
  t, _, _ = whitened_cross_covariance(h1, h2, r1, r2)
  corr = top_k_singular_value_sum(t, k)
  return -corr, {"loss": -corr, "corr": corr}


class CCAResult(NamedTuple):
  """Linear CCA fit: correlations [k] (descending), wx [D1, k], wy [D2, k], mean_x [D1], mean_y [D2]."""
  correlations: jax.Array
  wx: jax.Array
  wy: jax.Array
  mean_x: jax.Array
  mean_y: jax.Array


def linear_cca(x: jax.Array, y: jax.Array, k: int | None = None, r1: float = 1e-6, r2: float = 1e-6) -> CCAResult:
  """Closed-form CCA of x [N, D1], y [N, D2] (whitening + SVD, ridge r1, r2): the top-k pairs."""
  t, a, b = whitened_cross_covariance(x, y, r1, r2)
  u, s, vh = jnp.linalg.svd(t, full_matrices=False)
  k = s.shape[-1] if k is None else k
  return CCAResult(s[:k], a @ u[:, :k], b @ vh[:k].T, jnp.mean(_f32(x), axis=0), jnp.mean(_f32(y), axis=0))


def cca_transform(result: CCAResult, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Canonical variates ((x - mean_x) wx [N, k], (y - mean_y) wy [N, k])."""
  return (_f32(x) - result.mean_x) @ result.wx, (_f32(y) - result.mean_y) @ result.wy
