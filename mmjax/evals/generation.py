"""Evaluator "generation": faithfulness of a text-to-image model (mmjax.models.text_to_image) on shapes.

For the first `evals.num_examples` test captions, generates one image each (`generate`, jitted, Euler with
`evals.gen_steps` steps and classifier-free guidance `evals.gen_guidance`, PRNG key `evals.gen_seed` folded with the
batch index, so the evaluation is deterministic) and scores it with an independent judge: a small CNN with a shape
head and a colour head (`Judge`), trained inside the evaluator on REAL shapes train images (one-object scenes,
`evals.judge_train_examples` images, `evals.judge_steps` Adam steps; cached per process). Reported (scenes with one
object only):
  generation/shape_acc, colour_acc, both_acc    judge's prediction on the generated image = the caption's labels
  generation/judge_real_shape_acc, ..._colour_acc, ..._both_acc   the judge on the real test images (trust check)
  generation/chance_shape, chance_colour, chance_both             1/6, 1/8, 1/48
With `evals.clip_score_workdir` (a CLIP workdir of this loop, e.g. runs/demo of experiments/clip_shapes.py), also
the CLIP score (Hessel et al. 2021, "CLIPScore"; torchmetrics' convention): 100 * mean max(cos(E_I(image),
E_T(caption)), 0), the images resized (bilinear) to that CLIP's image size and the captions tokenized with its
tokenizer: generation/clip_score for the generated images, clip_score_real for the real test images (the ceiling
this CLIP gives) and clip_score_mismatched for real images with another scene's caption (the floor).
Writes `<workdir>/generations.png` (real test images over the generated ones, captioned with the prompts).
"""
from __future__ import annotations

import functools
import hashlib
import os

import flax.linen as nn
import jax

import jax.numpy as jnp
import numpy as np
import optax

from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.evals.base import EVAL_KEYS
from mmjax.registry import EVALUATORS

EVAL_KEYS["generation"] = {"gen_steps": 20, "gen_guidance": 3.0, "gen_seed": 0, "gen_images": 12,
                           "judge_train_examples": 4000, "judge_steps": 400, "clip_score_workdir": ""}

N_SHAPES, N_COLOURS = 6, 8


class Judge(nn.Module):
  """images [B, H, W, 3] in [-1, 1] -> (shape logits [B, 6], colour logits [B, 8]); conv-GN-ReLU-pool stages."""
  channels: tuple[int, ...] = (32, 64, 128)

  @nn.compact
  def __call__(self, x):
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), padding="SAME", name=f"conv_{i}")(x)
      x = nn.relu(nn.GroupNorm(num_groups=8, name=f"gn_{i}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)
    x = nn.relu(nn.Dense(128, name="fc")(x))
    return nn.Dense(N_SHAPES, name="shape")(x), nn.Dense(N_COLOURS, name="colour")(x)


def train_judge(images: np.ndarray, shape: np.ndarray, colour: np.ndarray, *, steps: int, batch_size: int = 128,
                lr: float = 2e-3, seed: int = 0):
  """Fits a Judge on images [N, H, W, 3] with int labels [N] -> (module, params)."""
  judge = Judge()
  rng = jax.random.PRNGKey(seed)
  params = cpu_tuning.init_jit(judge.init)(rng, jnp.asarray(images[:1]))["params"]   # jitted: eager, ~100 op-by-op compiles
  tx = optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1)))
  opt = jax.jit(tx.init)(params)

  @jax.jit
  def step(params, opt, x, ys, yc):
    def loss_fn(p):
      ls, lc = judge.apply({"params": p}, x)
      return (optax.softmax_cross_entropy_with_integer_labels(ls, ys).mean()
              + optax.softmax_cross_entropy_with_integer_labels(lc, yc).mean())
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  order = np.random.default_rng(seed)
  bs = min(batch_size, len(images))
  for _ in range(steps):
    idx = order.choice(len(images), bs, replace=False)
    params, opt, _ = step(params, opt, jnp.asarray(images[idx]), jnp.asarray(shape[idx]), jnp.asarray(colour[idx]))
  return judge, params


