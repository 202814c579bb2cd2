"""Composite objectives ("clip+caption", "clip+simclr", "clip+mae", "clip+mlm"; mmjax.objectives.composite) on
the multitask CLIP: the total is the weighted sum of the terms computed on their own; accumulation stays exact."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.models.mae import pixel_targets
from mmjax.objectives import get_objective
from mmjax.objectives.caption import target_weights
from mmjax.objectives.contrastive import clip_loss
from mmjax.objectives.masked import masked_pixel_loss, masked_token_loss, mlm_corrupt
from mmjax.objectives.simclr import nt_xent, random_views
from mmjax.train import optim
from mmjax.train.state import TrainState
from mmjax.train.step import make_train_step

TOWER = dict(width=16, depth=1, num_heads=2, mlp_ratio=2.0)
MODEL = dict(name="multitask_clip", embed_dim=16,
             vision=dict(image_size=16, patch_size=8, pool="cls", **TOWER),
             text=dict(vocab_size=50, context_length=8, **TOWER),
             heads=dict(caption=dict(depth=1, num_heads=2), simclr=dict(hidden=16, dim=8),
                        mae=dict(width=16, depth=1, num_heads=2, mask_ratio=0.5)))
MLM_MODEL = dict(MODEL, text=dict(MODEL["text"], causal=False), heads=dict(mlm={}))


def batch_of(b, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, 50, (b, 8)).astype(np.int32)
  tokens[:, 5], tokens[:, 6:] = 2, 0       # <eot> then padding: every row scores 5 caption targets
  return {"image": rng.standard_normal((b, 16, 16, 3)).astype(np.float32), "tokens": tokens}


def init(cfg, batch):
  model = build_model(ml_collections.ConfigDict(cfg))
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), batch["image"], batch["tokens"])["params"]


@pytest.mark.slow   # one compile of a 4-head model (~20 s on the shared 2 cores)
def test_composite_is_the_weighted_sum_of_its_terms():
  batch, rng = batch_of(8), jax.random.PRNGKey(5)
  model, params = init(MODEL, batch)
  weights = {"clip": 1.0, "caption": 2.0, "mae": 0.5, "simclr": 0.25}
  objective = get_objective("clip+caption+mae+simclr", weights)

  def both(params):   # the composite, and each term computed on its own (one compile)
    def apply(method, *args, **kw):
      return model.apply({"params": params}, *args, method=method, train=True, **kw)
    img, tok = batch["image"], batch["tokens"]
    zimg, ztxt, _ = apply("clip_outputs", img, tok)
    clip = clip_loss(zimg, ztxt, params["logit_scale"])[0]
    caption = masked_token_loss(apply("caption_logits", img, tok[:, :-1]), tok[:, 1:], target_weights(tok))[0]
    mask_rng = jax.random.split(jax.random.fold_in(rng, 2))[0]        # term 2; mae_loss splits (mask, dropout)
    pred, mask = apply("mae_outputs", img, rngs={"mask": mask_rng})
    mae = masked_pixel_loss(pred, pixel_targets(img, 8, True), mask)
    views, _, _ = jax.random.split(jax.random.fold_in(rng, 3), 3)      # term 3; simclr splits (views, d1, d2)
    v1, v2 = random_views(views, img)
    simclr = nt_xent(apply("simclr_embed", v1), apply("simclr_embed", v2))[0]
    terms = {"clip": clip, "caption": caption, "mae": mae, "simclr": simclr}
    return objective.loss_fn(params, batch, rng, model=model), terms

  (loss, metrics), terms = jax.jit(both)(params)
  for name, value in terms.items():
    np.testing.assert_allclose(metrics[f"{name}/loss"], value, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loss, sum(weights[n] * v for n, v in terms.items()), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=0)
  assert {"clip/i2t_acc", "caption/accuracy", "mae/mask_ratio", "simclr/accuracy"} <= set(metrics)


@pytest.mark.slow   # ~11 s on the shared 2 cores
def test_clip_plus_mlm_is_the_weighted_sum():
  batch, rng = batch_of(8), jax.random.PRNGKey(1)
  model, params = init(MLM_MODEL, batch)

  def both(params):
    zimg, ztxt, _ = model.apply({"params": params}, batch["image"], batch["tokens"], method="clip_outputs")
    clip = clip_loss(zimg, ztxt, params["logit_scale"])[0]
    inputs, selected = mlm_corrupt(jax.random.split(jax.random.fold_in(rng, 1))[0],
                                   jnp.asarray(batch["tokens"]), vocab_size=50)
    mlm = masked_token_loss(model.apply({"params": params}, inputs, method="mlm_logits"), batch["tokens"],
                            selected)[0]
    return get_objective("clip+mlm", {"mlm": 3.0}).loss_fn(params, batch, rng, model=model), clip, mlm

  (loss, metrics), clip, mlm = jax.jit(both)(params)
  np.testing.assert_allclose([metrics["clip/loss"], metrics["mlm/loss"], loss], [clip, mlm, clip + 3 * mlm],
                             rtol=1e-6, atol=1e-6)


def one_step(objective, model, params, batch, accum):
  cfg = config_lib.base_config().optim
  # Plain SGD at lr 1: the parameter change is the gradient itself, so comparing parameters compares gradients at
  # the test's tolerance. (Adam's first step, lr * g / |g|, would turn float rounding of a gradient that is zero in
  # exact arithmetic -- the attention key bias, softmax being shift-invariant -- into +-lr steps of either sign.)
  cfg.name, cfg.warmup_steps, cfg.schedule, cfg.lr = "sgd", 0, "constant", 1.0
  tx, schedule = optim.make_optimizer(cfg, 10)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1))
  return jax.jit(make_train_step(objective, model, tx, schedule, grad_accum_steps=accum))(state, batch)


@pytest.mark.slow   # two train-step compiles (~15-35 s on the shared 2 cores)
def test_accumulation_is_exact_for_clip_plus_caption():
  """2 micro-batches == one batch of 8: the contrastive term through its cached features, the caption term as
  the mean of the micro-batch losses (equal scored-token counts, so also the big-batch token mean)."""
  batch = batch_of(8)
  model, params = init(MODEL, batch)
  objective = get_objective("clip+caption", {"caption": 2.0})
  (s1, m1), (s2, m2) = (one_step(objective, model, params, batch, k) for k in (1, 2))
  for key in ("loss", "clip/loss", "caption/loss", "caption/accuracy", "grad_norm"):
    np.testing.assert_allclose(m1[key], m2[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(s1.params)[0], jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5, err_msg=str(path))
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s1.params, params)
  assert moved["caption_head"]["kernel"] > 0 and moved["vision"]["conv1"]["kernel"] > 0


def test_nt_xent_matches_numpy():
  rng = np.random.default_rng(0)
  z1, z2 = rng.standard_normal((2, 5, 4)).astype(np.float32)
  z = np.concatenate([z1, z2])
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  expected = []
  for i in range(10):
    sims = [z[i] @ z[j] / 0.1 for j in range(10) if j != i]
    pos = z[i] @ z[(i + 5) % 10] / 0.1
    expected.append(np.log(np.sum(np.exp(sims))) - pos)
  np.testing.assert_allclose(nt_xent(jnp.asarray(z1), jnp.asarray(z2), 0.1)[0], np.mean(expected), rtol=1e-5)


def test_views_differ_per_sample_and_between_views():
  img = jnp.asarray(np.random.default_rng(0).random((4, 16, 16, 3)), jnp.float32)
  v1, v2 = jax.jit(random_views)(jax.random.PRNGKey(0), img)
  assert v1.shape == v2.shape == img.shape
  assert not np.allclose(v1, v2) and not np.allclose(v1, img)


def test_config_errors_are_one_line():
  batch = batch_of(2)
  with pytest.raises(MmjaxError, match=r"objective_weights\.capton.*clip, caption"):
    get_objective("clip+caption", {"capton": 2.0})
  with pytest.raises(MmjaxError, match="objective"):
    get_objective("clip+clip")
  model = build_model(ml_collections.ConfigDict(dict(MODEL, heads=dict(simclr={}))))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch["image"], batch["tokens"])["params"]
  with pytest.raises(MmjaxError, match=r"model\.heads\.caption"):
    jax.eval_shape(lambda p: get_objective("clip+caption").loss_fn(p, batch, jax.random.PRNGKey(0), model=model),
                   params)
  with pytest.raises(MmjaxError, match=r"model\.text\.causal"):
    build_model(ml_collections.ConfigDict(dict(MODEL, heads=dict(mlm={}))))
  with pytest.raises(MmjaxError, match=r"model\.heads\.captoin"):
    build_model(ml_collections.ConfigDict(dict(MODEL, heads=dict(captoin={}))))


def test_coca_greedy_captions_follow_the_teacher_forced_argmax():
  """mmjax.decoding.caption_greedy on CoCa (multitask_clip + caption head, decode_step re-reading the prefix)
  gives the captions of a plain loop: feed the prefix to caption_logits (teacher forcing), append its argmax,
  pad after <eot>. With random weights the argmax is spread over the vocabulary, so a wrong position or a
  leak of the pads into the causal prefix would change the tokens."""
  from mmjax.decoding import caption_greedy
  cfg = dict(MODEL, heads=dict(caption=dict(depth=1, num_heads=2)))
  batch = batch_of(8, seed=3)
  model, params = init(cfg, batch)
  # An untrained head's argmax is <eot> at once; spread it: the output kernel scaled up (the argmax then varies
  # with the prefix and the image) and <eot> made rarer.
  head = params["caption_head"]
  params = dict(params, caption_head=dict(kernel=head["kernel"] * 30.0, bias=head["bias"].at[2].add(-2.5)))
  assert model.can_caption and not build_model(ml_collections.ConfigDict(dict(MODEL, heads={}))).can_caption
  got = np.asarray(jax.jit(lambda p, x: caption_greedy(model, p, x))(params, batch["image"]))
  logits_fn = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, method="caption_logits"))
  want = np.full((8, 8), 0, np.int32)
  want[:, 0] = 1                                     # <sot>
  done = np.zeros(8, bool)
  for t in range(7):
    nxt = np.argmax(np.asarray(logits_fn(params, batch["image"], want[:, :t + 1]))[:, t], axis=-1)
    nxt = np.where(done, 0, nxt)
    want[:, t + 1] = nxt
    done |= nxt == 2
  np.testing.assert_array_equal(got, want)
  assert len(set(want[:, 1:].ravel().tolist())) > 4 and 0 < done.sum() < len(done)   # varied; some rows end
