"""Sinkhorn / Gromov-Wasserstein alignment (via ott-jax): marginals, a NumPy log-domain Sinkhorn reference,
masks, jit + vmap, and GW recovering a permutation of a rotated, shifted copy."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from mmjax.alignment.ot import gromov_wasserstein_align, sinkhorn_align
from mmjax.errors import MmjaxError


def np_sinkhorn(c, a, b, eps, iters=5000):
  """Log-domain Sinkhorn (Cuturi 2013; Peyre & Cuturi 2019, Alg. 4.2 in log form) on the support of a and b."""
  c = c[a > 0][:, b > 0]
  la, lb = np.log(a[a > 0]), np.log(b[b > 0])
  f, g = np.zeros(len(la)), np.zeros(len(lb))
  for _ in range(iters):
    f = eps * la - eps * logsumexp((g[None, :] - c) / eps, axis=1)
    g = eps * lb - eps * logsumexp((f[:, None] - c) / eps, axis=0)
  p = np.zeros((len(a), len(b)))
  p[np.ix_(a > 0, b > 0)] = np.exp((f[:, None] + g[None, :] - c) / eps)
  return p


def test_sinkhorn_marginals_and_numpy_reference():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3))
  res = sinkhorn_align(x.astype(np.float32), y.astype(np.float32), epsilon=0.1)
  p = np.asarray(res.coupling, np.float64)
  assert bool(res.converged)
  np.testing.assert_allclose(p.sum(1), np.full(7, 1 / 7), atol=1e-4)
  np.testing.assert_allclose(p.sum(0), np.full(9, 1 / 9), atol=1e-4)
  c = ((x[:, None] - y[None]) ** 2).sum(-1)
  ref = np_sinkhorn(c, np.full(7, 1 / 7), np.full(9, 1 / 9), 0.1)
  np.testing.assert_allclose(p, ref, atol=1e-5)
  np.testing.assert_allclose(float(res.cost), (ref * c).sum(), rtol=1e-4)


def test_masks_give_padding_no_mass_and_cosine_cost():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)
  mx, my = np.arange(6) < 4, np.arange(8) < 5
  res = sinkhorn_align(x, y, epsilon=0.05, cost="cosine", x_mask=mx, y_mask=my)
  p = np.asarray(res.coupling, np.float64)
  np.testing.assert_allclose(p.sum(1), mx / 4, atol=1e-4)
  np.testing.assert_allclose(p.sum(0), my / 5, atol=1e-4)
  assert np.all(p[4:] == 0) and np.all(p[:, 5:] == 0)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  yn = y / np.linalg.norm(y, axis=1, keepdims=True)
  ref = np_sinkhorn(1 - xn.astype(np.float64) @ yn.T, mx / 4, my / 5, 0.05)
  np.testing.assert_allclose(p, ref, atol=1e-4)


def np_semi_relaxed(c, a, b, eps, tau_b, iters=5000):
  """Unbalanced Sinkhorn in log form (Chizat et al. 2018, Alg. 2) with a hard row and a KL-relaxed column marginal:
  g <- tau_b (eps log b - eps LSE_i((f_i - c_ij) / eps)), tau_b = rho / (rho + eps)."""
  f, g = np.zeros(len(a)), np.zeros(len(b))
  for _ in range(iters):
    f = eps * np.log(a) - eps * logsumexp((g[None, :] - c) / eps, axis=1)
    g = tau_b * (eps * np.log(b) - eps * logsumexp((f[:, None] - c) / eps, axis=0))
  return np.exp((f[:, None] + g[None, :] - c) / eps)


def test_semi_relaxed_matches_numpy_unbalanced_sinkhorn():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(5, 2)), rng.normal(size=(30, 2))
  p = np.asarray(sinkhorn_align(x.astype(np.float32), y.astype(np.float32), epsilon=0.1, tau_b=0.3).coupling,
                 np.float64)
  np.testing.assert_allclose(p.sum(1), 1 / 5, atol=1e-4)
  ref = np_semi_relaxed(((x[:, None] - y[None]) ** 2).sum(-1), np.full(5, 1 / 5), np.full(30, 1 / 30), 0.1, 0.3)
  np.testing.assert_allclose(p, ref, atol=1e-4)
  assert p.sum(0).max() > 3 / 30          # far from the uniform column marginal


def test_jit_vmap_and_batch_axes_agree():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(2, 3, 5, 2)).astype(np.float32), rng.normal(size=(2, 3, 6, 2)).astype(np.float32)
  my = np.arange(6)[None, None, :] < rng.integers(2, 7, (2, 3, 1))
  batched = sinkhorn_align(x, y, epsilon=0.1, y_mask=my)
  vmapped = jax.jit(jax.vmap(jax.vmap(lambda a, b, m: sinkhorn_align(a, b, epsilon=0.1, y_mask=m))))(x, y, my)
  chex.assert_trees_all_close(batched.coupling, vmapped.coupling, atol=1e-6)
  np.testing.assert_allclose(np.asarray(batched.coupling).sum(-1), 1 / 5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(batched.coupling).sum(-2), my / my.sum(-1, keepdims=True), atol=1e-4)


def test_gromov_wasserstein_recovers_an_isometric_permutation():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 3)).astype(np.float32)
  rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  perm = rng.permutation(8)
  z = (x @ rot.astype(np.float32))[perm] + 3.0          # z[k] = R x[perm[k]] + t: same distances, shuffled
  res = gromov_wasserstein_align(x, z, epsilon=0.005)
  p = np.asarray(res.coupling)
  np.testing.assert_allclose(p.sum(1), 1 / 8, atol=1e-4)
  np.testing.assert_allclose(p.sum(0), 1 / 8, atol=1e-4)
  np.testing.assert_array_equal(p.argmax(1), np.argsort(perm))   # x[i] <-> z[k] with perm[k] = i
  assert float(res.cost) < 1e-3


def test_errors():
  with pytest.raises(MmjaxError, match="unknown OT cost"):
    sinkhorn_align(np.zeros((2, 2)), np.zeros((3, 2)), cost="l7")
  with pytest.raises(MmjaxError, match="same D"):
    sinkhorn_align(np.zeros((2, 2)), np.zeros((3, 3)))
