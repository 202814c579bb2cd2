"""mmjax.cpu_tuning.init_jit: the same parameters as a plain jax.jit init, up to float rounding, on CPU."""
from __future__ import annotations

import jax
import numpy as np

from mmjax import cpu_tuning
from mmjax.models import build_model


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
