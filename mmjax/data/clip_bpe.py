"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), id for id the one of open_clip's `open_clip.tokenize`.

A re-implementation of open_clip 3.3.0's `SimpleTokenizer` (src/open_clip/tokenizer.py, copied there from
openai/CLIP) that needs no torch: the same merges file (`bpe_simple_vocab_16e6.txt.gz`, 48894 merges), the same
vocabulary (256 byte symbols, the same with `</w>`, the merges, `<start_of_text>` = 49406, `<end_of_text>` = 49407:
49408 ids), the same cleaning (`ftfy.fix_text`, `html.unescape` twice, strip, whitespace runs -> one space,
lower-case), the same pre-tokenization regex (module `regex`, IGNORECASE, the two special tokens first, which a
text can contain literally) and the same merges in the same order. `encode` gives `<sot> tokens <eot>` then 0s
(0 is "!" in this vocabulary: padding is recognised by its position after the first EOT, not by its id); a text
longer than the context is cut and its last position set to EOT, as open_clip does. Shapes: int32 [N, L].

Speed (benchmarks/tokenizer.py): the merges of a new pre-token run in `tokenizers`' Rust BPE (8x the Python loop),
their ids are cached per pre-token (open_clip caches them too), and ftfy is skipped for
text made only of printable ASCII, tab and newline without "&": on such text every ftfy fixer and `html.unescape`
are the identity (no mojibake, entity, control character, line-break variant or non-NFC character can occur), so
the output is unchanged; anything else goes through the same ftfy + html calls as open_clip.

The merges file is found, in order: the `bpe_path` argument (config `tokenizer.bpe_path`), the environment variable
MMJAX_CLIP_BPE, or the copy inside an installed `open_clip_torch` package, located without importing it (so
without torch): `pip install --no-deps open_clip_torch==3.3.0` provides it.
"""
from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import importlib.util
import json
import os
import re as _re
from typing import Sequence

import ftfy
import numpy as np
import regex
import tokenizers

from mmjax.errors import MmjaxError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
ENV_VAR = "MMJAX_CLIP_BPE"
VOCAB_SIZE = 49408
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2
_SPECIAL = ("<start_of_text>", "<end_of_text>")
_PATTERN = "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Text that ftfy and html.unescape leave unchanged: only printable ASCII (but "&"), tab and newline.
_NEEDS_FTFY = _re.compile(r"[^\t\n\x20-\x25\x27-\x7e]").search
_CACHE_MAX = 1 << 20       # pre-tokens whose ids are kept (cleared when full)


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's map of the 256 bytes to printable unicode symbols (the BPE works on these)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def clean(text: str) -> str:
  """open_clip's "lower" cleaning: ftfy, html.unescape twice, strip, whitespace runs -> " ", lower-case."""
  if _NEEDS_FTFY(text) is not None:
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
  return " ".join(text.split()).lower()


