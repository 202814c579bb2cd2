"""Every config in experiments/ runs two steps (train, checkpoint, eval) on tiny generated data."""
from __future__ import annotations

import glob
import os

import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.train import loop
from mmjax.trainers import config_schema, make_trainer

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def test_there_are_configs():
  assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs(path, tmp_path):
  config = config_lib.load_experiment(path, "runlocal")
  config_lib.check_keys(config, config_schema(config))   # base keys + the data set's / evaluators' own (or RL's)
  results = make_trainer(config, str(tmp_path)).train()
  assert os.listdir(tmp_path / "checkpoints") == [str(config.total_steps)]
  check_results(results)


def check_results(results: dict) -> None:
  """Evaluations ran (every config names some) and are numbers, none NaN."""
  assert results, "the run returned no evaluation results"
  assert all(float(v) == float(v) for v in results.values()), results


def test_check_results_fails_on_an_empty_or_nan_result():
  check_results({"a": 1.0})
  for bad in ({}, {"a": float("nan")}):
    with pytest.raises(AssertionError):
      check_results(bad)


def test_rerun_of_a_finished_run_evaluates_without_training(tmp_path):
  from conftest import read_jsonl
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_shapes.py"), "runlocal")
  loop.Trainer(config, str(tmp_path)).train()
  trained = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
  results = loop.Trainer(config, str(tmp_path)).train()
  assert "zero_shot/shape_colour" in results and "retrieval/i2t_R@1" in results
  assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r] == trained
