"""Evaluator "generation": faithfulness of a text-to-image model (mmjax.models.text_to_image) on shapes.

Settings under evals.generation (EVAL_KEYS below). For the first `evals.num_examples` test captions, generates one
image each (`generate`, jitted, Euler with `gen_steps` steps and classifier-free guidance `gen_guidance`, PRNG key
`gen_seed` folded with the batch index, so the evaluation is deterministic) and scores it with an independent
judge: a small CNN with a shape head and a colour head (`Judge`, evals/judge.py), trained inside the evaluator on
REAL shapes train images (one-object scenes, `judge_train_examples` images, `judge_steps` Adam steps; once per
run). Reported (scenes with one object only):
  generation/shape_acc, colour_acc, both_acc    judge's prediction on the generated image = the caption's labels
  generation/judge_real_shape_acc, ..._colour_acc, ..._both_acc   the judge on the real test images (trust check)
  generation/chance_shape, chance_colour, chance_both             1/6, 1/8, 1/48
With `evals.generation.clip_score_workdir` (a CLIP workdir of this loop, e.g. runs/demo of clip_shapes.py), also
the CLIP score (Hessel et al. 2021, "CLIPScore"; torchmetrics' convention): 100 * mean max(cos(E_I(image),
E_T(caption)), 0), the images resized (bilinear) to that CLIP's image size and the captions tokenized with its
tokenizer: generation/clip_score for the generated images, clip_score_real for the real test images (the ceiling
this CLIP gives) and clip_score_mismatched for real images with another scene's caption (the floor); that CLIP is
loaded and compiled once per run (`clip_judge`; re-read only when its workdir gets a new checkpoint).
Writes `<workdir>/generations.png` (real test images over the generated ones, captioned with the prompts).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS, needs_data, needs_method, predict_fn, setting
from mmjax.evals.judge import (N_COLOURS, N_SHAPES, Judge, faithfulness, judge_predict,  # noqa: F401  (API)
                               one_object, shapes_judge, train_judge)
from mmjax.registry import EVALUATORS

EVAL_KEYS["generation"] = {"gen_steps": 20, "gen_guidance": 3.0, "gen_seed": 0, "gen_images": 12,
                           "judge_train_examples": 4000, "judge_steps": 400, "clip_score_workdir": ""}


def clip_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
  """image_emb, text_emb [N, E] (paired rows) -> 100 * mean_i max(cos(image_i, text_i), 0)."""
  a, b = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
  cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(100.0 * np.mean(np.maximum(cos, 0.0)))


def clip_judge(workdir: str, cache: dict | None = None):
  """(tokenizer, context_length, fn) of the CLIP trained in `workdir` (its newest checkpoint and tokenizer.json):
  fn(images [B, H, W, 3] in [-1, 1], tokens int [B, L]) -> (image emb [B, E], text emb [B, E]), jitted, the images
  resized (bilinear) to that CLIP's image size. Kept in `cache` (ctx.cache: once per run) until the workdir's
  checkpoints change."""
  from mmjax.data.tokenizer import Tokenizer
  from mmjax.train.teacher import load_clip_teacher, read_workdir_config
  path = os.path.join(workdir, "tokenizer.json")
  if not os.path.exists(path):
    raise MmjaxError(f"evals.generation.clip_score_workdir={workdir!r} has no tokenizer.json; point it at a CLIP "
                     f"workdir")
  ckpts = os.path.join(workdir, "checkpoints")
  stamp = tuple(sorted(os.listdir(ckpts))) if os.path.isdir(ckpts) else ()
  key = ("generation_clip_judge", os.path.abspath(workdir))
  cache = {} if cache is None else cache
  if key not in cache or cache[key][0] != stamp:
    cfg = read_workdir_config(workdir)
    size = int(cfg["model"]["vision"]["image_size"])
    clip = load_clip_teacher(workdir)
    fn = jax.jit(lambda x, t: clip({"image": jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "bilinear"),
                                    "tokens": t}))
    cache[key] = (stamp, (Tokenizer.load(path), int(cfg["data"]["context_length"]), fn))
  return cache[key][1]


def clip_scores(workdir: str, images: np.ndarray, real: np.ndarray, captions: list[str],
                batch_size: int = 128, cache: dict | None = None) -> dict[str, float]:
  """CLIP scores of generated `images` and `real` images [N, H, W, 3] in [-1, 1] against `captions`, with the
  CLIP trained in `workdir` (`clip_judge`, kept in `cache`)."""
  tokenizer, context_length, fn = clip_judge(workdir, cache)
  tokens = tokenizer.encode(captions, context_length)

  def embed(x):
    out = [fn(jnp.asarray(x[i:i + batch_size]), jnp.asarray(tokens[i:i + batch_size]))
           for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(o[0]) for o in out]), np.concatenate([np.asarray(o[1]) for o in out])

  zgen, ztxt = embed(images)
  zreal, _ = embed(real)
  return {"clip_score": clip_score(zgen, ztxt), "clip_score_real": clip_score(zreal, ztxt),
          "clip_score_mismatched": clip_score(zreal, np.roll(ztxt, 1, axis=0))}


def check_generation(cfg, model) -> None:
  needs_data("generation", cfg, ("shapes",), "shapes scenes")
  needs_method("generation", cfg, model, "velocity", "model.name='text_to_image'")


EVAL_CHECKS["generation"] = check_generation


@EVALUATORS.register("generation")
def generation_eval(params, ctx) -> dict[str, float]:
  from mmjax.evals import plots
  from mmjax.evals.base import eval_arrays
  from mmjax.models.text_to_image import generate
  cfg, model = ctx.config, ctx.model
  check_generation(cfg, model)
  steps, guidance = int(setting(cfg, "generation", "gen_steps")), float(setting(cfg, "generation", "gen_guidance"))
  arrays = eval_arrays(ctx)
  keep = one_object(arrays)
  if len(keep) == 0:
    raise MmjaxError("evaluator 'generation' found no one-object test scenes; set data.min_shapes=1")
  tokens = np.asarray(arrays["tokens"])[keep]
  captions = [arrays["caption"][i] for i in keep]
  shape, colour = np.asarray(arrays["shape"])[keep, 0], np.asarray(arrays["colour"])[keep, 0]

  gen_fn = predict_fn(ctx, "generation", functools.partial(generate, model, steps=steps, guidance=guidance),
                      static=(steps, guidance))
  bs = min(int(cfg.evals.batch_size), len(tokens))
  base = jax.random.PRNGKey(int(setting(cfg, "generation", "gen_seed")))
  images = []
  for b, i in enumerate(range(0, len(tokens), bs)):
    chunk = tokens[i:i + bs]
    n = len(chunk)
    if n < bs:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
    images.append(np.asarray(gen_fn(params, chunk, jax.random.fold_in(base, b)))[:n])
  images = np.clip(np.concatenate(images), -1.0, 1.0)

  judge, jparams = shapes_judge(ctx)
  results = {}
  ps, pc = judge_predict(judge, jparams, images)
  results.update(faithfulness(ps, pc, shape, colour))
  rs, rc = judge_predict(judge, jparams, np.asarray(arrays["image"])[keep])
  results.update({f"judge_real_{k}": v for k, v in faithfulness(rs, rc, shape, colour).items()})
  results.update(chance_shape=1 / N_SHAPES, chance_colour=1 / N_COLOURS, chance_both=1 / (N_SHAPES * N_COLOURS))
  if setting(cfg, "generation", "clip_score_workdir"):
    results.update(clip_scores(str(setting(cfg, "generation", "clip_score_workdir")), images,
                               np.asarray(arrays["image"])[keep], captions, cache=ctx.cache))

  if ctx.workdir is not None and jax.process_index() == 0:
    from mmjax.data import shapes as shapes_lib
    k = min(int(setting(cfg, "generation", "gen_images")), len(images))
    names = lambda s, c: f"{list(shapes_lib.COLOURS)[c]} {shapes_lib.SHAPES[s]}"
    caps = [f"{captions[j]}\njudge: {names(ps[j], pc[j])}" for j in range(k)]
    plots.image_grid([np.asarray(arrays["image"])[keep][:k], images[:k]], ["real", "generated"],
                     os.path.join(ctx.workdir, "generations.png"), captions=caps,
                     title=f"text_to_image: {steps} Euler steps, guidance {guidance:g}; judge both-correct "
                           f"{results['both_acc']:.2f} (chance {1 / (N_SHAPES * N_COLOURS):.3f})")
  return {f"generation/{k}": float(v) for k, v in results.items()}
