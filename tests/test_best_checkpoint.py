"""Best-checkpoint selection (config.select_best, mmjax/train/best.py) in the one loop body: the step where an
evaluation result peaks is checkpointed and kept beyond keep_checkpoints, recorded in best.json, survives a
kill + resume, and `Trainer.evaluate(best=True)` scores it.

The metric is a fake evaluator ("peak_test") whose value is a fixed function of the step being evaluated (the
step is read off `Trainer.run_evals`), so the right step is known in advance.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from conftest import ROOT, read_jsonl
from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.registry import EVALUATORS
from mmjax.train import checkpoint as ckpt_lib
from mmjax.train import loop

VALUES = {2: 0.1, 4: 0.9, 6: 0.5, 8: 0.3}     # evaluations every 2 steps: the max is at 4, the min at 2
_STEP = [None]


@EVALUATORS.register("peak_test")
def _peak(params, ctx):
  return {"peak/value": VALUES.get(_STEP[0], 0.0)}


@pytest.fixture(autouse=True)
def _track_step(monkeypatch):
  run_evals = loop.Trainer.run_evals

  def tracking(self, params, step, *a, **kw):
    _STEP[0] = step
    return run_evals(self, params, step, *a, **kw)
  monkeypatch.setattr(loop.Trainer, "run_evals", tracking)


def _config(**overrides):
  c = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_shapes.py"), "runlocal")
  c.update(dict(total_steps=8, eval_every=2, checkpoint_every=8, keep_checkpoints=1, log_every=1,
                progress_bar=False, print_sharding=False, select_best="eval/peak/value"))
  c.evals.names = "peak_test"
  c.update(overrides)
  return c


class _Killed(BaseException):
  """Stands for a SIGKILL: nothing after it runs (no best.json update, no close)."""


def _steps(workdir) -> list[int]:
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def _best(workdir) -> dict:
  with open(os.path.join(workdir, "best.json")) as f:
    return json.load(f)


# checkpoint_every 8: the best steps are saved for the selection; 2: they are the loop's own checkpoints
@pytest.mark.parametrize("mode,step,every", [("max", 4, 8), ("min", 2, 8), ("max", 4, 2)])
def test_best_step_is_kept_beyond_keep_checkpoints_and_evaluated(tmp_path, mode, step, every):
  wd = str(tmp_path / "run")
  trainer = loop.Trainer(_config(select_best_mode=mode, checkpoint_every=every), wd)
  trainer.train()
  assert _steps(wd) == [step, 8]                       # keep_checkpoints=1 keeps the latest, and the best
  assert _best(wd) == {"step": step, "metric": "eval/peak/value", "value": VALUES[step], "mode": mode,
                       "evaluated": 8}
  evals = [r["step"] for r in read_jsonl(os.path.join(wd, "metrics.jsonl")) if "eval/peak/value" in r]
  assert evals == [2, 4, 6, 8]
  again = loop.Trainer(_config(select_best_mode=mode, checkpoint_every=every), wd)
  assert again.evaluate(best=True) == {"peak/value": VALUES[step]} and _STEP[0] == step
  kept = ckpt_lib.Checkpointer(wd).restore(again._abstract, step=step)[1]
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(kept.params),
                                                      jax.tree.leaves(again.state.params)))  # not the latest
  assert again.evaluate()["peak/value"] == VALUES[8] and _STEP[0] == 8


def test_kill_and_resume_keep_the_best_record(tmp_path, monkeypatch):
  """Checkpoints every 3 steps, evaluations every 2; killed right after checkpoint 6 commits (before the
  evaluation at 6): the resumed run keeps step 4 as the best (through the saves of 6 and 8 with
  keep_checkpoints=1), runs the missed evaluation at 6 first, and ends as the uninterrupted run."""
  ref = str(tmp_path / "ref")
  loop.Trainer(_config(checkpoint_every=3), ref).train()
  assert _steps(ref) == [4, 8] and _best(ref)["step"] == 4

  wd = str(tmp_path / "run")
  save = ckpt_lib.Checkpointer.save

  def save_then_die(self, step, *a, **kw):
    save(self, step, *a, **kw)
    if step == 6:
      self.wait()
      self.manager.close()
      raise _Killed
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
  with pytest.raises(_Killed):
    loop.Trainer(_config(checkpoint_every=3), wd).train()
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
  assert _steps(wd) == [4, 6]                           # 3 went (keep 1), 4 is the best so far
  assert _best(wd) == {"step": 4, "metric": "eval/peak/value", "value": 0.9, "mode": "max", "evaluated": 4}

  resumed = loop.Trainer(_config(checkpoint_every=3), wd)
  assert resumed.start_step == 6
  resumed.train()
  assert _steps(wd) == [4, 8]
  assert _best(wd) == _best(ref)
  evals = [r["step"] for r in read_jsonl(os.path.join(wd, "metrics.jsonl")) if "eval/peak/value" in r]
  assert evals == [2, 4, 6, 8]                          # 6: the missed one, run on resume


def test_a_better_step_replaces_the_kept_one_and_bad_keys_fail(tmp_path):
  wd = str(tmp_path / "run")
  VALUES[8] = 0.95
  try:
    loop.Trainer(_config(), wd).train()
  finally:
    VALUES[8] = 0.3
  assert _steps(wd) == [4, 8] and _best(wd)["step"] == 8   # 4 is no longer kept: removed at the next save
  loop.Trainer(_config(total_steps=10), wd).train()
  assert _steps(wd) == [8, 10] and _best(wd)["step"] == 8 and _best(wd)["evaluated"] == 10
  with pytest.raises(MmjaxError, match="select_best_mode='best'"):
    loop.Trainer(_config(select_best_mode="best"), str(tmp_path / "bad"))
  with pytest.raises(MmjaxError, match="select_best='eval/nope'.*at step 10 gives no 'nope'"):
    loop.Trainer(_config(select_best="eval/nope", total_steps=10), wd).train()   # finished: evaluates only
  with pytest.raises(MmjaxError, match="no best checkpoint recorded"):
    loop.Trainer(_config(select_best="", total_steps=2), str(tmp_path / "plain")).evaluate(best=True)