def judge_predict(judge, params, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """-> (shape predictions [N], colour predictions [N]) int."""
  fn = _judge_fn(judge)
  ps, pc = [], []
  for i in range(0, len(images), batch_size):
    s, c = fn(params, jnp.asarray(images[i:i + batch_size], jnp.float32))
    ps.append(np.asarray(s))
    pc.append(np.asarray(c))
  return np.concatenate(ps), np.concatenate(pc)


@functools.lru_cache(maxsize=4)
def _judge_fn(judge):
  return jax.jit(lambda p, x: tuple(jnp.argmax(o, -1) for o in judge.apply({"params": p}, x)))


def faithfulness(pred_shape, pred_colour, shape, colour) -> dict[str, float]:
  """Predicted vs requested labels [N] -> {"shape_acc", "colour_acc", "both_acc"}."""
  s, c = np.asarray(pred_shape) == np.asarray(shape), np.asarray(pred_colour) == np.asarray(colour)
  return {"shape_acc": float(s.mean()), "colour_acc": float(c.mean()), "both_acc": float((s & c).mean())}


def clip_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
  """image_emb, text_emb [N, E] (paired rows) -> 100 * mean_i max(cos(image_i, text_i), 0)."""
  a, b = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
  cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
  return float(100.0 * np.mean(np.maximum(cos, 0.0)))


def clip_scores(workdir: str, images: np.ndarray, real: np.ndarray, captions: list[str],
                batch_size: int = 128) -> dict[str, float]:
  """CLIP scores of generated `images` and `real` images [N, H, W, 3] in [-1, 1] against `captions`, with the
  CLIP trained in `workdir` (its newest checkpoint and tokenizer.json)."""
  from mmjax.data.tokenizer import Tokenizer
  from mmjax.train.teacher import load_clip_teacher, read_workdir_config
  path = os.path.join(workdir, "tokenizer.json")
  if not os.path.exists(path):
    raise MmjaxError(f"evals.clip_score_workdir={workdir!r} has no tokenizer.json; point it at a CLIP workdir")
  cfg = read_workdir_config(workdir)
  tokens = Tokenizer.load(path).encode(captions, int(cfg["data"]["context_length"]))
  size = int(cfg["model"]["vision"]["image_size"])
  clip = load_clip_teacher(workdir)
  fn = jax.jit(lambda x, t: clip({"image": jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "bilinear"),
                                  "tokens": t}))

  def embed(x):
    out = [fn(jnp.asarray(x[i:i + batch_size]), jnp.asarray(tokens[i:i + batch_size]))
           for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(o[0]) for o in out]), np.concatenate([np.asarray(o[1]) for o in out])

  zgen, ztxt = embed(images)
  zreal, _ = embed(real)
  return {"clip_score": clip_score(zgen, ztxt), "clip_score_real": clip_score(zreal, ztxt),
          "clip_score_mismatched": clip_score(zreal, np.roll(ztxt, 1, axis=0))}


def _single(arrays: dict) -> np.ndarray:
  return np.flatnonzero(np.asarray(arrays["count"]) == 1)


def _judge(ctx):
  """The cached (judge, params) for this data config: trained on real one-object train scenes."""
  from mmjax.data import pipeline
  cfg = ctx.config
  n, steps = int(cfg.evals.get("judge_train_examples", 4000)), int(cfg.evals.get("judge_steps", 400))
  key = "generation_judge:" + hashlib.sha1((cfg.data.to_json_best_effort() + f"{n}:{steps}").encode()).hexdigest()
  if key not in ctx.cache:
    arrays = pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, n, split="train")
    keep = _single(arrays)
    if len(keep) == 0:
      raise MmjaxError("evaluator 'generation' found no one-object train scenes; set data.min_shapes=1")
    ctx.cache[key] = train_judge(arrays["image"][keep], arrays["shape"][keep, 0], arrays["colour"][keep, 0],
                                 steps=steps)
  return ctx.cache[key]


