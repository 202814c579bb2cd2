"""The training loop: device-count invariance, exact resume, crash-safe checkpoints, errors."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from conftest import SHORT_CLIP_RUN, one_device_clip_run, read_jsonl, run_driver

CLIP = "experiments/clip_shapes.py:runlocal"


def load(path):
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=rtol, err_msg=k)


def test_one_vs_eight_devices(tmp_path, tmp_path_factory):
  """The same 3 steps on 1 and on 8 simulated devices (data=8, and data=4 x fsdp=2 with sharded kernels)."""
  common = SHORT_CLIP_RUN
  d1 = one_device_clip_run(tmp_path_factory)
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "d8"), "--dump", str(tmp_path / "d8.npz"), *common,
             devices=8)
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "f8"), "--dump", str(tmp_path / "f8.npz"), *common,
             "--set", "mesh={'data': 4, 'fsdp': 2}",
             "--set", "sharding_rules=((r'(mlp|attn).*kernel$', ('fsdp',)),)", devices=8)
  one = load(os.path.join(d1, "params.npz"))
  assert_trees_close(one, load(tmp_path / "d8.npz"))
  assert_trees_close(one, load(tmp_path / "f8.npz"))
  losses = [[r["train/loss"] for r in read_jsonl(os.path.join(d, "metrics.jsonl")) if "train/loss" in r]
            for d in (d1, tmp_path / "d8", tmp_path / "f8")]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  np.testing.assert_allclose(losses[0], losses[2], rtol=1e-5)


def fingerprints(workdir):
  rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "train/batch_fingerprint" in r]
  return {r["step"]: r["train/batch_fingerprint"] for r in rows}


def test_exact_resume_after_kill(tmp_path):
  """10 uninterrupted steps == 5 steps, SIGKILL, restart, 5 more: identical parameters and batches."""
  common = ["--set", "total_steps=10", "--set", "checkpoint_every=5", "--set", "log_every=1", "--set", "evals.names=''"]
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "a"), "--dump", str(tmp_path / "a.npz"), *common)
  killed = run_driver("--config", CLIP, "--workdir", str(tmp_path / "b"), *common, "--kill_after_save", "5",
                      check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["5"]
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "b"), "--dump", str(tmp_path / "b.npz"), *common)
  a, b = load(tmp_path / "a.npz"), load(tmp_path / "b.npz")
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  fa, fb = fingerprints(tmp_path / "a"), fingerprints(tmp_path / "b")
  assert sorted(fa) == list(range(1, 11)) and fa == fb
  assert len(set(fa.values())) == 10  # every step saw a different batch


def test_kill_during_checkpoint_commit_keeps_previous(tmp_path):
  """A crash while checkpoint 4 is being committed leaves checkpoint 2 intact; the restart resumes from it."""
  common = ["--set", "total_steps=6", "--set", "checkpoint_every=2", "--set", "log_every=1", "--set", "evals.names=''"]
  killed = run_driver("--config", CLIP, "--workdir", str(tmp_path / "b"), *common, "--kill_in_commit", "4",
                      check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  ckdir = tmp_path / "b" / "checkpoints"
  assert "2" in os.listdir(ckdir) and "4" not in os.listdir(ckdir)
  assert glob.glob(str(ckdir / "4.orbax-checkpoint-tmp*")), os.listdir(ckdir)  # the half-written save is there
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "b"), "--dump", str(tmp_path / "b.npz"), *common)
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "a"), "--dump", str(tmp_path / "a.npz"), *common)
  steps_after_restart = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")
                         if "train/loss" in r]
  assert steps_after_restart[-4:] == [3, 4, 5, 6]  # resumed at 2: steps 3.. ran again
  a, b = load(tmp_path / "a.npz"), load(tmp_path / "b.npz")
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert not glob.glob(str(ckdir / "*tmp*"))


def test_sharded_clip_objective_in_the_loop_matches_naive(tmp_path, tmp_path_factory):
  """objective=clip_sharded (shard_map, no device holds B x B logits) on 8 devices == clip on 1 device."""
  n = one_device_clip_run(tmp_path_factory)
  run_driver("--config", CLIP, "--workdir", str(tmp_path / "s"), "--dump", str(tmp_path / "s.npz"), *SHORT_CLIP_RUN,
             "--set", "objective='clip_sharded'", devices=8)
  assert_trees_close(load(os.path.join(n, "params.npz")), load(tmp_path / "s.npz"))
