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

Evaluator "linear_probe" (settings under `evals.linear_probe`, EVAL_KEYS below): features from `model.encode_image`
(any model with one: MAE, M3AE, CLIP) of `probe_train_examples` examples of the first split in `probe_splits`
("train,test") and `num_examples` of the second; one probe per label task in `probe_tasks` ("shape,colour": the
label arrays of the batches, [N, S] -> the first object's label; "label" for classification data sets).

With `probe_data` set to a prepared classification data set of PROBE_DATA (e.g. "cifar10_test": the 10,000
CIFAR-10 test images, 1,000 per class), that data set is split by a fixed, class-balanced rule instead
(`class_halves`): within each class the examples are sorted by `image_id` (CIFAR: "test/<class>/NNNN.jpg"), the
first floor(n_c / 2) go to probe-train and the rest to probe-test (CIFAR-10: NNNN 0000-0499 -> probe-train,
0500-0999 -> probe-test, 5,000 each); both halves are ordered by (rank within the class's half, label): the first
k examples (`probe_train_examples` caps probe-train; the l2 is picked on its last 20 %) stay class-balanced.
"cifar100" (its 10,000 test images, 100 per class; image_id "test/NNNNN", the release's order) is cut the same way.
Probe-test is the whole second half (`num_examples` does not apply: it sizes the run's own test data). Images
(CIFAR: 32 px) are resized to the model's `vision.image_size` (else `data.image_size`) with PIL's bicubic filter
(`image_text.resize`, as the zero-shot eval) and mapped to [-1, 1] as the training pipeline does. Raw files: the
data set's default manual dir (`$MMJAX_RAW_DATA/<folder>` or ../shared/data/<folder>; generated ones under
`data.fake_raw`), built into `data.data_dir`.

Results: "linear_probe/<task>" (top-1 accuracy in percent on probe-test), "linear_probe/<task>_l2" (the chosen
l2) and "linear_probe/train_examples", "linear_probe/test_examples" (the probe's sizes).
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
from mmjax.evals.base import EVAL_KEYS, apply_fn, batched_apply, setting
from mmjax.registry import EVALUATORS

# Label tasks, probe-train size (probe-test: evals.num_examples), method ("logreg" | "ridge"), the two splits, or a
# prepared classification data set (probe_data, e.g. "cifar10_test", cut in two by `class_halves`).
EVAL_KEYS["linear_probe"] = {"probe_tasks": "shape,colour", "probe_train_examples": 1000, "probe_method": "logreg",
                             "probe_splits": "train,test", "probe_data": ""}

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
    raise MmjaxError(f"unknown probe method {method!r} (config key evals.linear_probe.probe_method); use one of "
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
    raise MmjaxError(f"probe task {task!r} (config key evals.linear_probe.probe_tasks) is not a label of the data; "
                     f"labels: {', '.join(keys)}")
  y = np.asarray(arrays[task])
  return y[:, 0] if y.ndim == 2 else y


def _cache_key(ctx, *parts) -> str:
  cfg = ctx.config
  return hashlib.sha1("|".join([cfg.data.to_json_best_effort(), *map(str, parts)]).encode()).hexdigest()


# Prepared classification data sets usable as `evals.linear_probe.probe_data`: name -> the split that is cut in two.
PROBE_DATA = {"cifar10_test": "test", "cifar100": "test"}


def class_halves(image_ids, labels) -> tuple[np.ndarray, np.ndarray]:
  """The fixed probe split of a labelled set (see the module docstring): (probe-train, probe-test) indices.

  Within each class the examples are ranked by image_id; ranks < floor(n_c / 2) -> probe-train, the rest ->
  probe-test; each half ordered by (rank within the class's half, label)."""
  labels = np.asarray(labels).astype(np.int64)
  ids = np.asarray([i.decode() if isinstance(i, bytes) else str(i) for i in image_ids])
  if len(set(ids.tolist())) != len(ids):
    raise MmjaxError("linear_probe: the probe data set has repeated image_ids; the class-halves split needs "
                     "unique ones")
  rank, half = np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    members = members[np.argsort(ids[members], kind="stable")]
    r, cut = np.arange(len(members)), len(members) // 2
    half[members] = r >= cut
    rank[members] = np.where(r >= cut, r - cut, r)
  out = []
  for in_test in (False, True):
    idx = np.flatnonzero(half == in_test)
    out.append(idx[np.lexsort((labels[idx], rank[idx]))])
  return out[0], out[1]


def probe_image_size(cfg) -> int:
  """The model's input size (model.vision.image_size), else data.image_size."""
  vision = cfg.model.get("vision") if hasattr(cfg.model, "get") else None
  if vision is not None and "image_size" in vision:
    return int(vision["image_size"])
  return int(cfg.data.image_size)


def probe_data_arrays(ctx, name: str) -> tuple[dict, dict]:
  """(probe-train, probe-test) of the prepared data set `name` split by `class_halves`: `image` uint8
  [N, S, S, 3] resized to `probe_image_size`, `label` int64 [N], `image_id` str [N] (cached per process)."""
  import ml_collections
  from mmjax.data import image_folder, image_text
  if name not in PROBE_DATA and not name.startswith(image_folder.PREFIX):
    raise MmjaxError(f"evals.linear_probe.probe_data={name!r} is not a probe data set; use one of "
                     f"{', '.join(sorted(PROBE_DATA))}, 'image_folder:<root>' or ''")
  cfg = ctx.config
  if name.startswith(image_folder.PREFIX):               # "image_folder:<root>": its test split, cut by class_halves
    key = f"probe_data:{name}:{probe_image_size(cfg)}"
    if key not in ctx.cache:
      images, labels, _, ids = image_folder.classification_arrays(name[len(image_folder.PREFIX):], "test",
                                                                  probe_image_size(cfg))
      ctx.cache[key] = tuple({"image": images[i], "label": labels[i], "image_id": ids[i]}
                             for i in class_halves(ids, labels))
    return ctx.cache[key]
  b = image_text.prepared(ml_collections.ConfigDict(dict(
      name=name, data_dir=cfg.data.get("data_dir", ""), fake_raw=cfg.data.get("fake_raw", 0))))
  size = probe_image_size(cfg)
  key = f"probe_data:{name}:{b.data_dir}:{size}"
  if key not in ctx.cache:
    src = b.as_data_source(PROBE_DATA[name])
    examples = [src[i] for i in range(len(src))]
    images = np.stack([image_text.resize(np.asarray(e["image"]), size) for e in examples]).astype(np.uint8)
    labels = np.asarray([int(e["label"]) for e in examples], np.int64)
    ids = np.asarray([e["image_id"].decode() if isinstance(e["image_id"], bytes) else str(e["image_id"])
                      for e in examples])
    ctx.cache[key] = tuple({"image": images[i], "label": labels[i], "image_id": ids[i]}
                           for i in class_halves(ids, labels))
  return ctx.cache[key]


def probe_arrays(ctx) -> tuple[dict, dict]:
  """(probe-train, probe-test) dicts with `image` [N, H, W, 3] (float32 in [-1, 1], or uint8 for `probe_data`)
  and label arrays (cached per process)."""
  cfg = ctx.config
  data_name = setting(cfg, "linear_probe", "probe_data")
  n_train, n_test = int(setting(cfg, "linear_probe", "probe_train_examples")), int(cfg.evals.num_examples)
  if data_name:
    train, test = probe_data_arrays(ctx, data_name)
    return {k: v[:n_train] for k, v in train.items()}, test
  probe_splits = str(setting(cfg, "linear_probe", "probe_splits"))
  splits = [s.strip() for s in probe_splits.split(",")]
  key = _cache_key(ctx, "probe", splits, n_train, n_test)
  if key in ctx.cache:
    return ctx.cache[key]
  if len(splits) != 2:
    raise MmjaxError(f"evals.linear_probe.probe_splits={probe_splits!r} must name two splits, e.g. 'train,test'")
  out = tuple(pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, n, split=s)
              for n, s in ((n_train, splits[0]), (n_test, splits[1])))
  ctx.cache[key] = out
  return out


def to_model_range(images: jax.Array) -> jax.Array:
  """uint8 images -> float32 x / 127.5 - 1 (as data/pipeline.py); float images pass through."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) * jnp.float32(1 / 127.5) - jnp.float32(1.0)
  return images


def image_features(params, ctx, images: np.ndarray) -> np.ndarray:
  """`model.encode_image` of images [N, H, W, 3] (float in [-1, 1] or uint8) in batches of evals.batch_size ->
  float32 [N, D]."""
  fn = apply_fn(ctx, "encode_image", prep=to_model_range)   # compiled once per run (per image dtype)
  bs = min(int(ctx.config.evals.batch_size), len(images))
  return np.asarray(batched_apply(fn, params, images, bs), np.float32)


@EVALUATORS.register("linear_probe")
def linear_probe_eval(params, ctx) -> dict[str, float]:
  cfg = ctx.config
  train, test = probe_arrays(ctx)
  ftr, fte = image_features(params, ctx, train["image"]), image_features(params, ctx, test["image"])
  tasks = [t.strip() for t in str(setting(cfg, "linear_probe", "probe_tasks")).split(",") if t.strip()]
  results = {}
  for task in tasks:
    r = linear_probe(ftr, task_labels(train, task), fte, task_labels(test, task),
                     method=str(setting(cfg, "linear_probe", "probe_method")))
    results[f"linear_probe/{task}"] = 100.0 * r["accuracy"]
    results[f"linear_probe/{task}_l2"] = r["l2"]
  results["linear_probe/train_examples"], results["linear_probe/test_examples"] = len(ftr), len(fte)
  return results
