"""mmjax.data.hf_tokenizer on small tokenizer.json files written here (a SentencePiece-style Unigram as in T5 / SigLIP
exports, a word-level one): ids against the `tokenizers` library's own post-processor + truncation + padding."""
from __future__ import annotations

import json
import os
import pickle

import ml_collections
import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, processors
from tokenizers.implementations import SentencePieceUnigramTokenizer

from mmjax.data.hf_tokenizer import HfTokenizer
from mmjax.data.shapes import ShapesConfig, caption_corpus
from mmjax.data.pipeline import tokenizer_for
from mmjax.errors import MmjaxError

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
  return caption_corpus(ShapesConfig(max_shapes=3), n=200)


@pytest.fixture(scope="module")
def files(corpus, tmp_path_factory) -> dict[str, str]:
  """"eos": T5-like ("$A </s>", pad "<pad>" by name); "bos": "<s> $A </s>" with a padding section (pad id 2)."""
  d = tmp_path_factory.mktemp("hf")
  sp = SentencePieceUnigramTokenizer()
  sp.train_from_iterator(corpus, vocab_size=120, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
  out = {}
  sp.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  sp.save(out.setdefault("eos", str(d / "eos.json")))
  sp.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 1)])
  sp.enable_padding(pad_id=2, pad_token="<unk>")
  sp.save(out.setdefault("bos", str(d / "bos.json")))
  return out


def _reference(path: str, texts: list[str], length: int, pad_id: int) -> np.ndarray:
  """The library's own pipeline: the file's post-processor, truncation that keeps the special tokens, padding."""
  ref = tokenizers.Tokenizer.from_file(path)
  ref.enable_truncation(max_length=length)
  ref.enable_padding(length=length, pad_id=pad_id)
  return np.asarray([e.ids for e in ref.encode_batch(texts, add_special_tokens=True)], np.int32)


@pytest.mark.parametrize("kind,ids", [("eos", (0, None, 1)), ("bos", (2, 3, 1))])
def test_ids_equal_tokenizers_pipeline(files, corpus, kind, ids):
  tok = HfTokenizer(files[kind])
  assert (tok.pad_id, tok.sot_id, tok.eot_id) == ids
  assert tok.vocab_size == tokenizers.Tokenizer.from_file(files[kind]).get_vocab_size()
  texts = corpus[:60] + ["", "a", "zebra qx unseen words ÷", "an image of " * 20]
  for length in (8, 32):
    got = tok.encode(texts, length)
    assert got.dtype == np.int32 and got.shape == (len(texts), length)
    np.testing.assert_array_equal(got, _reference(files[kind], texts, length, tok.pad_id))


def test_decode_and_pickle(files, corpus, tmp_path):
  path = str(tmp_path / "moved.json")
  with open(files["bos"]) as f, open(path, "w") as g:
    g.write(f.read())
  tok = HfTokenizer(path)
  texts = corpus[:20]
  ids = tok.encode(texts, 128)
  ref = tokenizers.Tokenizer.from_file(files["bos"])
  assert tok.decode(ids) == [ref.decode(ref.encode(t).ids, skip_special_tokens=True) for t in texts]
  assert tok.decode(ids[0]) == tok.decode(ids)[0]
  blob = pickle.dumps(tok)
  os.remove(path)                                 # a worker needs no access to the file
  np.testing.assert_array_equal(pickle.loads(blob).encode(texts, 128), ids)


def test_overrides_factory_and_errors(files, tmp_path):
  cfg = ml_collections.ConfigDict(dict(tokenizer=dict(kind="hf", path=files["eos"], pad_id=5, eos_id=-1, bos_id=-1)))
  tok = tokenizer_for(cfg)
  assert isinstance(tok, HfTokenizer) and (tok.pad_id, tok.sot_id, tok.eot_id) == (5, None, 1)
  assert (tok.encode(["a"], 10)[0, -3:] == 5).all()
  with pytest.raises(MmjaxError, match="tokenizer.eos_id=999 is outside"):
    HfTokenizer(files["eos"], eos_id=999)
  with pytest.raises(MmjaxError, match="does not exist"):
    HfTokenizer(str(tmp_path / "none.json"))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(MmjaxError, match="not a valid tokenizer.json"):
    HfTokenizer(str(bad))
  with pytest.raises(MmjaxError, match="list of strings"):
    tok.encode("a red circle")
  # a word-level file: no post-processor and no EOS-named token -> the override is needed
  word = tokenizers.Tokenizer(models.WordLevel({"[PAD]": 0, "a": 1, "red": 2, "[UNK]": 3, "[X]": 4}, unk_token="[UNK]"))
  word.pre_tokenizer = pre_tokenizers.Whitespace()
  word.save(str(tmp_path / "word.json"))
  with pytest.raises(MmjaxError, match="names no EOS token; set tokenizer.eos_id"):
    HfTokenizer(str(tmp_path / "word.json"))
  np.testing.assert_array_equal(HfTokenizer(str(tmp_path / "word.json"), eos_id=4).encode(["a red red"], 4),
                                [[1, 2, 2, 4]])
  word.post_processor = processors.BertProcessing(("[X]", 4), ("[UNK]", 3))     # sep, cls
  word.save(str(tmp_path / "bert.json"))
  bert = HfTokenizer(str(tmp_path / "bert.json"))
  assert (bert.pad_id, bert.sot_id, bert.eot_id) == (0, 3, 4)
  np.testing.assert_array_equal(bert.encode(["a red a"], 4), _reference(str(tmp_path / "bert.json"), ["a red a"], 4, 0))
  assert json.loads(open(tmp_path / "bert.json").read())["post_processor"]["type"] == "BertProcessing"
