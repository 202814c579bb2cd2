"""Co-learning objectives: cyclic translation (MCTN) and cross-modal distillation.

"mctn" (Pham et al. 2019; model mmjax/models/mctn.py): with x̂_T the forward translation of the source and x̂_S its
translation back,
  loss = CE(logits, label) + λ_t · MSE(x̂_T, x_T) + λ_c · MSE(x̂_S, x_S)
(λ_t = translation_weight, λ_c = cycle_weight, the objective's settings; MSE = mean over examples and
features). The targets x_T (batch entries `model.targets`, concatenated along features) are needed only here,
never at test time.

"distill" (Gupta et al. 2016; Hinton et al. 2015; model "distill_student" of mmjax/models/distill.py): a frozen
teacher on one modality (`model.teacher`, loaded by mmjax/train/teacher.py) gives soft targets on paired examples
of another, the student's:
  loss = (1 - α) · CE_lab + α · KD_T,
  CE_lab = Σ_i m_i CE(s_i, y_i) / max(Σ_i m_i, 1)     (m = batch["labeled"] in {0, 1}; all ones if absent)
  KD_T   = T² · mean_i KL(softmax(t_i / T) || softmax(s_i / T))
with α = alpha, T = temperature, the objective's settings (config.objective_kwargs; defaults 0.9, 4.0).
Convention: the KL is multiplied by T² (Hinton et al. 2015, §2.1: the soft-target gradients scale as 1/T², so
T² keeps their size comparable to the hard-label term when T changes); `distill_kl(..., scale_by_t2=False)`
gives the plain KL.

"clip_feature_distill" (model "clip_distill_student"): a student CLIP's unit-norm embeddings matched to a frozen
CLIP's, tower by tower (setting `towers`), with `feature_distill_loss` of setting `kind` (at `temperature` for
"contrastive"), plus `clip_weight` x the student's own CLIP loss (settings in config.objective_kwargs).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.models.clip import l2_normalize
from mmjax.models.inputs import length_kwargs, model_inputs
from mmjax.objectives.base import Objective, configurable
from mmjax.objectives.classify import softmax_cross_entropy
from mmjax.objectives.contrastive import clip_loss
from mmjax.registry import OBJECTIVES


def _f32(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean over every entry of (a - b)²."""
  return jnp.mean(jnp.square(_f32(a) - _f32(b)))


# ------------------------------------------------------------------------------------------------ MCTN
def translation_losses(x_s: jax.Array, x_t: jax.Array, x_t_hat: jax.Array, x_s_hat: jax.Array) -> dict:
  """{"translation": MSE(x̂_T, x_T), "cycle": MSE(x̂_S, x_S)} for arrays `[B, ...]`."""
  if x_t_hat.shape != x_t.shape or x_s_hat.shape != x_s.shape:
    raise MmjaxError(f"mctn: translations have shapes {tuple(x_t_hat.shape)} / {tuple(x_s_hat.shape)}, the data "
                     f"{tuple(x_t.shape)} / {tuple(x_s.shape)}; check model.target_dims against the data")
  return {"translation": mse(x_t_hat, x_t), "cycle": mse(x_s_hat, x_s)}


def cyclic_translation_loss(forward: Callable[[jax.Array], jax.Array], backward: Callable[[jax.Array], jax.Array],
                            x_s: jax.Array, x_t: jax.Array) -> dict:
  """Translation and cycle losses of any pair of translators: x̂_T = forward(x_S), x̂_S = backward(x̂_T)."""
  x_t_hat = forward(x_s)
  return translation_losses(x_s, x_t, x_t_hat, backward(x_t_hat))


