"""Any local HuggingFace `tokenizer.json` (e.g. the SentencePiece exports of SigLIP / T5) behind mmjax's Tokenizer
interface (encode / decode / pad_id / sot_id / eot_id / vocab_size, picklable).

The file's own normalizer, pre-tokenizer and model give the ids; the special tokens come from the file too:
BOS / EOS from its post-processor (`TemplateProcessing` "<s> $A </s>", `BertProcessing` / `RobertaProcessing`
cls / sep), else EOS from a token named "</s>", "<|endoftext|>", "<eos>" or "[SEP]"; PAD from its `padding`
section, else a token named "<pad>", "[PAD]" or "<|padding|>". Each can be overridden (config `tokenizer.pad_id`,
`tokenizer.eos_id`, `tokenizer.bos_id`; -1 = from the file). `encode` gives `[BOS] tokens EOS` then PAD, cut so
that EOS stays in the last position ("sticky EOS", as big_vision's SigLIP text preprocessing and HF's truncation
with a post-processor do).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tokenizers

from mmjax.errors import MmjaxError

_EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "[SEP]")
_PAD_NAMES = ("<pad>", "[PAD]", "<|padding|>")


def _template_ids(spec: dict | None) -> tuple[int | None, int | None]:
  """(bos, eos) ids of a post-processor section of tokenizer.json; None where it adds none."""
  if not spec:
    return None, None
  kind = spec.get("type")
  if kind == "Sequence":
    bos = eos = None
    for sub in spec.get("processors", []):
      b, e = _template_ids(sub)
      bos, eos = (b if b is not None else bos), (e if e is not None else eos)
    return bos, eos
  if kind in ("BertProcessing", "RobertaProcessing"):
    return spec["cls"][1], spec["sep"][1]
  if kind != "TemplateProcessing":
    return None, None
  items = spec.get("single", [])
  seq = next((i for i, item in enumerate(items) if "Sequence" in item), len(items))
  ids = lambda part: [spec["special_tokens"][item["SpecialToken"]["id"]]["ids"][0]
                      for item in part if "SpecialToken" in item]
  before, after = ids(items[:seq]), ids(items[seq + 1:])
  return (before[-1] if before else None), (after[-1] if after else None)


class HfTokenizer:
  """A `tokenizers.Tokenizer` read from a tokenizer.json file, with mmjax's padded encoding."""

  def __init__(self, path: str, *, pad_id: int | None = None, eos_id: int | None = None,
               bos_id: int | None = None, context_length: int = 64):
    if not os.path.isfile(path):
      raise MmjaxError(f"tokenizer file {path} (tokenizer.path) does not exist; point it at a tokenizer.json")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    self._setup(text, path, int(context_length), dict(pad_id=pad_id, eos_id=eos_id, bos_id=bos_id))

  def _setup(self, text: str, path: str, context_length: int, overrides: dict) -> None:
    try:
      spec = json.loads(text)
      self._hf = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
      raise MmjaxError(f"tokenizer file {path} is not a valid tokenizer.json ({str(e).splitlines()[0][:100]})") from e
    self._hf.no_padding()         # the file's own padding / truncation would act before ours
    self._hf.no_truncation()
    self._json, self.path, self.context_length, self._overrides = text, path, context_length, overrides
    file_bos, file_eos = _template_ids(spec.get("post_processor"))
    by_name = lambda names: next((i for i in map(self._hf.token_to_id, names) if i is not None), None)
    if file_eos is None:
      file_eos = by_name(_EOS_NAMES)
    file_pad = (spec.get("padding") or {}).get("pad_id")
    if file_pad is None:
      file_pad = by_name(_PAD_NAMES)
    pick = lambda key, found: found if overrides[key] is None or overrides[key] < 0 else int(overrides[key])
    self._bos, self._eos, self._pad = pick("bos_id", file_bos), pick("eos_id", file_eos), pick("pad_id", file_pad)
    for name, value in (("eos_id", self._eos), ("pad_id", self._pad)):
      if value is None:
        raise MmjaxError(f"tokenizer file {path} names no {name[:3].upper()} token; set tokenizer.{name}")
    for name, value in (("eos_id", self._eos), ("pad_id", self._pad), ("bos_id", self._bos)):
      if value is not None and not 0 <= value < self.vocab_size:
        raise MmjaxError(f"tokenizer.{name}={value} is outside the vocabulary of {path} ({self.vocab_size} ids)")

  @property
  def vocab_size(self) -> int:
    return self._hf.get_vocab_size(with_added_tokens=True)

  pad_id = property(lambda self: self._pad)
  sot_id = property(lambda self: self._bos, doc="BOS id; None when the file adds no BOS")
  eot_id = property(lambda self: self._eos)

  def encode(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
    """Token ids int32 [N, context_length]: `[BOS] tokens EOS` then PAD; long texts keep EOS last."""
    if isinstance(texts, str):
      raise MmjaxError("HfTokenizer.encode takes a list of strings, got a single str; wrap it in a list")
    length = self.context_length if context_length is None else int(context_length)
    head = [] if self._bos is None else [self._bos]
    if length < len(head) + 1:
      raise MmjaxError(f"context_length={length} leaves no room for the BOS/EOS tokens")
    out = np.full((len(texts), length), self._pad, np.int32)
    for row, enc in zip(out, self._hf.encode_batch(list(texts), add_special_tokens=False)):
      ids = head + enc.ids[:length - len(head) - 1] + [self._eos]
      row[:len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str] | str:
    """Text of ids [N, L] or [L]: a leading BOS is dropped, a row ends at its first EOS, special tokens skipped."""
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
      raise MmjaxError(f"HfTokenizer.decode takes ids of shape [N, L] or [L], got shape {ids.shape}")
    rows = []
    for row in np.atleast_2d(ids).tolist():
      if row and self._bos is not None and row[0] == self._bos:
        row = row[1:]
      rows.append(row[:row.index(self._eos)] if self._eos in row else row)
    texts = self._hf.decode_batch(rows, skip_special_tokens=True)
    return texts[0] if ids.ndim == 1 else texts

  def to_json(self) -> str:
    """What a checkpoint stores: the whole tokenizer.json text and the overrides (self-contained)."""
    return json.dumps({"mmjax_tokenizer": "hf", **self.__getstate__()})

  @classmethod
  def from_json(cls, text: str) -> "HfTokenizer":
    tok = cls.__new__(cls)
    tok.__setstate__(json.loads(text))
    return tok

  def __getstate__(self) -> dict:
    return {"json": self._json, "path": self.path, "context_length": self.context_length, **self._overrides}

  def __setstate__(self, state: dict) -> None:
    """From the pickled file text: a worker needs no access to the file."""
    self._setup(state["json"], state["path"], state["context_length"],
                {k: state[k] for k in ("pad_id", "eos_id", "bos_id")})

  def __repr__(self) -> str:
    return f"HfTokenizer({self.path!r}, vocab_size={self.vocab_size}, pad={self._pad}, bos={self._bos}, " \
        f"eos={self._eos})"
