"""A byte-level BPE tokenizer (HuggingFace `tokenizers`) with fixed special tokens and padded encoding.

Any byte sequence is encodable (the 256 byte symbols are always in the vocabulary), so there is no unknown
token. Text is lower-cased. Special tokens: "<pad>" = 0, "<sot>", "<eot>", "<mask>" (ids 1, 2, 3).
`encode` returns `<sot> tokens <eot> <pad>...`; the `<eot>` is always present so the text encoder can pool at
the last non-pad position.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from mmjax.errors import MmjaxError
from mmjax.vocab import SPECIAL_TOKENS  # (defined there, below the models that read it; re-exported here)

MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


class Tokenizer:
  """Wraps a trained `tokenizers.Tokenizer`; build one with `Tokenizer.train`, `load` or `from_json`."""

  def __init__(self, hf: tokenizers.Tokenizer):
    self._hf = hf
    ids = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids[0] != 0 or any(i is None for i in ids):
      raise MmjaxError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS} (with <pad> = 0); retrain it")
    self._pad_id, self._sot_id, self._eot_id, self._mask_id = ids
    self._special = np.asarray(ids, np.int32)

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Trains a byte-level BPE of at most `vocab_size` tokens (specials included); deterministic in `texts`."""
    if vocab_size < MIN_VOCAB_SIZE:
      raise MmjaxError(f"data.vocab_size={vocab_size} is too small for byte-level BPE; use at least "
                       f"{MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    hf = tokenizers.Tokenizer(models.BPE())
    hf.normalizer = normalizers.Lowercase()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(list(texts), trainer=trainer)
    return cls(hf)

  @property
  def vocab_size(self) -> int:
    return self._hf.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def sot_id(self) -> int:
    return self._sot_id

  @property
  def eot_id(self) -> int:
    return self._eot_id

  @property
  def mask_id(self) -> int:
    return self._mask_id

  def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
    """Token ids int32 [N, context_length]: `<sot> tokens <eot>` then `<pad>` (0); long texts are cut so
    that the last position holds `<eot>`."""
    if isinstance(texts, str):
      raise MmjaxError("Tokenizer.encode takes a list of strings, got a single str; wrap it in a list")
    if context_length < 2:
      raise MmjaxError(f"context_length={context_length} must be >= 2 (room for <sot> and <eot>)")
    out = np.zeros((len(texts), context_length), np.int32)
    out[:, 0] = self._sot_id
    for row, enc in zip(out, self._hf.encode_batch(list(texts), add_special_tokens=False)):
      ids = enc.ids[:context_length - 2]
      row[1:1 + len(ids)] = ids
      row[1 + len(ids)] = self._eot_id
    return out

  def decode(self, ids: np.ndarray) -> list[str] | str:
    """Text of token ids [N, L] (a list of N str) or [L] (one str); special tokens are dropped."""
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
      raise MmjaxError(f"Tokenizer.decode takes ids of shape [N, L] or [L], got shape {ids.shape}")
    rows = [[int(i) for i in row if i not in self._special] for row in np.atleast_2d(ids)]
    texts = self._hf.decode_batch(rows, skip_special_tokens=True)
    return texts[0] if ids.ndim == 1 else texts

  def to_json(self) -> str:
    return self._hf.to_str()

  @classmethod
  def from_json(cls, s: str) -> Tokenizer:
    try:
      hf = tokenizers.Tokenizer.from_str(s)
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
      raise MmjaxError(f"invalid tokenizer JSON ({str(e).splitlines()[0][:100]}); rebuild the tokenizer") from e
    return cls(hf)

  def save(self, path: str) -> None:
    """Writes one JSON file atomically (via `path + ".tmp"`)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(self.to_json())
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    if not os.path.isfile(path):
      raise MmjaxError(f"tokenizer file {path} not found; train one with Tokenizer.train or check the path")
    with open(path, encoding="utf-8") as f:
      s = f.read()
    try:
      return cls.from_json(s)
    except MmjaxError as e:
      raise MmjaxError(f"tokenizer file {path} is corrupt: {e}; delete it to rebuild") from e

  def __getstate__(self) -> dict:
    return {"json": self.to_json()}

  def __setstate__(self, state: dict) -> None:
    self.__init__(tokenizers.Tokenizer.from_str(state["json"]))

  def __repr__(self) -> str:
    return f"Tokenizer(vocab_size={self.vocab_size})"


TOKENIZER_KINDS = ("bpe_trained", "clip_bpe", "hf")
