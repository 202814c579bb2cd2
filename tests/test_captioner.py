"""Captioner (mmjax/models/captioner.py), cached decoding (mmjax/decoding.py) and the "caption" objective:
cached step-by-step logits vs the teacher-forced forward, greedy / beam search on rigged step functions vs NumPy
decoders and brute-force search, the loss vs a NumPy masked cross-entropy."""
from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.decoding import beam_search, caption_beam, caption_greedy, greedy_decode
from mmjax.errors import MmjaxError
from mmjax.models import build_model
from mmjax.objectives import get_objective

PAD, SOT, EOT = 0, 1, 2
V, L = 40, 9


def _model(tie=True, depth=2):
  return build_model(dict(name="captioner", vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2),
                          decoder=dict(vocab_size=V, context_length=L, width=16, depth=depth, num_heads=2),
                          tie_embeddings=tie))


def _inputs(b=3):
  images = jax.random.normal(jax.random.PRNGKey(0), (b, 16, 16, 3))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (b, L), 4, V)
  return images, tokens


def _init(model, seed=2):
  images, tokens = _inputs()
  return jax.jit(model.init)(jax.random.PRNGKey(seed), images, tokens)["params"]


@pytest.fixture(scope="module")
def model_params():
  model = _model()
  return model, _init(model)


@pytest.fixture(scope="module")
def forward(model_params):
  model, _ = model_params
  return jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))


def test_shapes_and_config_errors(model_params):
  model, params = model_params
  images, tokens = _inputs()
  shapes = lambda *a, **k: jax.eval_shape(lambda p: model.apply({"params": p}, *a, **k), params)
  chex.assert_shape(shapes(images, tokens), (3, L, V))
  chex.assert_shape(shapes(images, method="encode_image"), (3, 5, 16))
  chex.assert_shape(shapes(images, tokens[:, :4]), (3, 4, V))
  untied = jax.eval_shape(lambda: _model(tie=False).init(jax.random.PRNGKey(0), images, tokens))["params"]
  assert "head" not in params and "head" in untied
  with pytest.raises(MmjaxError, match="model.decoder.widht"):
    build_model(dict(name="captioner", vision=dict(image_size=16, patch_size=8, width=16, depth=1, num_heads=2),
                     decoder=dict(vocab_size=V, context_length=L, widht=16, depth=1, num_heads=2)))
  with pytest.raises(MmjaxError, match="context_length"):
    shapes(images, jnp.zeros((3, L + 1), jnp.int32))


def test_cached_steps_equal_teacher_forcing():
  # Untied head here; the tied model's cached decoding is checked against its forward in the greedy test below.
  model = _model(tie=False)
  images, tokens = _inputs()
  params = _init(model, 3)
  fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
  full = fwd(params, images, tokens)
  memory = model.apply({"params": params}, images, method="encode_image")
  cache = model.apply({"params": params}, memory, L, method="init_cache")
  step = jax.jit(lambda c, tok, t: model.apply({"params": params}, c, tok, t, method="decode_step"))
  steps = []
  for t in range(L):
    logits, cache = step(cache, tokens[:, t], t)
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
  # The logits at position t do not depend on later tokens (causal), and do depend on the image (cross-attention).
  changed = tokens.at[:, 5:].set(7)
  np.testing.assert_allclose(fwd(params, images, changed)[:, :5], full[:, :5], atol=1e-6)
  other = fwd(params, images[::-1], tokens)
  assert np.abs(np.asarray(other[1] - full[1])).max() < 1e-5 and np.abs(np.asarray(other[0] - full[0])).max() > 1e-4


def _numpy_greedy(table, max_len):
  """table [B, max_len, V]: logits of row b at position t (whatever the token) -> tokens [B, max_len]."""
  b = table.shape[0]
  out = np.full((b, max_len), PAD, np.int32)
  out[:, 0] = SOT
  for r in range(b):
    for t in range(max_len - 1):
      out[r, t + 1] = np.argmax(table[r, t])
      if out[r, t + 1] == EOT:
        break
  return out


