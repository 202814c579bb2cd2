"""mmjax.data.clip_bpe against open_clip's own tokenizer: ids from a fixture that open_clip wrote
(tests/fixtures/make_clip_bpe_fixture.py; no torch needed here) and, when torch + open_clip import, live."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mmjax.data import clip_bpe
from mmjax.data.clip_bpe import ClipBpeTokenizer
from mmjax.data.pipeline import tokenizer_for
from mmjax.errors import MmjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "clip_bpe_open_clip.json.gz")
NO_VOCAB = ("the CLIP BPE vocabulary is not installed (pip install --no-deps open_clip_torch==3.3.0, as the Makefile's "
            "install does, or set MMJAX_CLIP_BPE)")


def _padded(rows: list[list[int]], length: int) -> np.ndarray:
  return np.asarray([r + [0] * (length - len(r)) for r in rows], np.int32)


@pytest.fixture(scope="module")
def ref() -> dict:
  with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def tok() -> ClipBpeTokenizer:
  try:
    return ClipBpeTokenizer()
  except MmjaxError:
    pytest.skip(NO_VOCAB)


def _fixture_strings_module():
  spec = importlib.util.spec_from_file_location("make_clip_bpe_fixture",
                                                os.path.join(ROOT, "tests", "fixtures", "make_clip_bpe_fixture.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_same_vocabulary_file_as_the_fixture(tok, ref):
  with gzip.open(tok.bpe_path) as f:
    assert hashlib.sha256(f.read()).hexdigest() == ref["bpe_sha256"]
  assert (tok.vocab_size, tok.sot_id, tok.eot_id, tok.pad_id) == (49408, 49406, 49407, 0)


@pytest.mark.parametrize("length", [77, 16])
def test_ids_equal_open_clip_fixture(tok, ref, length):
  texts = ref["texts"]
  assert len(texts) >= 2000
  got = tok.encode(texts, length)
  want = _padded(ref[f"ids{length}"], length)
  assert got.dtype == np.int32 and got.shape == want.shape
  bad = np.flatnonzero((got != want).any(axis=1))
  assert bad.size == 0, f"{bad.size} strings differ from open_clip, e.g. {[texts[i] for i in bad[:3]]!r}"


def test_default_context_and_open_bang(tok, ref):
  texts = ['a sign that says "open!".', "open!"]
  got = tok.encode(texts)                         # default context 77
  want = _padded([ref["ids77"][ref["texts"].index(t)] for t in texts], 77)
  np.testing.assert_array_equal(got, want)
  assert 0 in got[0, 1:np.argmax(got[0])]         # "!" is id 0 inside the text, and 0 pads after EOT


def test_truncation_keeps_eot(tok, ref):
  long = [t for t, ids in zip(ref["texts"], ref["ids77"]) if len(ids) == 77]
  full = tok.encode(long, 1000)
  longer = (full[:, 77:] == tok.eot_id).any(axis=1)       # more than 75 text tokens: cut at 77
  assert longer.sum() > 50
  got = tok.encode(long, 77)
  assert (got[:, -1] == tok.eot_id).all()
  np.testing.assert_array_equal(got[longer, :76], full[longer, :76])


def test_decode_matches_open_clip_decode(tok, ref):
  texts = [ref["texts"][i] for i in ref["decode_index"]]
  assert len(texts) >= 300
  assert tok.decode(tok.encode(texts)) == [d.strip() for d in ref["decoded"]]
  assert tok.decode(tok.encode(texts[:1])[0]) == ref["decoded"][0].strip()


def test_decode_round_trips_plain_words(tok):
  texts = ["a dog running on the grass", "two people sitting near the water", "Black And White"]
  assert tok.decode(tok.encode(texts, 32)) == [t.lower() for t in texts]


def test_cleaning_fast_path_equals_ftfy():
  """Text that skips ftfy (printable ASCII, tab, newline, no "&") is cleaned exactly as open_clip's ftfy route."""
  ftfy = pytest.importorskip("ftfy")
  import html
  rng = np.random.default_rng(0)
  alphabet = np.array(list("\t\n \r&;#<>'\"!?.,-_aAzZ09") + [chr(c) for c in range(0x20, 0x7f)])
  texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 40))) for _ in range(4000)]
  skipped = sum(clip_bpe._NEEDS_FTFY(t) is None for t in texts)
  assert 1000 < skipped < 4000
  want = [" ".join(html.unescape(html.unescape(ftfy.fix_text(t))).strip().split()).strip().lower() for t in texts]
  assert [clip_bpe.clean(t) for t in texts] == want


