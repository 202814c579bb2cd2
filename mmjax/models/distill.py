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
tokenizer, so distil `towers=("image",)` unless the student's tokens are OpenCLIP's). Objective
"clip_feature_distill" (its towers, kind, temperature and clip_weight are the objective's settings).

Smoke tests only: `teacher_workdir=""` with `random_teacher=True` builds `teacher_model` (a model config) with
random frozen weights (seed 0), so that a config runs without a trained teacher (runlocal).

The models only name their teacher; the training side loads it (mmjax/train/teacher.py: `attach` reads the
checkpoint once per run and returns the model with its `teacher` field set, a frozen `fn(batch) -> outputs` that
the objective calls). Nothing here reads files.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.models.clip import CLIP, l2_normalize
from mmjax.models.fusion_classifier import FusionClassifier
from mmjax.registry import MODELS

@MODELS.register("distill_student")
class DistillStudent(nn.Module):
  """A FusionClassifier student (`student`: its fields) with a frozen teacher for the "distill" objective (whose
  temperature and alpha are the objective's settings, config.objective_kwargs)."""
  student: Mapping
  teacher_workdir: str = ""
  random_teacher: bool = False
  teacher_model: Mapping = FrozenDict()
  teacher: Any = None                  # set by mmjax.train.teacher.attach (not a config key): batch -> logits

  def __post_init__(self):
    object.__setattr__(self, "student", FrozenDict(dict(self.student)))
    if not self.teacher_workdir and not self.random_teacher:
      raise MmjaxError("config key model.teacher_workdir is empty; set it to the workdir of a trained teacher "
                       "(e.g. a run of experiments/avmnist_fusion.py:image)")
    super().__post_init__()

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.student.get("modalities", ()))

  @nn.compact
  def __call__(self, *inputs: jax.Array, lengths: Mapping[str, jax.Array] | None = None, train: bool = False):
    cfg = {k: v for k, v in self.student.items() if k != "name"}
    return FusionClassifier(**cfg, name="student")(*inputs, lengths=lengths, train=train)


# ------------------------------------------------------------------------------------------------ CLIP
@MODELS.register("clip_distill_student")
class CLIPDistillStudent(nn.Module):
  """A small CLIP (`student`: CLIP fields) whose embeddings are matched to a frozen CLIP teacher's.

  (images [B, H, W, 3], tokens [B, L]) -> (zimg [B, E_t], ztxt [B, E_t], {"logit_scale", "logit_bias"}), the
  student's embeddings after `proj` (re-normalised), so the student is also a CLIP for the "clip" evaluator.
  """
  student: Mapping
  teacher_dim: int = 0                 # E_t; 0: the student's embed_dim (no projection unless `project`)
  project: bool = False
  teacher_workdir: str = ""
  teacher_open_clip: str = ""
  random_teacher: bool = False
  teacher_model: Mapping = FrozenDict()
  teacher: Any = None                  # set by mmjax.train.teacher.attach (not a config key): batch -> (zimg, ztxt)

  def __post_init__(self):
    object.__setattr__(self, "student", FrozenDict(dict(self.student)))
    if not (self.teacher_workdir or self.teacher_open_clip or self.random_teacher):
      raise MmjaxError("clip_distill_student: set config key model.teacher_workdir (an mmjax CLIP workdir) or "
                       "model.teacher_open_clip (an OpenCLIP checkpoint file)")
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
