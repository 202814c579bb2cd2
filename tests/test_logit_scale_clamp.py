"""The CLIP temperature at OpenCLIP's clamp (issue 22, defect 1).

OpenCLIP uses exp(logit_scale) unclamped in the loss and clamps the *parameter* to [0, log 100] after each optimizer
step. At a saturated logit_scale = float32(log 100), where every saturated OpenCLIP checkpoint sits, a clamp inside
the loss (exp(min(t, log 100))) halves d loss / dt, and zeroes it above. References: open_clip's own `ClipLoss`
values and gradients (stored in tests/fixtures/open_clip_tiny.npz by make_open_clip_fixture.py, and live when torch
is installed), a float64 NumPy closed form, and torch's AdamW followed by `clamp_` for the update.
"""
from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from conftest import ROOT
from mmjax.alignment.tokens import filip_loss, token_similarity
from mmjax.config import base_config
from mmjax.objectives.contrastive import clip_loss
from mmjax.objectives.contrastive_sharded import chunked_clip_loss, ring_clip_loss
from mmjax.train.optim import clamp_params, make_optimizer

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from open_clip_weights import LOG100, LOGIT_SCALES, clamp_embeddings  # noqa: E402

REF = np.load(os.path.join(ROOT, "tests", "fixtures", "open_clip_tiny.npz"))


def _closed_form(zimg, ztxt, t):
  """float64 (loss, d loss / dt) of the symmetric InfoNCE with scale exp(t): dL/dt = mean of E_p[l] - l_ii."""
  l = np.exp(t) * np.asarray(zimg, np.float64) @ np.asarray(ztxt, np.float64).T
  out, grad = 0.0, 0.0
  for m in (l, l.T):
    p = np.exp(m - m.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lse = np.log(np.exp(m - m.max(1, keepdims=True)).sum(1)) + m.max(1)
    out += 0.5 * np.mean(lse - np.diag(m))
    grad += 0.5 * np.mean((p * m).sum(1) - np.diag(m))
  return out, grad


def _losses():
  mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
  return {"clip_loss": clip_loss,
          "chunked_clip_loss": lambda a, b, t: chunked_clip_loss(a, b, t, mesh=mesh, axes=("data",), chunk_size=4),
          "ring_clip_loss": lambda a, b, t: ring_clip_loss(a, b, t, mesh=mesh, axes=("data",), chunk_size=4)}


@pytest.mark.parametrize("name", ["clip_loss", "chunked_clip_loss", "ring_clip_loss"])
def test_loss_and_gradient_equal_open_clip_at_below_and_above_the_clamp(name):
  fn = _losses()[name]
  zimg, ztxt = clamp_embeddings()
  value_and_grad = jax.jit(jax.value_and_grad(lambda t: fn(zimg, ztxt, t)[0]))
  assert REF["clamp_logit_scales"][0] == np.float32(math.log(100.0))
  for i, t in enumerate(REF["clamp_logit_scales"]):
    loss, grad = value_and_grad(jnp.float32(t))
    closed_loss, closed_grad = _closed_form(zimg, ztxt, float(t))
    np.testing.assert_allclose(float(loss), REF["clamp_losses"][i], rtol=1e-5, err_msg=f"{name} loss at t={t}")
    np.testing.assert_allclose(float(grad), REF["clamp_grads"][i], rtol=1e-5, err_msg=f"{name} d/dt at t={t}")
    np.testing.assert_allclose(float(grad), closed_grad, rtol=1e-5)
    np.testing.assert_allclose(float(loss), closed_loss, rtol=1e-5)


def test_filip_gradient_is_not_clamped_in_the_loss():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4, 5, 8)).astype(np.float32)
  y = rng.standard_normal((4, 6, 8)).astype(np.float32)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  y /= np.linalg.norm(y, axis=-1, keepdims=True)
  s_i2t, s_t2i = (np.asarray(s, np.float64) for s in token_similarity(x, y))
  for t in LOGIT_SCALES:
    grad = float(jax.grad(lambda t: filip_loss(x, y, t)[0])(jnp.float32(t)))
    # closed form: 0.5 (mean_i (E_p[l_i.] - l_ii) over rows of s*s_i2t + the same over columns of s*s_t2i)
    want = 0.0
    for m in (np.exp(t) * s_i2t, (np.exp(t) * s_t2i).T):
      p = np.exp(m - m.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      want += 0.5 * np.mean((p * m).sum(1) - np.diag(m))
    np.testing.assert_allclose(grad, want, rtol=1e-5, err_msg=f"t={t}")


def test_live_open_clip_loss_and_gradient():
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmjax[torch]'); the stored "
                              "open_clip values above cover the same points")
  open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
  zimg, ztxt = clamp_embeddings()
  for t0 in (LOG100, np.nextafter(np.float32(LOG100), np.float32(0)), np.float32(LOG100 + 0.5)):
    t = torch.tensor(float(t0), dtype=torch.float32, requires_grad=True)
    ref = open_clip.loss.ClipLoss()(torch.from_numpy(zimg), torch.from_numpy(ztxt), t.exp())
    ref.backward()
    loss, grad = jax.value_and_grad(lambda t: clip_loss(zimg, ztxt, t)[0])(jnp.float32(t0))
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(float(grad), t.grad.item(), rtol=1e-5)


