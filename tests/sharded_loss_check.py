"""Subprocess check for tests/test_contrastive_sharded.py: sharded vs naive contrastive losses on simulated devices.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu PYTHONPATH=<repo root>; prints one
JSON list of records {"case", "naive_loss", "diffs": {name: max abs difference, relative to max(1, the largest
|naive value|)}} on the last line of stdout.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.objectives import get_objective
from mmjax.objectives.base import ObjectiveContext
from mmjax.objectives.contrastive import clip_loss, siglip_loss
from mmjax.objectives.contrastive_sharded import chunked_clip_loss, ring_clip_loss, ring_siglip_loss
from mmjax.train.sharding import make_mesh

T_MAX = 4.6   # ~ log 100: the largest logit_scale training reaches (the parameter is clamped there)

B, E = 16, 8
MESHES = [(1, 1), (2, 1), (4, 1), (2, 2), (8, 1), (4, 2)]  # (data, fsdp) over the first data*fsdp devices


def _embeddings(seed: int) -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(seed)
  zi = rng.standard_normal((B, E))
  zt = zi + 1.2 * rng.standard_normal((B, E))  # partly aligned pairs: accuracies strictly between 0 and 1
  zi /= np.linalg.norm(zi, axis=1, keepdims=True)
  zt /= np.linalg.norm(zt, axis=1, keepdims=True)
  return jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32)


def _max_diff(a, b) -> float:
  """Max abs difference over all leaves of two pytrees of the same structure, over max(1, max |a|) of the leaf:
  float32 rounding scales with the magnitudes summed (at logit scale 100 the gradients are O(10), and the order of
  the sums differs between CPUs' vector widths), so an absolute 1e-5 alone is float32's last bits there."""
  diffs = jax.tree.map(lambda x, y: jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y)))
                       / jnp.maximum(1.0, jnp.max(jnp.abs(jnp.asarray(x)))), a, b)
  return max((float(d) for d in jax.tree.leaves(diffs)), default=0.0)   # 0: no leaves (e.g. empty params)


def _compare(case: str, naive, sharded, args: tuple, metric_keys: tuple[str, ...]) -> dict:
  """Loss, metrics and grads w.r.t. every argument of naive(*args) vs sharded(*args), both under jit."""
  (l0, m0), g0 = jax.jit(jax.value_and_grad(naive, argnums=tuple(range(len(args))), has_aux=True))(*args)
  (l1, m1), g1 = jax.jit(jax.value_and_grad(sharded, argnums=tuple(range(len(args))), has_aux=True))(*args)
  diffs = {"loss": _max_diff(l0, l1)}
  diffs.update({f"grad{i}": _max_diff(a, b) for i, (a, b) in enumerate(zip(g0, g1))})
  diffs.update({k: _max_diff(m0[k], m1[k]) for k in metric_keys})
  return {"case": case, "naive_loss": float(l0), "i2t_acc": float(m0["i2t_acc"]), "diffs": diffs}


def main() -> None:
  records = []
  zi, zt = _embeddings(0)
  bias = jnp.float32(-3.0)
  for data, fsdp in MESHES:
    mesh = make_mesh({"data": data, "fsdp": fsdp}, jax.devices()[: data * fsdp])
    for t in (2.3, T_MAX):
      scale = jnp.float32(t)
      for chunk in (None, 4):
        records.append(_compare(
            f"clip data={data} fsdp={fsdp} t={t} chunk={chunk}", clip_loss,
            lambda a, b, s, m=mesh, c=chunk: chunked_clip_loss(a, b, s, mesh=m, chunk_size=c),
            (zi, zt, scale), ("logit_scale", "temperature", "i2t_acc", "t2i_acc")))
      # The ring CLIP loss with several chunks per ring step (chunk 2 of b = B / devices; b = 2 on 8 devices).
      records.append(_compare(
          f"clip_ring data={data} fsdp={fsdp} t={t} chunk=2", clip_loss,
          lambda a, b, s, m=mesh: ring_clip_loss(a, b, s, mesh=m, chunk_size=2),
          (zi, zt, scale), ("logit_scale", "temperature", "i2t_acc", "t2i_acc")))
      if t > 3.0:  # exp(t) = 100: sigmoid losses ~200, float32 rounding alone is ~1e-5 there
        continue
      # chunk 2: several [b, 2] logit chunks per ring step (b = B / devices >= 2; one chunk on 8 devices).
      records.append(_compare(
          f"siglip data={data} fsdp={fsdp} t={t} chunk=2", siglip_loss,
          lambda a, b, s, c, m=mesh: ring_siglip_loss(a, b, s, c, mesh=m, chunk_size=2),
          (zi, zt, scale, bias), ("logit_scale", "logit_bias", "i2t_acc", "t2i_acc")))

  # The registered objectives: the mesh of their ObjectiveContext (the train step's), of the jax.set_mesh context,
  # and the all-devices fallback without either.
  scalars = {"logit_scale": jnp.full((zi.shape[0],), 2.3, jnp.float32),
             "logit_bias": jnp.broadcast_to(bias, (zi.shape[0],))}
  for name in ("clip", "siglip"):
    def loss_of(obj, ctx):   # the objective's loss as a function of the two embeddings (grad0, grad1)
      return lambda a, b: obj.loss_from_features({"zimg": a, "ztxt": b, **scalars}, ctx=ctx)
    naive = loss_of(get_objective(name), ObjectiveContext())
    obj = get_objective(f"{name}_sharded")
    for data, fsdp in ((2, 4), (4, 1)):
      ctx = ObjectiveContext(mesh=make_mesh({"data": data, "fsdp": fsdp}, jax.devices()[:data * fsdp]))
      assert ctx.batch_mesh() is ctx.mesh
      records.append(_compare(f"objective {name}_sharded ctx data={data} fsdp={fsdp}", naive, loss_of(obj, ctx),
                              (zi, zt), ("i2t_acc",)))
    with jax.set_mesh(make_mesh({"data": 2, "fsdp": 4})):
      records.append(_compare(f"objective {name}_sharded set_mesh", naive, loss_of(obj, ObjectiveContext()),
                              (zi, zt), ("i2t_acc",)))
    records.append(_compare(f"objective {name}_sharded fallback", naive, loss_of(obj, ObjectiveContext()), (zi, zt),
                            ("i2t_acc",)))
  print(json.dumps(records))


if __name__ == "__main__":
  main()
