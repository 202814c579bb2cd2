"""Preemption: SIGTERM stops training at a step boundary with a committed checkpoint; the rerun resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, read_jsonl
from mmjax.train.preemption import EXIT_FORCED, EXIT_PREEMPTED, PreemptionGuard

CLIP = "experiments/clip_shapes.py:runlocal"
# Steps take a few ms on the CPU: enough of them that the run is still going when the signal arrives.
TOTAL = 2000


def main_cmd(workdir, *overrides: str) -> list[str]:
  return [sys.executable, "-m", "mmjax.main", "--config", CLIP, "--workdir", str(workdir),
          "--config.checkpoint_every=1000", "--config.log_every=1", *overrides]


def env() -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def train_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum('"train/loss"' in line for line in f)


def wait_for_steps(proc, workdir, n: int, timeout: float = 120) -> None:
  deadline = time.time() + timeout
  while train_steps(workdir) < n:
    assert proc.poll() is None, f"run exited {proc.returncode} early:\n{proc.communicate()[1][-3000:]}"
    assert time.time() < deadline, "run did not reach 3 steps"
    time.sleep(0.01)


def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(main_cmd(workdir, f"--config.total_steps={TOTAL}"), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_for_steps(proc, workdir, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == EXIT_PREEMPTED, f"{out[-2000:]}\n{err[-3000:]}"
  assert "preempted by SIGTERM at step" in err, err[-3000:]
  steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
  assert len(steps) == 1 and 3 <= steps[0] < TOTAL, os.listdir(workdir / "checkpoints")
  n = steps[0]
  assert f"at step {n};" in err and os.path.join("checkpoints", str(n)) in err
  logged = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  assert logged == list(range(1, n + 1))  # every step up to the checkpoint was flushed, none after

  rerun = subprocess.run(main_cmd(workdir, f"--config.total_steps={n + 2}"), cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=120)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resumed from" in rerun.stdout and f"checkpoints/{n}" in rerun.stdout
  logged = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  assert logged[-3:] == [n, n + 1, n + 2]


def test_guard_records_signal_and_restores_handlers():
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with PreemptionGuard() as guard:
    assert not guard.requested and guard.signal_name is None
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # the handler runs at the next bytecode boundary of the main thread
    assert guard.requested and guard.signal_name == "SIGTERM"
  assert {s: signal.getsignal(s) for s in before} == before


def test_second_signal_exits_at_once():
  code = ("import os, signal, time\n"
          "from mmjax.train.preemption import PreemptionGuard\n"
          "with PreemptionGuard() as g:\n"
          "  os.kill(os.getpid(), signal.SIGINT); time.sleep(0.01); assert g.requested\n"
          "  os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
          "print('not reached')\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == EXIT_FORCED, proc.stderr
  assert "not reached" not in proc.stdout and "exiting now" in proc.stderr


def test_sigterm_during_startup_or_compilation_stops_cleanly(tmp_path):
  """The signal arrives once the tokenizer is written: the Trainer is still starting up or compiling step 1.
  Either way the run exits with EXIT_PREEMPTED (no traceback, nothing half-written) and a rerun completes."""
  workdir = tmp_path / "run"
  proc = subprocess.Popen(main_cmd(workdir, "--config.total_steps=4"), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not (workdir / "tokenizer.json").exists():
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == EXIT_PREEMPTED, f"{out[-2000:]}\n{err[-3000:]}"
  assert "Traceback" not in err
  assert ("stopped by SIGTERM during start-up" in err) or ("preempted by SIGTERM at step 1;" in err), err[-2000:]
  rerun = subprocess.run(main_cmd(workdir, "--config.total_steps=4"), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=180)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r][-1] == 4


class _Hosts:
  """Fakes jax.process_count() = 2 and process_allgather (the other host's flag given per step), counting calls."""

  def __init__(self, monkeypatch, peer_stops_at=None):
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    self.calls, self.step, self.peer_stops_at = [], 0, peer_stops_at
    monkeypatch.setattr(jax, "process_count", lambda: 2)

    def allgather(flag):
      self.calls.append(self.step)
      peer = int(self.peer_stops_at is not None and self.step >= self.peer_stops_at)
      return np.asarray([[int(flag[0])], [peer]], np.int32)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)


def test_several_processes_agree_on_a_stop_every_n_steps_only(monkeypatch):
  """No collective between checks: 30 steps with preemption_check_every=10 all-gather 3 times; a stop signal that
  reached the other host at step 13 stops this one after step 20 (the next common check), recorded as a peer's."""
  from mmjax.train.preemption import stop_requested
  hosts = _Hosts(monkeypatch)
  guard = PreemptionGuard()
  for step in range(1, 31):
    hosts.step = step
    assert not stop_requested(guard, step, every=10)
  assert hosts.calls == [10, 20, 30]
  hosts = _Hosts(monkeypatch, peer_stops_at=13)
  stops = []
  for step in range(1, 31):
    hosts.step = step
    if stop_requested(guard, step, every=10):
      stops.append(step)
      break
  assert stops == [20] and guard.requested and "another process" in guard.signal_name


def test_one_process_checks_its_own_flag_each_step_without_a_collective(monkeypatch):
  from jax.experimental import multihost_utils
  from mmjax.train.preemption import stop_requested
  monkeypatch.setattr(multihost_utils, "process_allgather", lambda *_: (_ for _ in ()).throw(AssertionError))
  with PreemptionGuard() as guard:
    assert not stop_requested(guard, 3, every=10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop_requested(guard, 3, every=10)   # not a multiple of 10: one process never waits


def test_step_timer_leaves_out_checkpoint_and_eval_time():
  """steps_per_s = n / StepTimer.lap(): a window's wall time without the `excluded` work inside it (the loops wrap
  every checkpoint save and evaluation in `excluded`); each lap starts the next window."""
  from mmjax.train.metrics import StepTimer
  now = [100.0]
  timer = StepTimer(clock=lambda: now[0])
  now[0] += 2.0                      # two steps
  with timer.excluded():
    now[0] += 30.0                   # a checkpoint
  now[0] += 1.0                      # a third step
  assert timer.lap() == 3.0
  with timer.excluded():
    now[0] += 5.0                    # an evaluation right after a flush
  now[0] += 0.5
  assert timer.lap() == 0.5
