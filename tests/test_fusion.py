"""Fusion catalogue (mmjax.fusion) against NumPy re-implementations of the papers' formulas, from the same weights.

TFN = the explicit outer product (np.einsum); LMF = a TFN layer whose weight tensor is the sum of the rank-1 factors,
and a full-rank LMF (factors from an SVD) reproduces an arbitrary TFN layer; GMU / NL-gate / FiLM / late fusion /
cross-attention / co-attention / MulT / MBT = NumPy forward passes written here. Every fusion is jitted and
shape-checked with chex; MBT's bottleneck is checked to be the only path between modalities. The 1-vs-8-device
check runs tests/fusion_sharded_check.py in a subprocess with 8 simulated CPU devices.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from conftest import subprocess_env
from mmjax.errors import MmjaxError
from mmjax.fusion import (FUSIONS, BottleneckFusion, CoAttentionFusion, CrossAttentionFusion, EarlyFusion, FiLM,
                          GatedMultimodalUnit, LateFusion, LowRankFusion, MulT, NonLocalGate, TensorFusion,
                          build_fusion)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import fusion_sharded_check as check  # noqa: E402
TOL = dict(rtol=2e-4, atol=2e-5)
B = 3


# ------------------------------------------------------------------------------------------------ helpers
def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _perturbed_params(module, inputs, seed=0):
  """Random parameters (NumPy-drawn, with the shapes of module.init; see fusion_sharded_check.random_params)."""
  return check.random_params(module, inputs, seed=seed)


def _apply(module, variables, inputs):
  return jax.jit(module.apply)(variables, inputs)


def _inputs(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]


def _dense(p, x):
  return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def _ln(p, x, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _softmax(s):
  e = np.exp(s - s.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
  return 0.5 * x * (1.0 + scipy.special.erf(x / math.sqrt(2.0)))


def _mha(q, k, v, heads):
  """q [B, Tq, w], k/v [B, Tk, w] (projected) -> [B, Tq, w], heads contiguous in w."""
  b, tq, w = q.shape
  d = w // heads
  split = lambda x: x.reshape(b, x.shape[1], heads, d).transpose(0, 2, 1, 3)
  s = np.einsum("bhqd,bhkd->bhqk", split(q), split(k)) / math.sqrt(d)
  o = np.einsum("bhqk,bhkd->bhqd", _softmax(s), split(v))
  return o.transpose(0, 2, 1, 3).reshape(b, tq, w)


def _mlp(p, x):
  return _dense(p["c_proj"], _gelu(_dense(p["c_fc"], x)))


def _cross_block(p, x, ctx, heads):
  h, c = _ln(p["ln_q"], x), _ln(p["ln_kv"], ctx)
  w = x.shape[-1]
  kv = _dense(p["attn"]["kv_proj"], c)
  a = _mha(_dense(p["attn"]["q_proj"], h), kv[..., :w], kv[..., w:], heads)
  x = x + _dense(p["attn"]["out_proj"], a)
  return x + _mlp(p["mlp"], _ln(p["ln_2"], x))


def _self_block(p, x, heads):
  w = x.shape[-1]
  qkv = _dense(p["attn"]["in_proj"], _ln(p["ln_1"], x))
  x = x + _dense(p["attn"]["out_proj"], _mha(qkv[..., :w], qkv[..., w:2 * w], qkv[..., 2 * w:], heads))
  return x + _mlp(p["mlp"], _ln(p["ln_2"], x))


def _positions(length, width):
  half = width // 2
  table = np.zeros((length, width))
  for t in range(length):
    for i in range(half):
      angle = t / 10000.0 ** (i / half)
      table[t, i], table[t, half + i] = math.sin(angle), math.cos(angle)
  return table


def _tokens(p, x, width, tokens=1):
  y = _dense(p, x)
  return y.reshape(y.shape[0], tokens, width) if x.ndim == 2 else y


# ------------------------------------------------------------------------------------------------ TFN / LMF
def _with_one(x):
  return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)


@pytest.mark.parametrize("dims", [(3, 2), (3, 2, 4)])
def test_tfn_is_the_outer_product_of_h_and_one(dims):
  xs = _inputs([(B, d) for d in dims])
  z = TensorFusion().apply({}, xs)
  a = [_with_one(np.asarray(x, np.float64)) for x in xs]
  if len(dims) == 2:
    ref = np.einsum("bi,bj->bij", *a).reshape(B, -1)
  else:
    ref = np.einsum("bi,bj,bk->bijk", *a).reshape(B, -1)
  chex.assert_shape(z, (B, math.prod(d + 1 for d in dims)))
  np.testing.assert_allclose(z, ref, **TOL)
  # The constant 1 keeps the unimodal terms: the last entry is 1, entries [.., i, D_2] are h_1[i].
  np.testing.assert_allclose(np.asarray(z)[:, -1], 1.0)


def test_tfn_post_fusion_layer_and_token_inputs():
  xs = _inputs([(B, 5, 3), (B, 5, 2)])
  mod = TensorFusion(features=4)
  params = _perturbed_params(mod, xs)
  out = _apply(mod, {"params": params}, xs)
  p = _np(params)
  z = np.einsum("bti,btj->btij", *[_with_one(np.asarray(x, np.float64)) for x in xs]).reshape(B, 5, -1)
  np.testing.assert_allclose(out, _dense(p["post_fusion"], z), **TOL)


def test_lmf_equals_tfn_with_summed_rank_one_factors():
  dims, d, r = (3, 2, 4), 5, 3
  xs = _inputs([(B, k) for k in dims], seed=1)
  lmf = LowRankFusion(features=d, rank=r)
  params = _perturbed_params(lmf, xs, seed=2)
  out = _apply(lmf, {"params": params}, xs)
  p = _np(params)
  # W[i, j, k, o] = sum_r lambda_r W1[r, i, o] W2[r, j, o] W3[r, k, o]
  w = np.einsum("r,rio,rjo,rko->ijko", p["rank_weights"], p["factor_0"], p["factor_1"], p["factor_2"])
  a = [_with_one(np.asarray(x, np.float64)) for x in xs]
  tfn = np.einsum("bi,bj,bk->bijk", *a).reshape(B, -1) @ w.reshape(-1, d) + p["bias"]
  chex.assert_shape(out, (B, d))
  np.testing.assert_allclose(out, tfn, **TOL)


def test_full_rank_lmf_reproduces_any_tfn_layer():
  """An arbitrary TFN weight W [D1+1, D2+1, d] has per-output rank <= min(D1+1, D2+1): the SVD factors load into LMF."""
  d1, d2, d = 3, 4, 6
  xs = _inputs([(B, d1), (B, d2)], seed=3)
  tfn = TensorFusion(features=d)
  tfn_params = _perturbed_params(tfn, xs, seed=4)
  expected = _apply(tfn, {"params": tfn_params}, xs)
  w = np.asarray(tfn_params["post_fusion"]["kernel"], np.float64).reshape(d1 + 1, d2 + 1, d)
  rank = min(d1 + 1, d2 + 1)
  f0, f1 = np.zeros((rank, d1 + 1, d)), np.zeros((rank, d2 + 1, d))
  for o in range(d):
    u, s, vt = np.linalg.svd(w[:, :, o])
    f0[:, :, o] = (u[:, :rank] * s[:rank]).T
    f1[:, :, o] = vt[:rank]
  lmf_params = {"factor_0": f0, "factor_1": f1, "rank_weights": np.ones(rank),
                "bias": np.asarray(tfn_params["post_fusion"]["bias"])}
  lmf_params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), lmf_params)
  got = LowRankFusion(features=d, rank=rank).apply({"params": lmf_params}, xs)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # ... while rank 1 cannot (the residual is the discarded singular values).
  lmf1 = {k: (v[:1] if k.startswith("factor") or k == "rank_weights" else v) for k, v in lmf_params.items()}
  low = LowRankFusion(features=d, rank=1).apply({"params": lmf1}, xs)
  assert np.max(np.abs(np.asarray(low) - np.asarray(expected))) > 1e-2


# ------------------------------------------------------------------------------------------------ early / late
def test_early_fusion_concatenates_inputs():
  xs = _inputs([(B, 3), (B, 4)])
  np.testing.assert_array_equal(EarlyFusion().apply({}, xs), np.concatenate([np.asarray(x) for x in xs], -1))
  seqs = _inputs([(B, 5, 3), (B, 5, 2)])
  chex.assert_shape(EarlyFusion().apply({}, seqs), (B, 5, 5))
  with pytest.raises(MmjaxError, match="time-aligned"):
    EarlyFusion().apply({}, _inputs([(B, 5, 3), (B, 6, 2)]))


def test_late_fusion_weighted_mean_and_concat():
  xs = _inputs([(B, 3), (B, 4), (B, 2)], seed=5)
  mean = LateFusion(mode="mean", features=2)
  p = _perturbed_params(mean, xs, seed=6)
  q = _np(p)
  w = _softmax(q["weights"])
  ref = sum(w[i] * _dense(q[f"proj_{i}"], np.asarray(x, np.float64)) for i, x in enumerate(xs))
  np.testing.assert_allclose(_apply(mean, {"params": p}, xs), ref, **TOL)
  cat = LateFusion(mode="concat")
  p = _perturbed_params(cat, xs, seed=7)
  s = np.asarray(p["weights"], np.float64)
  ref = np.concatenate([s[i] * np.asarray(x, np.float64) for i, x in enumerate(xs)], -1)
  np.testing.assert_allclose(_apply(cat, {"params": p}, xs), ref, **TOL)
  with pytest.raises(MmjaxError, match="equal feature sizes"):
    LateFusion(mode="mean").init(jax.random.PRNGKey(0), xs)


# ------------------------------------------------------------------------------------------------ gating
def test_gmu_bimodal_and_multimodal():
  xs = _inputs([(B, 3), (B, 4)], seed=8)
  gmu = GatedMultimodalUnit(features=5)
  p = _perturbed_params(gmu, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  h0, h1 = np.tanh(a[0] @ q["hidden_0"]["kernel"]), np.tanh(a[1] @ q["hidden_1"]["kernel"])
  z = _sigmoid(_dense(q["gate"], np.concatenate(a, -1)))
  np.testing.assert_allclose(_apply(gmu, {"params": p}, xs), z * h0 + (1 - z) * h1, **TOL)

  xs3 = _inputs([(B, 3), (B, 4), (B, 2)], seed=9)
  p = _perturbed_params(gmu, xs3)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs3]
  joint = np.concatenate(a, -1)
  ref = sum(_sigmoid(_dense(q[f"gate_{i}"], joint)) * np.tanh(a[i] @ q[f"hidden_{i}"]["kernel"]) for i in range(3))
  np.testing.assert_allclose(_apply(gmu, {"params": p}, xs3), ref, **TOL)


@pytest.mark.parametrize("shapes", [[(B, 6), (B, 5)], [(B, 4, 6), (B, 7, 5)]])
def test_nl_gate_is_non_local_attention(shapes):
  xs = _inputs(shapes, seed=10)
  gate = NonLocalGate(channels=4, q_tokens=3, kv_tokens=2)
  p = _perturbed_params(gate, xs)
  q_, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  q = _tokens(q_["q_proj"], a[0], 4, 3)
  k = _tokens(q_["k_proj"], a[1], 4, 2)
  v = _tokens(q_["v_proj"], a[1], 4, 2)
  ref = (q + _softmax(np.einsum("bqc,bkc->bqk", q, k)) @ v).reshape(B, -1)
  out = _apply(gate, {"params": p}, xs)
  chex.assert_shape(out, (B, q.shape[1] * 4))
  np.testing.assert_allclose(out, ref, **TOL)


@pytest.mark.parametrize("x_shape", [(B, 5), (B, 6, 5), (B, 4, 4, 5)])
def test_film_modulates_feature_wise(x_shape):
  xs = _inputs([x_shape, (B, 3), (B, 7, 2)], seed=11)
  film = FiLM()
  p = _perturbed_params(film, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  c = np.concatenate([a[1], a[2].mean(1)], -1)
  gb = _dense(q["film_generator"], c)
  shape = (B,) + (1,) * (len(x_shape) - 2) + (5,)
  ref = (1 + gb[:, :5].reshape(shape)) * a[0] + gb[:, 5:].reshape(shape)
  out = _apply(film, {"params": p}, xs)
  chex.assert_shape(out, x_shape)
  np.testing.assert_allclose(out, ref, **TOL)


# ------------------------------------------------------------------------------------------------ attention
def test_cross_attention_fusion_matches_numpy():
  xs = _inputs([(B, 4, 6), (B, 3), (B, 5, 2)], seed=12)
  w, heads = 8, 2
  mod = CrossAttentionFusion(width=w, num_heads=heads, depth=1, mlp_ratio=2.0, pool="mean")
  p = _perturbed_params(mod, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  toks = [_tokens(q[f"proj_{i}"], x, w) for i, x in enumerate(a)]
  toks = [t + _positions(t.shape[1], w) for t in toks]
  x = _cross_block(q["block_0"], toks[0], np.concatenate(toks[1:], 1), heads)
  ref = _ln(q["ln_post"], x).mean(1)
  np.testing.assert_allclose(_apply(mod, {"params": p}, xs), ref, **TOL)
  tok_out = jax.eval_shape(CrossAttentionFusion(width=w, num_heads=heads, depth=1, mlp_ratio=2.0, pool="none").apply,
                           {"params": p}, xs)
  chex.assert_shape(tok_out, (B, 4, w))


def test_co_attention_matches_numpy():
  xs = _inputs([(B, 4, 6), (B, 5, 3)], seed=13)
  w, heads = 8, 2
  mod = CoAttentionFusion(width=w, num_heads=heads, depth=1, mlp_ratio=2.0, combine="concat")
  p = _perturbed_params(mod, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  s0 = _tokens(q["proj_0"], a[0], w) + _positions(4, w)
  s1 = _tokens(q["proj_1"], a[1], w) + _positions(5, w)
  s0, s1 = _cross_block(q["co_a_0"], s0, s1, heads), _cross_block(q["co_b_0"], s1, s0, heads)
  s0, s1 = _self_block(q["self_a_0"], s0, heads), _self_block(q["self_b_0"], s1, heads)
  ref = np.concatenate([_ln(q["ln_a"], s0).mean(1), _ln(q["ln_b"], s1).mean(1)], -1)
  np.testing.assert_allclose(_apply(mod, {"params": p}, xs), ref, **TOL)
  prod = CoAttentionFusion(width=w, num_heads=heads, depth=1, mlp_ratio=2.0, combine="product")
  np.testing.assert_allclose(_apply(prod, {"params": p}, xs), ref[:, :w] * ref[:, w:], **TOL)


def test_mult_matches_numpy():
  xs = _inputs([(B, 4, 6), (B, 5, 3), (B, 3)], seed=14)
  w, heads = 4, 2
  mod = MulT(width=w, num_heads=heads, depth=1, self_depth=1, mlp_ratio=2.0, pool="last")
  p = _perturbed_params(mod, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  emb = []
  for i, x in enumerate(a):
    t = _tokens(q[f"proj_{i}"], x, w) * math.sqrt(w)
    emb.append(t + _positions(t.shape[1], w))
  outs = []
  for tgt in range(3):
    zs = []
    for src in range(3):
      if src != tgt:
        z = _cross_block(q[f"cross_{src}_to_{tgt}_0"], emb[tgt], emb[src], heads)
        zs.append(_ln(q[f"ln_{src}_to_{tgt}"], z))
    h = _self_block(q[f"self_{tgt}_0"], np.concatenate(zs, -1), heads)
    outs.append(_ln(q[f"ln_self_{tgt}"], h)[:, -1])
  out = _apply(mod, {"params": p}, xs)
  chex.assert_shape(out, (B, 3 * 2 * w))
  np.testing.assert_allclose(out, np.concatenate(outs, -1), **TOL)


def test_mbt_matches_numpy():
  xs = _inputs([(B, 4, 6), (B, 3, 5)], seed=15)
  w, heads, depth, lf, n = 8, 2, 3, 1, 2
  mod = BottleneckFusion(width=w, num_heads=heads, depth=depth, fusion_layer=lf, num_bottlenecks=n, mlp_ratio=2.0)
  p = _perturbed_params(mod, xs)
  q, a = _np(p), [np.asarray(x, np.float64) for x in xs]
  toks = []
  for i, x in enumerate(a):
    t = _tokens(q[f"proj_{i}"], x, w)
    t = np.concatenate([np.broadcast_to(q[f"cls_{i}"], (B, 1, w)), t], 1)
    toks.append(t + q[f"pos_embedding_{i}"])
  z = np.broadcast_to(q["bottleneck"], (B, n, w))
  for layer in range(depth):
    if layer < lf:
      toks = [_self_block(q[f"block_{i}_{layer}"], t, heads) for i, t in enumerate(toks)]
    else:
      ys = [_self_block(q[f"block_{i}_{layer}"], np.concatenate([t, z], 1), heads) for i, t in enumerate(toks)]
      toks = [y[:, :t.shape[1]] for y, t in zip(ys, toks)]
      z = np.mean([y[:, -n:] for y in ys], axis=0)
  ref = np.concatenate([_ln(q[f"ln_{i}"], t[:, 0]) for i, t in enumerate(toks)], -1)
  np.testing.assert_allclose(_apply(mod, {"params": p}, xs), ref, **TOL)


@pytest.mark.parametrize("depth,fusion_layer,num_bottlenecks,crosses", [
    (2, 1, 4, False),   # one fusion layer: z enters it clean, so modality 0 cannot see modality 1 yet
    (3, 1, 4, True),    # two fusion layers: information crosses through z
])
def test_mbt_bottleneck_is_the_only_path(depth, fusion_layer, num_bottlenecks, crosses):
  xs = _inputs([(B, 4, 6), (B, 3, 5)], seed=16)
  mod = BottleneckFusion(width=8, num_heads=2, depth=depth, fusion_layer=fusion_layer,
                         num_bottlenecks=num_bottlenecks, mlp_ratio=2.0)
  p = _perturbed_params(mod, xs)
  base = np.asarray(_apply(mod, {"params": p}, xs))
  other = np.asarray(_apply(mod, {"params": p}, [xs[0], xs[1] + 1.0]))
  change = np.max(np.abs(other[:, :8] - base[:, :8]))  # modality 0's CLS output
  assert (change > 1e-4) == crosses, change
  assert np.max(np.abs(other[:, 8:] - base[:, 8:])) > 1e-4  # modality 1's own output always changes


# ------------------------------------------------------------------------------------------------ all fusions
SHARDED_TEST = "test_same_values_and_gradients_on_1_and_8_devices"


@pytest.fixture(scope="module", autouse=True)
def eight_devices(request, tmp_path_factory):
  """Starts tests/fusion_sharded_check.py on 8 simulated devices in the background when the module starts (if the
  sharded test is selected), so that it runs while the other tests compute here; that test waits for it."""
  if not any(item.name == SHARDED_TEST for item in request.session.items):
    yield None
    return
  out = str(tmp_path_factory.mktemp("fusion_sharded") / "out.npz")
  env = subprocess_env(8)
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fusion_sharded_check.py"), out], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

  def result() -> dict:
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, f"fusion_sharded_check exited {proc.returncode}:\n{stderr[-5000:]}"
    assert json.loads(stdout.strip().splitlines()[-1])["devices"] == 8
    with np.load(out) as f:
      return {k: f[k] for k in f.files}

  yield result
  if proc.poll() is None:
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def one_device() -> dict:
  assert jax.device_count() == 1
  return {name: check.compute(name) for name in check.cases()}


def test_registry_lists_the_catalogue():
  assert set(FUSIONS.names()) == set(check.EXPECTED)
  assert set(check.cases()) == set(check.EXPECTED) | {"classifier"}
  with pytest.raises(MmjaxError, match="did you mean 'tfn'"):
    build_fusion("tfm")
  with pytest.raises(MmjaxError, match="model.fusion_kwargs.rnk"):
    build_fusion("lmf", {"features": 4, "rnk": 2})


@pytest.mark.parametrize("name", sorted(check.EXPECTED))
def test_every_fusion_traces_under_jit_with_shapes(name):
  """jit(value, grad) of every fusion traces (abstractly, no compile) with the chex-checked output and gradient shapes;
  the compiled values are checked in the 1-vs-8-device test."""
  mod = build_fusion(name, check.KWARGS.get(name))
  xs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in check.SHAPES[name]]
  params = jax.eval_shape(lambda inputs: mod.init(jax.random.PRNGKey(0), inputs), xs).get("params", {})
  f = lambda p, inputs: jnp.sum(jnp.sin(mod.apply({"params": p}, inputs)))
  out, (gp, gx) = jax.eval_shape(jax.jit(lambda p, inputs: (mod.apply({"params": p}, inputs),
                                                            jax.grad(f, argnums=(0, 1))(p, inputs))), params, xs)
  chex.assert_shape(out, check.EXPECTED[name])
  chex.assert_shape(gx, [tuple(s) for s in check.SHAPES[name]])
  assert jax.tree.structure(gp) == jax.tree.structure(params)


@pytest.mark.slow
def test_same_values_and_gradients_on_1_and_8_devices(one_device, eight_devices):
  """Every fusion (and the classifier's classify loss) compiled: finite, shape-checked, gradients to every modality;
  outputs and gradients on 1 device (here) equal the batch-sharded jit on 8 simulated devices (subprocess)."""
  sharded = eight_devices()
  for name in check.cases():
    r = one_device[name]
    if name in check.EXPECTED:  # compiled values: shape, finite, a gradient reaches every modality's input
      chex.assert_shape(r["out"], check.EXPECTED[name])
      chex.assert_tree_all_finite((r["out"], r["grads"]))
      assert np.all(r["input_grad_max"] > 0), f"{name}: a modality gets no gradient: {r['input_grad_max']}"
    assert int(sharded[f"{name}/devices"]) == 8, name
    assert int(one_device[name]["devices"]) == 1, name
    for key in ("out", "grads"):
      # atol scales with the largest entry: float32 rounding of sums over terms that large (the order of the sums
      # differs between the 1- and 8-device programs and between CPUs' vector widths)
      want = one_device[name][key]
      np.testing.assert_allclose(sharded[f"{name}/{key}"], want, rtol=1e-5,
                                 atol=1e-5 * max(1.0, float(np.max(np.abs(want)))), err_msg=f"{name} {key}")
