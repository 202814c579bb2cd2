"""Fusion catalogue: every fusion is a flax Module `fusion(features, train=False)` with features a sequence of M arrays
`[B, D_m]` or `[B, T_m, D_m]`, returning `[B, D]` (or `[B, T, D]` for token-level output). Looked up by name in
`FUSIONS` (the config's `model.fusion`), so `models/fusion_classifier.py` can use any of them.

| name | module | paper |
|---|---|---|
| early | EarlyFusion | concatenation of inputs |
| late | LateFusion | weighted concatenation / mean of unimodal representations or logits |
| tfn | TensorFusion | Zadeh et al. 2017 |
| lmf | LowRankFusion | Liu et al. 2018 |
| gmu | GatedMultimodalUnit | Arevalo et al. 2017 |
| nlgate | NonLocalGate | MultiBench (Liang et al. 2021), Wang et al. 2020 |
| film | FiLM | Perez et al. 2018 |
| cross_attention | CrossAttentionFusion | Vaswani et al. 2017 |
| co_attention | CoAttentionFusion | ViLBERT, Lu et al. 2019 |
| mult | MulT | Tsai et al. 2019 |
| mbt | BottleneckFusion | Nagrani et al. 2021 |
"""
from __future__ import annotations

from typing import Any, Mapping

import dataclasses

import flax.linen as nn

from mmjax.errors import MmjaxError
from mmjax.fusion.attention import CoAttentionFusion, CrossAttentionFusion, MulT
from mmjax.fusion.bottleneck import BottleneckFusion
from mmjax.fusion.early_late import EarlyFusion, LateFusion
from mmjax.fusion.gating import FiLM, GatedMultimodalUnit, NonLocalGate
from mmjax.fusion.tensor import LowRankFusion, TensorFusion, tensor_fusion
from mmjax.registry import Registry

FUSIONS = Registry("fusion")
for _name, _cls in [("early", EarlyFusion), ("late", LateFusion), ("tfn", TensorFusion), ("lmf", LowRankFusion),
                    ("gmu", GatedMultimodalUnit), ("nlgate", NonLocalGate), ("film", FiLM),
                    ("cross_attention", CrossAttentionFusion), ("co_attention", CoAttentionFusion),
                    ("mult", MulT), ("mbt", BottleneckFusion)]:
  FUSIONS.register(_name)(_cls)


def build_fusion(fusion: str, kwargs: Mapping[str, Any] | None = None, **extra) -> nn.Module:
  """FUSIONS[fusion](**kwargs, **extra); unknown names / keys raise MmjaxError naming config key model.fusion(_kwargs)."""
  cls = FUSIONS.get(fusion, "model.fusion")
  kwargs = dict(kwargs or {})
  valid = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
  for k in kwargs:
    if k not in valid:
      raise MmjaxError(f"unknown config key 'model.fusion_kwargs.{k}' for fusion {fusion!r} "
                       f"(valid: {', '.join(sorted(valid)) or 'none'})")
  return cls(**kwargs, **extra)


__all__ = ["FUSIONS", "build_fusion", "BottleneckFusion", "CoAttentionFusion", "CrossAttentionFusion", "EarlyFusion",
           "FiLM", "GatedMultimodalUnit", "LateFusion", "LowRankFusion", "MulT", "NonLocalGate", "TensorFusion",
           "tensor_fusion"]