def _adamw(lr=0.05):
  cfg = base_config().optim
  cfg.lr, cfg.warmup_steps, cfg.schedule, cfg.clip_grad_norm = lr, 0, "constant", 0.0
  return make_optimizer(cfg, 10)[0]


def test_update_clamps_the_parameter_to_the_bound_exactly_and_leaves_the_rest_bitwise():
  tx = _adamw()
  params = {"logit_scale": jnp.float32(LOG100 - 1e-3), "low": {"logit_scale": jnp.float32(1e-3)},
            "w": jnp.linspace(-1, 1, 6, dtype=jnp.float32).reshape(2, 3)}
  grads = {"logit_scale": jnp.float32(-3.0), "low": {"logit_scale": jnp.float32(3.0)}, "w": jnp.ones((2, 3))}
  state = tx.init(params)
  unclamped_cfg = base_config().optim
  unclamped_cfg.lr, unclamped_cfg.warmup_steps, unclamped_cfg.schedule = 0.05, 0, "constant"
  unclamped_cfg.clip_grad_norm, unclamped_cfg.clamp = 0.0, ()
  tx0 = make_optimizer(unclamped_cfg, 10)[0]
  p0, s0 = params, tx0.init(params)
  for _ in range(5):   # AdamW's momentum keeps pushing up (and down) past the bounds
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    u0, s0 = tx0.update(grads, s0, p0)
    p0 = optax.apply_updates(p0, u0)
    assert params["logit_scale"] == np.float32(math.log(100.0))      # bitwise the bound, as torch's clamp_
    assert params["low"]["logit_scale"] == 0.0
    np.testing.assert_array_equal(params["w"], p0["w"])              # not a matching path: untouched
  assert p0["logit_scale"] > LOG100 and p0["low"]["logit_scale"] < 0   # without the clamp it would leave


def test_clamp_needs_params():
  from mmjax.errors import MmjaxError
  tx = clamp_params(((r"logit_scale$", 0.0, 1.0),))
  with pytest.raises(MmjaxError, match="needs the parameters"):
    tx.update({"logit_scale": jnp.float32(1.0)}, tx.init({}))


def test_live_adamw_then_clamp_matches_torch():
  torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'mmjax[torch]')")
  lr = 0.05
  t_torch = torch.nn.Parameter(torch.tensor(LOG100 - 0.07, dtype=torch.float32))
  opt = torch.optim.AdamW([t_torch], lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
  tx = _adamw(lr)
  params = {"logit_scale": jnp.float32(LOG100 - 0.07)}
  state = tx.init(params)
  for g in [-1.0, -2.0, -0.5, -1.0, 0.3, 2.0, 1.0, 0.1]:   # up into the bound, then momentum, then back down
    t_torch.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    with torch.no_grad():
      t_torch.clamp_(0, math.log(100))                     # open_clip_train/train.py after optimizer.step()
    updates, state = tx.update({"logit_scale": jnp.float32(g)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(float(params["logit_scale"]), t_torch.item(), rtol=1e-6, atol=1e-7)
