"""Robustness evaluation (mmjax/evals/robustness.py): MultiBench's metrics on hand-computed curves, the noise
processes' statistics against their stated probabilities, the curve protocol on a model whose accuracy under noise
is known in closed form, and the PNG plot."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.evals import robustness as rb


def test_relative_robustness_is_the_trapezoid_area():
  # A straight line from 1 to 0 over [0, 1]: area 1/2; a constant 0.8: area 0.8.
  assert rb.relative_robustness(np.linspace(1, 0, 11)) == pytest.approx(0.5)
  assert rb.relative_robustness([0.8] * 11) == pytest.approx(0.8)
  # By hand: (0.8 + 0.6) * 0.1 / 2 + (0.6 + 0.4) * 0.1 / 2 = 0.07 + 0.05 = 0.12.
  assert rb.relative_robustness([0.8, 0.6, 0.4], levels=[0.0, 0.1, 0.2]) == pytest.approx(0.12)
  # Uneven levels: (1 + 0.5) * 0.5 / 2 + (0.5 + 0.5) * 0.25 / 2 = 0.375 + 0.125 = 0.5.
  assert rb.relative_robustness([1.0, 0.5, 0.5], levels=[0.0, 0.5, 0.75]) == pytest.approx(0.5)
  with pytest.raises(MmjaxError, match="3 scores for 11 levels"):
    rb.relative_robustness([1, 2, 3])


def test_effective_robustness_against_the_shifted_baseline():
  # baseline [0.9, 0.7, 0.5] shifted to start at 0.8: [0.8, 0.6, 0.4]; f - shifted = [0, 0.1, 0.2] -> 0.3.
  assert rb.effective_robustness([0.8, 0.7, 0.6], [0.9, 0.7, 0.5]) == pytest.approx(0.3)
  # The baseline against itself, or any curve parallel to it, scores 0; a steeper drop is negative.
  assert rb.effective_robustness([0.9, 0.7, 0.5], [0.9, 0.7, 0.5]) == pytest.approx(0.0)
  assert rb.effective_robustness([0.6, 0.4, 0.2], [0.9, 0.7, 0.5]) == pytest.approx(0.0)
  assert rb.effective_robustness([0.9, 0.5, 0.1], [0.9, 0.7, 0.5]) == pytest.approx(-0.6)


def test_maxmin_normalize():
  assert rb.maxmin_normalize({"a": 0.2, "b": 0.6, "c": 0.4}) == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.5})
  assert rb.maxmin_normalize({"a": 0.2, "b": 0.6}, higher_is_better=False) == pytest.approx({"a": 1.0, "b": 0.0})


def test_noise_level_zero_is_identity_and_one_drops_everything():
  key = jax.random.PRNGKey(0)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 7, 3)), jnp.float32)
  np.testing.assert_array_equal(rb.timeseries_noise(x, 0.0, key), x)
  np.testing.assert_array_equal(rb.vector_noise(x[:, 0], 0.0, key), x[:, 0])
  np.testing.assert_array_equal(rb.image_noise(x[..., None], 0.0, key), x[..., None])
  assert not np.any(rb.timeseries_noise(x, 1.0, key))
  assert not np.any(rb.vector_noise(x[:, 0], 1.0, key))
  assert not np.any(rb.image_noise(x[..., None], 1.0, key))


def test_noise_statistics_match_their_definitions():
  key = jax.random.PRNGKey(1)
  p = 0.3
  # vector: drop rate p; surviving entries moved by N(0, p^2).
  x = jnp.ones((400, 250))
  y = np.asarray(rb.vector_noise(x, p, key))
  assert np.mean(y == 0) == pytest.approx(p, abs=0.01)
  assert np.std(y[y != 0] - 1.0) == pytest.approx(p, rel=0.03)
  # time series, white noise only: one draw per (example, step), shared by all features.
  ts = jnp.zeros((300, 20, 4))
  w = np.asarray(rb.timeseries_noise(ts, p, key, rand_drop=False, struct_drop=False))
  np.testing.assert_allclose(w, np.broadcast_to(w[..., :1], w.shape))
  assert np.std(w[..., 0]) == pytest.approx(p, rel=0.03)
  # structured drop only: step t is covered by c_t windows of 3 (window starts 0..T-4), dropped w.p. 1-(1-p)^c_t.
  s = np.asarray(rb.timeseries_noise(jnp.ones((20000, 8, 2)), p, key, white=False, rand_drop=False))
  assert np.all((s == 0).all(-1) | (s == 1).all(-1))  # whole steps, all features
  covered = np.array([1, 2, 3, 3, 3, 2, 1, 0])
  np.testing.assert_allclose(np.mean(s[..., 0] == 0, axis=0), 1 - (1 - p) ** covered, atol=0.015)
  # image: whole pixels (all channels) dropped at rate p.
  im = np.asarray(rb.image_noise(jnp.ones((50, 16, 16, 3)), p, key, value_range=0.0))
  assert np.all((im == 0).all(-1) | (im == 1).all(-1))
  assert np.mean(im[..., 0] == 0) == pytest.approx(p, abs=0.015)


def test_robustness_curve_on_a_model_with_known_accuracy():
  """predict = sign of the first feature of modality "a"; with vector noise at level p an entry survives w.p. 1-p
  (then keeps its sign unless the N(0, p^2) noise flips it) and is dropped to 0 -> class 0 otherwise. With |a| >= 5
  the flips are negligible, so accuracy = (1-p) + p * P(label = 0) = (1-p) + p/2 for balanced labels."""
  n = 4000
  rng = np.random.default_rng(2)
  label = np.arange(n) % 2
  a = np.where(label == 1, 1.0, -1.0)[:, None] * (5.0 + rng.random((n, 1)))
  inputs = {"a": jnp.asarray(a, jnp.float32), "b": jnp.zeros((n, 3))}
  predict = lambda batch: (np.asarray(batch["a"])[:, 0] > 0).astype(int)
  curve = rb.robustness_curve(predict, inputs, label, "a")
  levels = np.asarray(rb.LEVELS)
  np.testing.assert_allclose(curve, 1 - levels / 2, atol=0.025)
  assert curve[0] == 1.0
  # Noise on the other modality leaves this model untouched.
  np.testing.assert_array_equal(rb.robustness_curve(predict, inputs, label, "b"), np.ones(11))
  with pytest.raises(MmjaxError, match="modality 'c'"):
    rb.robustness_curve(predict, inputs, label, "c")


def test_plot_writes_a_png(tmp_path):
  path = str(tmp_path / "figs" / "robust.png")
  curves = {"late": np.linspace(0.8, 0.5, 11), "tfn": np.linspace(0.82, 0.4, 11)}
  assert rb.plot_robustness(curves, path, title="demo", stds={"late": np.full(11, 0.02)}) == path
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
