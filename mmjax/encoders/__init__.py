"""Modality encoders: ViT for images, a (causal or bidirectional) transformer for text."""
from __future__ import annotations

from mmjax.encoders.text import TextTransformer
from mmjax.encoders.vit import ViT

__all__ = ["TextTransformer", "ViT"]