def test_errors_and_pickle(tok, ref):
  with pytest.raises(MmjaxError, match="list of strings"):
    tok.encode("a dog")
  with pytest.raises(MmjaxError, match="context_length=1"):
    tok.encode(["a dog"], 1)
  back = pickle.loads(pickle.dumps(tok))
  texts = ref["texts"][:300]
  np.testing.assert_array_equal(back.encode(texts, 77), _padded(ref["ids77"][:300], 77))
  assert len(pickle.dumps(tok)) < 1000            # a path, not the vocabulary


def test_missing_vocabulary_file(tmp_path, monkeypatch):
  monkeypatch.delenv(clip_bpe.ENV_VAR, raising=False)
  monkeypatch.setattr(clip_bpe, "_installed_bpe_file", lambda: None)
  with pytest.raises(MmjaxError) as e:
    ClipBpeTokenizer()
  msg = str(e.value)
  assert "\n" not in msg and all(s in msg for s in ("tokenizer.bpe_path", "MMJAX_CLIP_BPE", "open_clip_torch"))
  missing = str(tmp_path / "nope.txt.gz")
  monkeypatch.setenv(clip_bpe.ENV_VAR, missing)
  with pytest.raises(MmjaxError, match=f"{missing} .from .MMJAX_CLIP_BPE. does not exist"):
    ClipBpeTokenizer()
  with pytest.raises(MmjaxError, match="nope2.* .from tokenizer.bpe_path. does not exist"):
    ClipBpeTokenizer(str(tmp_path / "nope2"))
  bad = tmp_path / "bad.txt.gz"
  bad.write_bytes(b"not gzip")
  with pytest.raises(MmjaxError, match="unreadable"):
    ClipBpeTokenizer(str(bad))


def test_file_from_env_var_and_config_path(tok, tmp_path, monkeypatch):
  copy = str(tmp_path / clip_bpe.BPE_FILE)
  shutil.copy(tok.bpe_path, copy)
  monkeypatch.setenv(clip_bpe.ENV_VAR, copy)
  assert ClipBpeTokenizer().bpe_path == copy
  monkeypatch.setenv(clip_bpe.ENV_VAR, str(tmp_path / "elsewhere"))
  cfg = ml_collections.ConfigDict(dict(tokenizer=dict(kind="clip_bpe", bpe_path=copy)))
  built = tokenizer_for(cfg)                     # the config path wins over the env var
  assert isinstance(built, ClipBpeTokenizer) and built.bpe_path == copy


def test_default_lookup_imports_neither_open_clip_nor_torch(tok):
  code = ("import sys; from mmjax.data.clip_bpe import find_bpe_file; print(find_bpe_file()); "
          "assert not {'torch', 'open_clip'} & set(sys.modules), sorted(sys.modules)")
  env = {k: v for k, v in os.environ.items() if k != clip_bpe.ENV_VAR}
  env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().endswith(os.path.join("open_clip", clip_bpe.BPE_FILE))


def test_factory_kinds(monkeypatch):
  from mmjax.data import pipeline
  trained = object()
  monkeypatch.setattr(pipeline, "build_tokenizer", lambda data_cfg: trained if data_cfg.name == "x" else None)
  assert tokenizer_for(ml_collections.ConfigDict(dict(data=dict(name="x")))) is trained   # default: today's BPE
  assert tokenizer_for(ml_collections.ConfigDict(dict(data=dict(name="x"), tokenizer=dict(kind="bpe_trained")))) \
      is trained
  with pytest.raises(MmjaxError, match="tokenizer.kind='bpe'.*clip_bpe"):
    tokenizer_for(ml_collections.ConfigDict(dict(tokenizer=dict(kind="bpe"))))
  with pytest.raises(MmjaxError, match="tokenizer.path"):
    tokenizer_for(ml_collections.ConfigDict(dict(tokenizer=dict(kind="hf"))))


@pytest.mark.slow   # importing torch + open_clip takes ~10 s
def test_live_against_open_clip(tok):
  pytest.importorskip("torch", reason="torch is not installed: the live open_clip comparison needs it")
  open_clip = pytest.importorskip("open_clip", reason="open_clip is not importable")
  texts = _fixture_strings_module().strings(seed=1, n_random=2000)    # other strings than the fixture's
  for length in (77, 24):
    want = open_clip.tokenize(texts, context_length=length).numpy()
    got = tok.encode(texts, length)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} strings differ from open_clip, e.g. {[texts[i] for i in bad[:3]]!r}"
  plain = [t for t in texts if t.isascii() and "<" not in t][:200]
  want = [open_clip.decode(row[1:int(row.argmax())]).strip() for row in open_clip.tokenize(plain)]
  assert tok.decode(tok.encode(plain)) == want
