"""OpenCLIP (Cherti et al. 2023; Ilharco et al. 2021) weights <-> mmjax CLIP parameters, both ways.

mmjax's ViT / TextTransformer / CLIP keep OpenCLIP's module names (conv1, class_embedding -> cls,
positional_embedding -> pos_embedding, ln_pre, transformer.resblocks.i.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj},
ln_post, proj; token_embedding, ln_final, text_projection -> proj; logit_scale, logit_bias), so the map is a
renaming plus layout changes: torch Linear weights [out, in] -> flax kernels [in, out]; conv1 [w, 3, p, p] ->
[p, p, 3, w] (NHWC); the vision positional embedding gains a leading batch axis. Fused q/k/v `in_proj` is kept
fused in the same [q; k; v] x heads order.

Reading needs no torch for `.safetensors` files; `.pt`/`.bin` files are read with `torch.load(weights_only=True)`
(never unrestricted pickle). Supported: OpenCLIP's standard `CLIP` with a ViT image tower and its default text
tower (ViT-B/32, ViT-B/16, ViT-L/14 and any size of the same design): pre-LN, exact GELU, CLS-token pooling for
images, argmax (= EOT) pooling for text, no projection biases. `config_from_state_dict` reads the sizes.

Preprocessing for imported weights (what open_clip's `image_transform` does for these models): resize the shorter
side to `image_size` (bicubic), centre crop, scale to [0, 1], normalise with OPENAI_MEAN / OPENAI_STD per channel
(`preprocess_images`), NHWC for mmjax. Text: open_clip's BPE tokenizer (vocab 49408, sot 49406, eot 49407, pad 0,
context 77; mmjax.data.clip_bpe); imported models pool at argmax(ids) as OpenCLIP (text.eot_id=None).
`load` gives model, params, tokenizer and preprocess (open_clip's eval transform) in one call.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.models.clip import OPENAI_MEAN, OPENAI_STD  # noqa: F401  (re-exported)

# open_clip model configs (open_clip/model_configs/*.json) as mmjax model configs.
PRESETS = {
    "ViT-B-32": dict(embed_dim=512, vision=dict(image_size=224, patch_size=32, width=768, depth=12, num_heads=12),
                     text=dict(vocab_size=49408, context_length=77, width=512, depth=12, num_heads=8)),
    "ViT-B-16": dict(embed_dim=512, vision=dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12),
                     text=dict(vocab_size=49408, context_length=77, width=512, depth=12, num_heads=8)),
    "ViT-L-14": dict(embed_dim=768, vision=dict(image_size=224, patch_size=14, width=1024, depth=24, num_heads=16),
                     text=dict(vocab_size=49408, context_length=77, width=768, depth=12, num_heads=12)),
}

_BLOCK = {  # OpenCLIP block parameter -> (mmjax path under resblocks_i, transpose?)
    "ln_1.weight": ("ln_1/scale", False), "ln_1.bias": ("ln_1/bias", False),
    "attn.in_proj_weight": ("attn/in_proj/kernel", True), "attn.in_proj_bias": ("attn/in_proj/bias", False),
    "attn.out_proj.weight": ("attn/out_proj/kernel", True), "attn.out_proj.bias": ("attn/out_proj/bias", False),
    "ln_2.weight": ("ln_2/scale", False), "ln_2.bias": ("ln_2/bias", False),
    "mlp.c_fc.weight": ("mlp/c_fc/kernel", True), "mlp.c_fc.bias": ("mlp/c_fc/bias", False),
    "mlp.c_proj.weight": ("mlp/c_proj/kernel", True), "mlp.c_proj.bias": ("mlp/c_proj/bias", False),
}
_TOP = {  # OpenCLIP name -> mmjax path; layout changes in _to_mmjax / _to_open_clip
    "visual.conv1.weight": "vision/conv1/kernel", "visual.class_embedding": "vision/cls",
    "visual.positional_embedding": "vision/pos_embedding", "visual.ln_pre.weight": "vision/ln_pre/scale",
    "visual.ln_pre.bias": "vision/ln_pre/bias", "visual.ln_post.weight": "vision/ln_post/scale",
    "visual.ln_post.bias": "vision/ln_post/bias", "visual.proj": "vision/proj/kernel",
    "token_embedding.weight": "text/token_embedding/embedding", "positional_embedding": "text/pos_embedding",
    "ln_final.weight": "text/ln_final/scale", "ln_final.bias": "text/ln_final/bias",
    "text_projection": "text/proj/kernel", "logit_scale": "logit_scale", "logit_bias": "logit_bias",
}
_IGNORED = ("attn_mask",)
_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A checkpoint file -> {name: float32 ndarray}. `.safetensors` without torch; `.pt`/`.bin`/`.pth` with
  `torch.load(weights_only=True)` (a {"state_dict": ...} wrapper and DDP's "module." prefix are undone)."""
  if not os.path.exists(path):
    raise MmjaxError(f"OpenCLIP checkpoint {path} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    sd = load_file(path)
  else:
    try:
      import torch
    except ImportError:
      raise MmjaxError(f"reading {path} needs torch (pip install 'mmjax[torch]'); or convert it to .safetensors")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    sd = {k: v.float().numpy() for k, v in obj.items() if hasattr(v, "numpy")}
  return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v, np.float32) for k, v in sd.items()}


