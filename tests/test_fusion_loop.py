"""Fusion classifiers in the one training loop: MOSI / AV-MNIST data, the "classification" evaluator, no tokenizer.

References written here: MOSI standardisation from the builder's raw rows (NumPy, float64); the first step's loss
as a NumPy softmax cross-entropy of `model.apply`'s logits on the first batch; accuracy and F1 from their
definitions (F1 = 2 TP / (2 TP + FP + FN) per class; binary = class 1; macro / weighted means); the AV-MNIST
images against MNIST pixels / 255 and against the subspace of the leading eigenvectors of their covariance.
All runs use generated fake raw files (data.fake_raw), never ../shared/data.
"""
from __future__ import annotations

import json
import os
import shutil

import chex
import jax
import numpy as np
import pytest

from conftest import ROOT, read_jsonl, run_driver
from mmjax import config as config_lib
from mmjax.data import fusion_data, image_text, pipeline
from mmjax.errors import MmjaxError
from mmjax.evals import classify_evals
from mmjax.evals import runner as eval_runner
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train import loop

MOSI = os.path.join(ROOT, "experiments", "mosi_fusion.py")
AVMNIST = os.path.join(ROOT, "experiments", "avmnist_fusion.py")


def mosi_config(method: str = "lmf", **overrides):
  """mosi_fusion runlocal without dropout (so that a step's loss is a function of params and batch alone)."""
  c = config_lib.load_experiment(MOSI, f"{method},runlocal")
  c.model.dropout = 0.0
  c.model.encoders = {m: dict(e, dropout=0.0) for m, e in c.model.encoders.items()}
  c.log_every = 1
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def flat_params(params) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def mosi_reference_arrays(data_cfg) -> dict[str, dict[str, np.ndarray]]:
  """The builder's rows, standardised with the train mean / std here (float64)."""
  b = image_text.prepared(data_cfg, "mosi")
  raw = {}
  for split in ("train", "test"):
    src = b.as_data_source(split)
    rows = [src[i] for i in range(len(src))]
    raw[split] = {m: np.stack([r[m] for r in rows]).astype(np.float64) for m in ("text", "audio", "video")}
    raw[split]["label"] = np.asarray([r["label"] for r in rows])
  for m in ("text", "audio", "video"):
    mu, sd = raw["train"][m].mean(0), raw["train"][m].std(0)
    sd[sd < 1e-6] = 1.0
    for split in raw:
      raw[split][m] = (raw[split][m] - mu) / sd
  return raw


def reference_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  pred, c = logits.argmax(-1), logits.shape[-1]
  f1, support = [], []
  for k in range(c):
    tp = np.sum((pred == k) & (labels == k))
    fp = np.sum((pred == k) & (labels != k))
    fn = np.sum((pred != k) & (labels == k))
    f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    support.append(np.sum(labels == k))
  seen = [k for k in range(c) if np.any(pred == k) or np.any(labels == k)]
  out = {"accuracy": np.mean(pred == labels), "f1_macro": np.mean([f1[k] for k in seen]),
         "f1_weighted": np.dot(f1, support) / np.sum(support)}
  out["f1"] = f1[1] if c == 2 else out["f1_macro"]
  return out


@pytest.fixture(scope="module")
def mosi_run(tmp_path_factory):
  """mosi_fusion:lmf,runlocal trained for 2 steps: (config, workdir, init params, trainer, eval results)."""
  wd = str(tmp_path_factory.mktemp("mosi"))
  config = mosi_config()
  trainer = loop.Trainer(config, wd)
  init = jax.device_get(trainer.state.params)
  results = trainer.train()
  return config, wd, init, trainer, results


def test_mosi_examples_are_the_standardised_builder_rows(mosi_run):
  config = mosi_run[0]
  ref = mosi_reference_arrays(config.data)
  assert not pipeline.has_text(config.data)
  for split in ("train", "test"):
    src = fusion_data.mosi_source(config.data, split)
    assert len(src) == len(ref[split]["label"])
    for i in (0, len(src) - 1):
      ex = src[i]
      chex.assert_shape([ex["text"], ex["audio"], ex["video"]], [(100,), (73,), (100,)])
      chex.assert_type([ex["text"], ex["audio"], ex["video"], ex["label"]], [np.float32] * 3 + [np.int32])
      for m in ("text", "audio", "video"):
        np.testing.assert_allclose(ex[m], ref[split][m][i], rtol=1e-5, atol=1e-5, err_msg=f"{split} {m} {i}")
      assert int(ex["label"]) == int(ref[split]["label"][i]) and int(ex["index"]) == i


