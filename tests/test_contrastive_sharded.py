"""chunked_clip_loss / ring_siglip_loss (mmjax.objectives.contrastive_sharded) against the naive losses.

Multi-device cases run tests/sharded_loss_check.py once in a subprocess with 8 simulated CPU devices
(meshes over the first 1, 2, 4 and 8 of them); the 1-device cases run in-process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import subprocess_env
from mmjax.errors import MmjaxError
from mmjax.objectives import ObjectiveContext, get_objective
from mmjax.objectives.contrastive import clip_loss, siglip_loss
from mmjax.objectives.contrastive_sharded import chunked_clip_loss, ring_clip_loss, ring_siglip_loss
from mmjax.train.sharding import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5


@pytest.fixture(scope="module")
def sharded_records() -> list[dict]:
  env = subprocess_env(8)
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_loss_check.py")], env=env,
                        capture_output=True, text=True, timeout=240, cwd=ROOT)
  assert proc.returncode == 0, f"sharded_loss_check exited {proc.returncode}:\n{proc.stderr[-5000:]}"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_losses_match_naive_on_1_to_8_devices(sharded_records):
  cases = [r["case"] for r in sharded_records]
  for n in ("data=1 fsdp=1", "data=2 fsdp=1", "data=4 fsdp=1", "data=2 fsdp=2", "data=8 fsdp=1", "data=4 fsdp=2"):
    assert any(f"clip {n} t=4.6 chunk=4" == c for c in cases), n
    assert any(f"siglip {n} t=2.3 chunk=2" == c for c in cases), n
    assert any(f"clip_ring {n} t=4.6 chunk=2" == c for c in cases), n
  bad = {r["case"]: {k: v for k, v in r["diffs"].items() if not v < TOL} for r in sharded_records}
  assert not {c: d for c, d in bad.items() if d}, bad
  for r in sharded_records:
    assert r["naive_loss"] > 0.5, r  # not a degenerate, trivially-zero loss
    assert 0.0 < r["i2t_acc"] < 1.0, r  # accuracies are informative comparisons too
    assert {"loss", "grad0", "grad1"} <= set(r["diffs"]), r


def test_registered_objectives_match_naive(sharded_records):
  cases = {r["case"] for r in sharded_records}
  for name in ("clip_sharded", "siglip_sharded"):
    assert {f"objective {name} ctx data=2 fsdp=4", f"objective {name} ctx data=4 fsdp=1",   # the step's mesh
            f"objective {name} set_mesh", f"objective {name} fallback"} <= cases


def _unit(seed: int, b: int = 8, e: int = 4) -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(seed)
  zi = rng.standard_normal((b, e))
  zt = zi + rng.standard_normal((b, e))
  zi /= np.linalg.norm(zi, axis=1, keepdims=True)
  zt /= np.linalg.norm(zt, axis=1, keepdims=True)
  return jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32)


def _diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_device_in_process():
  mesh = make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1])
  zi, zt = _unit(1)
  t, bias = jnp.float32(2.0), jnp.float32(-2.0)
  for naive, sharded, args in (
      (clip_loss, lambda a, b, s: chunked_clip_loss(a, b, s, mesh=mesh, chunk_size=2), (zi, zt, t)),
      (siglip_loss, lambda a, b, s, c: ring_siglip_loss(a, b, s, c, mesh=mesh), (zi, zt, t, bias))):
    argnums = tuple(range(len(args)))
    (l0, m0), g0 = jax.value_and_grad(naive, argnums=argnums, has_aux=True)(*args)
    (l1, m1), g1 = jax.jit(jax.value_and_grad(sharded, argnums=argnums, has_aux=True))(*args)
    assert float(l0) > 0.5
    assert _diff(l0, l1) < TOL and _diff(g0, g1) < TOL
    assert set(m0) == set(m1) and _diff([m0[k] for k in sorted(m0)], [m1[k] for k in sorted(m0)]) < TOL


def test_errors_are_one_line():
  mesh = make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1])
  zi, zt = _unit(2, b=6)
  with pytest.raises(MmjaxError, match="chunk_size 4 does not divide"):
    chunked_clip_loss(zi, zt, jnp.float32(1.0), mesh=mesh, chunk_size=4)
  with pytest.raises(MmjaxError, match="chunk_size 4 does not divide the per-device batch 6"):
    ring_siglip_loss(zi, zt, jnp.float32(1.0), jnp.float32(0.0), mesh=mesh, chunk_size=4)
  with pytest.raises(MmjaxError, match="chunk_size 4 does not divide the per-device batch 6"):
    ring_clip_loss(zi, zt, jnp.float32(1.0), mesh=mesh, chunk_size=4)
  with pytest.raises(MmjaxError, match=r"must both be \[B, E\]"):
    ring_siglip_loss(zi, zt[:3], jnp.float32(1.0), jnp.float32(0.0), mesh=mesh)
  with pytest.raises(MmjaxError, match="lack"):
    chunked_clip_loss(zi, zt, jnp.float32(1.0), mesh=mesh, axes=("model",))
  with pytest.raises(MmjaxError, match="needs a logit_bias"):
    get_objective("siglip_sharded").loss_from_features(
        {"zimg": zi, "ztxt": zt, "logit_scale": jnp.ones((zi.shape[0],))}, ctx=ObjectiveContext(mesh=mesh))
