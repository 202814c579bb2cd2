"""CCA and Deep CCA (mmjax/alignment/cca.py) against NumPy/SciPy computations and data with known correlations.

References written here: canonical correlations by QR + SVD (Björck & Golub 1973: the singular values of Q_xᵀ Q_y),
whitening by scipy.linalg.fractional_matrix_power for the ridge case, finite differences in float64 for the
gradients, and synthetic views built to have *exactly* the sample canonical correlations (0.9, 0.7, 0.4, 0.1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from mmjax.alignment.cca import canonical_correlations, cca_transform, dcca_loss, inv_sqrtm, linear_cca
from mmjax.errors import MmjaxError
from mmjax.objectives.colearning import contrastive_coordination_loss

RHO = np.array([0.9, 0.7, 0.4, 0.1])


def _views_with_correlations(n=400, rho=RHO, seed=0, noise_dims=0):
  """x [n, d], y [n, d + noise_dims] whose sample canonical correlations are exactly rho (then mixed linearly)."""
  rng = np.random.default_rng(seed)
  d = len(rho)
  q, _ = np.linalg.qr(np.concatenate([np.ones((n, 1)), rng.standard_normal((n, 2 * d + noise_dims))], 1))
  q = q[:, 1:] * np.sqrt(n - 1)  # centred, orthogonal columns with unit sample variance
  xw, e = q[:, :d], q[:, d:2 * d]
  yw = xw * rho + e * np.sqrt(1 - rho ** 2)
  if noise_dims:
    yw = np.concatenate([yw, q[:, 2 * d:]], 1)
  a = rng.standard_normal((d, d)) + 2 * np.eye(d)
  b = rng.standard_normal((yw.shape[1], yw.shape[1])) + 2 * np.eye(yw.shape[1])
  return xw @ a + rng.standard_normal(d), yw @ b + rng.standard_normal(yw.shape[1])


def _np_canonical_correlations(x, y):
  qx, _ = np.linalg.qr(x - x.mean(0))
  qy, _ = np.linalg.qr(y - y.mean(0))
  return np.linalg.svd(qx.T @ qy, compute_uv=False)


def _np_whitened(x, y, r1, r2):
  n = x.shape[0]
  xc, yc = x - x.mean(0), y - y.mean(0)
  s11 = xc.T @ xc / (n - 1) + r1 * np.eye(x.shape[1])
  s22 = yc.T @ yc / (n - 1) + r2 * np.eye(y.shape[1])
  s12 = xc.T @ yc / (n - 1)
  return np.real(scipy.linalg.fractional_matrix_power(s11, -0.5) @ s12 @ scipy.linalg.fractional_matrix_power(s22, -0.5))


def test_synthetic_views_have_the_stated_correlations():
  x, y = _views_with_correlations(noise_dims=2)
  np.testing.assert_allclose(_np_canonical_correlations(x, y), np.r_[RHO, 0.0][:4], atol=1e-10)


def test_linear_cca_matches_numpy_qr_svd():
  rng = np.random.default_rng(1)
  z = rng.standard_normal((300, 2))
  x = np.c_[z, rng.standard_normal((300, 3))] @ rng.standard_normal((5, 5))
  y = np.c_[z + 0.5 * rng.standard_normal((300, 2)), rng.standard_normal((300, 2))] @ rng.standard_normal((4, 4))
  ref = _np_canonical_correlations(x, y)
  res = linear_cca(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), r1=0.0, r2=0.0)
  np.testing.assert_allclose(res.correlations, ref, atol=2e-4)
  assert ref[0] > 0.5 and ref[-1] < 0.2  # informative: strong and weak pairs
  # The canonical variates: unit variance, uncorrelated within a view, pairwise correlations = rho.
  u, v = map(np.asarray, cca_transform(res, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
  c = np.corrcoef(np.c_[u, v].T)
  k = len(ref)
  np.testing.assert_allclose(np.diag(c[:k, k:]), ref, atol=2e-4)
  np.testing.assert_allclose(c[:k, :k], np.eye(k), atol=2e-4)
  np.testing.assert_allclose(np.var(u, axis=0, ddof=1), 1.0, atol=2e-3)
  np.testing.assert_allclose(canonical_correlations(jnp.asarray(x), jnp.asarray(y), k=2), ref[:2], atol=2e-4)


def test_ridge_correlations_match_scipy_whitening():
  x, y = _views_with_correlations(n=50, seed=2)
  for r in (1e-3, 0.5):
    ref = np.linalg.svd(_np_whitened(x, y, r, 2 * r), compute_uv=False)
    got = canonical_correlations(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), r1=r, r2=2 * r)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
  assert ref[0] < RHO[0] - 0.01  # a large ridge really shrinks the correlations


def test_dcca_objective_is_the_sum_of_top_k_singular_values():
  x, y = _views_with_correlations(seed=3)
  x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  s = np.linalg.svd(_np_whitened(x, y, 1e-4, 1e-4), compute_uv=False)
  for k in (1, 2, None):
    loss, metrics = dcca_loss(x32, y32, k=k, r1=1e-4, r2=1e-4)
    np.testing.assert_allclose(-loss, s[:k].sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["corr"], s[:k].sum(), rtol=1e-5)
  # All singular values: the trace norm sum(rho) = 2.1, not MultiBench's sqrt(tr(TᵀT)) = ||rho||_2 = 1.23.
  np.testing.assert_allclose(-dcca_loss(x32, y32, r1=0.0, r2=0.0)[0], RHO.sum(), atol=1e-4)
  assert abs(RHO.sum() - np.sqrt((RHO ** 2).sum())) > 0.5
  with pytest.raises(MmjaxError, match="k=5"):
    dcca_loss(x32, y32, k=5)


def test_dcca_gradients_match_finite_differences():
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    h1, h2 = rng.standard_normal((30, 3)), rng.standard_normal((30, 4))
    h2[:, :2] += h1[:, :2]
    f = jax.jit(lambda a, b: dcca_loss(a, b, k=2, r1=1e-3, r2=1e-3)[0])
    g1, g2 = jax.grad(f, argnums=(0, 1))(h1, h2)
    for _ in range(3):
      d1, d2 = rng.standard_normal(h1.shape), rng.standard_normal(h2.shape)
      eps = 1e-6
      fd = (f(h1 + eps * d1, h2 + eps * d2) - f(h1 - eps * d1, h2 - eps * d2)) / (2 * eps)
      np.testing.assert_allclose(np.sum(g1 * d1) + np.sum(g2 * d2), fd, rtol=1e-6, atol=1e-9)


def test_inv_sqrtm_and_its_derivative():
  rng = np.random.default_rng(5)
  a = rng.standard_normal((4, 4))
  s = a @ a.T + 0.3 * np.eye(4)
  np.testing.assert_allclose(inv_sqrtm(jnp.asarray(s, jnp.float32)),
                             np.real(scipy.linalg.fractional_matrix_power(s, -0.5)), rtol=1e-4, atol=1e-5)
  with jax.enable_x64(True):
    ds = rng.standard_normal((4, 4))
    ds = ds + ds.T
    _, tangent = jax.jvp(inv_sqrtm, (s,), (ds,))
    fd = (np.real(scipy.linalg.fractional_matrix_power(s + 1e-6 * ds, -0.5))
          - np.real(scipy.linalg.fractional_matrix_power(s - 1e-6 * ds, -0.5))) / 2e-6
    np.testing.assert_allclose(tangent, fd, rtol=1e-5, atol=1e-7)
    # Repeated eigenvalues (S = I): the derivative is -dS / 2, finite, with no 1/(λi - λj) blow-up.
    _, tangent = jax.jvp(inv_sqrtm, (np.eye(4),), (ds,))
    np.testing.assert_allclose(tangent, -ds / 2, atol=1e-12)


def test_dcca_gradient_is_finite_on_whitened_float32_views():
  """Exactly whitened views (Σ11 = Σ22 = I, all eigenvalues equal): eigh-gradient code would divide by zero."""
  x, _ = _views_with_correlations(seed=6)
  q = np.linalg.qr(x - x.mean(0))[0] * np.sqrt(len(x) - 1)
  y = q @ np.diag(RHO) + np.random.default_rng(7).standard_normal(q.shape)
  g = jax.grad(lambda a, b: dcca_loss(a, b, r1=0.0, r2=1e-4)[0], argnums=(0, 1))(
      jnp.asarray(q, jnp.float32), jnp.asarray(y, jnp.float32))
  assert all(bool(jnp.all(jnp.isfinite(t))) for t in g)
  assert float(jnp.max(jnp.abs(g[0]))) > 0


def test_deep_cca_with_linear_identity_initialised_nets_recovers_the_correlations():
  """Linear nets f(x) = x W + b with W initialised to the identity's first k columns, trained on -corr (k = 2):
  the learned projections' canonical correlations equal the two largest known ones (0.9, 0.7) within 1e-3."""
  x, y = _views_with_correlations(n=400, seed=8)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  k = 2
  # Full-width identity nets: DCCA's value is invariant to invertible linear maps, so it is sum(rho) at once.
  np.testing.assert_allclose(-dcca_loss(x, y, r1=1e-6, r2=1e-6)[0], RHO.sum(), atol=1e-4)
  params = {"w1": jnp.eye(4)[:, :k], "b1": jnp.zeros(k), "w2": jnp.eye(4)[:, :k], "b2": jnp.zeros(k)}
  start = np.asarray(canonical_correlations(x @ params["w1"], y @ params["w2"]))
  assert np.max(np.abs(start - RHO[:k])) > 0.05  # the initial subspace is not the answer

  def loss_fn(p):
    return dcca_loss(x @ p["w1"] + p["b1"], y @ p["w2"] + p["b2"], k=k, r1=1e-6, r2=1e-6)[0]

  tx = optax.adam(optax.cosine_decay_schedule(3e-2, 500))
  opt = tx.init(params)

  @jax.jit
  def train(p, o):
    def body(carry, _):
      p, o = carry
      g = jax.grad(loss_fn)(p)
      u, o = tx.update(g, o, p)
      return (optax.apply_updates(p, u), o), None
    return jax.lax.scan(body, (p, o), None, length=500)[0]

  params, _ = train(params, opt)
  h1 = np.asarray(x @ params["w1"] + params["b1"], np.float64)
  h2 = np.asarray(y @ params["w2"] + params["b2"], np.float64)
  np.testing.assert_allclose(_np_canonical_correlations(h1, h2), RHO[:k], atol=1e-3)
  np.testing.assert_allclose(-loss_fn(params), RHO[:k].sum(), atol=1e-3)


