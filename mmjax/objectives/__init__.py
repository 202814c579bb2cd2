"""Training objectives, looked up by the config's `objective` in mmjax.registry.OBJECTIVES.

An objective is split into per-example features and a loss on the whole batch of features, so the training
loop can accumulate gradients exactly for losses that couple examples (contrastive: Radford et al. 2021;
sigmoid: Zhai et al. 2023): compute the features of every micro-batch, the loss on the full batch, then
back-propagate micro-batch by micro-batch (as in GradCache, Gao et al. 2021).
"""
from __future__ import annotations

from mmjax.objectives.base import Objective, ObjectiveContext
from mmjax.objectives.composite import get_objective  # by name; "a+b" composites (config.objective_weights)

from mmjax.objectives import contrastive  # noqa: F401  (registers "clip", "siglip"; needs Objective)
from mmjax.objectives import contrastive_sharded  # noqa: F401  ("clip_sharded", "siglip_sharded")
from mmjax.objectives import masked  # noqa: F401  ("mae", "mlm", "m3ae")
from mmjax.objectives import classify  # noqa: F401  ("classify")
from mmjax.objectives import filip  # noqa: F401  ("filip"; FILIP token-wise loss, mmjax.alignment.tokens)
from mmjax.objectives import caption  # noqa: F401  ("caption"; teacher-forced captioning cross-entropy)
from mmjax.objectives import flow_matching  # noqa: F401  ("flow_matching"; text-to-image rectified flow)
from mmjax.objectives import colearning  # noqa: F401  ("mctn", "distill", "clip_feature_distill")
from mmjax.objectives import mvae  # noqa: F401  ("mvae"; sub-sampled multimodal ELBO, Wu & Goodman 2018)
from mmjax.objectives import simclr  # noqa: F401  ("simclr"; with "clip": SLIP, Mu et al. 2022)
from mmjax.objectives import cca  # noqa: F401  ("dcca"; Deep CCA, Andrew et al. 2013)

__all__ = ["Objective", "ObjectiveContext", "get_objective", "contrastive", "contrastive_sharded"]