def find_bpe_file(bpe_path: str | None = None) -> str:
  """The merges file: `bpe_path`, else $MMJAX_CLIP_BPE, else the one inside an installed open_clip_torch."""
  for path, what in ((bpe_path, "tokenizer.bpe_path"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
    if path:
      if not os.path.isfile(path):
        raise MmjaxError(f"CLIP BPE file {path} (from {what}) does not exist; point it at {BPE_FILE}")
      return path
  path = _installed_bpe_file()
  if path is None:
    raise MmjaxError(f"CLIP BPE vocabulary {BPE_FILE} not found: set tokenizer.bpe_path to it, or the env var "
                     f"{ENV_VAR}, or install it with `pip install --no-deps open_clip_torch==3.3.0`")
  return path


def _installed_bpe_file() -> str | None:
  """The merges file of an installed open_clip_torch, found without importing the package (which imports torch)."""
  try:
    spec = importlib.util.find_spec("open_clip")
  except (ImportError, ValueError):
    spec = None
  for d in (spec.submodule_search_locations or []) if spec is not None else []:
    if os.path.isfile(os.path.join(d, BPE_FILE)):
      return os.path.join(d, BPE_FILE)
  try:
    for f in importlib.metadata.files("open_clip_torch") or []:
      if f.name == BPE_FILE and os.path.isfile(f.locate()):
        return str(f.locate())
  except importlib.metadata.PackageNotFoundError:
    pass
  return None


class ClipBpeTokenizer:
  """open_clip's tokenizer without torch; the `mmjax.data.tokenizer.Tokenizer` interface (encode / decode / ids).

  Pickles as its file path (grain workers re-read the file; the cache is not pickled).
  """

  def __init__(self, bpe_path: str | None = None, context_length: int = CONTEXT_LENGTH):
    self.bpe_path = find_bpe_file(bpe_path)
    self.context_length = int(context_length)
    try:
      with gzip.open(self.bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
      raise MmjaxError(f"CLIP BPE file {self.bpe_path} is unreadable ({e}); it must be {BPE_FILE}") from e
    merges = [tuple(m.split()) for m in lines[1:_NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
      raise MmjaxError(f"CLIP BPE file {self.bpe_path} does not hold {_NUM_MERGES} merges; it must be {BPE_FILE}")
    self._byte_encoder = bytes_to_unicode()
    self._byte_decoder = {v: k for k, v in self._byte_encoder.items()}
    symbols = list(self._byte_encoder.values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(_SPECIAL)
    self._encoder = dict(zip(vocab, range(len(vocab))))
    self._decoder = vocab
    self._model = tokenizers.models.BPE(self._encoder, merges, end_of_word_suffix="</w>")
    self._pat = regex.compile(_PATTERN, regex.IGNORECASE)
    self._cache: dict[str, list[int]] = {}
    self._reset_cache()
    assert len(vocab) == VOCAB_SIZE and self._encoder[_SPECIAL[0]] == SOT_ID

  def _reset_cache(self) -> None:
    self._cache = {s: [self._encoder[s]] for s in _SPECIAL}   # open_clip maps the literal special tokens to their ids

  vocab_size = property(lambda self: VOCAB_SIZE)
  pad_id = property(lambda self: PAD_ID)
  sot_id = property(lambda self: SOT_ID)
  eot_id = property(lambda self: EOT_ID)

  def _bpe(self, token: str) -> list[int]:
    """Ids of one pre-token (its UTF-8 bytes as byte symbols, "</w>" on the last): the merges applied lowest rank
    first, as open_clip's loop does, by `tokenizers`' Rust BPE (same result: a merge's parts always rank below it)."""
    return [t.id for t in self._model.tokenize("".join(self._byte_encoder[b] for b in token.encode("utf-8")))]

  def encode_text(self, text: str) -> list[int]:
    """Ids of one text, without SOT/EOT (open_clip's `SimpleTokenizer.encode`)."""
    cache = self._cache
    ids: list[int] = []
    for tok in self._pat.findall(clean(text)):
      got = cache.get(tok)
      if got is None:
        if len(cache) >= _CACHE_MAX:
          self._reset_cache()
          cache = self._cache
        got = cache[tok] = self._bpe(tok)
      ids += got
    return ids

  def encode(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
    """Token ids int32 [N, context_length] (default 77): `<sot> tokens <eot>` then 0; a longer text is cut to
    `context_length` with EOT in its last position (open_clip.tokenize)."""
    if isinstance(texts, str):
      raise MmjaxError("ClipBpeTokenizer.encode takes a list of strings, got a single str; wrap it in a list")
    length = self.context_length if context_length is None else int(context_length)
    if length < 2:
      raise MmjaxError(f"context_length={length} must be >= 2 (room for <sot> and <eot>)")
    out = np.zeros((len(texts), length), np.int32)
    for row, text in zip(out, texts):
      ids = [SOT_ID] + self.encode_text(text)[:length - 2] + [EOT_ID]
      row[:len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str] | str:
    """Text of ids [N, L] (N str) or [L] (one str): a leading SOT is dropped, the row ends at its first EOT, and the
    rest is open_clip's `decode` ("</w>" -> " ", undecodable bytes -> U+FFFD) with the outer spaces stripped."""
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
      raise MmjaxError(f"ClipBpeTokenizer.decode takes ids of shape [N, L] or [L], got shape {ids.shape}")
    texts = []
    for row in np.atleast_2d(ids).tolist():
      if row and row[0] == SOT_ID:
        row = row[1:]
      if EOT_ID in row:
        row = row[:row.index(EOT_ID)]
      if any(not 0 <= i < VOCAB_SIZE for i in row):
        raise MmjaxError(f"token id out of range [0, {VOCAB_SIZE}) in ClipBpeTokenizer.decode")
      chars = "".join(self._decoder[i] for i in row)
      text = bytearray(self._byte_decoder[c] for c in chars).decode("utf-8", errors="replace")
      texts.append(text.replace("</w>", " ").strip())
    return texts[0] if ids.ndim == 1 else texts

  def to_json(self) -> str:
    """What a checkpoint stores: the merges file's path and its SHA-256 (`from_json` checks it)."""
    with open(self.bpe_path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    return json.dumps({"mmjax_tokenizer": "clip_bpe", "bpe_path": self.bpe_path, "sha256": digest,
                       "context_length": self.context_length})

  @classmethod
  def from_json(cls, text: str) -> "ClipBpeTokenizer":
    """The tokenizer of `to_json`: its file if it still exists, else the one `find_bpe_file` finds (another
    machine), which must have the same SHA-256."""
    spec = json.loads(text)
    path = spec["bpe_path"] if os.path.isfile(spec["bpe_path"]) else None
    tok = cls(path, spec.get("context_length", CONTEXT_LENGTH))
    with open(tok.bpe_path, "rb") as f:
      if hashlib.sha256(f.read()).hexdigest() != spec["sha256"]:
        raise MmjaxError(f"CLIP BPE file {tok.bpe_path} differs from the one the checkpoint was trained with "
                         f"({spec['bpe_path']}); point tokenizer.bpe_path or ${ENV_VAR} at that file")
    return tok

  def __getstate__(self) -> dict:
    return {"bpe_path": self.bpe_path, "context_length": self.context_length}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["bpe_path"], state["context_length"])

  def __repr__(self) -> str:
    return f"ClipBpeTokenizer({self.bpe_path!r}, vocab_size={VOCAB_SIZE}, context_length={self.context_length})"
