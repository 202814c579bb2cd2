"""The special tokens every mmjax tokenizer has, in id order ("<pad>" = 0): a fact shared by the tokenizer
(mmjax.data.tokenizer, which re-exports it), the text models and the objectives, kept below all of them so that
models and objectives need not import the data package."""
from __future__ import annotations

SPECIAL_TOKENS = ("<pad>", "<sot>", "<eot>", "<mask>")
PAD_ID, SOT_ID, EOT_ID, MASK_ID = (SPECIAL_TOKENS.index(t) for t in SPECIAL_TOKENS)
