"""Evaluations: cross-modal retrieval recall@K and zero-shot classification from prompt ensembles."""
from __future__ import annotations

from mmjax.evals.retrieval import retrieval_metrics, retrieval_ranks
from mmjax.evals.zero_shot import SHAPES_TEMPLATES, build_classifier, shapes_tasks, zero_shot_accuracy

__all__ = ["SHAPES_TEMPLATES", "build_classifier", "retrieval_metrics", "retrieval_ranks", "shapes_tasks",
           "zero_shot_accuracy"]
