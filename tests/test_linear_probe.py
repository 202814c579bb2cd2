"""Linear probe: ridge against numpy lstsq, recovery of a linearly separable labelling, the PNG grid writer."""
from __future__ import annotations

import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.evals import plots
from mmjax.evals.linear_probe import linear_probe, ridge_fit, standardize, task_labels


def _separable(n: int, d: int = 12, c: int = 4, seed: int = 0):
  """Gaussian features, labels argmax(x W_true + b_true): linearly separable by construction."""
  rng = np.random.default_rng(seed)
  w, b = rng.normal(size=(d, c)), rng.normal(size=c)
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)   # unequal scales/offsets
  return x.astype(np.float32), np.argmax(x @ w + b, axis=1)


def test_ridge_matches_lstsq_on_the_augmented_system():
  rng = np.random.default_rng(1)
  x, y, l2 = rng.normal(size=(50, 6)), rng.normal(size=(50, 3)), 2.5
  w, b = ridge_fit(x, y, l2)
  # min ||[x 1] [w; b] - y||^2 + l2 ||w||^2  ==  lstsq of [[x, 1], [sqrt(l2) I, 0]] against [[y], [0]]
  a = np.block([[x, np.ones((50, 1))], [np.sqrt(l2) * np.eye(6), np.zeros((6, 1))]])
  ref = np.linalg.lstsq(a, np.vstack([y, np.zeros((6, 3))]), rcond=None)[0]
  np.testing.assert_allclose(w, ref[:6], rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(b, ref[6], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", ["logreg", "ridge"])
def test_probe_recovers_a_linearly_separable_labelling(method):
  x, y = _separable(1500)
  r = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], method=method)
  floor = 0.95 if method == "logreg" else 0.8      # least squares on one-hot targets is a weaker classifier
  assert r["accuracy"] > floor, r
  # a labelling independent of the features stays at chance: the majority class's share at best
  shuffled = np.random.default_rng(2).permutation(y)
  r0 = linear_probe(x[:1000], shuffled[:1000], x[1000:], shuffled[1000:], method=method)
  majority = np.bincount(shuffled[1000:]).max() / 500
  assert r0["accuracy"] < majority + 0.05 and r["accuracy"] > majority + 0.2, (r0, majority)


def test_probe_picks_l2_on_held_out_data():
  x, y = _separable(400, d=40, seed=3)
  noisy = np.where(np.random.default_rng(4).random(400) < 0.3, (y + 1) % 4, y)   # 30 % label noise
  r = linear_probe(x[:200], noisy[:200], x[200:], y[200:], method="logreg")
  assert r["l2"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0) and 0 <= r["val_accuracy"] <= 1


def test_standardize_uses_train_statistics():
  tr = np.array([[1.0, 10.0], [3.0, 30.0]])
  a, b = standardize(tr, np.array([[2.0, 50.0]]))
  np.testing.assert_allclose(a, [[-1, -1], [1, 1]], atol=1e-6)
  np.testing.assert_allclose(b, [[0, 3]], atol=1e-6)


def test_task_labels_take_the_first_object():
  arrays = {"shape": np.array([[2, -1], [5, 1]], np.int32), "label": np.array([3, 4])}
  np.testing.assert_array_equal(task_labels(arrays, "shape"), [2, 5])
  np.testing.assert_array_equal(task_labels(arrays, "label"), [3, 4])
  with pytest.raises(MmjaxError, match="evals.linear_probe.probe_tasks"):
    task_labels(arrays, "colour")


def test_probe_rejects_missing_labels():
  x, y = _separable(20)
  with pytest.raises(MmjaxError, match="labels must be >= 0"):
    linear_probe(x, np.where(y == 0, -1, y), x, y)


def test_image_grid_writes_a_png(tmp_path):
  import matplotlib.image
  rows = [np.full((3, 8, 8, 3), v, np.float32) for v in (-1.0, 0.0, 1.0)]
  path = plots.image_grid(rows, ["a", "b", "c"], str(tmp_path / "fig" / "grid.png"), title="t",
                          captions=["x", "y", "z"])
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
  assert not list((tmp_path / "fig").glob("*.tmp*"))
