"""MLM: BERT's 15 % selection and 80/10/10 corruption, special tokens never selected, loss on selected only,
a bidirectional encoder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import build_model
from mmjax.objectives import get_objective
from mmjax.objectives.masked import MASK_ID, NUM_SPECIAL, masked_token_loss, mlm_corrupt

VOCAB = 60


def _tokens(b: int, length: int, seed: int = 0) -> np.ndarray:
  """<sot> words <eot> <pad>... with random lengths, word ids in [4, VOCAB)."""
  rng = np.random.default_rng(seed)
  out = np.zeros((b, length), np.int32)
  for row in out:
    n = rng.integers(1, length - 1)
    row[0], row[1:1 + n], row[1 + n] = 1, rng.integers(NUM_SPECIAL, VOCAB, n), 2
  return out


def test_special_token_ids_match_the_tokenizer():
  from mmjax.data.tokenizer import SPECIAL_TOKENS
  assert MASK_ID == 3 and NUM_SPECIAL == 4 and SPECIAL_TOKENS[MASK_ID] == "<mask>"


def test_selection_and_80_10_10_proportions_on_a_large_sample():
  tokens = _tokens(1024, 48)
  inputs, selected = jax.device_get(jax.jit(lambda k, t: mlm_corrupt(k, t, vocab_size=VOCAB))(
      jax.random.key(0), jnp.asarray(tokens)))
  special = tokens < NUM_SPECIAL
  assert not selected[special].any()                              # pad, sot, eot never selected
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])   # unselected tokens untouched
  n_words, n_sel = int((~special).sum()), int(selected.sum())
  p = n_sel / n_words
  assert abs(p - 0.15) < 5 * np.sqrt(0.15 * 0.85 / n_words), p
  sel_in, sel_orig = inputs[selected], tokens[selected]
  masked = np.mean(sel_in == MASK_ID)
  # a random replacement equals the original with probability 1 / (VOCAB - NUM_SPECIAL)
  p_same = 0.1 + 0.1 / (VOCAB - NUM_SPECIAL)
  same, changed = np.mean(sel_in == sel_orig), np.mean((sel_in != sel_orig) & (sel_in != MASK_ID))
  for got, want in ((masked, 0.8), (same, p_same), (changed, 0.1 - 0.1 / (VOCAB - NUM_SPECIAL))):
    assert abs(got - want) < 5 * np.sqrt(want * (1 - want) / n_sel), (got, want)
  random_ids = sel_in[(sel_in != sel_orig) & (sel_in != MASK_ID)]
  assert random_ids.min() >= NUM_SPECIAL and random_ids.max() < VOCAB
  assert len(np.unique(random_ids)) > (VOCAB - NUM_SPECIAL) // 2    # spread over the vocabulary


def test_corruption_differs_across_samples_and_rngs():
  tokens = jnp.asarray(np.tile(_tokens(1, 32, seed=1), (16, 1)))
  f = jax.jit(lambda k: mlm_corrupt(k, tokens, vocab_size=VOCAB)[1])
  s1, s2 = np.asarray(f(jax.random.key(0))), np.asarray(f(jax.random.key(1)))
  assert len({r.tobytes() for r in s1}) > 1 and not np.array_equal(s1, s2)


def test_token_loss_counts_selected_positions_only():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 7, 11)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 11, (3, 7)), jnp.int32)
  w = jnp.asarray(rng.random((3, 7)) < 0.4, jnp.float32)
  lg = np.asarray(logits, np.float64)
  ce = np.log(np.exp(lg).sum(-1)) - np.take_along_axis(lg, np.asarray(tokens)[..., None], -1)[..., 0]
  loss, acc = masked_token_loss(logits, tokens, w)
  np.testing.assert_allclose(loss, (ce * np.asarray(w)).sum() / np.asarray(w).sum(), rtol=1e-5)
  np.testing.assert_allclose(acc, ((lg.argmax(-1) == np.asarray(tokens)) * np.asarray(w)).sum()
                             / np.asarray(w).sum(), rtol=1e-6)
  g = np.asarray(jax.grad(lambda l: masked_token_loss(l, tokens, w)[0])(logits))
  assert np.all(g[np.asarray(w) == 0] == 0) and np.all(np.abs(g[np.asarray(w) == 1]).sum(-1) > 0)


@pytest.fixture(scope="module")
def mlm():
  model = build_model(dict(name="mlm", text=dict(vocab_size=VOCAB, context_length=12, width=16, depth=1,
                                                 num_heads=2, mlp_ratio=2.0)))
  tokens = jnp.asarray(_tokens(8, 12, seed=2))
  params = jax.jit(lambda k, t: model.init({"params": k}, t)["params"])(jax.random.key(0), tokens)
  return model, params, tokens


def test_encoder_is_bidirectional(mlm):
  model, params, _ = mlm
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
  t = jnp.asarray([[1, 10, 11, 12, 13, 2, 0, 0, 0, 0, 0, 0]], jnp.int32)
  base = np.asarray(apply(params, t))
  later = np.asarray(apply(params, t.at[0, 4].set(20)))
  assert np.abs(later[0, 1] - base[0, 1]).max() > 1e-4          # position 1 sees position 4: not causal


def test_mlm_objective_learns_on_a_fixed_batch(mlm):
  import optax
  model, params, _ = mlm
  # Predictable texts: <sot> s, s+1, s+2, ... <eot>, so a masked word follows from its neighbours.
  rng = np.random.default_rng(5)
  tokens = np.zeros((16, 12), np.int32)
  for row in tokens:
    n, start = rng.integers(5, 11), rng.integers(4, VOCAB - 11)
    row[0], row[1:1 + n], row[1 + n] = 1, start + np.arange(n), 2
  tokens = jnp.asarray(tokens)
  obj, tx = get_objective("mlm"), optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, rng):
    (loss, metrics), g = jax.value_and_grad(lambda p: obj.loss_fn(p, {"tokens": tokens}, rng, model=model),
                                            has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss, metrics

  losses = []
  for i in range(80):
    params, opt, loss, metrics = step(params, opt, jax.random.key(i))
    losses.append(float(loss))
    assert 0.0 <= float(metrics["selected_frac"]) <= 1.0
  assert np.mean(losses[-10:]) < 0.65 * np.mean(losses[:5]), losses