def test_greedy_follows_argmax_and_stops_at_eot():
  rng = np.random.default_rng(0)
  b, max_len = 4, 8
  table = rng.normal(size=(b, max_len, 6)).astype(np.float32)
  table[:, :, EOT] = -5.0
  table[0, 2, EOT] = 10.0           # row 0 ends at position 3
  table[1, 0, EOT] = 10.0           # row 1 ends at once
  table[2, 6, EOT] = 10.0           # row 2 ends at the last position; row 3 never ends

  def step_fn(cache, token, t):
    rows = cache["row"]
    return jnp.asarray(table)[rows, t], {"row": rows, "steps": cache["steps"] + 1}

  cache = {"row": jnp.arange(b), "steps": jnp.zeros((b,), jnp.int32)}
  out = jax.jit(lambda c: greedy_decode(step_fn, c, b, max_len=max_len, sot_id=SOT, eot_id=EOT, pad_id=PAD))(cache)
  np.testing.assert_array_equal(out, _numpy_greedy(table, max_len))
  assert out[0, 3] == EOT and np.all(np.asarray(out[0, 4:]) == PAD) and out[1, 1] == EOT
  assert EOT not in np.asarray(out[3])
  # Early exit: once every row has ended the loop stops. Rows end after steps t = 2, 0, 3, 1 -> 4 steps, not 7.
  table[3, 1, EOT] = 10.0
  table[2, 6, EOT] = -5.0
  table[2, 3, EOT] = 10.0
  calls = []

  def counted(cache, token, t):
    jax.debug.callback(lambda t: calls.append(int(t)), t)
    return step_fn(cache, token, t)

  out = jax.jit(lambda c: greedy_decode(counted, c, b, max_len=max_len, sot_id=SOT, eot_id=EOT, pad_id=PAD))(cache)
  jax.effects_barrier()
  np.testing.assert_array_equal(out, _numpy_greedy(table, max_len))
  assert sorted(calls) == [0, 1, 2, 3]


def _markov_step(table):
  """A step function whose logits depend on (row, position, previous token): table [B, T, V_prev, V]."""
  def step_fn(cache, token, t):
    return jnp.asarray(table)[cache["row"], t, token], cache
  return step_fn


def _lp(n, alpha):
  return ((5.0 + n) / 6.0) ** alpha


def _brute_force(logp, max_len, alpha):
  """Best finished sequence by log p / lp(len) over all sequences (exhaustive). logp [T, V_prev, V] log-softmax."""
  best, best_seq = -np.inf, None
  words = [v for v in range(logp.shape[-1]) if v not in (PAD, SOT)]
  for n in range(1, max_len):                      # n generated tokens, the last one EOT
    for mid in itertools.product([w for w in words if w != EOT], repeat=n - 1):
      seq = [SOT, *mid, EOT]
      s = sum(logp[t, seq[t], seq[t + 1]] for t in range(n))
      if s / _lp(n, alpha) > best:
        best, best_seq = s / _lp(n, alpha), seq
  out = np.full(max_len, PAD, np.int32)
  out[:len(best_seq)] = best_seq
  return out, best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_finds_the_best_sequence(alpha):
  rng = np.random.default_rng(1)
  b, max_len, vocab, k = 3, 5, 5, 12
  table = rng.normal(scale=1.5, size=(b, max_len, vocab, vocab)).astype(np.float32)
  table[..., [PAD, SOT]] = -1e9
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(table), axis=-1))
  cache = {"row": jnp.repeat(jnp.arange(b), k)}
  seqs, scores = jax.jit(lambda c: beam_search(_markov_step(table), c, b, beam_size=k, max_len=max_len, sot_id=SOT,
                                               eot_id=EOT, pad_id=PAD, alpha=alpha))(cache)
  for r in range(b):
    want, score = _brute_force(logp[r], max_len, alpha)
    np.testing.assert_array_equal(seqs[r], want)
    assert float(scores[r]) == pytest.approx(score, rel=1e-5)


def test_beam_search_beats_greedy_on_a_garden_path():
  # From <sot>: A (p .6) or B (p .4); after A: <eot> p .5; after B: <eot> p .9. Greedy takes A; beam 2 takes B.
  A, B = 3, 4
  probs = np.full((1, 3, 5, 5), 1e-6, np.float32)
  probs[0, 0, SOT, [A, B]] = [0.6, 0.4]
  probs[0, 1, A, [EOT, A, B]] = [0.5, 0.25, 0.25]
  probs[0, 1, B, [EOT, A, B]] = [0.9, 0.05, 0.05]
  probs[0, 2, :, EOT] = 1.0
  table = np.log(probs)
  kw = dict(max_len=4, sot_id=SOT, eot_id=EOT, pad_id=PAD)
  greedy = greedy_decode(_markov_step(table), {"row": jnp.zeros(1, jnp.int32)}, 1, **kw)
  beam, score = beam_search(_markov_step(table), {"row": jnp.zeros(2, jnp.int32)}, 1, beam_size=2, alpha=0.0, **kw)
  np.testing.assert_array_equal(greedy[0], [SOT, A, EOT, PAD])
  np.testing.assert_array_equal(beam[0], [SOT, B, EOT, PAD])
  assert float(score[0]) == pytest.approx(np.log(0.4 * 0.9), rel=1e-4)


