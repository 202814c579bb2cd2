"""Zero-shot classification with prompt ensembles (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision", Sec. 3.1.4; open_clip's `build_zero_shot_classifier`).

Each class's weight is the renormalised mean of the L2-normalised text embeddings of its prompts; an image is
classified by the largest dot product with its (L2-normalised) image embedding.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import MmjaxError

Template = str | Callable[[str], str]


def _a(word: str) -> str:
  return ("an " if word[:1] in "aeiou" else "a ") + word


# Prompts for the embedded shapes data, mirroring its caption sentences ("{}", "there is {}", "an image of {}",
# "a picture showing {}") and its articles ("an orange star"), so every prompt word is in the caption vocabulary.
SHAPES_TEMPLATES: tuple[Callable[[str], str], ...] = (
    lambda c: _a(c),
    lambda c: f"there is {_a(c)}",
    lambda c: f"an image of {_a(c)}",
    lambda c: f"a picture showing {_a(c)}",
)


def _unit(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _fill(template: Template, classname: str) -> str:
  if callable(template):
    return template(classname)
  if "{}" not in template:
    raise MmjaxError(f"zero-shot template {template!r} has no '{{}}' for the class name")
  return template.format(classname)


def build_classifier(encode_text: Callable[[np.ndarray], jax.Array], tokenize: Callable[[list[str]], np.ndarray],
                     classnames: Sequence[str], templates: Sequence[Template],
                     batch_size: int = 256) -> jax.Array:
  """Zero-shot classifier weights [C, D], unit-norm rows.

  encode_text: int32 tokens [n, L] -> embeddings [n, D] (need not be normalised); tokenize: list[str] -> [n, L].
  Texts of all classes are batched together; every call gets exactly min(batch_size, C * T) rows (the last batch
  is padded by repeating its last row) so a jitted `encode_text` compiles once.
  """
  if not classnames:
    raise MmjaxError("build_classifier: classnames is empty")
  if not templates:
    raise MmjaxError("build_classifier: templates is empty")
  if batch_size < 1:
    raise MmjaxError(f"build_classifier: batch_size must be >= 1, got {batch_size}")
  texts = [_fill(t, c) for c in classnames for t in templates]          # class-major: [C * T]
  bs = min(batch_size, len(texts))
  embs = []
  for start in range(0, len(texts), bs):
    chunk = texts[start:start + bs]
    tokens = np.asarray(tokenize(chunk))
    if tokens.ndim != 2 or tokens.shape[0] != len(chunk):
      raise MmjaxError(f"build_classifier: tokenize must return [n={len(chunk)}, L], got shape {tokens.shape}")
    tokens = np.pad(tokens, [(0, bs - len(chunk)), (0, 0)], mode="edge")
    emb = jnp.asarray(encode_text(tokens))
    if emb.ndim != 2 or emb.shape[0] != bs:
      raise MmjaxError(f"build_classifier: encode_text must return [n={bs}, D], got shape {emb.shape}")
    embs.append(_unit(emb[:len(chunk)].astype(jnp.float32)))
  emb = jnp.concatenate(embs).reshape(len(classnames), len(templates), -1)   # [C, T, D]
  return _unit(emb.mean(axis=1))


def zero_shot_accuracy(img_emb: jax.Array, classifier: jax.Array, labels: jax.Array,
                       topk: Sequence[int] = (1,)) -> dict[str, float]:
  """Top-k accuracy in percent: {"top1": ..., "top5": ...} for each k in topk with k <= C (others are skipped).

  img_emb [N, D] (L2-normalised), classifier [C, D] from `build_classifier`, labels int [N] in [0, C).
  Ties count against the image: a wrong class scoring equal to the true one ranks ahead of it.
  """
  img_emb, classifier, labels = jnp.asarray(img_emb), jnp.asarray(classifier), jnp.asarray(labels)
  if classifier.ndim != 2:
    raise MmjaxError(f"zero_shot_accuracy: classifier must be [C, D], got shape {classifier.shape}")
  if img_emb.ndim != 2 or img_emb.shape[0] == 0 or img_emb.shape[1] != classifier.shape[1]:
    raise MmjaxError(f"zero_shot_accuracy: img_emb must be [N, D={classifier.shape[1]}] with N > 0, "
                     f"got shape {img_emb.shape}")
  if labels.shape != (img_emb.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise MmjaxError(f"zero_shot_accuracy: labels must be int [N={img_emb.shape[0]}], "
                     f"got {labels.dtype} {labels.shape}")
  num_classes = classifier.shape[0]
  lo, hi = int(labels.min()), int(labels.max())
  if lo < 0 or hi >= num_classes:
    raise MmjaxError(f"zero_shot_accuracy: labels must be in [0, C={num_classes}), got [{lo}, {hi}]")
  if not topk or any(int(k) != k or k < 1 for k in topk):
    raise MmjaxError(f"zero_shot_accuracy: topk must be positive integers, got {tuple(topk)}")
  ranks = _label_ranks(img_emb, classifier, labels)
  return {f"top{int(k)}": 100.0 * int(jnp.sum(ranks < k)) / labels.shape[0] for k in topk if k <= num_classes}


@jax.jit
def _label_ranks(img_emb: jax.Array, classifier: jax.Array, labels: jax.Array) -> jax.Array:
  """[N] number of wrong classes scoring >= the true class (pessimistic 0-based rank)."""
  dtype = jnp.promote_types(jnp.result_type(img_emb, classifier), jnp.float32)
  logits = jnp.matmul(img_emb.astype(dtype), classifier.astype(dtype).T, precision=jax.lax.Precision.HIGHEST)
  true = jnp.take_along_axis(logits, labels[:, None], axis=1)
  wrong = jnp.arange(classifier.shape[0])[None, :] != labels[:, None]
  return jnp.sum((logits >= true) & wrong, axis=1)


def _first(x) -> np.ndarray:
  """Label of the first shape in each image: int [B, S] -> [B] ([B] passes through)."""
  x = np.asarray(x)
  return x[:, 0] if x.ndim == 2 else x


def shapes_tasks() -> dict[str, tuple[list[str], Callable[[dict], np.ndarray], tuple[Template, ...]]]:
  """Zero-shot tasks on the shapes data: name -> (classnames, label_fn(example batch) -> int [B], templates).

  Labels come from the first shape of each image (meaningful with data.max_shapes = 1). Class texts are the bare
  caption words ("red", "circle", "red circle") so every prompt uses only words the captions contain. Every
  caption names both colour and shape, so a bare "a circle" is a sentence the text tower never saw: as in CLIP's
  prompt ensembling (Radford et al. 2021, Sec. 3.1.4), the "shape" class embedding averages SHAPES_TEMPLATES over
  every colour word ("a red circle", "a blue circle", ...) and the "colour" one over every shape word.
  """
  from mmjax.data.shapes import COLOURS, SHAPES   # lazy: keeps evals importable without the data module
  shapes, colours = list(SHAPES), list(COLOURS)
  over_colours = tuple((lambda c, t=t, col=col: t(f"{col} {c}")) for t in SHAPES_TEMPLATES for col in colours)
  over_shapes = tuple((lambda c, t=t, sh=sh: t(f"{c} {sh}")) for t in SHAPES_TEMPLATES for sh in shapes)
  return {
      "shape": (shapes, lambda ex: _first(ex["shape"]), over_colours),
      "colour": (colours, lambda ex: _first(ex["colour"]), over_shapes),
      "shape_colour": ([f"{c} {s}" for c in colours for s in shapes],
                       lambda ex: _first(ex["colour"]) * len(shapes) + _first(ex["shape"]), SHAPES_TEMPLATES),
  }


# The 18 CIFAR-10 prompt templates of CLIP (Radford et al. 2021; openai/CLIP notebooks/Prompt_Engineering_for_ImageNet
# and open_clip's zero_shot_metadata), filled with the class name.
CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.")
