"""Robustness to imperfect modalities, MultiBench's protocol (Liang, Lyu, Fan, Wu, Cheng, Wu, Chen, Wu, Lee, Zhu,
Salakhutdinov & Morency 2021, "MultiBench: Multiscale Benchmarks for Multimodal Representation Learning", NeurIPS
Datasets & Benchmarks, section 3.3 and its `eval_scripts/robustness.py`).

Protocol: a trained model is evaluated on the test split while noise of level p in {0, 0.1, ..., 1.0} is applied to
one modality at a time (the others stay clean); the accuracy-vs-level curve f(p_0..p_L) is summarised by
- relative robustness: the area under the curve, sum_i (f_i + f_{i+1}) (p_{i+1} - p_i) / 2 (trapezoid rule; with
  MultiBench's 11 levels that is its `relative_robustness_helper`, step 0.1);
- effective robustness (after Taori et al. 2020): the accuracy above a baseline's curve shifted to start at the same
  clean accuracy, sum_i (f_i - (b_i + f_0 - b_0)); MultiBench's baseline is late fusion (LF).
MultiBench further max-min normalises either number over the compared methods (`maxmin_normalize`).

Noise (jax.random, jitted with the level as a traced argument; `x` is assumed standardised, so a level is in units of the feature scale):
- `timeseries_noise` [B, T, D], MultiBench's timeseries_robustness: white noise (one N(0, p^2) draw per example and
  time step, added to all its features), random drop (each entry zeroed with probability p), structured drop
  (each window of `window` consecutive time steps zeroed with probability p; here drawn per example, MultiBench
  draws one set of windows for the whole test set);
- `vector_noise` [B, D]: per-entry N(0, p^2) noise and per-entry drop with probability p;
- `image_noise` [B, H, W, C]: per-pixel N(0, (p * range)^2) noise and pixel drop (all channels) with probability p.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import MmjaxError

LEVELS = tuple(round(0.1 * i, 1) for i in range(11))


# ------------------------------------------------------------------------------------------------- noise
def _check_level(level: float) -> None:
  if not 0.0 <= float(level) <= 1.0:
    raise MmjaxError(f"noise level {level} is outside [0, 1]")


@jax.jit
def vector_noise(x: jax.Array, level: float, rng: jax.Array) -> jax.Array:
  """x [B, D]: + N(0, level^2) per entry, then each entry zeroed with probability `level`."""
  k1, k2 = jax.random.split(rng)
  x = x + level * jax.random.normal(k1, x.shape, x.dtype)
  return jnp.where(jax.random.uniform(k2, x.shape) < level, 0.0, x).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("white", "rand_drop", "struct_drop", "window"))
def timeseries_noise(x: jax.Array, level: float, rng: jax.Array, *, white: bool = True, rand_drop: bool = True,
                     struct_drop: bool = True, window: int = 3) -> jax.Array:
  """x [B, T, D] -> MultiBench's white noise + random drop + structured drop at probability/std `level`."""
  if x.ndim != 3:
    raise MmjaxError(f"timeseries_noise expects [B, T, D], got {tuple(x.shape)}; use vector_noise for [B, D]")
  b, t, _ = x.shape
  k1, k2, k3 = jax.random.split(rng, 3)
  if white:
    x = x + level * jax.random.normal(k1, (b, t, 1), x.dtype)
  if rand_drop:
    x = jnp.where(jax.random.uniform(k2, x.shape) < level, 0.0, x)
  if struct_drop and t > window:
    starts = jax.random.uniform(k3, (b, t - window)) < level          # window start s drops s .. s+window-1
    dropped = jnp.zeros((b, t), bool)
    for j in range(window):
      dropped = dropped.at[:, j:j + t - window].set(dropped[:, j:j + t - window] | starts)
    x = jnp.where(dropped[:, :, None], 0.0, x)
  return x.astype(x.dtype)


@jax.jit
def image_noise(x: jax.Array, level: float, rng: jax.Array, value_range: float = 1.0) -> jax.Array:
  """x [B, H, W, C]: + N(0, (level * value_range)^2) per value, then each pixel zeroed with probability `level`."""
  if x.ndim != 4:
    raise MmjaxError(f"image_noise expects [B, H, W, C], got {tuple(x.shape)}")
  k1, k2 = jax.random.split(rng)
  x = x + level * value_range * jax.random.normal(k1, x.shape, x.dtype)
  return jnp.where(jax.random.uniform(k2, x.shape[:3] + (1,)) < level, 0.0, x).astype(x.dtype)