def test_beam_one_equals_greedy_on_the_model(model_params, forward):
  model, params = model_params
  images, _ = _inputs()
  greedy = jax.jit(lambda p, x: caption_greedy(model, p, x))(params, images)
  beam, _ = jax.jit(lambda p, x: caption_beam(model, p, x, beam_size=1, alpha=0.0))(params, images)
  chex.assert_shape(greedy, (3, L))
  np.testing.assert_array_equal(beam, greedy)
  np.testing.assert_array_equal(greedy[:, 0], SOT)
  # Greedy picks the argmax of the teacher-forced logits of its own prefix.
  logits = forward(params, images, greedy)
  for r in range(3):
    for t in range(L - 1):
      if EOT in np.asarray(greedy[r, 1:t + 1]):
        assert greedy[r, t + 1] == PAD
      else:
        assert greedy[r, t + 1] == int(np.argmax(logits[r, t]))


def _numpy_caption_loss(logits, tokens):
  logits, tokens = np.asarray(logits, np.float64), np.asarray(tokens)
  total, count, correct = 0.0, 0, 0
  for r in range(tokens.shape[0]):
    eot = list(tokens[r]).index(EOT)
    for t in range(eot):                       # targets tokens[1..eot]
      x = logits[r, t]
      lse = np.log(np.sum(np.exp(x - x.max()))) + x.max()
      total += lse - x[tokens[r, t + 1]]
      correct += int(np.argmax(x) == tokens[r, t + 1])
      count += 1
  return total / count, correct / count


def test_caption_loss_matches_numpy_and_ignores_padding(model_params, forward):
  model, params = model_params
  objective = get_objective("caption")
  assert objective.batch_keys == ("image", "tokens")
  images, words = _inputs()
  lengths = [3, 6, 7]                           # tokens: <sot> w_1..w_n <eot> <pad>...
  tokens = np.zeros((3, L), np.int32)
  for r, n in enumerate(lengths):
    tokens[r, 0], tokens[r, 1:n + 1], tokens[r, n + 1] = SOT, np.asarray(words[r, :n]), EOT
  batch = {"image": images, "tokens": jnp.asarray(tokens)}
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p, b: objective.loss_fn(p, b, jax.random.PRNGKey(0), model=model, train=False), has_aux=True))
  loss_fn = lambda p, b: value_and_grad(p, b)[0]
  (loss, metrics), grads = value_and_grad(params, batch)
  logits = forward(params, images, jnp.asarray(tokens[:, :-1]))
  want_loss, want_acc = _numpy_caption_loss(logits, tokens)
  assert float(loss) == pytest.approx(want_loss, rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)
  # Whatever follows the first <eot> (pads or garbage) changes nothing; a real token does.
  garbage = tokens.copy()
  for r, n in enumerate(lengths):
    garbage[r, n + 2:] = 5 + r
  assert float(loss_fn(params, {**batch, "tokens": jnp.asarray(garbage)})[0]) == pytest.approx(float(loss), abs=1e-6)
  changed = tokens.copy()
  changed[0, 1] = 4 if changed[0, 1] != 4 else 5
  assert abs(float(loss_fn(params, {**batch, "tokens": jnp.asarray(changed)})[0]) - float(loss)) > 1e-4
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["vision"]["conv1"]["kernel"]).sum()) > 0    # the image reaches the loss


def test_cnn_memory_tokens_and_cached_decoding():
  """vision.kind='cnn': 3 stride-2 stages on 16 px give (16/8)^2 = 4 memory tokens of the decoder width; cached
  decoding still equals teacher forcing; an unknown vision key names itself."""
  model = build_model(dict(name="captioner", vision=dict(kind="cnn", image_size=16, channels=(4, 8, 8), width=16),
                           decoder=dict(vocab_size=V, context_length=L, width=16, depth=1, num_heads=2)))
  images, tokens = _inputs()
  params = _init(model, 4)
  memory = model.apply({"params": params}, images, method="encode_image")
  chex.assert_shape(memory, (3, 4, 16))
  full = model.apply({"params": params}, images, tokens)
  cache = model.apply({"params": params}, memory, L, method="init_cache")
  steps = []
  for t in range(L):
    logits, cache = model.apply({"params": params}, cache, tokens[:, t], t, method="decode_step")
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
  with pytest.raises(MmjaxError, match="model.vision.patch_size"):
    build_model(dict(name="captioner", vision=dict(kind="cnn", channels=(4,), width=16, patch_size=8),
                     decoder=dict(vocab_size=V, context_length=L, width=16, depth=1, num_heads=2)))
