"""Evaluators compile once per run (mmjax/evals/base.py `predict_fn`): a periodic evaluation (`eval_every`) compiles
nothing new after its first call, counted with JAX's backend-compile monitoring event; the numbers stay those of a
freshly jitted, unbatched reference, on one device and on a sharded 8-device mesh; the generation evaluator's CLIP
judge is loaded and compiled once."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax._src import dispatch

from conftest import ROOT, subprocess_env
from mmjax import config as config_lib
from mmjax.data import pipeline
from mmjax.evals import generation, linear_probe
from mmjax.evals.zero_shot import build_classifier, shapes_tasks
from mmjax.train import loop

CLIP = os.path.join(ROOT, "experiments", "clip_shapes.py")


@contextlib.contextmanager
def count_compiles():
  """Yields a function returning the XLA backend compiles (executables built or read from a persistent cache)
  since entry."""
  n = [0]

  def listener(event, duration, **kwargs):
    n[0] += event == dispatch.BACKEND_COMPILE_EVENT

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield lambda: n[0]
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
  """clip_shapes:runlocal, 3 steps with eval_every=1 and evaluators "clip,linear_probe": (trainer, workdir,
  [(compiles, results) of each evaluation])."""
  wd = str(tmp_path_factory.mktemp("periodic"))
  cfg = config_lib.load_experiment(CLIP, "runlocal")
  cfg.total_steps, cfg.eval_every, cfg.checkpoint_every = 3, 1, 3
  cfg.evals.names = "clip,linear_probe"
  record = []
  run = loop.eval_runner.run

  def counted(*args, **kwargs):
    with count_compiles() as n:
      out = run(*args, **kwargs)
    record.append((n(), out))
    return out

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(loop.eval_runner, "run", counted)
    trainer = loop.Trainer(cfg, wd)
    trainer.train()
  return trainer, wd, record


def test_periodic_eval_compiles_only_in_its_first_call(periodic_run):
  _, _, record = periodic_run
  compiles = [n for n, _ in record]
  assert len(compiles) == 3
  assert compiles[0] > 0                         # the counter sees compiles (the first evaluation has to)
  assert compiles[1:] == [0, 0], compiles        # old code: [74, 4, 4] (4 jax.jit(lambda) per call)


def reference_retrieval(img: np.ndarray, txt: np.ndarray) -> dict[str, float]:
  """Recall@K in percent for one caption per image (caption j <-> image j), ties pessimistic, in NumPy."""
  sim = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T       # [N images, N captions]
  own = np.diag(sim)
  off = ~np.eye(len(sim), dtype=bool)
  i2t = np.sum((sim >= own[:, None]) & off, axis=1)                         # other captions >= own, per image
  t2i = np.sum((sim >= own[None, :]) & off, axis=0)                         # other images >= own, per caption
  out = {f"{d}_R@{k}": 100.0 * np.mean(r < k) for d, r in (("i2t", i2t), ("t2i", t2i)) for k in (1, 5, 10)}
  out["mean_R"] = float(np.mean(list(out.values())))
  return out


def test_eval_numbers_match_a_fresh_unbatched_reference(periodic_run):
  """The last evaluation (on the final params) vs the old per-call semantics: a fresh jax.jit of the model over
  all examples at once (no cache, no padded batches, no mesh) and NumPy metrics."""
  trainer, _, record = periodic_run
  cfg, model, tok = trainer.config, trainer.model, trainer.tokenizer
  results = record[-1][1]
  params = jax.device_get(trainer.state.params)
  arrays = pipeline.make_eval_arrays(cfg.data, tok, cfg.evals.num_examples, split="test")
  encode = lambda method, x: np.asarray(jax.jit(lambda p, y: model.apply({"params": p}, y, method=method))(params, x))
  img, txt = encode("encode_image", arrays["image"]), encode("encode_text", arrays["tokens"])
  for k, v in reference_retrieval(img, txt).items():
    assert results[f"retrieval/{k}"] == pytest.approx(v, abs=1e-9), k
  labels = {"shape": arrays["shape"][:, 0], "colour": arrays["colour"][:, 0]}
  for task, (classnames, label_fn, templates) in shapes_tasks().items():
    classifier = build_classifier(lambda t: encode("encode_text", np.asarray(t)),
                                  lambda texts: tok.encode(list(texts), arrays["tokens"].shape[1]),
                                  classnames, templates)
    top1 = 100.0 * np.mean(np.argmax(img @ np.asarray(classifier).T, axis=1) == np.asarray(label_fn(arrays)))
    assert results[f"zero_shot/{task}"] == pytest.approx(top1, abs=1e-9), task
  train, test = (pipeline.make_eval_arrays(cfg.data, tok, n, split=s)
                 for n, s in ((cfg.evals.linear_probe.probe_train_examples, "train"), (cfg.evals.num_examples, "test")))
  ftr, fte = encode("encode_image", train["image"]), encode("encode_image", test["image"])
  for task in ("shape", "colour"):
    probe = linear_probe.linear_probe(ftr, train[task][:, 0], fte, test[task][:, 0])
    assert results[f"linear_probe/{task}"] == pytest.approx(100.0 * probe["accuracy"], abs=1e-9), task


SHARDED = r"""
import json, sys
import jax, numpy as np
from mmjax import config as config_lib
from mmjax.evals import base, runner
from mmjax.train import loop
cfg = config_lib.load_experiment(sys.argv[1], "runlocal")
cfg.mesh = {"data": 4, "fsdp": 2}
cfg.sharding_rules = ((r"(mlp|attn).*kernel$", ("fsdp",)),)
cfg.print_sharding = False
trainer = loop.Trainer(cfg, sys.argv[2])
params, host = trainer.state.params, jax.device_get(trainer.state.params)
sharded = [p for p in jax.tree.leaves(params) if not p.sharding.is_fully_replicated]
images = np.asarray(np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)), np.float32)
ctx = base.EvalContext(config=cfg, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh, cache={})
fn = base.apply_fn(ctx, "encode_image")
emb = base.batched_apply(fn, params, images, 8)
ref = jax.jit(lambda p, x: trainer.model.apply({"params": p}, x, method="encode_image"))(host, images)
out = {"sharded_params": len(sharded), "in_spec": str(base.shard_batch(images[:8], trainer.mesh).sharding.spec),
       "odd_spec": str(base.shard_batch(images[:6], trainer.mesh).sharding.spec),
       "out_spec": str(fn(params, images[:8]).sharding.spec),
       "emb_diff": float(np.abs(np.asarray(emb) - np.asarray(ref)).max()),
       "mesh": runner.run(cfg, params, model=trainer.model, tokenizer=trainer.tokenizer, mesh=trainer.mesh),
       "plain": runner.run(cfg, host, model=trainer.model, tokenizer=trainer.tokenizer, mesh=None)}
