"""Building blocks shared by the encoders: attention, MLP, pre-LN transformer."""
from __future__ import annotations

from mmjax.layers.attention import (CrossAttention, MultiHeadAttention, causal_mask, combine_masks,
                                    DEFAULT_EOT_ID, dot_product_attention, eot_positions,
                                    padding_mask, through_eot)
from mmjax.layers.mlp import Mlp
from mmjax.layers.transformer import LN_EPS, Transformer, TransformerBlock

__all__ = ["CrossAttention", "MultiHeadAttention", "causal_mask", "combine_masks", "dot_product_attention",
           "padding_mask", "DEFAULT_EOT_ID", "eot_positions", "through_eot", "Mlp", "LN_EPS", "Transformer", "TransformerBlock"]
