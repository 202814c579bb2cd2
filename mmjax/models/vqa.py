"""VQA classifier: question tokens attend to image patch tokens through the library's cross-attention fusion
(mmjax/fusion/attention.py `CrossAttentionFusion`, by name from `mmjax.fusion.FUSIONS`), then classify over the
answer vocabulary (the "classify" objective; evaluator "vqa", mmjax/evals/vqa_evals.py). Data: mmjax/data/vqa_shapes.py.

  question int [B, L] (0 = padding) -> Embed + sinusoidal positions -> `text_depth` masked self-attention blocks
      -> q [B, L, width]
  image [B, H, W, 3] -> Conv 3x3 (width/2) -> ReLU -> Conv patch x patch, stride patch (width) -> + learned
      positions -> v [B, (H/p)(W/p), width]
  fused = fusion([q, v]) [B, L, width] (the question tokens query the patches; pool "none")
      -> `post_depth` masked self-attention blocks over the question tokens -> masked mean over real tokens
      -> MLP (`head_hidden`) -> logits [B, num_answers]
With `modalities = ("question",)` the image branch and the fusion are left out: the question-only baseline, which
can learn only the answer priors of each question.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.fusion import build_fusion
from mmjax.fusion.common import sinusoidal_positions
from mmjax.layers import LN_EPS, TransformerBlock, padding_mask
from mmjax.registry import MODELS


@MODELS.register("vqa")
class VQAModel(nn.Module):
  """inputs in `modalities` order (("image", "question") or ("question",)) -> answer logits [B, num_answers]."""
  modalities: Sequence[str] = ("image", "question")
  num_answers: int = 21
  vocab_size: int = 64
  width: int = 64
  num_heads: int = 4
  patch_size: int = 4
  text_depth: int = 1
  post_depth: int = 1
  head_hidden: int = 128
  fusion: str = "cross_attention"
  fusion_kwargs: Mapping = FrozenDict({"depth": 2})

  def __post_init__(self):
    object.__setattr__(self, "modalities", tuple(self.modalities))
    object.__setattr__(self, "fusion_kwargs", FrozenDict(dict(self.fusion_kwargs or {})))
    if self.modalities not in (("image", "question"), ("question",)):
      raise MmjaxError(f"config key model.modalities={list(self.modalities)}: use ('image', 'question') or "
                       f"('question',) (the question-only baseline)")
    super().__post_init__()

  def embed_image(self, image: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> patch tokens [B, (H/p)(W/p), width]."""
    p = self.patch_size
    if image.ndim != 4 or image.shape[1] % p or image.shape[2] % p:
      raise MmjaxError(f"vqa: image of shape {tuple(image.shape)}; expected [B, H, W, 3] with H, W divisible by "
                       f"model.patch_size={p}")
    h = nn.relu(nn.Conv(self.width // 2, (3, 3), padding="SAME", name="stem")(image.astype(jnp.float32)))
    h = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="patch")(h)
    tokens = einops.rearrange(h, "b h w c -> b (h w) c")
    pos = self.param("image_pos", nn.initializers.normal(0.02), tokens.shape[1:])
    return tokens + pos

  @nn.compact
  def __call__(self, *inputs: jax.Array, lengths: Mapping[str, jax.Array] | None = None, train: bool = False):
    if len(inputs) != len(self.modalities):
      raise MmjaxError(f"vqa got {len(inputs)} inputs for modalities {list(self.modalities)}")
    x = dict(zip(self.modalities, inputs))
    question = x["question"].astype(jnp.int32)
    valid = question > 0
    if lengths and "question" in lengths:
      valid = jnp.arange(question.shape[1])[None, :] < lengths["question"][:, None]
    mask = padding_mask(valid)
    q = nn.Embed(self.vocab_size, self.width, name="embed")(question)
    q = q + sinusoidal_positions(question.shape[1], self.width)
    for i in range(self.text_depth):
      q = TransformerBlock(self.num_heads, name=f"text_{i}")(q, mask)
    if "image" in x:
      v = self.embed_image(x["image"])
      kwargs = dict(self.fusion_kwargs, width=self.width, num_heads=self.num_heads, pool="none")
      q = build_fusion(self.fusion, kwargs, name="fusion")([q, v], train=train)
      if q.ndim != 3:
        raise MmjaxError(f"vqa: fusion {self.fusion!r} must return question tokens [B, L, D]; got {q.shape}")
    for i in range(self.post_depth):
      q = TransformerBlock(self.num_heads, name=f"post_{i}")(q, mask)
    q = nn.LayerNorm(epsilon=LN_EPS, name="ln_out")(q)
    w = valid.astype(q.dtype)[..., None]
    pooled = jnp.sum(q * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
    h = nn.relu(nn.Dense(self.head_hidden, name="head_0")(pooled))
    return nn.Dense(self.num_answers, name="head_out")(h)
