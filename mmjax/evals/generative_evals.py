"""Evaluator "mvae": the multimodal VAE of mmjax/models/mvae.py (Wu & Goodman 2018) on shapes scenes.

On the first `evals.num_examples` test scenes with one object (data.min_shapes = max_shapes = 1 in the experiment):

  mvae/nelbo_joint, nelbo_image, nelbo_labels   -ELBO in nats per example (lambda = beta = 1; the mean of
      `evals.mvae.elbo_samples` one-sample estimates) of (image, labels), image alone, labels alone, each with its own
      product-of-experts posterior; plus kl_<subset> and nll_<modality>_<subset> (the two parts).
  mvae/baseline_nll_image    -log-likelihood of the test images under independent per-pixel Gaussians fitted to
      `evals.mvae.baseline_train_examples` train images (the ELBO of the image must beat it to have learnt anything).
  mvae/baseline_nll_labels   log(number of label combinations): the labels are uniform and independent, so this is
      both the uniform model's NLL and the lower limit that -ELBO_labels can only approach.
  mvae/l2i_{shape,colour,both}_acc   labels -> image: z ~ q(z | labels), image = decoder mean; the CNN judge of
      mmjax/evals/judge.py (trained on real train images, as the "generation" evaluator's) predicts shape and
      colour of the generated image, scored against the requested labels;
  mvae/prior_{shape,colour,both}_acc  the unconditional baseline: z ~ p(z) = N(0, I), judged against the same
      requested labels; mvae/judge_real_*: the judge on the real test images (trust check); chance_*: 1/6, 1/8, 1/48;
  mvae/i2l_<attribute>_acc   image -> labels: argmax of the label decoder at the mean of q(z | image), with
      chance_<attribute> = 1 / classes.
Writes `<workdir>/mvae_generations.png`: real test images, joint reconstructions, two label-conditioned samples and
prior samples, captioned with the requested labels and the judge's reading of the first conditioned sample.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data import pipeline
from mmjax.errors import MmjaxError
from mmjax.evals import judge as judge_lib
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, needs_data, needs_method, predict_fn, setting
from mmjax.models.mvae import NUM_CLASSES
from mmjax.objectives import mvae as mvae_obj
from mmjax.registry import EVALUATORS

EVAL_KEYS["mvae"] = {"gen_seed": 0, "gen_images": 12, "judge_train_examples": 4000, "judge_steps": 400,
                     "elbo_samples": 4, "baseline_train_examples": 4000}


def pixel_gaussian_nll(train: np.ndarray, test: np.ndarray, min_std: float = 1e-3) -> float:
  """Mean over test images of -sum log N(x; mean_px, std_px) with per-pixel moments of `train` [N, ...] (nats)."""
  train = np.asarray(train, np.float64)
  mean, std = train.mean(0), np.maximum(train.std(0), min_std)
  z = (np.asarray(test, np.float64) - mean) / std
  lp = -0.5 * z * z - np.log(std) - 0.5 * math.log(2 * math.pi)
  return float(-lp.reshape(len(test), -1).sum(1).mean())


def _arrays(ctx, split: str, n: int) -> dict:
  cfg = ctx.config
  key = f"mvae:{cfg.data.to_json_best_effort()}:{split}:{n}"
  if key not in ctx.cache:
    ctx.cache[key] = pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, n, split=split)
  return ctx.cache[key]


def _batched(fn, inputs: dict, bs: int, *extra) -> dict:
  """Runs fn(chunk_dict, b, *extra) -> dict of [bs, ...] over fixed-size chunks (last padded), concatenated
  (chunks are NumPy: the `predict_fn`s place them on the mesh)."""
  n = len(next(iter(inputs.values())))
  outs = []
  for b, i in enumerate(range(0, n, bs)):
    chunk = {k: v[i:i + bs] for k, v in inputs.items()}
    m = len(next(iter(chunk.values())))
    if m < bs:
      chunk = {k: np.concatenate([v, np.repeat(v[-1:], bs - m, axis=0)]) for k, v in chunk.items()}
    out = jax.device_get(fn(chunk, b, *extra))
    outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _fns(ctx):
  """(elbo, generate) predict functions of ctx.model: (params, batch of [B, ...], rng) -> dict of [B, ...]."""
  model = ctx.model

  def elbo(params, batch, rng):
    return mvae_obj.elbo_terms(params, model, batch, rng, label_weight=1.0, beta=1.0)

  def generate(params, batch, rng):
    labels = {a: batch[a] for a in model.attributes}
    v = {"params": params}
    r1, r2, r3 = jax.random.split(rng, 3)
    mu, logvar = model.apply(v, None, labels, method="posterior")
    cond = [model.apply(v, mvae_obj.reparameterise(r, mu, logvar), method="decode_image") for r in (r1, r2)]
    prior = model.apply(v, jax.random.normal(r3, mu.shape), method="decode_image")
    mj, _ = model.apply(v, batch["image"], labels, method="posterior")
    mi, _ = model.apply(v, batch["image"], None, method="posterior")
    logits = model.apply(v, mi, method="decode_labels")
    out = {"cond": cond[0], "cond2": cond[1], "prior": prior, "recon": model.apply(v, mj, method="decode_image")}
    out.update({f"i2l_{a}": jnp.argmax(lg, -1) for a, lg in logits.items()})
    return out

  return predict_fn(ctx, "mvae_elbo", elbo), predict_fn(ctx, "mvae_generate", generate)


def check_mvae(cfg, model) -> None:
  needs_data("mvae", cfg, ("shapes",), "shapes scenes")
  needs_method("mvae", cfg, model, "encode_labels", "model.name='mvae'")


EVAL_CHECKS["mvae"] = check_mvae


@EVALUATORS.register("mvae")
def mvae_eval(params, ctx) -> dict[str, float]:
  from mmjax.evals import plots
  from mmjax.data import shapes as shapes_lib
  cfg, model = ctx.config, ctx.model
  check_mvae(cfg, model)
  arrays = _arrays(ctx, "test", int(cfg.evals.num_examples))
  keep = np.flatnonzero(np.asarray(arrays["count"]) == 1)
  if len(keep) == 0:
    raise MmjaxError("evaluator 'mvae' found no one-object test scenes; set data.min_shapes=1")
  keys = ("image", *model.attributes)
  batch = {k: np.asarray(arrays[k])[keep] for k in keys}
  bs = max(1, min(int(cfg.evals.batch_size), len(keep)))
  elbo_fn, gen_fn = _fns(ctx)
  base = jax.random.PRNGKey(int(setting(cfg, "mvae", "gen_seed")))
  results: dict[str, float] = {}

  # ELBOs (nats per example), averaged over `elbo_samples` estimates
  samples = max(1, int(setting(cfg, "mvae", "elbo_samples")))
  acc: dict[str, float] = {}
  for s in range(samples):
    t = _batched(lambda c, b: elbo_fn(params, c, jax.random.fold_in(jax.random.fold_in(base, s), b)), batch, bs)
    for k, v in t.items():
      acc[k] = acc.get(k, 0.0) + float(v.mean()) / samples
  for subset in mvae_obj.SUBSETS:
    results[f"nelbo_{subset}"] = -acc[f"elbo_{subset}"]
    results[f"kl_{subset}"] = acc[f"kl_{subset}"]
    for m in ("image", "labels"):
      if f"ll_{m}_{subset}" in acc:
        results[f"nll_{m}_{subset}"] = -acc[f"ll_{m}_{subset}"]
  train = _arrays(ctx, "train", int(setting(cfg, "mvae", "baseline_train_examples")))
  results["baseline_nll_image"] = pixel_gaussian_nll(np.asarray(train["image"]), batch["image"])
  results["baseline_nll_labels"] = float(sum(math.log(NUM_CLASSES[a]) for a in model.attributes))

  # cross-modal generation and inference
  gen = _batched(lambda c, b: gen_fn(params, c, jax.random.fold_in(jax.random.fold_in(base, 10_000), b)), batch, bs)
  judge, jparams = judge_lib.shapes_judge(ctx, "mvae")
  first = lambda y: y[:, 0] if y.ndim == 2 else y
  shape, colour = first(np.asarray(arrays["shape"])[keep]), first(np.asarray(arrays["colour"])[keep])
  preds = {}
  for name in ("cond", "prior", "real"):
    images = np.asarray(batch["image"]) if name == "real" else np.clip(gen[name], -1.0, 1.0)
    preds[name] = judge_lib.judge_predict(judge, jparams, images)
    scores = judge_lib.faithfulness(*preds[name], shape, colour)
    prefix = {"cond": "l2i", "prior": "prior", "real": "judge_real"}[name]
    results.update({f"{prefix}_{k}": v for k, v in scores.items()})
  results.update(chance_shape=1 / NUM_CLASSES["shape"], chance_colour=1 / NUM_CLASSES["colour"],
                 chance_both=1 / (NUM_CLASSES["shape"] * NUM_CLASSES["colour"]))
  for a in model.attributes:
    y = first(batch[a])
    results[f"i2l_{a}_acc"] = float(np.mean(gen[f"i2l_{a}"] == y))
    results[f"chance_{a}"] = 1 / NUM_CLASSES[a]
  results["num_examples"] = float(len(keep))

  if ctx.workdir is not None and jax.process_index() == 0:
    k = min(int(setting(cfg, "mvae", "gen_images")), len(keep))
    colours = list(shapes_lib.COLOURS)

    def label_text(j):
      parts = [f"{shapes_lib.SIZES[int(batch['size'][j].ravel()[0])]}" if "size" in batch else "",
               colours[int(colour[j])], shapes_lib.SHAPES[int(shape[j])],
               f"@{shapes_lib.POSITIONS[int(batch['position'][j].ravel()[0])]}" if "position" in batch else ""]
      return " ".join(p for p in parts if p)
    ps, pc = preds["cond"]
    caps = [f"{label_text(j)}\njudge: {colours[pc[j]]} {shapes_lib.SHAPES[ps[j]]}" for j in range(k)]
    plots.image_grid([batch["image"][:k], gen["recon"][:k], gen["cond"][:k], gen["cond2"][:k], gen["prior"][:k]],
                     ["real", "recon (joint)", "labels -> image", "labels -> image", "prior sample"],
                     os.path.join(ctx.workdir, "mvae_generations.png"), captions=caps,
                     title=f"MVAE: labels -> image judged both-correct {results['l2i_both_acc']:.2f} "
                           f"(prior samples {results['prior_both_acc']:.2f}, chance {results['chance_both']:.3f})")
  return {f"mvae/{k}": float(v) for k, v in results.items()}