def noise_for(x: Any) -> Callable[[jax.Array, float, jax.Array], jax.Array]:
  """The default noise of an input by rank: [B, D] vector, [B, T, D] time series, [B, H, W, C] image."""
  fn = {2: vector_noise, 3: timeseries_noise, 4: image_noise}.get(np.ndim(x))
  if fn is None:
    raise MmjaxError(f"no default noise for inputs of shape {np.shape(x)}; pass noise_fn")
  return fn


# ------------------------------------------------------------------------------------------------- curves
def accuracy(logits_or_labels: Any, labels: Any) -> float:
  """Top-1 accuracy of logits [N, C] (or predicted labels [N]) against labels [N]."""
  pred = np.asarray(logits_or_labels)
  pred = pred.argmax(-1) if pred.ndim == 2 else pred
  return float(np.mean(pred == np.asarray(labels)))


def robustness_curve(predict: Callable[[dict], Any], inputs: Mapping[str, Any], labels: Any, modality: str, *,
                     levels: Sequence[float] = LEVELS, noise_fn: Callable | None = None, seed: int = 0,
                     metric: Callable[[Any, Any], float] = accuracy) -> np.ndarray:
  """metric(predict(inputs with noise of level p on `modality`), labels) for every p: -> [len(levels)].

  predict: dict of test inputs -> logits [N, C] (or predictions); the same noise key is used at every level
  (common random numbers), so the curve differs between levels only through p.
  """
  if modality not in inputs:
    raise MmjaxError(f"robustness: modality {modality!r} is not among the inputs {sorted(inputs)}")
  noise_fn = noise_fn or noise_for(inputs[modality])
  key = jax.random.PRNGKey(seed)
  out = []
  for p in levels:
    _check_level(p)
    noisy = dict(inputs)
    noisy[modality] = inputs[modality] if p == 0 else noise_fn(jnp.asarray(inputs[modality]), float(p), key)
    out.append(metric(predict(noisy), labels))
  return np.asarray(out)


def relative_robustness(scores: Sequence[float], levels: Sequence[float] = LEVELS) -> float:
  """Area under the score-vs-noise curve (trapezoid rule over `levels`)."""
  f, p = np.asarray(scores, np.float64), np.asarray(levels, np.float64)
  if f.shape != p.shape:
    raise MmjaxError(f"relative_robustness: {f.size} scores for {p.size} levels")
  return float(np.sum((f[1:] + f[:-1]) * np.diff(p) / 2.0))


def effective_robustness(scores: Sequence[float], baseline: Sequence[float]) -> float:
  """sum_i (f_i - (b_i + f_0 - b_0)): performance above the baseline curve moved to f's clean score."""
  f, b = np.asarray(scores, np.float64), np.asarray(baseline, np.float64)
  if f.shape != b.shape:
    raise MmjaxError(f"effective_robustness: {f.size} scores but {b.size} baseline scores")
  return float(np.sum(f - (b + f[0] - b[0])))


def maxmin_normalize(values: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
  """(v - min) / (max - min) over the methods (MultiBench's normalisation; negated first for lower-is-better)."""
  v = np.asarray(list(values.values()), np.float64) * (1.0 if higher_is_better else -1.0)
  span = v.max() - v.min()
  norm = (v - v.min()) / span if span > 0 else np.zeros_like(v)
  return dict(zip(values, map(float, norm)))


# ------------------------------------------------------------------------------------------------- plot
def plot_robustness(curves: Mapping[str, Sequence[float]], path: str, *, levels: Sequence[float] = LEVELS,
                    title: str = "", ylabel: str = "accuracy", stds: Mapping[str, Sequence[float]] | None = None) -> str:
  """One curve per method (score vs noise level, optional ±std band) -> PNG at `path` (written atomically)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.0, 4.2))
  for name, scores in curves.items():
    line, = ax.plot(levels, scores, marker="o", markersize=3, linewidth=1.8, label=name)
    if stds and name in stds:
      lo = np.asarray(scores) - np.asarray(stds[name])
      hi = np.asarray(scores) + np.asarray(stds[name])
      ax.fill_between(levels, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
  ax.set_xlabel("noise level")
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path
