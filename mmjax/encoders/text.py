"""Text transformer of CLIP (Radford et al. 2021), laid out as OpenCLIP's `TextTransformer` (Cherti et al. 2023).

`token_embedding` + `pos_embedding` -> transformer (causal mask, or bidirectional with key padding mask)
-> `ln_final` -> EOT pooling (the token at the first `eot_id`) -> `proj` (no bias).
Tokens are `[BOS?] ... EOT pad pad ...`. The EOT position, not the pad id, says where a text ends: positions after
it are padding (`mmjax.layers.through_eot`), whatever their id. In CLIP's BPE the pad id 0 is also "!", so counting
non-zero ids would pool a caption with "!" at the wrong token. eot_id=None pools as OpenCLIP does, at argmax(token
id) (EOT has the largest id: the first EOT); imported OpenCLIP models use it.
last_block_pooled_only=True computes the last block for the EOT token only (as the ViT's option): the same
embedding and gradients, `out` holds "pooled" and "eot_index" alone.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.encoders.vit import PooledOnly
from mmjax.errors import MmjaxError
from mmjax.layers import DEFAULT_EOT_ID, LN_EPS, Transformer, causal_mask, eot_positions, padding_mask, through_eot

Dtype = Any


class TextTransformer(nn.Module):
  """tokens int32 [B, L] (L = context_length) -> (embedding [B, output_dim or width], out).

  out: "tokens" [B, L, w] after the last block (before ln_final), "normed_tokens" [B, L, w] after ln_final,
  "pooled" [B, w] (normed EOT token, before proj), "eot_index" [B] int32.
  causal=False is the bidirectional encoder: keys after the EOT (or where `valid` [B, L] is False) are masked.
  `pad_id` is the id the data pads with (kept for models' decoding); it plays no part in pooling or masking.
  """
  vocab_size: int
  context_length: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  causal: bool = True
  output_dim: int | None = None
  pad_id: int = 0
  eot_id: int | None = DEFAULT_EOT_ID   # None: OpenCLIP's argmax pooling (see the module docstring)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: str = "none"               # per-block rematerialisation policy (mmjax.layers.transformer)
  last_block_pooled_only: bool = False   # see the module docstring
  cpu_tuning: str = "auto"          # the layers' CPU code paths (mmjax/cpu_tuning.py)

  @nn.compact
  def __call__(self, tokens: jax.Array, valid: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
      raise MmjaxError(f"text tokens have shape {tuple(tokens.shape)} but model.text.context_length="
                       f"{self.context_length}; pad/truncate the tokens to [B, {self.context_length}] or set "
                       f"model.text.context_length={tokens.shape[-1]}")
    if valid is None:
      valid = through_eot(tokens, self.eot_id)
    w, length = self.width, self.context_length
    x = nn.Embed(self.vocab_size, w, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="token_embedding")(tokens)
    pos = self.param("pos_embedding", nn.initializers.normal(0.01), (length, w), self.param_dtype)
    x = x + pos.astype(self.dtype)[None]
    mask = causal_mask(length)[None, None] if self.causal else padding_mask(valid)
    transformer = Transformer(self.depth, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                              param_dtype=self.param_dtype, remat=self.remat, cpu_tuning=self.cpu_tuning,
                              name="transformer")
    ln_final = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="ln_final")
    eot = eot_positions(tokens, self.eot_id)
    if self.last_block_pooled_only:
      pooled = ln_final(transformer(x, mask, last_query_index=eot))[:, 0]
      out = PooledOnly(pooled=pooled, eot_index=eot)
    else:
      hidden = transformer(x, mask)
      normed = ln_final(hidden)
      pooled = jnp.take_along_axis(normed, eot[:, None, None], axis=1)[:, 0]
      out = {"tokens": hidden, "normed_tokens": normed, "pooled": pooled, "eot_index": eot}
    emb = pooled
    if self.output_dim is not None:
      emb = nn.Dense(self.output_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=nn.initializers.normal(w ** -0.5), name="proj")(pooled)
    return emb, out
