"""CLIP with extra heads on its towers, for composite objectives (mmjax.objectives.composite): one image tower
and one text tower shared by every term, each term reaching the model through the method `term_methods` names.

model.heads (each optional; a term of config.objective other than clip/siglip needs its head):
  caption = {depth, num_heads, mlp_ratio}: CoCa (Yu et al. 2022, "CoCa: Contrastive Captioners are Image-Text
    Foundation Models"). The causal text tower is the decoder's unimodal part, its EOT token the contrastive text
    embedding (CLIP's pooling, where CoCa appends a CLS token); `depth` multimodal DecoderBlocks (causal
    self-attention + cross-attention to every ViT token after ln_post) on its tokens, then LayerNorm and a Dense
    to the vocabulary. `caption_logits(images [B, H, W, 3], tokens [B, T]) -> [B, T, V]`, T <= text.context_length
    (the text tower reads the tokens padded to its context; causal, so the padding changes nothing before it).
    Decodable like the captioner (`caption_memory`, `init_cache`, `decode_step`): the captioning evaluator's
    greedy/beam captions and CIDEr-D work on CoCa too.
  simclr = {hidden, dim}: SLIP (Mu et al. 2022): an MLP (Dense-LayerNorm-ReLU x 2, Dense; SLIP's BatchNorm
    replaced by LayerNorm) on the image tower's pooled token. `simclr_embed(images) -> [B, dim]`.
  mae = {width, depth, num_heads, mlp_ratio, mask_ratio, norm_pix_loss}: an MAE decoder (He et al. 2022) on the
    image tower run on the visible patches only (ViT `patch_ids`, the MAE mask of mmjax.models.mae).
    `mae_outputs(images) -> (pred [B, N, p*p*3], mask [B, N])`, mask from the "mask" rng stream.
  mlm = {}: BERT's LM head (Devlin et al. 2019) on the text tower's tokens; needs model.text.causal = False (a
    bidirectional text tower, also the contrastive one). `mlm_logits(tokens [B, L]) -> [B, L, V]`.

Params: CLIP's {"vision", "text", "logit_scale", ["logit_bias"]} plus each head's own ("caption_blocks_{i}",
"caption_ln", "caption_head"; "simclr_head"; "mae_*"; "mlm_*"). Evaluators see CLIP (encode_image/encode_text).
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmjax.errors import MmjaxError
from mmjax.layers import DEFAULT_EOT_ID, LN_EPS, Transformer
from mmjax.layers.decoder import DecoderBlock
from mmjax.models.clip import CLIP
from mmjax.models.mae import masking_from_noise, sincos_2d, sub_config, unshuffle
from mmjax.registry import MODELS
from mmjax.vocab import PAD_ID, SOT_ID

HEADS = {"caption": (("depth", "num_heads"), {"mlp_ratio": 4.0}),
         "simclr": ((), {"hidden": 256, "dim": 64}),
         "mae": (("width", "depth", "num_heads"), {"mlp_ratio": 4.0, "mask_ratio": 0.75, "norm_pix_loss": True}),
         "mlm": ((), {})}
_HEAD_METHODS = {"caption": "caption_logits", "simclr": "simclr_embed", "mae": "mae_outputs",
                 "mlm": "mlm_logits"}


@MODELS.register("multitask_clip")
class MultiTaskCLIP(CLIP):
  """CLIP + the heads in `heads` (see the module docstring); __call__ is CLIP's (and touches every head, for init)."""
  heads: Mapping = FrozenDict()

  def __post_init__(self):
    heads = {}
    for name, cfg in dict(self.heads).items():
      if name not in HEADS:
        raise MmjaxError(f"unknown config key 'model.heads.{name}' (valid heads: {', '.join(sorted(HEADS))})")
      required, defaults = HEADS[name]
      heads[name] = sub_config(cfg or {}, f"heads.{name}", required, defaults)
    causal = dict(self.text).get("causal", True)
    if "caption" in heads and not causal:
      raise MmjaxError("model.heads.caption (CoCa) needs a causal text tower: remove model.text.causal=False")
    if "mlm" in heads and causal:
      raise MmjaxError("model.heads.mlm needs a bidirectional text tower: set model.text.causal=False")
    object.__setattr__(self, "heads", FrozenDict(heads))
    super().__post_init__()

  @property
  def term_methods(self) -> dict[str, str]:
    """Composite-objective term -> the method implementing that objective's model contract."""
    return {"clip": "clip_outputs", "siglip": "clip_outputs",
            **{h: _HEAD_METHODS[h] for h in self.heads}}

  # Attributes the per-example objectives read.
  @property
  def eot_id(self):
    return dict(self.text).get("eot_id", DEFAULT_EOT_ID)

  @property
  def vocab_size(self) -> int:
    return int(self.text["vocab_size"])

  @property
  def context_length(self) -> int:
    return int(self.text["context_length"])

  @property
  def pad_id(self) -> int:
    return int(dict(self.text).get("pad_id", PAD_ID))

  sot_id = SOT_ID

  @property
  def can_caption(self) -> bool:
    """Whether the captioning evaluator and mmjax.decoding can caption with this model (a CoCa caption head)."""
    return "caption" in self.heads

  @property
  def patch_size(self) -> int:
    return int(self.vision["patch_size"])

  @property
  def norm_pix_loss(self) -> bool:
    return bool(self.heads["mae"]["norm_pix_loss"])

  def setup(self):
    super().setup()
    h, tw = self.heads, int(self.text["width"])
    dense = dict(dtype=self.dtype)
    ln = dict(epsilon=LN_EPS, dtype=self.dtype)
    if "caption" in h:
      c = h["caption"]
      self.caption_blocks = [DecoderBlock(tw, int(c["num_heads"]), float(c["mlp_ratio"]), dtype=self.dtype,
                                          cpu_tuning=self.cpu_tuning, name=f"caption_blocks_{i}")
                             for i in range(int(c["depth"]))]
      self.caption_ln = nn.LayerNorm(**ln)
      self.caption_head = nn.Dense(self.vocab_size, **dense)
    if "simclr" in h:
      s = h["simclr"]
      self.simclr_head = [nn.Dense(int(s["hidden"]), **dense), nn.LayerNorm(**ln), nn.Dense(int(s["hidden"]), **dense),
                          nn.LayerNorm(**ln), nn.Dense(int(s["dim"]), **dense)]
    if "mae" in h:
      m = h["mae"]
      grid = int(self.vision["image_size"]) // self.patch_size
      xavier = dict(dense, kernel_init=nn.initializers.xavier_uniform())
      self.mae_embed = nn.Dense(int(m["width"]), **xavier)
      self.mae_mask_token = self.param("mae_mask_token", nn.initializers.normal(0.02), (1, 1, int(m["width"])))
      self.mae_pos = jnp.asarray(sincos_2d(int(m["width"]), grid))[None]
      self.mae_decoder = Transformer(int(m["depth"]), int(m["num_heads"]), float(m["mlp_ratio"]), dtype=self.dtype,
                                     cpu_tuning=self.cpu_tuning)
      self.mae_norm = nn.LayerNorm(**ln)
      self.mae_pred = nn.Dense(self.patch_size ** 2 * 3, **xavier)
    if "mlm" in h:
      self.mlm_transform = nn.Dense(tw, **dense)
      self.mlm_norm = nn.LayerNorm(**ln)
      self.mlm_logits_dense = nn.Dense(self.vocab_size, **dense)

  def clip_outputs(self, images: jax.Array, tokens: jax.Array, train: bool = False):
    """CLIP's (zimg [B, E], ztxt [B, E], {"logit_scale", "logit_bias"})."""
    return super().__call__(images, tokens, train=train)

  def caption_logits(self, images: jax.Array, tokens: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, 3], tokens int32 [B, T] -> logits float32 [B, T, V] (position t predicts token t + 1)."""
    return self.caption_decode(tokens, self.caption_memory(images, train=train), train=train)

  def caption_memory(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, 3] -> the captioner's memory [B, N+1, w]: every ViT token after ln_post."""
    _, out = self.vision_tower(images, train=train)
    return out["normed_tokens"]

  def caption_decode(self, tokens: jax.Array, memory: jax.Array, train: bool = False) -> jax.Array:
    """tokens int32 [B, T], memory [B, N+1, w] -> logits float32 [B, T, V] (teacher forcing)."""
    t, length = tokens.shape[1], self.context_length
    if t > length:
      raise MmjaxError(f"caption tokens have length {t} > model.text.context_length={length}")
    padded = jnp.pad(tokens, ((0, 0), (0, length - t)), constant_values=self.pad_id)
    _, txt = self.text_tower(padded, train=train)
    x = txt["normed_tokens"][:, :t]
    for block in self.caption_blocks:
      x = block(x, memory)
    return self.caption_head(self.caption_ln(x)).astype(jnp.float32)

  # Decoding (mmjax.decoding.caption_greedy / caption_beam): the text tower has no per-block key/value cache, so a
  # step re-runs it on the whole padded context (causal: the pads after `position` change nothing before it). That
  # is O(T^2) in the caption length, cheap at T <= context_length = a few dozen tokens.
  def init_cache(self, memory: jax.Array, max_len: int | None = None) -> dict[str, jax.Array]:
    """memory [B, N+1, w] -> {"memory", "tokens" int32 [B, context_length] (pad)} for decode_step."""
    if max_len is not None and int(max_len) > self.context_length:
      raise MmjaxError(f"decoding max_len={max_len} exceeds model.text.context_length={self.context_length}")
    return {"memory": memory, "tokens": jnp.full((memory.shape[0], self.context_length), self.pad_id, jnp.int32)}

  def decode_step(self, cache: dict[str, jax.Array], token: jax.Array,
                  position: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """cache, token int32 [B] at `position` (scalar) -> (logits [B, V] for the next token, updated cache)."""
    pos = jnp.asarray(position, jnp.int32)
    tokens = jax.lax.dynamic_update_slice(cache["tokens"], token[:, None].astype(jnp.int32),
                                          (jnp.zeros((), jnp.int32), pos))
    logits = self.caption_decode(tokens, cache["memory"])                    # causal: the pads after pos are unseen
    return jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False), dict(cache, tokens=tokens)

  def simclr_embed(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, 3] -> SimCLR projections [B, dim] (float32) of the pooled image token."""
    _, out = self.vision_tower(images, train=train)
    x = out["pooled"]
    for i, layer in enumerate(self.simclr_head):
      x = layer(x)
      if i in (1, 3):
        x = nn.relu(x)
    return x.astype(jnp.float32)

  def mae_outputs(self, images: jax.Array, train: bool = False, noise: jax.Array | None = None):
    """images [B, H, W, 3] -> (pred float32 [B, N, p*p*3], mask float32 [B, N], 1 = masked); noise [B, N] or the
    "mask" rng stream picks the visible patches (MAE's per-sample argsort)."""
    n = (int(self.vision["image_size"]) // self.patch_size) ** 2
    if noise is None:
      noise = jax.random.uniform(self.make_rng("mask"), (images.shape[0], n))
    m = masking_from_noise(noise, float(self.heads["mae"]["mask_ratio"]))
    _, out = self.vision_tower(images, train=train, patch_ids=m["ids_keep"])
    y = self.mae_embed(out["normed_tokens"])
    patches = unshuffle(y[:, 1:], self.mae_mask_token, m["ids_restore"]) + self.mae_pos.astype(y.dtype)
    y = self.mae_norm(self.mae_decoder(jnp.concatenate([y[:, :1], patches], axis=1)))
    return self.mae_pred(y[:, 1:]).astype(jnp.float32), m["mask"]

  def mlm_logits(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """tokens int32 [B, L] -> logits float32 [B, L, V] of the bidirectional text tower's tokens."""
    _, out = self.text_tower(tokens, train=train)
    h = nn.gelu(self.mlm_transform(out["normed_tokens"]), approximate=False)
    return self.mlm_logits_dense(self.mlm_norm(h)).astype(jnp.float32)

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
    """CLIP's outputs; every head runs once too, so that `init` creates its parameters."""
    outputs = self.clip_outputs(images, tokens, train=train)
    if "caption" in self.heads:
      self.caption_logits(images, tokens[:, :-1], train=train)
    if "simclr" in self.heads:
      self.simclr_embed(images, train=train)
    if "mae" in self.heads:
      n = (int(self.vision["image_size"]) // self.patch_size) ** 2
      self.mae_outputs(images, train=train, noise=jnp.zeros((images.shape[0], n)))
    if "mlm" in self.heads:
      self.mlm_logits(tokens, train=train)
    return outputs
