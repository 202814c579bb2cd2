"""MVAE (mmjax/models/mvae.py, objective "mvae", evaluator "mvae"): the product of Gaussian experts, the KL and
log-likelihood terms and the sub-sampled ELBO, against NumPy re-implementations and closed forms."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.evals.generative_evals import pixel_gaussian_nll
from mmjax.models import build_model
from mmjax.models.mvae import NUM_CLASSES, product_of_experts
from mmjax.objectives import get_objective
from mmjax.objectives import mvae as mvae_obj

B, S, D = 5, 16, 3


def np_poe(mus, variances, prior=True):
  """Product of Gaussian densities, by multiplying them on a 1-D grid per dimension (independent of the
  closed form): returns the mean and variance of the normalised product."""
  mus, variances = np.asarray(mus, np.float64), np.asarray(variances, np.float64)
  if prior:
    mus = np.concatenate([mus, np.zeros_like(mus[:1])])
    variances = np.concatenate([variances, np.ones_like(variances[:1])])
  grid = np.linspace(-12, 12, 48001)
  out_mu, out_var = np.zeros(mus.shape[1:]), np.zeros(mus.shape[1:])
  for idx in np.ndindex(*mus.shape[1:]):
    logp = sum(-0.5 * (grid - mus[(e, *idx)]) ** 2 / variances[(e, *idx)] for e in range(len(mus)))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    out_mu[idx] = np.sum(p * grid)
    out_var[idx] = np.sum(p * (grid - out_mu[idx]) ** 2)
  return out_mu, out_var


def test_poe_matches_product_of_densities_and_closed_form():
  rng = np.random.default_rng(0)
  mus = rng.normal(size=(3, 2, D)) * 2
  logvars = rng.uniform(-1.5, 1.0, size=(3, 2, D))
  mu, logvar = product_of_experts(jnp.asarray(mus), jnp.asarray(logvars))
  ref_mu, ref_var = np_poe(mus, np.exp(logvars))
  np.testing.assert_allclose(np.asarray(mu), ref_mu, atol=1e-4)
  np.testing.assert_allclose(np.exp(np.asarray(logvar)), ref_var, rtol=1e-3)
  # closed form in NumPy: precisions add (prior precision 1), the mean is precision-weighted
  prec = np.exp(-logvars)
  np.testing.assert_allclose(np.exp(-np.asarray(logvar)), prec.sum(0) + 1, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(mu), (mus * prec).sum(0) / (prec.sum(0) + 1), rtol=1e-5, atol=1e-6)
  # without the prior expert, one expert is returned unchanged
  m1, lv1 = product_of_experts(jnp.asarray(mus[:1]), jnp.asarray(logvars[:1]), prior=False)
  np.testing.assert_allclose(np.asarray(m1), mus[0], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(lv1), logvars[0], rtol=1e-5, atol=1e-6)


def test_poe_mask_drops_experts_and_prior_alone_is_standard_normal():
  rng = np.random.default_rng(1)
  mus, logvars = rng.normal(size=(2, 4, D)), rng.normal(size=(2, 4, D)) * 0.5
  mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float32)
  mu, logvar = product_of_experts(jnp.asarray(mus), jnp.asarray(logvars), jnp.asarray(mask))
  for b in range(4):
    present = [e for e in range(2) if mask[e, b]]
    if present:
      ref_mu, ref_var = np_poe(mus[present][:, b:b + 1], np.exp(logvars[present][:, b:b + 1]))
      np.testing.assert_allclose(np.asarray(mu)[b], ref_mu[0], atol=1e-4)
      np.testing.assert_allclose(np.exp(np.asarray(logvar)[b]), ref_var[0], rtol=1e-3)
    else:
      np.testing.assert_allclose(np.asarray(mu)[b], 0.0, atol=1e-7)
      np.testing.assert_allclose(np.asarray(logvar)[b], 0.0, atol=1e-7)


def test_kl_closed_form_and_monte_carlo():
  rng = np.random.default_rng(2)
  mu, logvar = rng.normal(size=(4, D)), rng.uniform(-1, 1, size=(4, D))
  kl = np.asarray(mvae_obj.kl_std_normal(jnp.asarray(mu), jnp.asarray(logvar)))
  var = np.exp(logvar)
  np.testing.assert_allclose(kl, 0.5 * np.sum(var + mu ** 2 - 1 - np.log(var), -1), rtol=1e-5)
  # Monte Carlo: E_q[log q(z) - log p(z)]
  z = mu[:, None] + np.sqrt(var)[:, None] * rng.normal(size=(4, 200_000, D))
  log_q = -0.5 * ((z - mu[:, None]) ** 2 / var[:, None] + np.log(2 * np.pi * var[:, None])).sum(-1)
  log_p = -0.5 * (z ** 2 + np.log(2 * np.pi)).sum(-1)
  diff = log_q - log_p
  se = diff.std(1) / np.sqrt(diff.shape[1])
  assert np.all(np.abs(kl - diff.mean(1)) < 5 * se), (kl, diff.mean(1), se)
  assert np.all(np.asarray(mvae_obj.kl_std_normal(jnp.zeros((2, D)), jnp.zeros((2, D)))) == 0.0)


def test_gaussian_and_categorical_log_probs_vs_numpy():
  rng = np.random.default_rng(3)
  x, mean = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  log_scale = np.array([-1.0, 0.0, 0.5])
  got = np.asarray(mvae_obj.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_scale)))
  sd = np.exp(log_scale)
  ref = (-0.5 * ((x - mean) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))).reshape(2, -1).sum(1)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  logits = {"shape": rng.normal(size=(2, 6)), "colour": rng.normal(size=(2, 8))}
  labels = {"shape": np.array([[1], [5]]), "colour": np.array([0, 7])}
  got = np.asarray(mvae_obj.categorical_log_prob({k: jnp.asarray(v) for k, v in logits.items()},
                                                 {k: jnp.asarray(v) for k, v in labels.items()}))
  ref = np.zeros(2)
  for k, lg in logits.items():
    y = labels[k].reshape(-1)
    ref += lg[np.arange(2), y] - np.log(np.exp(lg).sum(1))
  np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny():
  model = build_model(dict(name="mvae", image_size=S, latent_dim=D, channels=(4, 8), hidden=16,
                           attributes=("shape", "colour"), label_weight=7.0))
  rng = np.random.default_rng(4)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (B, S, S, 3)), jnp.float32),
           "shape": jnp.asarray(rng.integers(0, 6, (B, 1)), jnp.int32),
           "colour": jnp.asarray(rng.integers(0, 8, (B, 1)), jnp.int32),
           "size": jnp.zeros((B, 1), jnp.int32), "position": jnp.zeros((B, 1), jnp.int32)}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), *[batch[k] for k in mvae_obj.BATCH_KEYS])["params"]
  return model, params, batch


def test_elbo_terms_recomputed_from_the_model_parts(tiny):
  """Each subset's ELBO = weighted log-likelihoods at z = mu + sigma eps minus the KL of its PoE posterior, with
  the posterior rebuilt in NumPy from the two experts and the same eps."""
  model, params, batch = tiny
  v = {"params": params}
  labels = {a: batch[a] for a in model.attributes}
  rng = jax.random.PRNGKey(7)
  t = mvae_obj.elbo_terms(params, model, batch, rng, label_weight=7.0, beta=0.5)
  mi, vi = (np.asarray(a, np.float64) for a in model.apply(v, batch["image"], method="encode_image"))
  ml, vl = (np.asarray(a, np.float64) for a in model.apply(v, labels, method="encode_labels"))
  keys = jax.random.split(rng, 3)
  experts = {"joint": [(mi, vi), (ml, vl)], "image": [(mi, vi)], "labels": [(ml, vl)]}
  log_scale = np.asarray(model.apply(v, method="image_scale"), np.float64)
  for s, key in zip(mvae_obj.SUBSETS, keys):
    prec = 1.0 + sum(np.exp(-lv) for _, lv in experts[s])
    mu = sum(m * np.exp(-lv) for m, lv in experts[s]) / prec
    var = 1.0 / prec
    kl = 0.5 * np.sum(var + mu ** 2 - 1 - np.log(var), -1)
    np.testing.assert_allclose(np.asarray(t[f"kl_{s}"]), kl, rtol=1e-4, atol=1e-5)
    eps = np.asarray(jax.random.normal(key, mu.shape), np.float64)
    z = jnp.asarray(mu + np.sqrt(var) * eps, jnp.float32)
    elbo = -0.5 * kl
    if s != "labels":
      mean = np.asarray(model.apply(v, z, method="decode_image"), np.float64)
      x = np.asarray(batch["image"], np.float64)
      sd = np.exp(log_scale)
      ll = (-0.5 * ((x - mean) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))).reshape(B, -1).sum(1)
      np.testing.assert_allclose(np.asarray(t[f"ll_image_{s}"]), ll, rtol=1e-4)
      elbo = elbo + ll
    if s != "image":
      logits = model.apply(v, z, method="decode_labels")
      ll = 0.0
      for a, lg in logits.items():
        lg = np.asarray(lg, np.float64)
        y = np.asarray(batch[a])[:, 0]
        ll = ll + lg[np.arange(B), y] - np.log(np.exp(lg).sum(1))
      np.testing.assert_allclose(np.asarray(t[f"ll_labels_{s}"]), ll, rtol=1e-4, atol=1e-5)
      elbo = elbo + 7.0 * ll
    np.testing.assert_allclose(np.asarray(t[f"elbo_{s}"]), elbo, rtol=1e-4, atol=1e-3)
  # the objective sums the three sub-sampled ELBOs (label weight and beta from the model's fields)
  loss, metrics = get_objective("mvae").loss_fn(params, batch, rng, model=model)
  t1 = mvae_obj.elbo_terms(params, model, batch, rng, label_weight=7.0, beta=1.0)
  np.testing.assert_allclose(float(loss), -float(np.mean(t1["elbo_joint"] + t1["elbo_image"] + t1["elbo_labels"])),
                             rtol=1e-5)
  chex.assert_tree_all_finite(metrics)


def test_elbo_is_below_the_log_likelihood_of_the_labels(tiny):
  """ELBO_labels <= log p(labels) (estimated by importance sampling with many prior samples: the bound holds)."""
  model, params, batch = tiny
  v = {"params": params}
  labels = {a: batch[a] for a in model.attributes}
  fn = jax.jit(jax.vmap(lambda k: mvae_obj.elbo_terms(params, model, batch, k, subsets=("labels",))["elbo_labels"]))
  elbo = np.asarray(fn(jax.random.split(jax.random.PRNGKey(0), 200))).mean(0)
  z = jax.random.normal(jax.random.PRNGKey(1), (20000, D))
  logits = model.apply(v, z, method="decode_labels")
  lp = sum(jax.nn.log_softmax(logits[a])[:, np.asarray(batch[a])[:, 0]] for a in model.attributes)   # [N, B]
  log_px = np.asarray(jax.nn.logsumexp(lp, axis=0) - math.log(20000))
  assert np.all(elbo <= log_px + 0.05), (elbo, log_px)


def test_pixel_gaussian_baseline_vs_scipy_form():
  rng = np.random.default_rng(5)
  train, test = rng.normal(1.0, 2.0, (500, 3, 2)), rng.normal(1.0, 2.0, (7, 3, 2))
  mean, std = train.mean(0), train.std(0)
  ref = -np.sum(-0.5 * ((test - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=(1, 2)).mean()
  assert abs(pixel_gaussian_nll(train, test) - ref) < 1e-9
  assert NUM_CLASSES == {"shape": 6, "colour": 8, "size": 3, "position": 9}
  from mmjax.data import shapes as shapes_lib     # the model's counts (no data import there) are the data's
  assert NUM_CLASSES == {"shape": len(shapes_lib.SHAPES), "colour": len(shapes_lib.COLOURS),
                         "size": len(shapes_lib.SIZES), "position": len(shapes_lib.POSITIONS)}


def test_cross_image_term_of_the_labels_elbo(tiny):
  """cross_image_weight (not in the paper): ELBO_labels gains w * log p(image | z) at z ~ q(z | labels), recomputed
  in NumPy from the labels expert, the same eps and the decoder mean; the paper's objective (w = 0) is unchanged."""
  model, params, batch = tiny
  v = {"params": params}
  labels = {a: batch[a] for a in model.attributes}
  rng = jax.random.PRNGKey(3)
  t = mvae_obj.elbo_terms(params, model, batch, rng, label_weight=2.0, beta=0.5, subsets=("labels",),
                          cross_image_weight=0.3)
  t0 = mvae_obj.elbo_terms(params, model, batch, rng, label_weight=2.0, beta=0.5, subsets=("labels",))
  assert "ll_image_labels" not in t0
  ml, vl = (np.asarray(a, np.float64) for a in model.apply(v, labels, method="encode_labels"))
  prec = 1.0 + np.exp(-vl)
  mu, var = ml * np.exp(-vl) / prec, 1.0 / prec
  eps = np.asarray(jax.random.normal(jax.random.split(rng, 1)[0], mu.shape), np.float64)
  z = jnp.asarray(mu + np.sqrt(var) * eps, jnp.float32)
  mean = np.asarray(model.apply(v, z, method="decode_image"), np.float64)
  sd = np.exp(np.asarray(model.apply(v, method="image_scale"), np.float64))
  x = np.asarray(batch["image"], np.float64)
  ll = (-0.5 * ((x - mean) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))).reshape(B, -1).sum(1)
  np.testing.assert_allclose(np.asarray(t["ll_image_labels"]), ll, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(t["elbo_labels"]), np.asarray(t0["elbo_labels"]) + 0.3 * ll, rtol=1e-4,
                             atol=1e-3)