def config_from_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The mmjax `model` config (name "clip") of an OpenCLIP ViT CLIP state dict; heads = width / 64 as OpenCLIP."""
  need = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "positional_embedding",
          "text_projection")
  missing = [k for k in need if k not in sd]
  if missing:
    raise MmjaxError(f"not an OpenCLIP ViT CLIP state dict: missing {missing} (timm / ModifiedResNet towers and "
                     f"custom text towers are not supported)")
  vw, _, p, _ = sd["visual.conv1.weight"].shape
  grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
  depth = lambda prefix: 1 + max(int(m.group(2)) for k in sd if (m := _RESBLOCK.match(k)) and
                                 (m.group(1) or "") == prefix)
  mlp = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vw
  vocab, tw = sd["token_embedding.weight"].shape
  cfg = dict(name="clip", embed_dim=int(sd["text_projection"].shape[1]),
             vision=dict(image_size=int(grid * p), patch_size=int(p), width=int(vw), depth=depth("visual."),
                         num_heads=int(vw // 64), mlp_ratio=float(mlp), pool="cls"),
             text=dict(vocab_size=int(vocab), context_length=int(sd["positional_embedding"].shape[0]), width=int(tw),
                       depth=depth(""), num_heads=int(tw // 64),
                       mlp_ratio=float(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / tw),
                       eot_id=None))   # pool at argmax(token id), as OpenCLIP's text tower
  if "logit_bias" in sd:
    cfg["logit_bias_init"] = float(sd["logit_bias"])
  return cfg


def _mmjax_path(name: str) -> tuple[str, bool] | None:
  if name in _TOP:
    return _TOP[name], False
  m = _RESBLOCK.match(name)
  if m and m.group(3) in _BLOCK:
    tower = "vision" if m.group(1) else "text"
    path, transpose = _BLOCK[m.group(3)]
    return f"{tower}/transformer/resblocks_{m.group(2)}/{path}", transpose
  return None


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def import_params(sd: Mapping[str, np.ndarray]) -> dict:
  """OpenCLIP state dict -> mmjax CLIP params (nested dict of float32 ndarrays). Unknown keys are an error."""
  params: dict = {}
  unknown = []
  for name, value in sd.items():
    if name.split(".")[-1] in _IGNORED:
      continue
    where = _mmjax_path(name)
    if where is None:
      unknown.append(name)
      continue
    path, transpose = where
    v = np.asarray(value, np.float32)
    if name == "visual.conv1.weight":
      v = v.transpose(2, 3, 1, 0)                      # [w, 3, p, p] -> [p, p, 3, w]
    elif name == "visual.positional_embedding":
      v = v[None]                                      # [n+1, w] -> [1, n+1, w]
    elif name in ("logit_scale", "logit_bias"):
      v = v.reshape(())
    elif transpose:
      v = v.T
    _set(params, path, v)
  if unknown:
    raise MmjaxError(f"OpenCLIP keys with no mmjax counterpart: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
  return params


def export_state_dict(params: Mapping) -> dict[str, np.ndarray]:
  """mmjax CLIP params -> OpenCLIP state dict (the inverse of import_params; no attn_mask buffer), C-contiguous
  float32 arrays (safe to pass to safetensors' save_file, which silently garbles non-contiguous views)."""
  flat: dict[str, np.ndarray] = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      if isinstance(v, Mapping):
        walk(v, f"{prefix}{k}/")
      else:
        flat[f"{prefix}{k}"] = np.asarray(v, np.float32)
  walk(params, "")
  inverse_top = {v: k for k, v in _TOP.items()}
  inverse_block = {v[0]: (k, v[1]) for k, v in _BLOCK.items()}
  out = {}
  for path, v in flat.items():
    if path in inverse_top:
      name = inverse_top[path]
      if name == "visual.conv1.weight":
        v = v.transpose(3, 2, 0, 1)
      elif name == "visual.positional_embedding":
        v = v[0]
      out[name] = v
      continue
    m = re.match(r"^(vision|text)/transformer/resblocks_(\d+)/(.+)$", path)
    if not m or m.group(3) not in inverse_block:
      raise MmjaxError(f"mmjax parameter {path} has no OpenCLIP counterpart")
    name, transpose = inverse_block[m.group(3)]
    prefix = "visual." if m.group(1) == "vision" else ""
    out[f"{prefix}transformer.resblocks.{m.group(2)}.{name}"] = v.T if transpose else v
  # C-contiguous copies: safetensors.numpy.save_file writes a transposed view's memory in its base's order.
  return {k: np.array(v, np.float32, order="C") for k, v in out.items()}


def preprocess_images(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 [B, H, W, 3] already resized/cropped to the model's image_size -> float32 NHWC normalised as open_clip
  (ToTensor then Normalize(OPENAI_MEAN, OPENAI_STD))."""
  x = np.asarray(images_uint8, np.float32) / 255.0
  return (x - np.asarray(OPENAI_MEAN, np.float32)) / np.asarray(OPENAI_STD, np.float32)


def check_preset(preset: str, sd: Mapping[str, np.ndarray], path: str) -> None:
  """Raises unless the state dict `sd` (read from `path`) has the architecture of open_clip's model `preset`."""
  if preset not in PRESETS:
    raise MmjaxError(f"unknown OpenCLIP preset {preset!r}; use one of {', '.join(PRESETS)} (as PRESET:FILE) or a "
                     f"file path alone")
  got = config_from_state_dict(sd)
  for tower in ("vision", "text"):
    for k, v in PRESETS[preset][tower].items():
      if got[tower].get(k) != v:
        raise MmjaxError(f"{path} is not a {preset} checkpoint (model.{tower}.{k} is {got[tower].get(k)} in the "
                         f"file, {v} in {preset}); name the right preset or drop it")


def split_preset(spec: str) -> tuple[str | None, str]:
  """"ViT-B-32:/ckpt/b32.safetensors" -> ("ViT-B-32", path); a plain path or preset -> (None, spec) / (spec, "")."""
  if spec in PRESETS:
    return spec, ""
  head, sep, rest = spec.partition(":")
  if sep and head in PRESETS and not os.path.exists(spec):
    return head, rest
  return None, spec


def _resize_crop(image, size: int):
  """PIL image -> PIL image: torchvision's Resize(size, BICUBIC) (shorter side to `size`, the longer one
  int(size * long / short)) then CenterCrop(size) (offsets int(round((h - size) / 2))), as open_clip's eval
  transform for a square image_size with resize_mode "shortest"."""
  from PIL import Image
  w, h = image.size
  if w <= h:
    new = (size, int(size * h / w))
  else:
    new = (int(size * w / h), size)
  if new != (w, h):
    image = image.resize(new, Image.BICUBIC)
  w, h = image.size
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def make_preprocess(image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD):
  """open_clip's eval transform (`image_transform(image_size, is_train=False)`) as a NumPy/PIL function:
  `preprocess(images) -> float32 [N, S, S, 3]` (NHWC), for one PIL image / uint8 [H, W, 3] array or a list of them:
  resize the shorter side to S (bicubic), centre crop S x S, RGB, /255, (x - mean) / std per channel."""
  from PIL import Image
  m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  def one(image):
    if not isinstance(image, Image.Image):
      image = Image.fromarray(np.asarray(image, np.uint8))
    x = np.asarray(_resize_crop(image, int(image_size)).convert("RGB"), np.float32) / np.float32(255)
    return (x - m) / s

  def preprocess(images) -> np.ndarray:
    single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
    return np.stack([one(im) for im in ([images] if single else images)])

  return preprocess


def load(path_or_preset: str, *, seed: int = 0):
  """An OpenCLIP model for mmjax: `(model, params, tokenizer, preprocess)`, as open_clip's
  `create_model_and_transforms` + `get_tokenizer`.

  path_or_preset: a checkpoint file (`.safetensors` without torch; `.pt`/`.pth`/`.bin` with torch weights_only),
  "PRESET:FILE" (the file checked against open_clip's model config PRESET), or a PRESET alone (random weights from
  `seed`: nothing is downloaded). model: mmjax's CLIP (pools text at argmax(ids), images in OpenCLIP's normalised
  NHWC input); params: its parameters (jax arrays); tokenizer: mmjax.data.clip_bpe.ClipBpeTokenizer at the model's
  context length (ids equal to open_clip.tokenize), or None when the text vocabulary is not CLIP's 49408;
  preprocess: `make_preprocess(image_size)`. Embed with `encode_image` / `encode_text` below."""
  import jax

  from mmjax.models import build_model
  preset, path = split_preset(path_or_preset)
  if path:
    sd = load_state_dict(path)
    if preset is not None:
      check_preset(preset, sd, path)
    cfg = config_from_state_dict(sd)
    model = build_model(cfg)
    params = jax.tree.map(jax.numpy.asarray, import_params(sd))
  else:
    cfg = dict(name="clip", **PRESETS[preset])
    cfg["text"] = dict(cfg["text"], eot_id=None)
    model = build_model(cfg)
    v, t = cfg["vision"], cfg["text"]
    params = cpu_tuning.init_jit(model.init)(jax.random.PRNGKey(seed), np.zeros((1, v["image_size"], v["image_size"], 3),
                                 np.float32), np.zeros((1, t["context_length"]), np.int32))["params"]
  tokenizer = None
  if cfg["text"]["vocab_size"] == 49408:
    from mmjax.data.clip_bpe import ClipBpeTokenizer
    tokenizer = ClipBpeTokenizer(context_length=cfg["text"]["context_length"])
  return model, params, tokenizer, make_preprocess(cfg["vision"]["image_size"])


def encode_image(model, params, images, normalize: bool = False):
  """images float32 [B, S, S, 3] (from `preprocess`) -> [B, E]; unit norm when normalize (open_clip's default:
  False)."""
  return model.apply({"params": params}, images, normalize=normalize, method="encode_image")


def encode_text(model, params, tokens, normalize: bool = False):
  """tokens int [B, L] (from the tokenizer) -> [B, E]; unit norm when normalize (open_clip's default: False)."""
  return model.apply({"params": params}, np.asarray(tokens, np.int32), normalize=normalize, method="encode_text")
