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
  if getattr(config_lib.load_experiment_module(path), "INIT_FROM_OPEN_CLIP", False):
    config.model.init_from = _open_clip_file(config, tmp_path)
  results = make_trainer(config, str(tmp_path)).train()
  assert os.listdir(tmp_path / "checkpoints") == [str(config.total_steps)]
  check_results(results)


def _open_clip_file(config, tmp_path) -> str:
  """A small random-weight OpenCLIP checkpoint of the config's architecture (tests/fixtures/open_clip_files.py),
  for the configs that start from one (INIT_FROM_OPEN_CLIP); skipped without the CLIP BPE vocabulary they use."""
  import sys
  from mmjax.data.clip_bpe import ClipBpeTokenizer
  from mmjax.errors import MmjaxError
  try:
    ClipBpeTokenizer()
  except MmjaxError:
    pytest.skip("the CLIP BPE vocabulary is not installed (pip install --no-deps open_clip_torch==3.3.0)")
  sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
  from open_clip_files import write_open_clip
  path = str(tmp_path / "open_clip.safetensors")
  write_open_clip(path, config.model)
  return path


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
  from PIL import Image
  with Image.open(tmp_path / "zero_shot.png") as grid:    # the test images with their zero-shot labels
    assert grid.format == "PNG" and grid.width > 4 * grid.height, grid.size   # one row of evals.clip.zero_shot_images
  assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r] == trained
