"""Cross-modal distillation models: a student trained against a frozen teacher on another modality (Gupta et al.
2016, "Cross Modal Distillation for Supervision Transfer"; soft targets of Hinton et al. 2015), and a small CLIP
student matched to a frozen CLIP's embeddings (feature distillation).

"distill_student": a FusionClassifier student (`model.student`: its fields, e.g. modalities ("audio",)) and a
frozen teacher read from `model.teacher_workdir` (a workdir of the same training loop, e.g. the image-only
classifier of experiments/avmnist_fusion.py:image; its newest checkpoint and its config.json / checkpoint meta
give the architecture). `modalities` is the student's, so the loop and the "classification" evaluator run the
student alone; the "distill" objective (objectives/colearning.py) runs the teacher on the teacher's modalities of
the same (paired) batch. The teacher's parameters are constants of the jitted step (never trained).

"clip_distill_student": a small mmjax CLIP (`model.student`: CLIP fields, e.g. a 2-layer ViT) whose unit-norm
embeddings `[B, E_s]` are mapped by a linear `proj` to the teacher's E_t (identity when `E_s == E_t` and
`project=False`) and matched to a frozen CLIP: `model.teacher_workdir` (an mmjax CLIP workdir) or
`model.teacher_open_clip` (an OpenCLIP checkpoint file read by mmjax/interop/open_clip.py; images are resized to
its image size and normalised with OPENAI_MEAN / OPENAI_STD inside the teacher function; text needs the OpenCLIP
tokenizer, so use `towers=("image",)` unless the student's tokens are OpenCLIP's). Objective "clip_feature_distill".

Smoke tests only: `teacher_workdir=""` with `random_teacher=True` builds `teacher_model` (a model config) with
random frozen weights (seed 0), so that a config runs without a trained teacher (runlocal).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.models.clip import CLIP, l2_normalize
from mmjax.models.fusion_classifier import FusionClassifier
from mmjax.registry import MODELS

_TEACHERS: dict[str, Any] = {}      # key -> Teacher; per process (loaded once, reused by every trace)


class Teacher:
  """A frozen model: `model` (flax Module), `params`, `inputs` (its batch keys) and `fn(*inputs) -> output`."""

  def __init__(self, model: nn.Module, params: Any, inputs: Sequence[str], fn: Callable[..., Any], what: str):
    self.model, self.params, self.inputs, self.fn, self.what = model, params, tuple(inputs), fn, what

  def __call__(self, batch: Mapping[str, jax.Array]):
    missing = [k for k in self.inputs if k not in batch]
    if missing:
      raise MmjaxError(f"teacher {self.what} needs batch keys {missing}; the batch has {sorted(batch)}")
    return jax.lax.stop_gradient(self.fn(*[batch[k] for k in self.inputs]))


def _plain(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  return x


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

  Restores in a separate thread: JAX's trace state is per thread, so this works even while a jitted step is being
  traced (the objective loads the teacher lazily, on first use)."""
  import concurrent.futures
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_load_params, workdir).result()


def _load_params(workdir: str) -> tuple[int, Any]:
  from mmjax.train import checkpoint as ckpt_lib
  import orbax.checkpoint as ocp
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


def _build(model_cfg: Mapping) -> nn.Module:
  from mmjax.models import build_model
  return build_model(model_cfg)


def _random_params(model: nn.Module, example_inputs: Sequence[Any]) -> Any:
  """Random weights (seed 0) from inputs shaped like `example_inputs` (batch 1; tracers are fine: only their
  shapes and dtypes are read, and the weights are computed eagerly, outside any trace)."""
  zeros = [np.zeros((1, *x.shape[1:]), x.dtype) for x in example_inputs]
  with jax.ensure_compile_time_eval():
    params = model.init({"params": jax.random.PRNGKey(0)}, *zeros, train=False)["params"]
  return jax.tree.map(np.asarray, params)


def load_classifier_teacher(workdir: str, teacher_model: Mapping | None = None,
                            example: Mapping[str, jax.Array] | None = None) -> Teacher:
  """A frozen classifier teacher: `fn(*inputs) -> logits [B, C]`. From `workdir` (newest checkpoint), or, with
  workdir "", `teacher_model` with random weights initialised on `example` (smoke tests)."""
  key = f"classifier:{os.path.abspath(workdir) if workdir else json.dumps(_plain(teacher_model), sort_keys=True)}"
  if key in _TEACHERS:
    return _TEACHERS[key]
  if workdir:
    cfg = read_workdir_config(workdir)
    model = _build(cfg["model"])
    step, params = load_params(workdir)
    what = f"{workdir} (step {step})"
  else:
    if teacher_model is None or example is None:
      raise MmjaxError("distill: model.teacher_workdir is empty; set it to the teacher's workdir")
    model = _build(teacher_model)
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
  _TEACHERS[key] = Teacher(model, params, inputs, fn, what)
  return _TEACHERS[key]


def teacher_of(model: nn.Module, example: Mapping[str, jax.Array] | None = None) -> Teacher:
  """The frozen teacher of a "distill_student" or "clip_distill_student" model (loaded once per process).
  A plain function, not a Module method: building the teacher must happen outside the student's scope."""
  random = dict(model.teacher_model) if model.random_teacher else None
  if isinstance(model, CLIPDistillStudent):
    return load_clip_teacher(model.teacher_workdir, model.teacher_open_clip, random, example)
  return load_classifier_teacher(model.teacher_workdir, random, example)