def mctn_objective(translation_weight: float = 1.0, cycle_weight: float = 1.0) -> Objective:
  """The "mctn" objective with loss weights λ_t = translation_weight, λ_c = cycle_weight (0, 0: the encoder
  alone; 1, 0: a seq2seq translator without the cycle)."""
  def mctn_loss(params, batch: dict, rng, *, model, train: bool = True):
    """-> (CE + λ_t translation + λ_c cycle, {loss, ce, translation, cycle, accuracy})."""
    keys = (model.source, *model.targets, "label")
    missing = [k for k in keys if k not in batch]
    if missing:
      raise MmjaxError(f"objective 'mctn' needs batch keys {missing} (model.source / model.targets / label); "
                       f"the batch has {sorted(batch)}")
    x_s = batch[model.source]
    x_t = jnp.concatenate([_f32(batch[k]) for k in model.targets], axis=-1)
    kwargs = length_kwargs((model.source,), batch)
    logits, aux = model.apply({"params": params}, x_s, train=train, return_aux=True, rngs={"dropout": rng},
                              **kwargs)
    parts = translation_losses(x_s, x_t, aux["target_hat"], aux["source_hat"])
    ce = jnp.mean(softmax_cross_entropy(logits, batch["label"]))
    loss = ce + translation_weight * parts["translation"] + cycle_weight * parts["cycle"]
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    return loss, {"loss": loss, "ce": ce, **parts, "accuracy": accuracy}
  return Objective(loss=mctn_loss, batch_keys=())


