"""mmjax.cpu_tuning: init_jit gives the same parameters as a plain jax.jit init, up to float rounding, on CPU; the
model.cpu_tuning switch and its features change no value or gradient."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from mmjax import cpu_tuning
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.objectives.contrastive import clip_loss

TINY = dict(name="clip", embed_dim=16,
            vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0),
            text=dict(vocab_size=64, context_length=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0))


def test_init_jit_gives_the_plain_jit_init_up_to_rounding():
  model = build_model(dict(name="clip", embed_dim=16,
                           vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0),
                           text=dict(vocab_size=64, context_length=8, width=16, depth=1, num_heads=2, mlp_ratio=2.0)))
  args = (jax.random.PRNGKey(3), np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 8), np.int32))
  fast = cpu_tuning.init_jit(model.init)
  assert cpu_tuning.on_cpu()
  # XLA's defaults (backend level 3, fusion emitters), named: the suite itself compiles at level 0 without them
  # (tests/conftest.py TEST_XLA_FLAGS), and per-compile options win over XLA_FLAGS, so this is a user's run's init.
  plain = jax.tree.leaves(jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 3,
                                                                "xla_cpu_use_fusion_emitters": True})(*args))
  got = jax.tree.leaves(fast(*args))
  assert len(got) == len(plain)
  for a, b in zip(got, plain):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # Same draws, not merely the same distribution: a different key differs by O(1).
  other = jax.tree.leaves(fast(jax.random.PRNGKey(4), *args[1:]))
  assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, other)) > 0.1


def test_settings_resolve_to_features_and_a_bad_one_names_the_key():
  assert cpu_tuning.features("auto") == (frozenset(cpu_tuning.FEATURES) if cpu_tuning.on_cpu() else frozenset())
  assert cpu_tuning.features("on") == frozenset(cpu_tuning.FEATURES) and cpu_tuning.features("off") == frozenset()
  assert cpu_tuning.features("dense_2d") == {"dense_2d"}
  for bad in ("dense2d", "", "on,off", "dense_2d,split_heads"):     # split_heads: removed (benchmarks/README.md)
    with pytest.raises(MmjaxError, match=r"config key model.cpu_tuning="):
      cpu_tuning.check(bad)
  with pytest.raises(MmjaxError, match=r"model.cpu_tuning='fast'"):
    build_model(dict(TINY, cpu_tuning="fast"))


@pytest.mark.parametrize("setting", sorted(set(cpu_tuning.FEATURES) | {"on"}))
def test_cpu_tuning_changes_no_value_or_gradient_of_the_clip_step(setting):
  """Every feature, alone and all together, gives the plain code's CLIP loss and parameter gradients ("off", the
  code an accelerator compiles) up to float rounding; and the compiled programs do differ."""
  rng = np.random.default_rng(0)
  images = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
  tokens = rng.integers(3, 64, (4, 8)).astype(np.int32)
  tokens[:, -1] = 2
  params = build_model(dict(TINY, cpu_tuning="off")).init(jax.random.PRNGKey(0), images, tokens)["params"]

  def loss_and_grad(s):
    model = build_model(dict(TINY, cpu_tuning=s))
    def loss(p):
      zimg, ztxt, scalars = model.apply({"params": p}, images, tokens)
      return clip_loss(zimg, ztxt, scalars["logit_scale"])[0]
    fn = jax.jit(jax.value_and_grad(loss))
    return fn(params), fn.lower(params).as_text()

  (want, gwant), plain_hlo = loss_and_grad("off")
  (got, ggot), tuned_hlo = loss_and_grad(setting)
  assert tuned_hlo != plain_hlo
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(ggot), jax.tree.leaves(gwant)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_ablation_pairs_each_round_with_its_own_baseline():
  """benchmarks/clip_step_ablation.paired: ratios are taken within a round, so a machine that slows down for a
  whole round moves no ratio; the interval is a bootstrap over rounds (closed form when every round agrees)."""
  import importlib.util
  import os
  from conftest import ROOT
  spec = importlib.util.spec_from_file_location("ablation", os.path.join(ROOT, "benchmarks", "clip_step_ablation.py"))
  ablation = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ablation)
  load = [1.0, 1.7, 0.9, 2.5, 1.2, 1.0]                   # each round's machine speed
  on = [[s * 0.80, s * 0.81, s * 0.79] for s in load]      # round medians 0.80 * s
  slower = [[s * 0.88, s * 0.88, s * 0.88] for s in load]  # exactly 1.1x of "on" in every round
  mixed = [[s * 0.8 * r] * 3 for s, r in zip(load, [0.98, 1.02, 1.0, 0.99, 1.01, 1.0])]
  out = ablation.paired({"on": on, "-x": slower, "-y": mixed})
  assert out["on"] == {"ratio": 1.0, "ci95": [1.0, 1.0]}
  assert out["-x"]["ratio"] == pytest.approx(1.1) and out["-x"]["ci95"] == pytest.approx([1.1, 1.1])
  assert out["-y"]["ratio"] == pytest.approx(1.0)
  lo, hi = out["-y"]["ci95"]
  assert 0.98 <= lo <= 1.0 <= hi <= 1.02                   # contains 1: within noise
  labels = [label for label, _ in ablation.settings()]
  n = len(cpu_tuning.FEATURES)
  assert labels[0] == "on" and labels[-1] == "off" and len(labels) == (n + 2 if n > 1 else 2)
