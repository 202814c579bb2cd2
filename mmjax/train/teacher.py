"""Frozen teachers for distillation, loaded by the training side and handed to the model as data.

A distillation student (mmjax/models/distill.py) only names its teacher: `model.teacher_workdir` (a workdir of this
training loop: its config.json gives the architecture, its newest checkpoint the weights), `model.teacher_open_clip`
(an OpenCLIP checkpoint file, mmjax/interop/open_clip.py) or, for smoke tests, `model.teacher_model` with random
weights (seed 0). `attach(model, example)` loads it once (the Trainer calls it before compiling) and returns the
model with `teacher` set to a `Teacher`: `teacher(batch)` runs the frozen model on its batch keys under
`stop_gradient`, its parameters constants of the jitted step (never trained). The objectives
(mmjax/objectives/colearning.py) call `model.teacher(batch)` and never read files.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.models.clip import CLIP
from mmjax.models.distill import CLIPDistillStudent, DistillStudent
from mmjax.train import checkpoint as ckpt_lib


class Teacher:
  """A frozen model: `model` (flax Module), `params`, `inputs` (its batch keys) and `fn(*inputs) -> output`."""

  def __init__(self, model: nn.Module, params: Any, inputs: Sequence[str], fn: Callable[..., Any], what: str):
    self.model, self.params, self.inputs, self.fn, self.what = model, params, tuple(inputs), fn, what

  def __call__(self, batch: Mapping[str, jax.Array]):
    missing = [k for k in self.inputs if k not in batch]
    if missing:
      raise MmjaxError(f"teacher {self.what} needs batch keys {missing}; the batch has {sorted(batch)}")
    return jax.lax.stop_gradient(self.fn(*[batch[k] for k in self.inputs]))


def read_workdir_config(workdir: str) -> dict:
  """The config (as a dict) a training-loop workdir was run with (its config.json, written by the loop)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise MmjaxError(f"teacher workdir {workdir!r} has no config.json; train the teacher there first with the "
                     f"training loop (config key model.teacher_workdir)")
  with open(path) as f:
    return json.load(f)


