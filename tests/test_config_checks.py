"""Bad configs fail in `Trainer.__init__`, before anything compiles, naming the key and the valid choices."""
from __future__ import annotations

import os
import types

import jax
import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.train import loop, sharding

CLIP = os.path.join(ROOT, "experiments", "clip_shapes.py")


def tiny():
  return config_lib.load_experiment(CLIP, "runlocal")


def assert_fails_up_front(config, tmp_path, match: str) -> str:
  workdir = tmp_path / "run"
  with pytest.raises(MmjaxError, match=match) as info:
    loop.Trainer(config, str(workdir))
  ckdir = workdir / "checkpoints"
  assert not ckdir.exists() or not os.listdir(ckdir)  # nothing was saved, so nothing was compiled
  message = str(info.value)
  assert len(message.splitlines()) == 1, message
  return message


def test_batch_size_not_divisible_lists_multiples(tmp_path):
  c = tiny()
  c.batch_size = 0
  assert_fails_up_front(c, tmp_path, r"batch_size=0 must be divisible")
  # 8 batch shards (data 4 x fsdp 2) need more devices than the test has: check the message on a stand-in mesh.
  mesh = types.SimpleNamespace(shape={"data": 4, "fsdp": 2})
  with pytest.raises(MmjaxError, match=r"batch_size=12 .*use a multiple of 8, e.g. 8 or 16"):
    sharding.check_batch_size(12, mesh, 1)
  sharding.check_batch_size(16, mesh, 1)


def test_mesh_axis_larger_than_device_count(tmp_path):
  c = tiny()
  c.mesh.fsdp = 16 * jax.device_count()
  msg = assert_fails_up_front(c, tmp_path, r"mesh\.fsdp=")
  assert f"{jax.device_count()} available devices" in msg and "-1" in msg


def test_image_size_not_divisible_by_patch_size(tmp_path):
  c = tiny()
  c.model.vision.image_size = c.data.image_size = 30   # patch 8
  msg = assert_fails_up_front(c, tmp_path, r"model\.vision\.image_size=30 .*model\.vision\.patch_size=8")
  assert "24 or 32" in msg and "[1, 2, 3, 5, 6, 10, 15, 30]" in msg


def test_data_image_size_differs_from_model(tmp_path):
  c = tiny()
  c.data.image_size = 48   # the model expects 32
  assert_fails_up_front(c, tmp_path, r"data\.image_size=48 differs from model\.vision\.image_size=32")


def test_context_length_differs_from_model(tmp_path):
  c = tiny()
  c.data.context_length = 16   # the model expects 20
  assert_fails_up_front(c, tmp_path, r"data\.context_length=16 differs from model\.text\.context_length=20")


@pytest.mark.parametrize("accum", [0, -1, 3])
def test_bad_grad_accum_steps(tmp_path, accum):
  c = tiny()
  c.batch_size = 8 * jax.device_count()
  c.grad_accum_steps = accum
  msg = assert_fails_up_front(c, tmp_path, rf"grad_accum_steps={accum} must be >= 1")
  assert "valid values: [1, 2, 4, 8]" in msg


def test_checks_skip_models_without_the_keys():
  c = tiny()
  with c.unlocked():
    del c.model["vision"]
    del c.model["text"]
  loop.check_model_data(c)  # nothing to compare: no error


