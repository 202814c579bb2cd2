"""Building blocks shared by the encoders: attention, MLP, pre-LN transformer."""
from __future__ import annotations

from mmjax.layers.attention import (CrossAttention, MultiHeadAttention, causal_mask, combine_masks,
                                    dot_product_attention, padding_mask)
from mmjax.layers.mlp import Mlp
from mmjax.layers.transformer import LN_EPS, Transformer, TransformerBlock

__all__ = ["CrossAttention", "MultiHeadAttention", "causal_mask", "combine_masks", "dot_product_attention",
           "padding_mask", "Mlp", "LN_EPS", "Transformer", "TransformerBlock"]
