"""Soft-DTW: value vs a NumPy recursion and vs ott-jax, gamma -> 0 limit, custom-VJP gradients vs central finite
differences (float64), the divergence, and jit/vmap."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry.costs import SoftDTW

from mmjax.alignment.dtw import dtw, soft_dtw, soft_dtw_alignment, soft_dtw_divergence


def np_sqeuclidean(x, y):
  return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def np_soft_dtw(c, gamma, n, m, band=None):
  """Cuturi & Blondel (2017) Algorithm 1 on c[:n, :m] with the band rule of mmjax.alignment.dtw."""
  r = np.full((n + 1, m + 1), np.inf)
  r[0, 0] = 0.0
  for i in range(n):
    for j in range(m):
      if band is not None and (i - j > band + max(0, n - m) or j - i > band + max(0, m - n)):
        continue
      prev = np.array([r[i, j], r[i, j + 1], r[i + 1, j]])
      lo = prev.min()
      if np.isinf(lo):
        continue
      r[i + 1, j + 1] = c[i, j] + lo - gamma * np.log(np.exp(-(prev - lo) / gamma).sum())
  return r[n, m]


def test_value_matches_numpy_recursion_with_lengths_and_band():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(4, 7, 2)), rng.normal(size=(4, 9, 2))
  nx, ny = np.array([7, 5, 3, 1]), np.array([9, 4, 8, 2])
  with jax.enable_x64(True):
    for band in (None, 1):
      for gamma in (0.1, 1.0):
        got = soft_dtw(x, y, gamma=gamma, x_lengths=nx, y_lengths=ny, band=band)
        for k in range(4):
          ref = np_soft_dtw(np_sqeuclidean(x[k], y[k]), gamma, nx[k], ny[k], band)
          np.testing.assert_allclose(float(got[k]), ref, rtol=1e-10)


def test_value_and_divergence_match_ott():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(8, 3)), rng.normal(size=(11, 3))
  with jax.enable_x64(True):
    ott_value = jax.jit(lambda a, b, g: SoftDTW(g)(a, b))
    ott_divergence = jax.jit(lambda a, b, g: SoftDTW(g, debiased=True)(a, b))
    for gamma in (0.01, 0.5, 2.0):
      np.testing.assert_allclose(float(soft_dtw(x, y, gamma=gamma)), float(ott_value(x, y, gamma)), rtol=1e-10)
      np.testing.assert_allclose(float(soft_dtw_divergence(x, y, gamma=gamma)), float(ott_divergence(x, y, gamma)),
                                 rtol=1e-10)


def test_tends_to_dtw_as_gamma_goes_to_zero():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(10, 2)).astype(np.float32), rng.normal(size=(12, 2)).astype(np.float32)
  hard = dtw(x, y, x_lengths=9, band=3)
  gaps = []
  for gamma in (1.0, 0.1, 0.01, 0.001):
    value, e = soft_dtw_alignment(x, y, gamma=gamma, x_lengths=9, band=3)
    gap = float(hard.distance - value)
    # 0 <= DTW - sdtw <= gamma log(number of paths) <= gamma (T1 + T2) log 3
    assert -1e-4 <= gap <= gamma * 21 * np.log(3) + 1e-4
    gaps.append(gap)
  assert gaps == sorted(gaps, reverse=True)
  np.testing.assert_allclose(gaps[-1], 0.0, atol=1e-3)
  np.testing.assert_allclose(np.asarray(e), np.asarray(hard.path, np.float32), atol=1e-3)


def _central_diff(f, x, h=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[idx] = h
    g[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
  return g


@pytest.mark.parametrize("metric,band", [("sqeuclidean", None), ("sqeuclidean", 1), ("cosine", None)])
def test_gradients_match_central_finite_differences(metric, band):
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(8, 3))
  with jax.enable_x64(True):
    f = jax.jit(lambda a, b, g: soft_dtw(a, b, gamma=g, metric=metric, band=band, x_lengths=5, y_lengths=7))
    gx, gy, gg = jax.grad(f, argnums=(0, 1, 2))(x, y, 0.3)
    np.testing.assert_allclose(np.asarray(gx), _central_diff(lambda a: f(a, y, 0.3), x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(gy), _central_diff(lambda b: f(x, b, 0.3), y), atol=1e-5)
    np.testing.assert_allclose(float(gg), (float(f(x, y, 0.3 + 1e-6)) - float(f(x, y, 0.3 - 1e-6))) / 2e-6,
                               atol=1e-5)
  assert np.all(np.asarray(gx)[5:] == 0) and np.all(np.asarray(gy)[7:] == 0)   # padding gets no gradient


def test_expected_alignment_is_the_cost_gradient():
  """E from the Algorithm-2 backward equals finite differences of the value w.r.t. each cost entry."""
  rng = np.random.default_rng(4)
  c = rng.uniform(size=(5, 6))
  with jax.enable_x64(True):
    value, e = soft_dtw_alignment(cost=c, gamma=0.5, x_lengths=4, band=2)
    f = jax.jit(lambda cc: soft_dtw(cost=cc, gamma=0.5, x_lengths=4, band=2))
    np.testing.assert_allclose(np.asarray(e), _central_diff(f, c), atol=1e-6)
  e = np.asarray(e)
  assert e[0, 0] == pytest.approx(1.0) and e[3, 5] == pytest.approx(1.0)      # every path visits both ends
  assert np.all(e[4] == 0) and np.all((e >= 0) & (e <= 1 + 1e-12))
  assert e[0, 5] == 0 and e[3, 0] == 0     # outside the band: j - i > 2 + (6 - 4), i - j > 2


def test_divergence_is_zero_on_itself_and_nonnegative():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 9, 2))
  with jax.enable_x64(True):
    np.testing.assert_allclose(np.asarray(soft_dtw_divergence(x, x, gamma=0.5)), 0.0, atol=1e-12)
    d = np.asarray(soft_dtw_divergence(x, y, gamma=0.5, y_lengths=np.array([9, 4, 6])))
    for k, m in enumerate([9, 4, 6]):
      xy = np_soft_dtw(np_sqeuclidean(x[k], y[k, :m]), 0.5, 7, m)
      xx = np_soft_dtw(np_sqeuclidean(x[k], x[k]), 0.5, 7, 7)
      yy = np_soft_dtw(np_sqeuclidean(y[k, :m], y[k, :m]), 0.5, m, m)
      np.testing.assert_allclose(d[k], xy - 0.5 * (xx + yy), rtol=1e-10)
  assert np.all(d > 0)


def test_jit_vmap_grad_agree_with_batched_call():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(4, 6, 2)).astype(np.float32), rng.normal(size=(4, 5, 2)).astype(np.float32)
  nx = np.array([6, 4, 2, 1])
  loss = lambda a, b, n: soft_dtw(a, b, gamma=0.1, x_lengths=n)
  batched = jax.grad(lambda a: loss(a, y, nx).sum())(x)
  vmapped = jax.jit(jax.vmap(jax.grad(loss)))(x, y, nx)
  chex.assert_trees_all_close(batched, vmapped, atol=1e-6)
  chex.assert_trees_all_close(jax.vmap(loss)(x, y, nx), loss(x, y, nx), rtol=1e-6)
  assert jnp.all(jnp.isfinite(batched))
  padded = x * (np.arange(6)[None, :, None] < nx[:, None, None])       # zero frames beyond the lengths
  g = jax.grad(lambda a: soft_dtw(a, y, gamma=0.1, metric="cosine", x_lengths=nx).sum())(padded)
  assert jnp.all(jnp.isfinite(g)) and float(jnp.abs(g[3, 1:]).max()) == 0.0