# ------------------------------------------------------------------------------------------------ distillation
def distill_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float,
               scale_by_t2: bool = True) -> jax.Array:
  """T² · mean_i KL(softmax(t_i/T) || softmax(s_i/T)) for logits `[B, C]` (without T² if not scale_by_t2)."""
  s, t = _f32(student_logits) / temperature, _f32(teacher_logits) / temperature
  log_p_t, log_p_s = jax.nn.log_softmax(t, axis=-1), jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  return jnp.mean(kl) * (temperature ** 2 if scale_by_t2 else 1.0)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ m_i CE_i / max(Σ m_i, 1): the cross-entropy over the labelled examples only (0 if none)."""
  mask = _f32(mask)
  return jnp.sum(mask * softmax_cross_entropy(logits, labels)) / jnp.maximum(jnp.sum(mask), 1.0)


def _teacher(model):
  """The frozen teacher the training side attached to a distillation student (mmjax.train.teacher.attach)."""
  if getattr(model, "teacher", None) is None:
    raise MmjaxError(f"model {type(model).__name__} has no teacher loaded; build it with "
                     f"mmjax.train.teacher.attach(model, example_batch) (the Trainer does)")
  return model.teacher


def distill_objective(temperature: float = 4.0, alpha: float = 0.9) -> Objective:
  """The "distill" objective at temperature T and weight alpha (see the module docstring)."""
  if temperature <= 0:
    raise MmjaxError(f"config key objective_kwargs.temperature={temperature} must be > 0")
  if not 0.0 <= alpha <= 1.0:
    raise MmjaxError(f"config key objective_kwargs.alpha={alpha} must be in [0, 1]")

  def distill_loss(params, batch: dict, rng, *, model, train: bool = True):
    """-> ((1-α) CE_lab + α KD_T, {loss, ce, kd, accuracy, teacher_accuracy, agreement, labeled})."""
    args, kwargs = model_inputs(model, batch, also=("label",), what="objective 'distill'")
    teacher = _teacher(model)
    logits = model.apply({"params": params}, *args, train=train, rngs={"dropout": rng}, **kwargs)
    t_logits = teacher(batch)
    labels = batch["label"]
    mask = batch.get("labeled", jnp.ones(labels.shape, jnp.float32))
    ce = masked_cross_entropy(logits, labels, mask)
    kd = distill_kl(logits, t_logits, temperature)
    loss = (1.0 - alpha) * ce + alpha * kd
    pred, t_pred = jnp.argmax(logits, -1), jnp.argmax(t_logits, -1)
    return loss, {"loss": loss, "ce": ce, "kd": kd,
                  "accuracy": jnp.mean((pred == labels).astype(jnp.float32)),
                  "teacher_accuracy": jnp.mean((t_pred == labels).astype(jnp.float32)),
                  "agreement": jnp.mean((pred == t_pred).astype(jnp.float32)),
                  "labeled": jnp.mean(_f32(mask))}
  return Objective(loss=distill_loss, batch_keys=())


# ------------------------------------------------------------------------------------------------ features
FEATURE_KINDS = ("cosine", "mse", "contrastive")


def feature_distill_loss(student: jax.Array, teacher: jax.Array, kind: str = "cosine",
                         temperature: float = 0.07) -> jax.Array:
  """Matches student embeddings `[B, E]` to teacher embeddings `[B, E]` (both L2-normalised here first).

  cosine: mean_i (1 - <s_i, t_i>).  mse: mean_i ||s_i - t_i||² (= 2 · cosine for unit vectors; kept for
  regression-style configs).  contrastive: symmetric InfoNCE between the two sets, logits <s_i, t_j> / τ with the
  pairs (i, i) positive: (CE(rows) + CE(columns)) / 2 (the student must find its own teacher embedding in the batch).
  """
  if kind not in FEATURE_KINDS:
    raise MmjaxError(f"feature distillation kind {kind!r}: use one of {', '.join(FEATURE_KINDS)} "
                     f"(objective_kwargs.kind)")
  if student.shape != teacher.shape:
    raise MmjaxError(f"feature distillation: student embeddings {tuple(student.shape)} and teacher "
                     f"{tuple(teacher.shape)} differ; set model.teacher_dim to the teacher's embedding size")
  s = _f32(student) / jnp.maximum(jnp.linalg.norm(_f32(student), axis=-1, keepdims=True), 1e-12)
  t = _f32(teacher) / jnp.maximum(jnp.linalg.norm(_f32(teacher), axis=-1, keepdims=True), 1e-12)
  if kind == "cosine":
    return jnp.mean(1.0 - jnp.sum(s * t, axis=-1))
  if kind == "mse":
    return jnp.mean(jnp.sum(jnp.square(s - t), axis=-1))
  logits = s @ t.T / temperature
  diag = jnp.diagonal(logits)
  return 0.5 * (jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag) + jnp.mean(jax.nn.logsumexp(logits, axis=0) - diag))


def contrastive_coordination_loss(h1: jax.Array, h2: jax.Array, logit_scale: jax.Array) -> tuple[jax.Array, dict]:
  """Contrastive coordination (CLIP-style InfoNCE, Radford et al. 2021) of paired views h1 [N, E], h2 [N, E]:
  both are L2-normalised and the symmetric cross-entropy of their scaled similarity matrix is returned (the
  contrastive counterpart of Deep CCA's correlation objective, mmjax.alignment.cca.dcca_loss)."""
  return clip_loss(l2_normalize(h1), l2_normalize(h2), logit_scale)


def clip_feature_distill_objective(towers: tuple[str, ...] = ("image", "text"), kind: str = "cosine",
                                   temperature: float = 0.07, clip_weight: float = 0.0) -> Objective:
  """The "clip_feature_distill" objective (see the module docstring)."""
  towers = tuple(towers)
  if set(towers) - {"image", "text"} or not towers:
    raise MmjaxError(f"config key objective_kwargs.towers={list(towers)}: use a non-empty subset of image, text")
  if kind not in FEATURE_KINDS:
    raise MmjaxError(f"config key objective_kwargs.kind={kind!r}: use one of {', '.join(FEATURE_KINDS)}")

  def clip_feature_distill_loss(params, batch: dict, rng, *, model, train: bool = True):
    """-> (Σ_towers feature loss + clip_weight · CLIP loss, {loss, image, text, clip, image_cos, text_cos})."""
    missing = [k for k in ("image", "tokens") if k not in batch]
    if missing:
      raise MmjaxError(f"objective 'clip_feature_distill' needs batch keys {missing}; the batch has {sorted(batch)}")
    teacher = _teacher(model)
    zimg, ztxt, extra = model.apply({"params": params}, batch["image"], batch["tokens"], train=train,
                                    rngs={"dropout": rng})
    t_img, t_txt = teacher(batch)
    loss, metrics = 0.0, {}
    for tower, s, t in (("image", zimg, t_img), ("text", ztxt, t_txt)):
      metrics[f"{tower}_cos"] = jnp.mean(jnp.sum(_f32(s) * _f32(t), -1))
      if tower in towers:
        metrics[tower] = feature_distill_loss(s, t, kind, temperature)
        loss = loss + metrics[tower]
    c, _ = clip_loss(zimg, ztxt, extra["logit_scale"])
    metrics["clip"] = c
    if clip_weight:
      loss = loss + clip_weight * c
    return loss, {"loss": loss, **metrics}
  return Objective(loss=clip_feature_distill_loss, batch_keys=("image", "tokens"))


MCTN_OBJECTIVE = OBJECTIVES.register("mctn")(configurable(mctn_objective))
DISTILL_OBJECTIVE = OBJECTIVES.register("distill")(configurable(distill_objective))
CLIP_FEATURE_DISTILL_OBJECTIVE = OBJECTIVES.register("clip_feature_distill")(
    configurable(clip_feature_distill_objective))