@EVALUATORS.register("generation")
def generation_eval(params, ctx) -> dict[str, float]:
  from mmjax.evals import plots
  from mmjax.evals.base import eval_arrays
  from mmjax.models.text_to_image import generate
  cfg, model = ctx.config, ctx.model
  if str(cfg.data.name) != "shapes":
    raise MmjaxError(f"evaluator 'generation' scores shapes scenes; data.name={cfg.data.name!r} "
                     "(remove 'generation' from evals.names)")
  if not hasattr(model, "velocity"):
    raise MmjaxError(f"evaluator 'generation' needs model.name='text_to_image'; got {cfg.model.name!r}")
  steps, guidance = int(cfg.evals.gen_steps), float(cfg.evals.gen_guidance)
  arrays = eval_arrays(ctx)
  keep = _single(arrays)
  if len(keep) == 0:
    raise MmjaxError("evaluator 'generation' found no one-object test scenes; set data.min_shapes=1")
  tokens = np.asarray(arrays["tokens"])[keep]
  captions = [arrays["caption"][i] for i in keep]
  shape, colour = np.asarray(arrays["shape"])[keep, 0], np.asarray(arrays["colour"])[keep, 0]

  cache_key = ("generation_fn", steps, guidance)
  cached = ctx.cache.get(cache_key)
  if cached is None or cached[0] is not model:
    cached = ctx.cache[cache_key] = (model, jax.jit(functools.partial(generate, model, steps=steps,
                                                                      guidance=guidance)))
  gen_fn = cached[1]
  bs = min(int(cfg.evals.batch_size), len(tokens))
  base = jax.random.PRNGKey(int(cfg.evals.gen_seed))
  images = []
  for b, i in enumerate(range(0, len(tokens), bs)):
    chunk = tokens[i:i + bs]
    n = len(chunk)
    if n < bs:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
    images.append(np.asarray(gen_fn(params, jnp.asarray(chunk), jax.random.fold_in(base, b)))[:n])
  images = np.clip(np.concatenate(images), -1.0, 1.0)

  judge, jparams = _judge(ctx)
  results = {}
  ps, pc = judge_predict(judge, jparams, images)
  results.update(faithfulness(ps, pc, shape, colour))
  rs, rc = judge_predict(judge, jparams, np.asarray(arrays["image"])[keep])
  results.update({f"judge_real_{k}": v for k, v in faithfulness(rs, rc, shape, colour).items()})
  results.update(chance_shape=1 / N_SHAPES, chance_colour=1 / N_COLOURS, chance_both=1 / (N_SHAPES * N_COLOURS))
  if cfg.evals.get("clip_score_workdir", ""):
    results.update(clip_scores(str(cfg.evals.clip_score_workdir), images, np.asarray(arrays["image"])[keep],
                               captions))

  if ctx.workdir is not None and jax.process_index() == 0:
    from mmjax.data import shapes as shapes_lib
    k = min(int(cfg.evals.gen_images), len(images))
    names = lambda s, c: f"{list(shapes_lib.COLOURS)[c]} {shapes_lib.SHAPES[s]}"
    caps = [f"{captions[j]}\njudge: {names(ps[j], pc[j])}" for j in range(k)]
    plots.image_grid([np.asarray(arrays["image"])[keep][:k], images[:k]], ["real", "generated"],
                     os.path.join(ctx.workdir, "generations.png"), captions=caps,
                     title=f"text_to_image: {steps} Euler steps, guidance {guidance:g}; judge both-correct "
                           f"{results['both_acc']:.2f} (chance {1 / (N_SHAPES * N_COLOURS):.3f})")
  return {f"generation/{k}": float(v) for k, v in results.items()}