print("RESULT " + json.dumps(out))
"""


def test_sharded_eval_equals_the_one_device_eval(tmp_path):
  """On 8 devices (data 4 x fsdp 2, kernels sharded over fsdp) the clip evaluator's batches are split over the mesh
  and its outputs replicated; embeddings and results equal a plain jit on host params."""
  env = subprocess_env(8)
  proc = subprocess.run([sys.executable, "-c", SHARDED, CLIP, str(tmp_path / "wd")], env=env, capture_output=True,
                        text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-5000:]
  out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
  assert out["sharded_params"] > 0
  assert out["in_spec"] == "P(('data', 'fsdp'),)"   # 8 examples: one per device
  assert out["odd_spec"] == out["out_spec"] == "P()"   # 6 do not divide: replicated
  assert out["emb_diff"] < 1e-5
  assert out["mesh"].keys() == out["plain"].keys() and out["mesh"]
  for k, v in out["plain"].items():
    assert out["mesh"][k] == pytest.approx(v, abs=1e-9), k


def test_clip_judge_is_loaded_and_compiled_once(periodic_run, monkeypatch):
  """generation.clip_scores with a run's cache: the CLIP of the workdir is read once, compiled once, and scores
  as a freshly loaded, freshly jitted one does."""
  from mmjax.train import teacher
  trainer, wd, _ = periodic_run
  cfg = trainer.config
  arrays = pipeline.make_eval_arrays(cfg.data, trainer.tokenizer, 8, split="test")
  gen = np.clip(arrays["image"][::-1] + 0.1, -1, 1)              # stand-ins for generated images
  loads, real = [], teacher.load_clip_teacher
  monkeypatch.setattr(teacher, "load_clip_teacher", lambda *a, **k: loads.append(a) or real(*a, **k))
  cache, calls = {}, []
  for _ in range(3):
    with count_compiles() as n:
      scores = generation.clip_scores(wd, gen, arrays["image"], arrays["caption"], cache=cache)
    calls.append((n(), scores))
  assert len(loads) == 1
  assert calls[0][0] > 0 and [n for n, _ in calls[1:]] == [0, 0]
  assert calls[1][1] == calls[0][1] == calls[2][1]
  clip = real(wd)
  embed = jax.jit(lambda x, t: clip({"image": x, "tokens": t}))    # runlocal CLIP: 32 px images, no resize
  tokens = trainer.tokenizer.encode(arrays["caption"], cfg.data.context_length)
  zgen, ztxt = (np.asarray(z) for z in embed(gen, tokens))
  zreal, _ = (np.asarray(z) for z in embed(arrays["image"], tokens))
  score = lambda a, b: 100 * np.mean(np.maximum(np.sum(a * b, -1) / np.linalg.norm(a, axis=-1)
                                                / np.linalg.norm(b, axis=-1), 0))
  ref = {"clip_score": score(zgen, ztxt), "clip_score_real": score(zreal, ztxt),
         "clip_score_mismatched": score(zreal, np.roll(ztxt, 1, axis=0))}
  assert calls[0][1] == pytest.approx(ref, abs=1e-4)