@MODELS.register("distill_student")
class DistillStudent(nn.Module):
  """A FusionClassifier student (`student`: its fields) with a frozen teacher for the "distill" objective.

  temperature T and alpha weight the objective: loss = (1 - alpha) CE(labelled) + alpha T^2 KL(p_T^t || p_T^s).
  """
  student: Mapping
  teacher_workdir: str = ""
  temperature: float = 4.0
  alpha: float = 0.9
  random_teacher: bool = False
  teacher_model: Mapping = FrozenDict()

  def __post_init__(self):
    object.__setattr__(self, "student", FrozenDict(dict(self.student)))
    if not self.teacher_workdir and not self.random_teacher:
      raise MmjaxError("config key model.teacher_workdir is empty; set it to the workdir of a trained teacher "
                       "(e.g. a run of experiments/avmnist_fusion.py:image)")
    if self.temperature <= 0:
      raise MmjaxError(f"config key model.temperature={self.temperature} must be > 0")
    if not 0.0 <= self.alpha <= 1.0:
      raise MmjaxError(f"config key model.alpha={self.alpha} must be in [0, 1]")
    super().__post_init__()

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.student.get("modalities", ()))

  @nn.compact
  def __call__(self, *inputs: jax.Array, lengths: Mapping[str, jax.Array] | None = None, train: bool = False):
    cfg = {k: v for k, v in self.student.items() if k != "name"}
    return FusionClassifier(**cfg, name="student")(*inputs, lengths=lengths, train=train)


# ------------------------------------------------------------------------------------------------ CLIP
def load_clip_teacher(workdir: str = "", open_clip_path: str = "", teacher_model: Mapping | None = None,
                      example: Mapping[str, jax.Array] | None = None) -> Teacher:
  """A frozen CLIP: `fn(images, tokens) -> (zimg [B, E], ztxt [B, E])` (unit norm). From an mmjax CLIP workdir,
  an OpenCLIP checkpoint file (images resized to its size and OpenAI-normalised here), or (workdir and path
  empty) `teacher_model` with random weights (smoke tests)."""
  key = f"clip:{workdir}:{open_clip_path}:{json.dumps(_plain(teacher_model or {}), sort_keys=True)}"
  if key in _TEACHERS:
    return _TEACHERS[key]
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
  model = _build(cfg)
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

  _TEACHERS[key] = Teacher(model, params, ("image", "tokens"), fn, what)
  return _TEACHERS[key]


@MODELS.register("clip_distill_student")
class CLIPDistillStudent(nn.Module):
  """A small CLIP (`student`: CLIP fields) whose embeddings are matched to a frozen CLIP teacher's.

  (images [B, H, W, 3], tokens [B, L]) -> (zimg [B, E_t], ztxt [B, E_t], {"logit_scale", "logit_bias"}), the
  student's embeddings after `proj` (re-normalised), so the student is also a CLIP for the "clip" evaluator.
  """
  student: Mapping
  teacher_dim: int = 0                 # E_t; 0: the student's embed_dim (no projection unless `project`)
  project: bool = False
  towers: Sequence[str] = ("image", "text")
  kind: str = "cosine"                 # objectives.colearning.feature_distill_loss kind
  temperature: float = 0.07            # for kind "contrastive"
  clip_weight: float = 0.0             # + this x the student's own CLIP loss on the batch
  teacher_workdir: str = ""
  teacher_open_clip: str = ""
  random_teacher: bool = False
  teacher_model: Mapping = FrozenDict()

  def __post_init__(self):
    object.__setattr__(self, "student", FrozenDict(dict(self.student)))
    object.__setattr__(self, "towers", tuple(self.towers))
    if not (self.teacher_workdir or self.teacher_open_clip or self.random_teacher):
      raise MmjaxError("clip_distill_student: set config key model.teacher_workdir (an mmjax CLIP workdir) or "
                       "model.teacher_open_clip (an OpenCLIP checkpoint file)")
    bad = set(self.towers) - {"image", "text"}
    if bad or not self.towers:
      raise MmjaxError(f"config key model.towers={list(self.towers)}: use a non-empty subset of image, text")
    super().__post_init__()

  def setup(self):
    cfg = {k: v for k, v in self.student.items() if k != "name"}
    self.clip = CLIP(**cfg)
    e = int(self.student.get("embed_dim", 128))
    out = self.teacher_dim or e
    self.proj = nn.Dense(out, use_bias=False, name="proj") if (self.project or out != e) else None

  def _out(self, z: jax.Array) -> jax.Array:
    return l2_normalize(self.proj(z)) if self.proj is not None else z

  def encode_image(self, images: jax.Array, normalize: bool = True, train: bool = False) -> jax.Array:
    """[B, H, W, 3] -> [B, E_t] (unit norm): the student's image embedding in the teacher's space."""
    return self._out(self.clip.encode_image(images, train=train))

  def encode_text(self, tokens: jax.Array, normalize: bool = True, train: bool = False) -> jax.Array:
    """[B, L] -> [B, E_t] (unit norm)."""
    return self._out(self.clip.encode_text(tokens, train=train))

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
    zimg, ztxt, extra = self.clip(images, tokens, train=train)
    return self._out(zimg), self._out(ztxt), extra
