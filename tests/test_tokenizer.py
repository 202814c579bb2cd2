"""Tests for the byte-level BPE tokenizer."""
from __future__ import annotations

import os

import chex
import numpy as np
import pytest

from mmjax.data.shapes import ShapesConfig, caption_corpus
from mmjax.data.tokenizer import Tokenizer
from mmjax.errors import MmjaxError


@pytest.fixture(scope="module")
def corpus() -> list[str]:
  return caption_corpus(ShapesConfig(max_shapes=4), n=300)


@pytest.fixture(scope="module")
def tok(corpus) -> Tokenizer:
  return Tokenizer.train(corpus, vocab_size=512)


def test_special_ids_and_vocab_bound(corpus, tok):
  assert tok.pad_id == 0
  assert len({tok.pad_id, tok.sot_id, tok.eot_id, tok.mask_id}) == 4
  assert 260 < tok.vocab_size <= 512
  small = Tokenizer.train(corpus, vocab_size=280)
  assert small.vocab_size <= 280
  with pytest.raises(MmjaxError, match="vocab_size"):
    Tokenizer.train(corpus, vocab_size=100)


def test_round_trip_captions(corpus, tok):
  texts = corpus[:50] + corpus[-20:]
  ids = tok.encode(texts, 64)
  chex.assert_shape(ids, (len(texts), 64))
  chex.assert_type(ids, np.int32)
  assert tok.decode(ids) == texts
  assert tok.decode(ids[0]) == texts[0]
  # Every corpus word (and comma) is a single token.
  lengths = (ids != 0).sum(1)
  assert all(n <= len(t.split()) + t.count(",") + 2 for n, t in zip(lengths, texts))


def test_unseen_words_and_unicode(tok):
  text = "zebra ünïcode 😀"
  ids = tok.encode([text, "Upper Case"], 32)
  assert tok.decode(ids) == [text, "upper case"]
  assert ((ids >= 0) & (ids < tok.vocab_size)).all()


def test_padding_truncation_and_eot(tok):
  ids = tok.encode(["a red circle", "", "a small red circle at the top left " * 10], 12)
  chex.assert_shape(ids, (3, 12))
  assert (ids[:, 0] == tok.sot_id).all()
  n = (ids[0] != 0).sum()
  assert ids[0, n - 1] == tok.eot_id and (ids[0, n:] == tok.pad_id).all()
  np.testing.assert_array_equal(ids[1], [tok.sot_id, tok.eot_id] + [0] * 10)
  assert ids[2, -1] == tok.eot_id and (ids[2] != 0).all()          # cut so that <eot> is kept
  assert (ids == tok.eot_id).sum() == 3
  assert tok.decode(ids[2]).startswith("a small red circle at the")
  with pytest.raises(MmjaxError, match="context_length"):
    tok.encode(["a"], 1)
  with pytest.raises(MmjaxError, match="list"):
    tok.encode("a red circle", 8)


def test_save_load_and_json(tmp_path, corpus, tok):
  path = str(tmp_path / "tok.json")
  tok.save(path)
  assert os.path.exists(path) and not os.path.exists(path + ".tmp")
  loaded = Tokenizer.load(path)
  np.testing.assert_array_equal(loaded.encode(corpus[:30], 32), tok.encode(corpus[:30], 32))
  assert (loaded.sot_id, loaded.eot_id, loaded.mask_id, loaded.vocab_size) == (
      tok.sot_id, tok.eot_id, tok.mask_id, tok.vocab_size)
  again = Tokenizer.from_json(tok.to_json())
  np.testing.assert_array_equal(again.encode(corpus[:5], 16), tok.encode(corpus[:5], 16))


def test_load_errors(tmp_path):
  missing = str(tmp_path / "nope.json")
  with pytest.raises(MmjaxError, match="nope.json"):
    Tokenizer.load(missing)
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(MmjaxError, match="bad.json"):
    Tokenizer.load(str(bad))


def test_deterministic_training(corpus, tok):
  other = Tokenizer.train(list(corpus), vocab_size=512)
  assert other.to_json() == tok.to_json()
  np.testing.assert_array_equal(other.encode(corpus[:100], 32), tok.encode(corpus[:100], 32))


def test_pickle(tok):
  import pickle
  copy = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(copy.encode(["a red star"], 8), tok.encode(["a red star"], 8))
