"""Checkpoint manifests (sizes + sha256), `--mode verify`, fallback on silent corruption, and a full disk on save."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train import loop

CLIP = os.path.join(ROOT, "experiments", "clip_shapes.py")


def verify_cli(workdir):
  return subprocess.run([sys.executable, "-m", "mmjax.main", "--mode", "verify", "--workdir", str(workdir)],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = tmp_path_factory.mktemp("run")
  c = config_lib.load_experiment(CLIP, "runlocal")
  c.total_steps, c.checkpoint_every = 4, 2
  loop.Trainer(c, str(wd)).train()
  return wd, c


def _copy(src, dst):
  subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
  return dst


def test_every_checkpoint_has_a_correct_manifest(trained):
  wd, c = trained
  for step in (2, 4):
    path = wd / "checkpoints" / str(step)
    manifest = json.loads((path / ckpt_lib.MANIFEST).read_text())
    assert manifest["step"] == step
    assert manifest["config_sha256"] == hashlib.sha256(ckpt_lib.config_json(c).encode()).hexdigest()
    on_disk = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs
                     if f != ckpt_lib.MANIFEST)
    assert sorted(manifest["files"]) == on_disk
    for rel, want in manifest["files"].items():
      data = (path / rel).read_bytes()
      assert want == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  proc = verify_cli(wd)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count(": ok") == 2


def _largest_state_file(path):
  files = [os.path.join(d, f) for d, _, fs in os.walk(path / "state") for f in fs]
  return max(files, key=os.path.getsize)


def test_a_flipped_byte_is_found_and_restore_falls_back(trained, tmp_path, caplog):
  wd = _copy(trained[0], tmp_path / "wd")
  victim = _largest_state_file(wd / "checkpoints" / "4")
  with open(victim, "r+b") as f:           # same size, one byte changed: only the checksum can tell
    f.seek(os.path.getsize(victim) // 2)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0xFF]))
  proc = verify_cli(wd)
  assert proc.returncode == 1
  assert "checkpoints/2: ok" in proc.stdout and "checkpoints/4: DAMAGED" in proc.stdout
  assert "sha256 differs" in proc.stdout and os.path.basename(victim) in proc.stdout
  with caplog.at_level("WARNING"):
    trainer = loop.Trainer(trained[1], str(wd))
  assert trainer.start_step == 2
  assert any("checkpoints/4 is damaged" in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)


def test_truncated_and_missing_files_are_named(trained, tmp_path):
  wd = _copy(trained[0], tmp_path / "wd")
  victim = _largest_state_file(wd / "checkpoints" / "4")
  with open(victim, "r+b") as f:
    f.truncate(3)
  os.remove(wd / "checkpoints" / "2" / "meta" / "metadata")
  problems4 = ckpt_lib.verify_dir(str(wd / "checkpoints" / "4"))
  assert problems4 == [f"{victim} has 3 bytes, the manifest says {os.path.getsize(trained[0] / os.path.relpath(victim, wd))}"]
  problems2 = ckpt_lib.verify_dir(str(wd / "checkpoints" / "2"))
  assert problems2 == [f"{wd}/checkpoints/2/meta/metadata is missing"]
  assert verify_cli(wd).returncode == 1


def _no_space_dir(tmp_path, mib: int):
  """A size-capped tmpfs (needs root and mount); skips where the test machine does not allow it."""
  mnt = tmp_path / "small"
  mnt.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(mnt)], capture_output=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a size-capped tmpfs here ({proc.stderr.decode().strip()[:80]}); "
                "test_enospc_injected covers the same path")
  return mnt


def _check_full_disk_error(c: ckpt_lib.Checkpointer, err: str, need_mib: float):
  assert "no space left on device while saving checkpoint step 2" in err
  assert f"a checkpoint needs about {need_mib:.1f} MiB" in err and "MiB are free" in err
  assert "the last good checkpoint is step 1" in err
  assert os.listdir(c.directory) == ["1"]                         # the half-written step 2 is gone
  assert ckpt_lib.verify_dir(os.path.join(c.directory, "1")) == []


def test_enospc_on_a_real_full_disk_keeps_the_previous_checkpoint(tmp_path):
  mnt = _no_space_dir(tmp_path, 3)
  try:
    c = ckpt_lib.Checkpointer(str(mnt / "wd"))
    c.save(1, {"w": jnp.ones((1000,))}, {"i": 1}, {"config": "{}"})
    c.wait()
    big = {"w": jnp.asarray(np.random.default_rng(0).random(2_000_000, np.float32))}   # 7.6 MiB > 3 MiB
    with pytest.raises(MmjaxError) as e:
      c.save(2, big, {"i": 2}, {"config": "{}"})
      c.wait()
    _check_full_disk_error(c, str(e.value), 2_000_000 * 4 / 2**20)
    c.manager.close()
  finally:
    subprocess.run(["umount", "-l", str(mnt)])


def test_enospc_injected(tmp_path, monkeypatch):
  c = ckpt_lib.Checkpointer(str(tmp_path / "wd"), async_save=False)
  c.save(1, {"w": jnp.ones((1000,))}, {"i": 1}, {"config": "{}"})
  c.wait()
  real_save = c.manager.save

  def failing_save(step, *a, **k):        # writes part of the step, then the disk is full
    os.makedirs(os.path.join(c.directory, f"{step}.orbax-checkpoint-tmp-123", "state"))
    raise ValueError("RESOURCE_EXHAUSTED: Failed to write 4108288 bytes to file 4: No space left on device "
                     f"[os_error_code='{errno.ENOSPC}']")
  monkeypatch.setattr(c.manager, "save", failing_save)
  with pytest.raises(MmjaxError) as e:
    c.save(2, {"w": jnp.ones((262144,))}, {"i": 2}, {"config": "{}"})
  _check_full_disk_error(c, str(e.value), 1.0)
  monkeypatch.setattr(c.manager, "save", real_save)
  c.save(3, {"w": jnp.ones((10,))}, {"i": 3}, {"config": "{}"})      # space freed: saving works again
  c.close()
  assert sorted(os.listdir(c.directory)) == ["1", "3"]


def test_other_save_errors_are_not_reported_as_full_disk(tmp_path, monkeypatch):
  c = ckpt_lib.Checkpointer(str(tmp_path / "wd"), async_save=False)
  monkeypatch.setattr(c.manager, "save", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
  with pytest.raises(PermissionError):
    c.save(1, {"w": jnp.ones((4,))}, {}, {"config": "{}"})
