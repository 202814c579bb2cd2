"""One-line errors and guards: unknown keys, bad workdir, non-finite loss, wrong batch shapes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.data import pipeline
from mmjax.errors import MmjaxError
from mmjax.train import loop

CLIP = os.path.join(ROOT, "experiments", "clip_shapes.py")


def tiny():
  return config_lib.load_experiment(CLIP, "runlocal")


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "mmjax.main", *args], capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)


def test_unknown_cli_key_is_one_line(tmp_path):
  proc = run_main("--config", CLIP, "--workdir", str(tmp_path), "--config.optim.lerning_rate=0.1")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "unknown config key 'optim.lerning_rate'" in lines[0] and "optim." in lines[0]
  assert not os.listdir(tmp_path)  # nothing written


def test_flat_evaluator_setting_on_the_cli_names_its_namespace(tmp_path):
  """Evaluator settings are given under the evaluator's name; the old flat form is one line saying where."""
  proc = run_main("--config", CLIP, "--workdir", str(tmp_path), "--config.evals.zero_shot_data=cifar10_test")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "config key evals.zero_shot_data is a setting of evaluator 'clip': give it as " \
         "evals.clip.zero_shot_data" in lines[0], lines[0]
  assert not os.listdir(tmp_path)


def test_missing_config_file_is_one_line(tmp_path):
  proc = run_main("--config", "experiments/nope.py", "--workdir", str(tmp_path))
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert "nope.py" in proc.stderr


def test_unknown_key_in_config_file():
  c = tiny()
  with c.unlocked():
    c.optim.lerning_rate = 0.1
  with pytest.raises(MmjaxError, match=r"unknown config key 'optim.lerning_rate'"):
    config_lib.check_keys(c)


def test_unwritable_workdir_fails_before_compute(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(MmjaxError, match="not writable"):
    loop.Trainer(tiny(), str(blocker / "run"))


def test_batch_not_divisible_by_devices_names_the_key(tmp_path):
  c = tiny()
  c.grad_accum_steps = 3
  with pytest.raises(MmjaxError, match="batch_size"):
    loop.Trainer(c, str(tmp_path))


def test_image_size_mismatch_is_reported(tmp_path):
  c = tiny()
  c.data.image_size = 48   # the model expects 32
  with pytest.raises(MmjaxError, match="image"):
    loop.Trainer(c, str(tmp_path)).train()


def test_batch_shape_change_mid_run():
  spec = loop.batch_spec({"image": np.zeros((8, 32, 32, 3), np.float32)})
  loop.check_batch({"image": np.zeros((8, 32, 32, 3), np.float32)}, spec, 3)
  with pytest.raises(MmjaxError, match=r"step 4: key 'image'"):
    loop.check_batch({"image": np.zeros((8, 16, 16, 3), np.float32)}, spec, 4)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  """A NaN batch at step 4: the run stops naming step 4; checkpoint 2 stays, nothing later is written."""
  make = pipeline.make_train_iterator

  class Poisoned:
    def __init__(self, it):
      self.it, self.n = it, 0

    def __next__(self):
      batch = next(self.it)
      self.n += 1
      if self.n == 4:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      return batch

    def get_state(self):
      return self.it.get_state()

    def set_state(self, s):
      self.it.set_state(s)

  monkeypatch.setattr(pipeline, "make_train_iterator", lambda *a, **k: Poisoned(make(*a, **k)))
  c = tiny()
  c.total_steps, c.checkpoint_every, c.log_every = 8, 2, 1
  with pytest.raises(MmjaxError, match=r"non-finite loss at step 4 .*last good checkpoint is step 2"):
    loop.Trainer(c, str(tmp_path)).train()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  """Checkpoint 4's arrays are truncated: the next start warns, naming it, and resumes from checkpoint 2."""
  c = tiny()
  c.total_steps, c.checkpoint_every = 4, 2
  loop.Trainer(c, str(tmp_path)).train()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  damaged = 0
  for root, _, files in os.walk(tmp_path / "checkpoints" / "4" / "state"):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(0)
      damaged += 1
  assert damaged
  with caplog.at_level("WARNING"):
    trainer = loop.Trainer(c, str(tmp_path))
  assert trainer.start_step == 2
  assert any("checkpoints/4 is damaged" in r.getMessage() for r in caplog.records)