def load_params(workdir: str) -> tuple[int, Any]:
  """(step, params) of the newest checkpoint of a training-loop workdir, as NumPy arrays.

  Restores in a separate thread: JAX's trace state is per thread, so this works even while a jitted function is
  being traced."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_load_params, workdir).result()


def _load_params(workdir: str) -> tuple[int, Any]:
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise MmjaxError(f"teacher workdir {workdir!r} has no checkpoint; train the teacher first "
                       f"(config key model.teacher_workdir)")
    problems = ckpt.verify(step)
    if problems and not problems[0].endswith("right after the commit)"):
      raise MmjaxError(f"teacher checkpoint {ckpt.directory}/{step} is damaged: {problems[0]}")
    out = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    ckpt.manager.close()
  state = out.state
  params = state["params"] if isinstance(state, Mapping) else state.params
  return int(step), jax.tree.map(np.asarray, params)


def _random_params(model: nn.Module, example_inputs: Sequence[Any]) -> Any:
  """Random weights (seed 0) from inputs shaped like `example_inputs` (batch 1; tracers are fine: only their
  shapes and dtypes are read, and the weights are computed eagerly, outside any trace)."""
  zeros = [np.zeros((1, *x.shape[1:]), x.dtype) for x in example_inputs]
  init = cpu_tuning.init_jit(lambda rng, *xs: model.init({"params": rng}, *xs, train=False)["params"])   # one compile, not one per op
  with jax.ensure_compile_time_eval():
    params = init(jax.random.PRNGKey(0), *zeros)
  return jax.tree.map(np.asarray, params)


def load_classifier_teacher(workdir: str, teacher_model: Mapping | None = None,
                            example: Mapping[str, jax.Array] | None = None) -> Teacher:
  """A frozen classifier teacher: `fn(*inputs) -> logits [B, C]`. From `workdir` (newest checkpoint), or, with
  workdir "", `teacher_model` with random weights initialised on `example` (smoke tests)."""
  if workdir:
    cfg = read_workdir_config(workdir)
    model = build_model(cfg["model"])
    step, params = load_params(workdir)
    what = f"{workdir} (step {step})"
  else:
    if teacher_model is None or example is None:
      raise MmjaxError("distill: model.teacher_workdir is empty; set it to the teacher's workdir")
    model = build_model(teacher_model)
    inputs = tuple(getattr(model, "modalities", ()))
    params = _random_params(model, [example[k] for k in inputs])
    what = "random (model.random_teacher)"
  inputs = tuple(getattr(model, "modalities", None) or ())
  if not inputs:
    raise MmjaxError(f"teacher {what}: model {type(model).__name__} has no `modalities`; use a classifier "
                     f"(e.g. fusion_classifier) as the teacher")
  with jax.ensure_compile_time_eval():
    params = jax.tree.map(jnp.asarray, params)
  fn = lambda *xs: model.apply({"params": params}, *xs, train=False)
  return Teacher(model, params, inputs, fn, what)


def load_clip_teacher(workdir: str = "", open_clip_path: str = "", teacher_model: Mapping | None = None,
                      example: Mapping[str, jax.Array] | None = None) -> Teacher:
  """A frozen CLIP: `fn(images, tokens) -> (zimg [B, E], ztxt [B, E])` (unit norm). From an mmjax CLIP workdir,
  an OpenCLIP checkpoint file (images resized to its size and OpenAI-normalised here), or (workdir and path
  empty) `teacher_model` with random weights (smoke tests)."""
  prep = lambda x: x
  if workdir:
    cfg = read_workdir_config(workdir)["model"]
    step, params = load_params(workdir)
    what = f"{workdir} (step {step})"
  elif open_clip_path:
    from mmjax.interop import open_clip
    sd = open_clip.load_state_dict(open_clip_path)
    cfg = open_clip.config_from_state_dict(sd)
    params, what = open_clip.import_params(sd), f"OpenCLIP {open_clip_path}"
    size = int(cfg["vision"]["image_size"])
    mean, std = jnp.asarray(open_clip.OPENAI_MEAN), jnp.asarray(open_clip.OPENAI_STD)

    def prep(images):     # student images in [0, 1] (NHWC) -> the OpenCLIP teacher's input
      if images.shape[1:3] != (size, size):
        images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "bicubic")
      return (images - mean) / std
  else:
    if teacher_model is None or example is None:
      raise MmjaxError("clip_distill_student: set model.teacher_workdir or model.teacher_open_clip")
    cfg = dict(teacher_model)
    what = "random (model.random_teacher)"
    params = None
  model = build_model(cfg)
  if not isinstance(model, CLIP):
    raise MmjaxError(f"teacher {what}: model.name={cfg.get('name')!r} is not a CLIP model")
  if params is None:
    params = _random_params(model, [example["image"], example["tokens"]])
  with jax.ensure_compile_time_eval():
    params = jax.tree.map(jnp.asarray, params)

  def fn(images, tokens):
    zimg = model.apply({"params": params}, prep(images), method=CLIP.encode_image)
    ztxt = model.apply({"params": params}, tokens, method=CLIP.encode_text)
    return zimg, ztxt

  return Teacher(model, params, ("image", "tokens"), fn, what)


def load_teacher(model: nn.Module, example: Mapping[str, Any] | None = None) -> Teacher:
  """The frozen teacher a "distill_student" or "clip_distill_student" model names (its teacher_workdir,
  teacher_open_clip or random teacher_model, the last initialised on `example`'s shapes)."""
  random = dict(model.teacher_model) if model.random_teacher else None
  if isinstance(model, CLIPDistillStudent):
    return load_clip_teacher(model.teacher_workdir, model.teacher_open_clip, random, example)
  return load_classifier_teacher(model.teacher_workdir, random, example)


def attach(model: nn.Module, example: Mapping[str, Any] | None = None) -> nn.Module:
  """`model` with its frozen teacher loaded into the `teacher` field (read from disk once, here), for a model that
  names one (the distillation students); any other model unchanged. The objective then calls `model.teacher(batch)`."""
  if not isinstance(model, (DistillStudent, CLIPDistillStudent)) or model.teacher is not None:
    return model
  return model.clone(teacher=load_teacher(model, example))
