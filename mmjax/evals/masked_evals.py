"""Evaluators for masked modeling (MAE, MLM, M3AE; objectives/masked.py).

"masked": the training objective's metrics on held-out data (the first `evals.num_examples` test examples, in
  full batches of `evals.batch_size`) with a fixed masking rng, so evaluations at different steps compare the
  same masks: "masked/loss", "masked/accuracy", "masked/image_loss", ...
"reconstruction": a PNG grid (original / masked / reconstruction, He et al. 2022 Fig. 2) of the first
  `evals.reconstruction.recon_images` test images, written to `<workdir>/reconstruction.png` (by process 0, when the
  evaluation has a workdir). Works for models with a `reconstruct` method taking the objective's batch keys (MAE,
  M3AE); M3AE columns are captioned with the original caption and the one with its masked tokens predicted.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from mmjax.data import pipeline
from mmjax.evals import plots
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, eval_arrays, needs_method, predict_fn, setting
from mmjax.objectives import get_objective
from mmjax.registry import EVALUATORS

EVAL_KEYS["reconstruction"] = {"recon_images": 8}   # images in <workdir>/reconstruction.png

EVAL_SEED = 0


def _test_batch(ctx) -> dict:
  arrays = eval_arrays(ctx)
  if hasattr(pipeline, "first_caption_only") and "txt_to_img" in arrays:
    arrays = pipeline.first_caption_only(arrays)
  return arrays


@EVALUATORS.register("masked")
def masked_eval(params, ctx) -> dict[str, float]:
  cfg, model = ctx.config, ctx.model
  objective = get_objective(cfg.objective)
  arrays = _test_batch(ctx)
  n = len(arrays["image"]) if "image" in arrays else len(arrays["tokens"])
  bs = min(int(cfg.evals.batch_size), n)
  fn = predict_fn(ctx, "masked", lambda p, b, r: objective.loss_fn(p, b, r, model=model, train=False)[1],
                  static=(str(cfg.objective),))
  totals: dict[str, float] = {}
  chunks = n // bs
  for i in range(chunks):
    batch = {k: arrays[k][i * bs:(i + 1) * bs] for k in objective.batch_keys}
    metrics = jax.device_get(fn(params, batch, jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), i)))
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v) / chunks
  return {f"masked/{k}": v for k, v in totals.items()}


def check_reconstruction(cfg, model) -> None:
  needs_method("reconstruction", cfg, model, "reconstruct", "a masked image model (mae, m3ae)")


EVAL_CHECKS["reconstruction"] = check_reconstruction


@EVALUATORS.register("reconstruction")
def reconstruction_eval(params, ctx) -> dict[str, float]:
  cfg, model = ctx.config, ctx.model
  check_reconstruction(cfg, model)
  objective = get_objective(cfg.objective)
  arrays = _test_batch(ctx)
  k = min(int(setting(cfg, "reconstruction", "recon_images")), len(arrays["image"]))
  inputs = [arrays[key][:k] for key in objective.batch_keys]
  # Jitted: run eagerly, the model's forward pass is hundreds of small compiled ops (~8 s of a test's 20).
  fn = predict_fn(ctx, "reconstruction", lambda p, x, rng: model.apply({"params": p}, *x, rngs={"mask": rng},
                                                                       method="reconstruct"))
  out = jax.device_get(fn(params, inputs, jax.random.PRNGKey(EVAL_SEED)))
  mask = np.asarray(out["mask"])
  results = {"reconstruction/mask_ratio": float(mask.mean())}
  if ctx.workdir is None or jax.process_index() != 0:
    return results
  captions = None
  if "text_pred" in out:
    original = ctx.tokenizer.decode(np.asarray(arrays["tokens"][:k]))
    predicted = ctx.tokenizer.decode(np.asarray(out["text_pred"]))
    printable = lambda t: "".join(ch if ch.isprintable() else "?" for ch in t)
    captions = [printable(a) + "\n-> " + printable(b) for a, b in zip(original, predicted)]
  norm = " (normalised patches shown with their true mean/std)" if getattr(model, "norm_pix_loss", False) else ""
  plots.image_grid([arrays["image"][:k], out["masked"], out["reconstruction"]],
                   ["original", "masked", "reconstruction"], os.path.join(ctx.workdir, "reconstruction.png"),
                   title=f"{cfg.model.name}: {mask.mean():.0%} of patches masked{norm}", captions=captions)
  return results
