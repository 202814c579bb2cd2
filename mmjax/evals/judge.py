"""The shapes judge shared by the "generation" (evals/generation.py) and "mvae" (evals/generative_evals.py)
evaluators: a small CNN with a shape head and a colour head (`Judge`), trained on REAL one-object shapes train
scenes (`evals.<evaluator>.judge_train_examples` images, `evals.<evaluator>.judge_steps` Adam steps) once per run
(`shapes_judge`), that
reads the shape and colour of an image (`judge_predict`) to score generated images against requested labels
(`faithfulness`).
"""
from __future__ import annotations

import functools
import hashlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax import cpu_tuning
from mmjax.encoders.cnn import max_pool_2x2
from mmjax.errors import MmjaxError
from mmjax.evals.base import setting

N_SHAPES, N_COLOURS = 6, 8


class Judge(nn.Module):
  """images [B, H, W, 3] in [-1, 1] -> (shape logits [B, 6], colour logits [B, 8]); conv-GN-ReLU-pool stages."""
  channels: tuple[int, ...] = (32, 64, 128)

  @nn.compact
  def __call__(self, x):
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), padding="SAME", name=f"conv_{i}")(x)
      x = nn.relu(nn.GroupNorm(num_groups=8, name=f"gn_{i}")(x))
      x = max_pool_2x2(x)
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


@functools.lru_cache(maxsize=4)
def _predict_fn(judge):
  return jax.jit(lambda p, x: tuple(jnp.argmax(o, -1) for o in judge.apply({"params": p}, x)))


def judge_predict(judge, params, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """images [N, H, W, 3] -> (shape predictions [N], colour predictions [N]) int (compiled once per judge
  module and batch shape)."""
  fn = _predict_fn(judge)
  ps, pc = [], []
  for i in range(0, len(images), batch_size):
    s, c = fn(params, jnp.asarray(images[i:i + batch_size], jnp.float32))
    ps.append(np.asarray(s))
    pc.append(np.asarray(c))
  return np.concatenate(ps), np.concatenate(pc)


def faithfulness(pred_shape, pred_colour, shape, colour) -> dict[str, float]:
  """Predicted vs requested labels [N] -> {"shape_acc", "colour_acc", "both_acc"}."""
  s, c = np.asarray(pred_shape) == np.asarray(shape), np.asarray(pred_colour) == np.asarray(colour)
  return {"shape_acc": float(s.mean()), "colour_acc": float(c.mean()), "both_acc": float((s & c).mean())}


def one_object(arrays: dict) -> np.ndarray:
  """Indices [K] of the scenes with exactly one object (arrays["count"] [N])."""
  return np.flatnonzero(np.asarray(arrays["count"]) == 1)


def shapes_judge(ctx, evaluator: str = "generation"):
  """(judge, params) for the run's data config, trained on its real one-object train scenes once per run
  (kept in ctx.cache, shared by the evaluators that use it)."""
  from mmjax.data import pipeline
  cfg = ctx.config
  n, steps = int(setting(cfg, evaluator, "judge_train_examples")), int(setting(cfg, evaluator, "judge_steps"))
  key = "generation_judge:" + hashlib.sha1((cfg.data.to_json_best_effort() + f"{n}:{steps}").encode()).hexdigest()
  if key not in ctx.cache:
    arrays = pipeline.make_eval_arrays(cfg.data, ctx.tokenizer, n, split="train")
    keep = one_object(arrays)
    if len(keep) == 0:
      raise MmjaxError(f"evaluator {evaluator!r} found no one-object train scenes; set data.min_shapes=1")
    ctx.cache[key] = train_judge(arrays["image"][keep], arrays["shape"][keep, 0], arrays["colour"][keep, 0],
                                 steps=steps)
  return ctx.cache[key]
