"""Every fusion (and a FusionClassifier's classify loss) jitted with value and gradients, on one device or with the
batch sharded over a Mesh axis "data" of all devices. Used by tests/test_fusion.py in two ways:

- imported: `compute(name)` gives the single-device values (and the test checks shapes with chex);
- as a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu PYTHONPATH=<repo root>:
    python tests/fusion_sharded_check.py OUT.npz
  it writes {name + "/out", name + "/grads", name + "/devices"} for the batch-sharded runs and prints one JSON line.
Parameters are drawn with NumPy from the shapes of `init` (no init to compile), identically in both processes.
"""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.fusion import FUSIONS, build_fusion
from mmjax.models import build_model
from mmjax.objectives import get_objective

B = 16
KWARGS = {"late": dict(features=6, mode="mean"), "lmf": dict(features=6, rank=3), "gmu": dict(features=6),
          "tfn": dict(features=6), "nlgate": dict(channels=4, q_tokens=2, kv_tokens=3),
          "cross_attention": dict(width=8, num_heads=2), "co_attention": dict(width=8, num_heads=2),
          "mult": dict(width=4, num_heads=2, depth=1), "mbt": dict(width=8, num_heads=2, depth=2, fusion_layer=1)}
# Input shapes per fusion: token-level fusions get sequences (MulT a sequence and a vector), the others vectors.
SHAPES = {name: [(B, 5), (B, 3)] for name in KWARGS}
SHAPES.update({"early": [(B, 5), (B, 3)], "film": [(B, 6, 5), (B, 3), (B, 4, 2)],
               "cross_attention": [(B, 6, 5), (B, 4, 3)], "co_attention": [(B, 6, 5), (B, 4, 3)],
               "mult": [(B, 6, 5), (B, 3)], "mbt": [(B, 6, 5), (B, 4, 3)], "nlgate": [(B, 6, 5), (B, 3)]})
# Output shapes for those inputs.
EXPECTED = {"early": (B, 8), "late": (B, 6), "tfn": (B, 6), "lmf": (B, 6), "gmu": (B, 6), "nlgate": (B, 24),
            "film": (B, 6, 5), "cross_attention": (B, 8), "co_attention": (B, 16), "mult": (B, 8), "mbt": (B, 16)}
CLASSIFIER = dict(name="fusion_classifier", modalities=("a", "b", "c"), num_classes=3, fusion="lmf",
                  fusion_kwargs={"features": 8, "rank": 2}, head_hidden=(8,),
                  encoders={"a": {"name": "mlp", "hidden": (8,), "features": 6}, "b": {"name": "lstm", "hidden": 5},
                            "c": {"name": "cnn", "channels": (4,), "features": 6}})


def cases() -> list[str]:
  return FUSIONS.names() + ["classifier"]


def random_params(module, *inputs, seed: int = 0):
  """NumPy-drawn parameters with the shapes of module.init: kernels N(0, 1/fan_in), 'scale' 1 + N(0, 0.2^2),
  everything else N(0, 0.2^2) (so that zero/one initialisations do not hide terms from a test)."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs)).get("params", {})
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = str(getattr(path[-1], "key", path[-1]))
    n = rng.standard_normal(s.shape)
    if name == "scale":
      x = 1.0 + 0.2 * n
    elif len(s.shape) >= 2:  # fan-in: [in, out] dense, [R, in, out] LMF factor, [kh, kw, in, out] conv
      fan_in = {2: s.shape[0], 3: s.shape[1]}.get(len(s.shape), int(np.prod(s.shape[:-1])))
      x = n / np.sqrt(fan_in)
    else:
      x = 0.2 * n
    return jnp.asarray(x, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _arrays(shapes, seed: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _place(x, sharding):
  return jnp.asarray(x) if sharding is None else jax.device_put(x, sharding)


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(g)) for g in jax.tree.leaves(tree)])


def compute(name: str, sharding: NamedSharding | None = None) -> dict[str, np.ndarray]:
  """{"out": output, "grads": d sum(sin(out)) / d(params, inputs) flattened, "input_grad_max": per modality,
  "devices": devices holding the batch} for case `name` (batch placed with `sharding`, or on one device)."""
  if name == "classifier":
    model = build_model(CLASSIFIER)
    xs = _arrays([(B, 7), (B, 6, 3), (B, 8, 8, 1)], seed=1)
    params = random_params(model, *[jnp.asarray(x) for x in xs])
    batch = {"a": xs[0], "b": xs[1], "c": xs[2], "b_length": (np.arange(B) % 6 + 1).astype(np.int32),
             "label": (np.arange(B) % 3).astype(np.int32)}
    batch = {k: _place(v, sharding) for k, v in batch.items()}
    loss_fn = lambda p, bt: get_objective("classify").loss_fn(p, bt, jax.random.PRNGKey(2), model=model)[0]
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
    return {"out": np.asarray(loss), "grads": _flat(grads), "input_grad_max": np.zeros(0),
            "devices": np.asarray(len(batch["a"].sharding.device_set))}
  mod = build_fusion(name, KWARGS.get(name))
  xs = _arrays(SHAPES[name], seed=0)
  params = random_params(mod, [jnp.asarray(x) for x in xs])
  xs = [_place(x, sharding) for x in xs]
  f = lambda p, inputs: jnp.sum(jnp.sin(mod.apply({"params": p}, inputs)))
  out, (gp, gx) = jax.jit(lambda p, inputs: (mod.apply({"params": p}, inputs),
                                             jax.grad(f, argnums=(0, 1))(p, inputs)))(params, xs)
  return {"out": np.asarray(out), "grads": _flat((gp, gx)),
          "input_grad_max": np.asarray([float(jnp.max(jnp.abs(g))) for g in gx]),
          "devices": np.asarray(len(xs[0].sharding.device_set))}


def main(path: str) -> None:
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  results = {}
  for name in cases():
    for k, v in compute(name, sharding).items():
      results[f"{name}/{k}"] = v
  np.savez(path, **results)
  print(json.dumps({"devices": jax.device_count(), "cases": cases()}))


if __name__ == "__main__":
  main(sys.argv[1])
