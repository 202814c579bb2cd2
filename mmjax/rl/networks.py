"""Instruction-conditioned actor-critic for ShapesWorld: image CNN + instruction encoder, fused by any
`mmjax.fusion` module (FiLM by default: Perez et al. 2018, the classic choice for instruction following, e.g.
Chaplot et al. 2018, "Gated-Attention Architectures for Task-Oriented Language Grounding").

Inputs: `image` uint8 [B, H, W, 3] (H = W = grid * cell_px), `tokens` int32 [B, L] (0 = padding).
- Image: a conv with kernel = stride = cell_px reads one cell per position -> [B, G, G, C], then a 3x3 conv.
- Instruction: word embeddings + learned positions, mean over the non-pad tokens, a linear Dense -> [B, D]
  (all-padding instructions, the "masked" evaluation, give the zero vector). Linear on purpose: FiLM's gamma and
  beta are then sums of per-word terms, which lets colour and shape compose for held-out pairs.
- Fusion "film": FiLM modulates the cell feature map [B, G, G, C] by the instruction (then a 3x3 conv, flatten,
  MLP); any other fusion (config key model.fusion) fuses the flattened image vector [B, D] with the instruction.
Outputs: action logits [B, A] and value [B].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion import build_fusion


class InstructionEncoder(nn.Module):
  """Bag of (word + position) embeddings over non-pad tokens: [B, L] -> [B, width]."""
  vocab_size: int
  width: int = 32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    valid = (tokens != 0).astype(jnp.float32)[..., None]                          # [B, L, 1]
    x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens)
    x = x + self.param("pos", nn.initializers.normal(0.02), (tokens.shape[-1], self.width))
    x = jnp.sum(x * valid, axis=-2) / jnp.maximum(jnp.sum(valid, axis=-2), 1.0)
    # linear in the words (no nonlinearity): FiLM's gamma/beta are then sums of per-word terms, a bias towards
    # composing colour and shape that held-out pairs need
    return nn.Dense(self.width, name="proj")(x) * (jnp.sum(valid, axis=-2) > 0)


class ActorCritic(nn.Module):
  num_actions: int
  vocab_size: int
  cell_px: int
  channels: int = 16
  text_width: int = 32
  hidden: int = 128
  fusion: str = "film"
  fusion_kwargs: Any = None
  blind: bool = False          # True: the instruction is replaced by padding (the language-free baseline)

  @nn.compact
  def __call__(self, image: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    p = self.cell_px
    if self.blind:
      tokens = jnp.zeros_like(tokens)
    x = image.astype(jnp.float32) / 255.0
    x = nn.relu(nn.Conv(self.channels, (p, p), strides=(p, p), padding="VALID", name="cell_conv")(x))
    x = nn.Conv(self.channels, (1, 1), name="cell_mix")(x)                       # [B, G, G, C]
    text = InstructionEncoder(self.vocab_size, self.text_width, name="text")(tokens)
    if self.fusion == "film":
      x = nn.relu(build_fusion("film", self.fusion_kwargs, name="fusion")([x, text]))
      x = nn.relu(nn.Conv(self.channels, (3, 3), name="conv")(x))
      h = x.reshape(x.shape[0], -1)
    else:
      x = nn.relu(nn.Conv(self.channels, (3, 3), name="conv")(nn.relu(x)))
      img = nn.relu(nn.Dense(self.hidden, name="image_proj")(x.reshape(x.shape[0], -1)))
      h = build_fusion(self.fusion, self.fusion_kwargs, name="fusion")([img, text])
      h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(self.hidden, name="torso")(h))
    logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy")(h)
    value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(h)[..., 0]
    return logits, value