def test_mosi_first_step_loss_is_the_cross_entropy_of_the_first_batch(mosi_run):
  config, wd, init, trainer, _ = mosi_run
  assert trainer.tokenizer is None and not os.path.exists(os.path.join(wd, "tokenizer.json"))
  batch = next(pipeline.make_train_iterator(config.data, None, global_batch_size=config.batch_size,
                                            seed=config.seed))
  ref = mosi_reference_arrays(config.data)["train"]
  idx = batch["index"]
  np.testing.assert_allclose(batch["text"], ref["text"][idx], rtol=1e-5, atol=1e-5)
  logits = np.asarray(trainer.model.apply({"params": init}, *[batch[m] for m in ("text", "audio", "video")]),
                      np.float64)
  log_softmax = logits - logits.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  expected = -np.mean(log_softmax[np.arange(len(idx)), ref["label"][idx]])
  rows = [r for r in read_jsonl(os.path.join(wd, "metrics.jsonl")) if "train/loss" in r]
  assert [r["step"] for r in rows] == [1, 2]
  np.testing.assert_allclose(rows[0]["train/loss"], expected, rtol=1e-5)
  assert rows[0]["train/accuracy"] == pytest.approx(np.mean(logits.argmax(1) == ref["label"][idx]))


def test_classification_eval_matches_numpy_scores(mosi_run):
  config, _, _, trainer, results = mosi_run
  n = config.evals.num_examples
  test = mosi_reference_arrays(config.data)["test"]
  params = jax.device_get(trainer.state.params)
  logits = np.asarray(trainer.model.apply({"params": params}, *[test[m][:n].astype(np.float32)
                                                              for m in ("text", "audio", "video")]))
  ref = reference_scores(logits, test["label"][:n])
  assert results["classification/num_examples"] == n
  for k, v in ref.items():
    assert results[f"classification/{k}"] == pytest.approx(v, abs=1e-9), k
  # the metrics row of the final evaluation holds the same numbers
  evals = [r for r in read_jsonl(os.path.join(mosi_run[1], "metrics.jsonl")) if "eval/classification/f1" in r]
  assert evals[-1]["eval/classification/f1"] == pytest.approx(ref["f1"])


def test_f1_scores_by_hand():
  pred, label = np.array([0, 0, 1, 2, 0, 0]), np.array([0, 0, 1, 1, 2, 1])
  out = classify_evals.f1_scores(pred, label, 3)
  assert out["accuracy"] == pytest.approx(3 / 6)
  # class 0: TP 2, FP 2, FN 0; class 1: TP 1, FP 0, FN 2; class 2: TP 0, FP 1, FN 1; supports 2, 3, 1
  f1 = np.array([4 / 6, 2 / 4, 0.0])
  assert out["f1_macro"] == pytest.approx(f1.mean()) and out["f1"] == out["f1_macro"]
  assert out["f1_weighted"] == pytest.approx(np.dot(f1, [2, 3, 1]) / 6)
  # binary: the F1 of class 1; a class absent from labels and predictions is left out of the macro mean
  out2 = classify_evals.f1_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 3)
  assert out2["f1"] == pytest.approx(out2["f1_macro"]) and out2["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
  out3 = classify_evals.f1_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 2)
  assert out3["f1"] == pytest.approx(2 / 3)


def test_resume_without_a_tokenizer_is_exact(mosi_run, tmp_path):
  """2 steps, checkpoint, resume to 4 == 4 uninterrupted steps; checkpoints store tokenizer null."""
  config, wd, *_ = mosi_run
  assert ckpt_lib.Checkpointer(wd).read_meta(2)["tokenizer"] is None
  resumed = str(tmp_path / "resumed")
  shutil.copytree(wd, resumed)
  four = mosi_config(total_steps=4, checkpoint_every=2)
  trainer = loop.Trainer(four, resumed)
  assert trainer.start_step == 2 and trainer.tokenizer is None
  trainer.train()
  whole = loop.Trainer(four, str(tmp_path / "whole"))
  whole.train()
  a, b = flat_params(jax.device_get(trainer.state.params)), flat_params(jax.device_get(whole.state.params))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  fp = lambda d: [r["train/batch_fingerprint"] for r in read_jsonl(os.path.join(d, "metrics.jsonl"))
                  if "train/loss" in r]
  assert fp(resumed) == fp(str(tmp_path / "whole"))


def test_evaluators_needing_a_tokenizer_fail_clearly(mosi_run):
  config, _, _, trainer, _ = mosi_run
  config = mosi_config(**{"evals.names": "clip"})
  with pytest.raises(MmjaxError, match=r"^evaluator 'clip' needs a tokenizer, but data.name='mosi' has no text"):
    eval_runner.run(config, trainer.state.params, model=trainer.model, tokenizer=None, mesh=trainer.mesh)