def test_contrastive_coordination_is_symmetric_infonce_of_normalised_views():
  rng = np.random.default_rng(9)
  h1, h2 = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
  loss, _ = contrastive_coordination_loss(jnp.asarray(h1, jnp.float32), jnp.asarray(h2, jnp.float32), jnp.log(10.0))
  a = h1 / np.linalg.norm(h1, axis=1, keepdims=True)
  b = h2 / np.linalg.norm(h2, axis=1, keepdims=True)
  logits = 10.0 * a @ b.T
  lse = lambda m, ax: np.log(np.exp(m).sum(ax))
  ref = 0.5 * (np.mean(lse(logits, 1) - np.diag(logits)) + np.mean(lse(logits, 0) - np.diag(logits)))
  np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_registered_dcca_objective_on_the_deep_cca_model_is_the_numpy_trace_norm_and_accumulates_exactly():
  """get_objective("dcca") on model "deep_cca": the loss is -(sum of the canonical correlations of the two nets'
  outputs), computed here with SciPy whitening of those outputs; the batch-coupled loss accumulates exactly over
  micro-batches (the step's GradCache path) -- the one-step update equals the full-batch one."""
  from mmjax.models import build_model
  from mmjax.objectives import get_objective
  from mmjax.train.state import TrainState
  from mmjax.train.step import make_train_step
  x, y = _views_with_correlations(n=64, seed=4)
  batch = {"a": jnp.asarray(x, jnp.float32), "b": jnp.asarray(y, jnp.float32)}
  model = build_model(dict(name="deep_cca", views=("a", "b"), hidden=(16,), features=3))
  params = model.init(jax.random.PRNGKey(0), batch["a"][:2], batch["b"][:2])["params"]
  objective = get_objective("dcca")
  loss, metrics = objective.loss_fn(params, batch, jax.random.PRNGKey(1), model=model, train=False)
  h1, h2 = map(lambda h: np.asarray(h, np.float64), model.apply({"params": params}, batch["a"], batch["b"]))
  ref = np.linalg.svd(_np_whitened(h1, h2, 1e-3, 1e-3), compute_uv=False).sum()
  np.testing.assert_allclose(-loss, ref, rtol=1e-4)
  np.testing.assert_allclose(metrics["corr"], ref, rtol=1e-4)
  tx = optax.sgd(0.1)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(2))
  one = jax.jit(make_train_step(objective, model, tx, lambda s: 0.1))(state, batch)
  four = jax.jit(make_train_step(objective, model, tx, lambda s: 0.1, grad_accum_steps=4))(state, batch)
  np.testing.assert_allclose(four[1]["loss"], one[1]["loss"], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(four[0].params), jax.tree.leaves(one[0].params)):
    np.testing.assert_allclose(got, want, atol=1e-5)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one[0].params), jax.tree.leaves(params)))
  assert moved > 1e-3     # the step did something the comparison can see
  with pytest.raises(MmjaxError, match="two batch keys"):
    build_model(dict(name="deep_cca", views=("a",)))
