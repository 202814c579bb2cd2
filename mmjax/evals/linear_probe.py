"""Linear probe on frozen features (the protocol of Chen et al. 2020 / He et al. 2022, Sec. 4.2 "linear probing").

Features are standardised with the mean/std of all probe-train features (unlabelled statistics). Two probes:
- "logreg": multinomial logistic regression, full batch, loss = weighted mean cross-entropy + l2/2 ||W||^2 (bias
  not penalised), minimised by Adam with a cosine-decayed step (300 steps; on standardised features this reaches
  the L-BFGS optimum to ~1e-4 in loss, and unlike optax's vmapped L-BFGS line search it compiles in ~1 s and
  fits the whole l2 grid at once with `vmap`);
- "ridge": closed-form least squares on one-hot targets, W = (Xc^T Xc + l2 I)^-1 Xc^T Yc on centred X, Y,
  b = mean(Y) - mean(X) W; the class is the argmax.
The l2 strength is picked on a held-out part of probe-train (its last `val_fraction`, a fixed split), then the
probe is refit on all of probe-train and scored on probe-test (held-out and refit fits share one compiled shape:
the held-out examples get weight 0).

Evaluator "linear_probe" (config keys under `evals`): features from `model.encode_image` (any model with one:
MAE, M3AE, CLIP) of `probe_train_examples` examples of the first split in `probe_splits` ("train,test") and
`num_examples` of the second; one probe per label task in `probe_tasks` ("shape,colour": the label arrays of
the batches, [N, S] -> the first object's label; "label" for classification data sets). With `probe_data` set
to a prepared classification data set of `clip_evals.ZERO_SHOT_DATA` (e.g. "cifar10_test"), its images are
split instead: example i goes to probe-test when i % 5 == 4, else to probe-train. Results: "linear_probe/<task>"
(top-1 accuracy in percent on probe-test) and "linear_probe/<task>_l2" (the chosen l2).
"""
from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.data import pipeline
from mmjax.errors import MmjaxError
from mmjax.registry import EVALUATORS

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
METHODS = ("logreg", "ridge")
LOGREG_STEPS, LOGREG_LR = 300, 0.05


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """(x - mean) / std with the statistics of `train` (std floored at 1e-6), for train and each of `others`."""
  train = np.asarray(train, np.float64)
  mean, std = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-6)
  return [((np.asarray(x, np.float64) - mean) / std).astype(np.float32) for x in (train, *others)]


def ridge_fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form ridge: argmin ||x W + b - y||^2 + l2 ||W||^2. x [N, D], y [N, C] -> (W [D, C], b [C])."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  xm, ym = x.mean(axis=0), y.mean(axis=0)
  xc, yc = x - xm, y - ym
  w = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ yc)
  return w, ym - xm @ w


def ridge_predict(train_x, train_y, test_x, l2: float, num_classes: int) -> np.ndarray:
  w, b = ridge_fit(train_x, np.eye(num_classes)[train_y], l2)
  return np.argmax(np.asarray(test_x, np.float64) @ w + b, axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def logreg_fit(x: jax.Array, y: jax.Array, weights: jax.Array, l2: jax.Array, *, num_classes: int,
               steps: int = LOGREG_STEPS) -> tuple[jax.Array, jax.Array]:
  """Multinomial logistic regression for each l2 in `l2` [G] at once. x float [N, D], y int [N], weights [N]
  (example weights; 0 drops an example) -> (W [G, D, C], b [G, C])."""
  x = x.astype(jnp.float32)
  onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
  weights = weights.astype(jnp.float32) / jnp.sum(weights)
  opt = optax.adam(optax.cosine_decay_schedule(LOGREG_LR, steps, alpha=0.01))

  def fit(lam):
    def loss(p):
      logits = x @ p["w"] + p["b"]
      ce = jnp.sum(weights * (jax.nn.logsumexp(logits, axis=1) - jnp.sum(onehot * logits, axis=1)))
      return ce + 0.5 * lam * jnp.sum(jnp.square(p["w"]))

    def body(carry, _):
      p, state = carry
      updates, state = opt.update(jax.grad(loss)(p), state, p)
      return (optax.apply_updates(p, updates), state), None

    p0 = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
    (p, _), _ = jax.lax.scan(body, (p0, opt.init(p0)), None, length=steps)
    return p["w"], p["b"]

  return jax.vmap(fit)(l2)


def logreg_predict(train_x, train_y, weights, test_x, l2s, num_classes: int) -> np.ndarray:
  """Predictions int [G, M] on test_x [M, D] of the probes fitted for each l2 in l2s [G]."""
  w, b = logreg_fit(jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(weights),
                    jnp.asarray(l2s, jnp.float32), num_classes=num_classes)
  return np.asarray(jnp.argmax(jnp.einsum("md,gdc->gmc", jnp.asarray(test_x), w) + b[:, None], axis=-1))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 method: str = "logreg", l2_grid: tuple[float, ...] | None = None,
                 val_fraction: float = 0.2) -> dict[str, float]:
  """Fits a linear probe on (train_x [N, D], train_y int [N]) and scores it on (test_x, test_y).

  Returns {"accuracy": test top-1 in [0, 1], "l2": the chosen l2, "val_accuracy": its held-out accuracy}.
  """
  train_y, test_y = np.asarray(train_y).astype(np.int64), np.asarray(test_y).astype(np.int64)
  if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
    raise MmjaxError(f"linear_probe: features must be [N, D] for train and test, got {train_x.shape} and "
                     f"{test_x.shape}")
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise MmjaxError(f"linear_probe: {len(train_x)}/{len(test_x)} features but {len(train_y)}/{len(test_y)} "
                     f"labels")
  if min(train_y.min(), test_y.min()) < 0:
    raise MmjaxError("linear_probe: labels must be >= 0 (is a label missing, -1, for some example?)")
  if method not in METHODS:
    raise MmjaxError(f"unknown probe method {method!r} (config key evals.probe_method); use one of "
                     f"{', '.join(METHODS)}")
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  grid = tuple(l2_grid or (RIDGE_GRID if method == "ridge" else L2_GRID))
  n = len(train_x)
  n_val = int(round(n * val_fraction)) if len(grid) > 1 else 0
  n_val = n_val if 0 < n_val < n else 0
  x, xt = standardize(train_x, test_x)
  best, val_acc = 0, -1.0
  if n_val:
    if method == "ridge":
      val_pred = np.stack([ridge_predict(x[:-n_val], train_y[:-n_val], x[-n_val:], l2, num_classes)
                           for l2 in grid])
    else:
      weights = (np.arange(n) < n - n_val).astype(np.float32)
      val_pred = logreg_predict(x, train_y, weights, x[-n_val:], grid, num_classes)
    accs = np.mean(val_pred == train_y[-n_val:], axis=1)
    best, val_acc = int(np.argmax(accs)), float(np.max(accs))
  if method == "ridge":
    pred = ridge_predict(x, train_y, xt, grid[best], num_classes)
  else:
    pred = logreg_predict(x, train_y, np.ones(n, np.float32), xt, grid, num_classes)[best]
  return {"accuracy": float(np.mean(pred == test_y)), "l2": float(grid[best]), "val_accuracy": val_acc}


