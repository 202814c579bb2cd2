"""DTW distance and warping path against a plain NumPy dynamic-programming reference (written here)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.alignment.dtw import cost_matrix, dtw, dtw_cdist, dtw_distance
from mmjax.errors import MmjaxError


def np_cost(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
  if metric == "sqeuclidean":
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  if metric == "l1":
    return np.abs(x[:, None, :] - y[None, :, :]).sum(-1)
  xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
  yn = y / np.linalg.norm(y, axis=-1, keepdims=True)
  return 1.0 - xn @ yn.T


def allowed(i: int, j: int, n: int, m: int, band: int | None) -> bool:
  if band is None:
    return True
  return i - j <= band + max(0, n - m) and j - i <= band + max(0, m - n)


def np_dtw(c: np.ndarray, n: int, m: int, band: int | None = None) -> tuple[float, list[tuple[int, int]]]:
  """Textbook DTW on c[:n, :m]: R[i+1, j+1] = c[i, j] + min(R[i, j], R[i, j+1], R[i+1, j]), then backtracking
  (ties: diagonal, then from (i-1, j), then from (i, j-1))."""
  r = np.full((n + 1, m + 1), np.inf)
  r[0, 0] = 0.0
  for i in range(n):
    for j in range(m):
      if allowed(i, j, n, m, band):
        r[i + 1, j + 1] = c[i, j] + min(r[i, j], r[i, j + 1], r[i + 1, j])
  i, j = n - 1, m - 1
  path = [(i, j)]
  while (i, j) != (0, 0):
    options = [(r[i, j], (i - 1, j - 1)), (r[i, j + 1], (i - 1, j)), (r[i + 1, j], (i, j - 1))]
    i, j = options[int(np.argmin([o[0] for o in options]))][1]
    path.append((i, j))
  return r[n, m], path[::-1]


CASES = [(1, 1, None), (1, 6, 0), (6, 1, 2), (7, 7, None), (7, 7, 0), (6, 10, 2), (13, 4, None), (13, 4, 1)]


@pytest.mark.parametrize("t1,t2,band", CASES)
def test_dtw_matches_numpy_dp_with_lengths_and_band(t1, t2, band):
  rng = np.random.default_rng(100 * t1 + t2)
  b = 5
  x, y = rng.normal(size=(b, t1, 3)), rng.normal(size=(b, t2, 3))
  nx = np.concatenate([[t1], rng.integers(1, t1 + 1, b - 1)])
  ny = np.concatenate([[t2], rng.integers(1, t2 + 1, b - 1)])
  with jax.enable_x64(True):
    res = jax.jit(lambda a, c, n, m: dtw(a, c, x_lengths=n, y_lengths=m, band=band))(x, y, nx, ny)
    chex.assert_shape(res.path, (b, t1, t2))
    chex.assert_shape(res.pairs, (b, t1 + t2 - 1, 2))
    for k in range(b):
      ref, path = np_dtw(np_cost(x[k], y[k], "sqeuclidean"), nx[k], ny[k], band)
      np.testing.assert_allclose(float(res.distance[k]), ref, rtol=1e-10)
      length = int(res.path_length[k])
      assert length == len(path)
      assert [tuple(p) for p in np.asarray(res.pairs[k, :length])] == path
      assert np.all(np.asarray(res.pairs[k, length:]) == -1)
      expect = np.zeros((t1, t2), bool)
      expect[tuple(np.asarray(path).T)] = True
      np.testing.assert_array_equal(np.asarray(res.path[k]), expect)


@pytest.mark.parametrize("metric", ["sqeuclidean", "l1", "cosine"])
def test_metrics_and_float32(metric):
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(9, 4)).astype(np.float32), rng.normal(size=(11, 4)).astype(np.float32)
  c = np_cost(x.astype(np.float64), y.astype(np.float64), metric)
  np.testing.assert_allclose(np.asarray(cost_matrix(x, y, metric)), c, rtol=1e-5, atol=1e-5)
  ref, path = np_dtw(c, 9, 11)
  res = dtw(x, y, metric=metric)
  assert res.distance.dtype == jnp.float32
  np.testing.assert_allclose(float(res.distance), ref, rtol=1e-5)
  assert [tuple(p) for p in np.asarray(res.pairs[:int(res.path_length)])] == path


def test_wide_features_use_the_matmul_costs():
  """D > DIRECT_MAX_DIM takes the matmul cost path (the small-D tests above take the loop path)."""
  rng = np.random.default_rng(7)
  x, y = rng.normal(size=(2, 6, 80)), rng.normal(size=(2, 9, 80))
  with jax.enable_x64(True):
    for metric in ("sqeuclidean", "cosine"):
      res = dtw(x, y, metric=metric, y_lengths=np.array([9, 7]))
      for k, m in enumerate([9, 7]):
        ref, path = np_dtw(np_cost(x[k], y[k], metric), 6, m)
        np.testing.assert_allclose(float(res.distance[k]), ref, rtol=1e-10)
        assert [tuple(p) for p in np.asarray(res.pairs[k, :int(res.path_length[k])])] == path


def test_cost_matrix_input_and_masks_equal_lengths():
  rng = np.random.default_rng(2)
  c = rng.uniform(size=(8, 6))
  with jax.enable_x64(True):
    ref, path = np_dtw(c, 5, 4, band=1)
    res = dtw(cost=c, x_lengths=5, y_lengths=4, band=1)
    masked = dtw(cost=c, x_mask=np.arange(8) < 5, y_mask=np.arange(6) < 4, band=1)
  np.testing.assert_allclose(float(res.distance), ref, rtol=1e-12)
  assert [tuple(p) for p in np.asarray(res.pairs[:int(res.path_length)])] == path
  np.testing.assert_array_equal(np.asarray(res.pairs), np.asarray(masked.pairs))
  np.testing.assert_allclose(float(masked.distance), ref, rtol=1e-12)


def test_band_zero_on_equal_lengths_is_euclidean_matching():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 2))
  with jax.enable_x64(True):
    res = dtw(x, y, band=0)
  np.testing.assert_allclose(float(res.distance), ((x - y) ** 2).sum(), rtol=1e-12)
  np.testing.assert_array_equal(np.asarray(res.path), np.eye(10, dtype=bool))


def test_vmap_jit_and_leading_batch_axes_agree():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(2, 3, 7, 2)).astype(np.float32), rng.normal(size=(2, 3, 5, 2)).astype(np.float32)
  nx, ny = rng.integers(1, 8, (2, 3)), rng.integers(1, 6, (2, 3))
  batched = dtw(x, y, x_lengths=nx, y_lengths=ny, band=1)
  vmapped = jax.jit(jax.vmap(jax.vmap(lambda a, b, n, m: dtw(a, b, x_lengths=n, y_lengths=m, band=1))))(
      x, y, nx, ny)
  chex.assert_trees_all_close(batched, vmapped)
  for i in range(2):
    for j in range(3):
      ref, _ = np_dtw(np_cost(x[i, j].astype(np.float64), y[i, j].astype(np.float64), "sqeuclidean"),
                      nx[i, j], ny[i, j], 1)
      np.testing.assert_allclose(float(batched.distance[i, j]), ref, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dtw_distance(x, y, x_lengths=nx, y_lengths=ny, band=1)),
                             np.asarray(batched.distance))


def test_cdist_matches_pairwise_reference():
  rng = np.random.default_rng(5)
  xs, ys = rng.normal(size=(3, 6, 2)), rng.normal(size=(4, 8, 2))
  nx, ny = np.array([6, 3, 1]), np.array([8, 2, 5, 7])
  with jax.enable_x64(True):
    d = dtw_cdist(xs, ys, x_lengths=nx, y_lengths=ny, batch_size=2)
  for a in range(3):
    for b in range(4):
      ref, _ = np_dtw(np_cost(xs[a], ys[b], "sqeuclidean"), nx[a], ny[b])
      np.testing.assert_allclose(float(d[a, b]), ref, rtol=1e-10)


def test_errors_name_the_problem():
  with pytest.raises(MmjaxError, match="unknown DTW metric"):
    dtw(np.zeros((3, 2)), np.zeros((4, 2)), metric="euclid")
  with pytest.raises(MmjaxError, match="same D"):
    dtw(np.zeros((3, 2)), np.zeros((4, 3)))
  with pytest.raises(MmjaxError, match="not both"):
    dtw(np.zeros((3, 2)), np.zeros((4, 2)), x_lengths=2, x_mask=np.ones(3, bool))


def test_band_and_distance_agree_with_dtaidistance():
  """dtaidistance (a test dependency, setup.cfg extra "test"): its distance is sqrt of ours; window = band + 1."""
  from dtaidistance import dtw_ndim
  rng = np.random.default_rng(8)
  x, y = rng.normal(size=(3, 20, 3)), rng.normal(size=(3, 26, 3))
  with jax.enable_x64(True):
    for band in (None, 0, 2):
      ours = np.asarray(dtw_distance(x, y, band=band))
      kw = {} if band is None else {"window": band + 1}
      theirs = np.array([dtw_ndim.distance(x[k], y[k], use_c=False, **kw) for k in range(3)]) ** 2
      np.testing.assert_allclose(ours, theirs, rtol=1e-10)