def test_data_set_and_evaluator_config_keys(tmp_path):
  c = config_lib.load_experiment(MOSI, "runlocal")
  c.data.image_pca_energy = 0.5     # an AV-MNIST key: not one of MOSI's
  with pytest.raises(MmjaxError, match=r"unknown config key 'data.image_pca_energy'"):
    config_lib.check_keys(c, loop.config_schema(c))
  c = config_lib.load_experiment(AVMNIST, "runlocal")
  config_lib.check_keys(c, loop.config_schema(c))
  c.evals.classification.splt = "dev"      # a typo inside an evaluator's namespace
  with pytest.raises(MmjaxError, match=r"unknown config key 'evals.classification.splt'"):
    config_lib.check_keys(c, loop.config_schema(c))
  # A flat evaluator setting (the old form) fails before anything is built, naming where it is given now; a
  # setting two evaluators have names both.
  c = config_lib.load_experiment(AVMNIST, "runlocal")
  c.evals.split = "dev"
  with pytest.raises(MmjaxError, match=r"^config key evals.split is a setting of evaluator 'classification' / "
                                       r"'vqa': give it as evals.classification.split or evals.vqa.split"):
    loop.Trainer(c, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_avmnist_data_and_loop(tmp_path):
  config = config_lib.load_experiment(AVMNIST, "early,runlocal")   # CNN encoders: test_experiments runs lmf
  config.data.image_pca_energy = 0.0
  b = image_text.prepared(config.data, "avmnist")
  arrays = fusion_data.avmnist_arrays(config.data, "train")
  raw = b.as_data_source("train")
  n = len(raw)
  chex.assert_shape([arrays["image"], arrays["audio"]], [(n, 28, 28, 1), (n, 13, 40, 1)])
  np.testing.assert_array_equal(arrays["image"], np.stack([raw[i]["image"] for i in range(n)]) / np.float32(255))
  np.testing.assert_array_equal(arrays["label"], [raw[i]["label"] for i in range(n)])
  assert abs(arrays["audio"].mean()) < 1e-4 and abs(arrays["audio"].std() - 1) < 1e-4    # standardised on train
  # PCA filter fitted on train: every filtered image lies in mean + span(leading eigenvectors of the covariance)
  config.data.image_pca_energy = 0.25
  filtered = fusion_data.avmnist_arrays(config.data, "test")["image"].reshape(-1, 784).astype(np.float64)
  x = np.stack([raw[i]["image"] for i in range(n)]).reshape(n, -1) / 255.0
  evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
  evals, evecs = evals[::-1], evecs[:, ::-1]
  k = int(np.searchsorted(np.cumsum(evals) / evals.sum(), 0.25) + 1)
  resid = (filtered - x.mean(0)) - (filtered - x.mean(0)) @ evecs[:, :k] @ evecs[:, :k].T
  assert np.abs(resid).max() < 1e-4 and np.abs(filtered - x.mean(0)).max() > 0.01
  # the loop: trains, checkpoints, evaluates on the dev split without a tokenizer, with a robustness curve
  config.evals.classification.split = "dev"
  config.evals.classification.robustness_modality = "audio"
  results = loop.Trainer(config, str(tmp_path)).train()
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  assert results["classification/num_examples"] == len(b.as_data_source("dev"))
  curve = json.load(open(tmp_path / "robustness_audio.json"))
  assert len(curve["accuracy"]) == 11 and curve["accuracy"][0] == results["classification/accuracy"]
  assert results["classification/robustness_audio_at_1.0"] == curve["accuracy"][-1]
  auc = sum((a + b) / 2 * 0.1 for a, b in zip(curve["accuracy"][:-1], curve["accuracy"][1:]))
  assert results["classification/robustness_audio_auc"] == pytest.approx(auc)
  assert (tmp_path / "robustness_audio.png").stat().st_size > 1000


@pytest.mark.slow
def test_mosi_one_vs_eight_devices(tmp_path):
  """The same 3 steps of mosi_fusion:tfn (with its dropout) on 1 and on 8 simulated devices: same losses and
  parameters."""
  common = ["--set", "total_steps=3", "--set", "batch_size=16", "--set", "checkpoint_every=100",
            "--set", "log_every=1"]
  out = {}
  for devices in (1, 8):
    run_driver("--config", f"{MOSI}:tfn,runlocal", "--workdir", str(tmp_path / f"d{devices}"),
               "--dump", str(tmp_path / f"d{devices}.npz"), *common, devices=devices)
    with np.load(tmp_path / f"d{devices}.npz") as z:
      out[devices] = {k: z[k] for k in z.files}
  for k in out[1]:
    np.testing.assert_allclose(out[1][k], out[8][k], rtol=1e-5, atol=1e-6, err_msg=k)
  losses = [[r["train/loss"] for r in read_jsonl(tmp_path / d / "metrics.jsonl") if "train/loss" in r]
            for d in ("d1", "d8")]
  assert len(losses[0]) == 3
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  assert json.load(open(tmp_path / "d8" / "config.json"))["data"]["name"] == "mosi"
