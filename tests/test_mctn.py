"""MCTN (models/mctn.py, objective "mctn" in objectives/colearning.py): cyclic-translation losses against NumPy and
closed forms (exact inverse translators give zero), token layout, and which parameters each loss term reaches."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.models.mctn import as_tokens, from_tokens
from mmjax.objectives import get_objective
from mmjax.objectives.colearning import cyclic_translation_loss, translation_losses


def test_cyclic_loss_is_zero_for_exact_inverse_linear_translators():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((6, 6)) + 3 * np.eye(6)          # well conditioned, invertible
  a_inv = np.linalg.inv(a)
  x_s = rng.standard_normal((5, 6))
  x_t = x_s @ a
  out = cyclic_translation_loss(lambda x: x @ jnp.asarray(a), lambda y: y @ jnp.asarray(a_inv),
                                jnp.asarray(x_s), jnp.asarray(x_t))
  assert float(out["translation"]) < 1e-9 and float(out["cycle"]) < 1e-9
  # A backward map that is not the inverse: the cycle loss is the NumPy mean squared reconstruction error.
  b = a_inv + 0.1 * rng.standard_normal((6, 6))
  out = cyclic_translation_loss(lambda x: x @ jnp.asarray(a), lambda y: y @ jnp.asarray(b),
                                jnp.asarray(x_s), jnp.asarray(x_t))
  np.testing.assert_allclose(float(out["cycle"]), np.mean((x_s @ a @ b - x_s) ** 2), rtol=1e-5)
  assert float(out["cycle"]) > 1e-3


def test_translation_losses_match_numpy():
  rng = np.random.default_rng(1)
  x_s, x_s_hat = rng.standard_normal((2, 4, 7)).astype(np.float32)
  x_t, x_t_hat = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
  out = translation_losses(x_s, x_t, x_t_hat, x_s_hat)
  np.testing.assert_allclose(float(out["translation"]), np.mean((x_t_hat - x_t) ** 2), rtol=1e-6)
  np.testing.assert_allclose(float(out["cycle"]), np.mean((x_s_hat - x_s) ** 2), rtol=1e-6)
  with pytest.raises(MmjaxError, match="target_dims"):
    translation_losses(x_s, x_t, x_t_hat[:, :2], x_s_hat)


def test_tokens_layout_matches_numpy_and_round_trips():
  x = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
  tok = np.asarray(as_tokens(jnp.asarray(x), 4))             # ceil(10 / 4) = 3 features per token, 2 zeros padded
  ref = np.concatenate([x, np.zeros((2, 2), np.float32)], 1).reshape(2, 4, 3)
  np.testing.assert_array_equal(tok, ref)
  np.testing.assert_array_equal(np.asarray(from_tokens(jnp.asarray(tok), 10)), x)
  seq = np.ones((2, 5, 3), np.float32)
  assert as_tokens(jnp.asarray(seq), 4).shape == (2, 5, 3)   # sequences are kept


def _model(**kw):
  cfg = dict(name="mctn", num_classes=2, source="text", targets=("audio", "video"), target_dims=(5, 3), width=8,
             hidden=8, tokens_per_vector=3, head_hidden=(8,), dropout=0.0)
  return build_model({**cfg, **kw})


def _batch(b=6):
  rng = np.random.default_rng(2)
  return {"text": rng.standard_normal((b, 7)).astype(np.float32),
          "audio": rng.standard_normal((b, 5)).astype(np.float32),
          "video": rng.standard_normal((b, 3)).astype(np.float32),
          "label": rng.integers(0, 2, b).astype(np.int32)}


def _norms(tree) -> dict[str, float]:
  return {k: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(v))) for k, v in tree.items()}


def test_mctn_shapes_and_test_time_needs_only_the_source():
  model, batch = _model(), _batch()
  assert model.modalities == ("text",)
  init = jax.jit(model.init)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, return_aux=True))
  params = init(jax.random.PRNGKey(0), batch["text"])["params"]   # initialised from the source alone
  logits, aux = apply(params, batch["text"])
  chex.assert_shape(logits, (6, 2))
  chex.assert_shape(aux["joint"], (6, 3, 8))            # [B, T, H]: encoder states of the source
  chex.assert_shape(aux["target_hat"], (6, 8))          # audio ++ video
  chex.assert_shape(aux["source_hat"], (6, 7))
  chex.assert_tree_all_finite((logits, aux))
  # Sequences in ([B, T, D]): translations keep the time axis.
  seq = np.random.default_rng(0).standard_normal((2, 4, 7)).astype(np.float32)
  _, aux = apply(init(jax.random.PRNGKey(0), seq)["params"], seq)
  chex.assert_shape(aux["target_hat"], (2, 4, 8))
  chex.assert_shape(aux["source_hat"], (2, 4, 7))
  # Lengths: steps past a sequence's length change nothing it predicts (masked recurrences and pooling).
  apply_len = jax.jit(lambda p, x, n: model.apply({"params": p}, x, lengths={"text": n}))
  seq_params = init(jax.random.PRNGKey(0), seq)["params"]
  n = np.array([2, 4], np.int32)
  garbage = seq.copy()
  garbage[0, 2:] = 100.0
  np.testing.assert_allclose(np.asarray(apply_len(seq_params, seq, n)), np.asarray(apply_len(seq_params, garbage, n)),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(MmjaxError, match="model.source"):
    _model(source="audio")


def test_mctn_loss_terms_and_gradient_flow():
  model, batch = _model(), _batch()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["text"])["params"]
  objective = get_objective("mctn", None, {"translation_weight": 0.5, "cycle_weight": 2.0})
  loss, m = jax.jit(lambda p: objective.loss_fn(p, batch, jax.random.PRNGKey(1), model=model, train=False))(params)
  # The total is CE (NumPy, from the logits) + 0.5 translation + 2 cycle (NumPy, from the translations).
  logits, aux = jax.jit(lambda p: model.apply({"params": p}, batch["text"], return_aux=True))(params)
  z = np.asarray(logits, np.float64)
  ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(6), batch["label"]])
  x_t = np.concatenate([batch["audio"], batch["video"]], 1)
  tr = np.mean((np.asarray(aux["target_hat"]) - x_t) ** 2)
  cy = np.mean((np.asarray(aux["source_hat"]) - batch["text"]) ** 2)
  np.testing.assert_allclose([float(m["ce"]), float(m["translation"]), float(m["cycle"]), float(loss)],
                             [ce, tr, cy, ce + 0.5 * tr + 2.0 * cy], rtol=1e-5)

  def terms(p):
    m = objective.loss_fn(p, batch, jax.random.PRNGKey(1), model=model, train=False)[1]
    return jnp.stack([m["ce"], m["translation"], m["cycle"]])
  jac = jax.jit(jax.jacrev(terms))(params)           # one compiled pass: d(ce, translation, cycle) / d params
  ce_g, tr_g, cy_g = (_norms(jax.tree.map(lambda x, i=i: x[i], jac)) for i in range(3))
  # Prediction reads only the source encoder states: no gradient into the translators.
  assert all(ce_g[k] == 0.0 for k in ("translate", "back_translate", "in_target"))
  assert ce_g["encoder"] > 0 and ce_g["in_source"] > 0 and ce_g["head_out"] > 0
  # The forward translation loss does not reach the back-translation; the cycle loss runs through both.
  assert tr_g["back_translate"] == 0.0 and tr_g["translate"] > 0 and tr_g["encoder"] > 0
  assert cy_g["back_translate"] > 0 and cy_g["translate"] > 0 and cy_g["in_target"] > 0 and cy_g["in_source"] > 0
  assert cy_g["head_out"] == 0.0