@pytest.mark.parametrize("names,edit,match", [
    ("clip,captioning", {}, r"evaluator 'captioning' needs a captioning model.*model.name='clip'"),
    ("clip,generation", {}, r"evaluator 'generation' needs model.name='text_to_image'.*model.name='clip'"),
    ("mvae", {}, r"evaluator 'mvae' needs model.name='mvae'"),
    ("vqa", {}, r"evaluator 'vqa' scores answers to shapes questions; data.name='shapes'"),
    ("reconstruction", {}, r"evaluator 'reconstruction' needs a masked image model"),
    ("clip", {"clip.zero_shot_data": "imagenet_typo"}, r"evals.clip.zero_shot_data='imagenet_typo' is not a zero-shot"),
    ("clip,no_such_eval", {}, r"no_such_eval"),
])
def test_an_evaluator_that_cannot_run_fails_at_start_up(tmp_path, names, edit, match):
  """Each configured evaluator's check (mmjax.evals.base.EVAL_CHECKS) runs in Trainer.__init__: a run whose
  evaluation could never work stops before it compiles or trains, not at its first evaluation."""
  c = tiny()
  c.evals.names = names
  for k, v in edit.items():      # "evaluator.key"
    name, key = k.split(".")
    c.evals[name][key] = v
  assert_fails_up_front(c, tmp_path, match)


def test_the_model_is_initialised_for_the_training_batches(tmp_path, monkeypatch):
  """Trainer.__init__ reads the input shapes from the training pipeline's element spec, never from an eval split
  (make_eval_arrays fails here), and a first batch of other shapes stops at step 1 naming the key."""
  from mmjax.data import pipeline

  def no_eval_arrays(*a, **k):
    raise AssertionError("the eval data path was read at start-up")
  monkeypatch.setattr(pipeline, "make_eval_arrays", no_eval_arrays)
  config = tiny()
  trainer = loop.Trainer(config, str(tmp_path / "run"))
  first = next(pipeline.make_train_iterator(config.data, trainer.tokenizer, global_batch_size=config.batch_size,
                                            seed=config.seed))
  assert loop.batch_spec(trainer.input_spec) == loop.batch_spec(first)
  wrong = dict(first, image=first["image"][:, :-8])
  with pytest.raises(MmjaxError, match=r"batch at step 1: key 'image' has shape/dtype .* expected"):
    loop.check_batch(wrong, loop.batch_spec(trainer.input_spec), 1)


def test_the_default_components_keys_come_from_their_declarations():
  """base_config's data and model blocks are the loop's keys plus the default data set's and model's own, as
  declared where each is registered (shapes' DatasetEntry.config_keys, mmjax.models.clip.CONFIG_KEYS); every
  declared model key is a field of the registered CLIP, and the block builds it."""
  import dataclasses

  from mmjax.data import shapes
  from mmjax.models import build_model, clip
  from mmjax.registry import DATASETS, MODELS
  c = config_lib.base_config()
  assert DATASETS.get("shapes").config_keys is shapes.CONFIG_KEYS
  assert {k: c.data[k] for k in shapes.CONFIG_KEYS} == dict(shapes.CONFIG_KEYS)
  assert "question_length" not in c.data            # another data set's key: only with data.name = "vqa_shapes"
  model_keys = set(c.model.keys()) - {"name", "init_from", "init_from_keys"}
  assert model_keys == set(clip.CONFIG_KEYS)
  assert model_keys <= {f.name for f in dataclasses.fields(MODELS.get("clip"))}
  assert c.model.to_dict()["vision"] == clip.CONFIG_KEYS["vision"]
  # where the registered CLIP has a default of its own, the config block's default is that one (dtype by name)
  import jax.numpy as jnp
  field_defaults = {f.name: f.default for f in dataclasses.fields(MODELS.get("clip"))
                    if f.default is not dataclasses.MISSING and f.name in model_keys}
  assert set(field_defaults) >= {"logit_scale_init", "logit_bias_init", "dtype", "remat", "cpu_tuning"}
  for name, default in field_defaults.items():
    got = c.model[name]
    assert (jnp.dtype(got) == jnp.dtype(default)) if name == "dtype" else (got == default), (name, got, default)
  assert build_model(c.model).embed_dim == clip.CONFIG_KEYS["embed_dim"]
  c.model.vision.width = 64                          # a fresh config each time: the declaration is not aliased
  assert config_lib.base_config().model.vision.width == clip.CONFIG_KEYS["vision"]["width"] == 128