# ------------------------------------------------------------------------------------------------ evaluator
def task_labels(arrays: dict, task: str) -> np.ndarray:
  """int [N] labels of `task`: a label array of the eval arrays; [N, S] arrays give the first object's label."""
  if task not in arrays:
    keys = sorted(k for k, v in arrays.items() if isinstance(v, np.ndarray) and v.dtype.kind in "iu")
    raise MmjaxError(f"probe task {task!r} (config key evals.probe_tasks) is not a label of the data; "
                     f"labels: {', '.join(keys)}")
  y = np.asarray(arrays[task])
  return y[:, 0] if y.ndim == 2 else y


def _cache_key(ctx, *parts) -> str:
  cfg = ctx.config
  return hashlib.sha1("|".join([cfg.data.to_json_best_effort(), *map(str, parts)]).encode()).hexdigest()


def probe_arrays(ctx) -> tuple[dict, dict]:
  """(probe-train, probe-test) dicts with `image` float32 [N, H, W, 3] and label arrays (cached per process)."""
  cfg, ev = ctx.config, ctx.config.evals
  data_name = ev.get("probe_data", "")
  splits = [s.strip() for s in str(ev.get("probe_splits", "train,test")).split(",")]
  n_train, n_test = int(ev.get("probe_train_examples", 1000)), int(ev.num_examples)
  key = _cache_key(ctx, "probe", data_name, splits, n_train, n_test)
  if key in ctx.cache:
    return ctx.cache[key]
  if data_name:
    from mmjax.evals import clip_evals
    images, labels, _ = clip_evals._zero_shot_data_arrays(ctx, data_name)
    test = np.arange(len(images)) % 5 == 4
    out = ({"image": images[~test][:n_train], "label": labels[~test][:n_train]},
           {"image": images[test][:n_test], "label": labels[test][:n_test]})
  else:
    if len(splits) != 2:
      raise MmjaxError(f"evals.probe_splits={ev.probe_splits!r} must name two splits, e.g. 'train,test'")
    out = tuple(pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, n, split=s)
                for n, s in ((n_train, splits[0]), (n_test, splits[1])))
  ctx.cache[key] = out
  return out


def image_features(params, ctx, images: np.ndarray) -> np.ndarray:
  """`model.encode_image` of images [N, H, W, 3] in batches of evals.batch_size -> float32 [N, D]."""
  from mmjax.evals.clip_evals import batched_apply
  fn = jax.jit(lambda p, x: ctx.model.apply({"params": p}, x, method="encode_image"))
  bs = min(int(ctx.config.evals.batch_size), len(images))
  return np.asarray(batched_apply(fn, params, images, bs), np.float32)


@EVALUATORS.register("linear_probe")
def linear_probe_eval(params, ctx) -> dict[str, float]:
  ev = ctx.config.evals
  train, test = probe_arrays(ctx)
  ftr, fte = image_features(params, ctx, train["image"]), image_features(params, ctx, test["image"])
  tasks = [t.strip() for t in str(ev.get("probe_tasks", "label")).split(",") if t.strip()]
  results = {}
  for task in tasks:
    r = linear_probe(ftr, task_labels(train, task), fte, task_labels(test, task),
                     method=str(ev.get("probe_method", "logreg")))
    results[f"linear_probe/{task}"] = 100.0 * r["accuracy"]
    results[f"linear_probe/{task}_l2"] = r["l2"]
  return results
