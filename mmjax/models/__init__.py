"""Models, looked up by `model.name` in mmjax.registry.MODELS; `build_model` turns the config into a Module."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax.linen as nn
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.models.clip import CLIP, clip_flops_per_step  # importing registers "clip"
from mmjax.models.m3ae import M3AE  # registers "m3ae"
from mmjax.models.mae import MAE  # registers "mae"
from mmjax.models.mlm import MaskedLM  # registers "mlm"
from mmjax.models.fusion_classifier import FusionClassifier  # registers "fusion_classifier"
from mmjax.models.captioner import Captioner  # registers "captioner"
from mmjax.models.text_to_image import TextToImage  # registers "text_to_image"
from mmjax.models.mctn import MCTN  # registers "mctn"
from mmjax.models.distill import DistillStudent, CLIPDistillStudent  # "distill_student", "clip_distill_student"
from mmjax.models.mvae import MVAE  # registers "mvae"
from mmjax.models.vqa import VQAModel  # registers "vqa"
from mmjax.models.multitask import MultiTaskCLIP  # registers "multitask_clip" (composite objectives)
from mmjax.models.deep_cca import DeepCCA  # registers "deep_cca"
from mmjax.registry import MODELS

_NOT_CONFIG = ("parent", "name")
# model.* keys read by the training side (mmjax.train.init_from), not fields of any model.
LOADER_KEYS = ("init_from", "init_from_keys")


def _plain(value: Any) -> Any:
  """ConfigDict / dict / FrozenDict -> FrozenDict (hashable, recursively); other values unchanged."""
  if isinstance(value, Mapping) or hasattr(value, "to_dict"):
    return FrozenDict({k: _plain(v) for k, v in dict(value).items()})
  return value


def build_model(model_cfg: Mapping) -> nn.Module:
  """model_cfg (ConfigDict or mapping with `name` and the model's fields) -> an unbound flax Module."""
  cls = MODELS.get(model_cfg["name"], "model.name")
  kwargs = {k: _plain(v) for k, v in dict(model_cfg).items() if k != "name" and k not in LOADER_KEYS}
  if dataclasses.is_dataclass(cls):
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in _NOT_CONFIG]
    for k in kwargs:
      if k not in valid:
        raise MmjaxError(f"unknown config key 'model.{k}' for model {model_cfg['name']!r} "
                         f"(valid keys under model: name, {', '.join(sorted(valid))})")
  try:
    return cls(**kwargs)
  except TypeError as e:
    m = re.search(r"argument '(\w+)'", str(e))
    what = f"config key 'model.{m.group(1)}'" if m else "model config"
    raise MmjaxError(f"bad {what} for model {model_cfg['name']!r}: {e}") from None


__all__ = ["CLIP", "build_model", "clip_flops_per_step"]
