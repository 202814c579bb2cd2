"""Objective settings (config.objective_kwargs): an objective's hyperparameters live with the objective, are set
per run (per term of a composite), and a wrong name is a start-up error naming the key and the valid settings."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.objectives import ObjectiveContext, get_objective
from mmjax.objectives.colearning import distill_kl


def _np_kl(s, t, temp):
  ls = s / temp - np.log(np.sum(np.exp(s / temp), -1, keepdims=True))
  lt = t / temp - np.log(np.sum(np.exp(t / temp), -1, keepdims=True))
  return temp ** 2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))


class _Student:
  """A stand-in distillation student: logits = params["w"] (one row per example), a fixed teacher."""
  modalities = ("x",)

  def __init__(self, teacher_logits):
    self.teacher = lambda batch: teacher_logits

  def apply(self, variables, x, train=False, rngs=None):
    return variables["params"]["w"]


def test_settings_reach_the_loss_and_defaults_stay_the_registered_ones():
  rng = np.random.default_rng(0)
  s, t = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
  labels = rng.integers(0, 5, 6)
  batch = {"x": np.zeros((6, 1), np.float32), "label": jnp.asarray(labels)}
  model, params = _Student(jnp.asarray(t, jnp.float32)), {"w": jnp.asarray(s, jnp.float32)}
  ce = np.mean(-(s - np.log(np.sum(np.exp(s), -1, keepdims=True)))[np.arange(6), labels])
  for settings, (temp, alpha) in ((None, (4.0, 0.9)), ({"temperature": 2.0}, (2.0, 0.9)),
                                  ({"temperature": 1.5, "alpha": 0.25}, (1.5, 0.25))):
    objective = get_objective("distill", None, settings)
    loss, m = objective.loss_fn(params, batch, jax.random.PRNGKey(0), model=model, train=False)
    np.testing.assert_allclose(m["kd"], _np_kl(s, t, temp), rtol=1e-5)
    np.testing.assert_allclose(loss, (1 - alpha) * ce + alpha * _np_kl(s, t, temp), rtol=1e-5)
  assert dict(get_objective("distill").options) == {"temperature": 4.0, "alpha": 0.9}
  np.testing.assert_allclose(distill_kl(jnp.asarray(s), jnp.asarray(t), 3.0), _np_kl(s, t, 3.0), rtol=1e-5)


def test_composite_settings_are_per_term():
  both = get_objective("clip+dcca", {"clip": 1.0, "dcca": 0.5}, {"dcca": {"ridge": 0.5, "k": 2}})
  assert both.features_fn is not None               # dcca and clip couple the batch: still exact accumulation
  h1, h2 = jnp.asarray(np.random.default_rng(1).standard_normal((2, 32, 3)), jnp.float32)
  plain = get_objective("dcca", None, {"ridge": 0.5, "k": 2})
  want = plain.loss_from_features({"h1": h1, "h2": h2}, ctx=ObjectiveContext())[0]
  z = jnp.eye(32, 4)
  feats = {"clip": {"zimg": z, "ztxt": z, "logit_scale": jnp.zeros((32,))}, "dcca": {"h1": h1, "h2": h2}}
  loss, m = both.loss_from_features(feats, ctx=ObjectiveContext())
  np.testing.assert_allclose(m["dcca/loss"], want, rtol=1e-6)
  np.testing.assert_allclose(loss, m["clip/loss"] + 0.5 * want, rtol=1e-6)
  default = get_objective("dcca").loss_from_features({"h1": h1, "h2": h2}, ctx=ObjectiveContext())[0]
  assert abs(float(want - default)) > 1e-3


@pytest.mark.parametrize("name,weights,settings,match", [
    ("distill", None, {"temprature": 2.0}, r"objective_kwargs\.temprature.*'distill'.*alpha, temperature"),
    ("clip", None, {"temperature": 2.0}, r"objective_kwargs\.temperature.*'clip'.*no settings"),
    ("distill", None, {"temperature": 0.0}, r"objective_kwargs\.temperature=0\.0 must be > 0"),
    ("clip+dcca", None, {"ridge": 1.0}, r"objective_kwargs\.ridge.*per term.*clip, dcca"),
    ("clip+dcca", None, {"dcca": {"rdge": 1.0}}, r"objective_kwargs\.dcca\.rdge.*'dcca'.*k, ridge"),
])
def test_a_wrong_setting_is_one_error_naming_the_key(name, weights, settings, match):
  with pytest.raises(MmjaxError, match=match):
    get_objective(name, weights, settings)
