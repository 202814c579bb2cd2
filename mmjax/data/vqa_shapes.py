"""VQA on shapes: questions with answers generated from the structured labels of each shapes scene
(mmjax/data/shapes.py), in the spirit of CLEVR (Johnson et al. 2017) on a much smaller world.

Example `index` of `split` is the shapes scene of the same (seed, split, index) (rendered by
`shapes.render_example`, its objects from `shapes.sample_scene`) plus one question drawn from
`np.random.default_rng([seed, split salt, index, QA_SALT])`: a pure function of (data config, split, index).
Question types (`QTYPES`, drawn uniformly; `relpos` falls back to `exist` where no pair of objects qualifies):
  colour  "what colour is the <shape> ?" (shape unique in the scene) or "what colour is the object at the <pos> ?"
  shape   "what shape is the <colour> object ?" (colour unique) or "what shape is the object at the <pos> ?"
  count   "how many objects are there ?" / "how many <colour> objects are there ?" / "how many <shape> objects
          are there ?" (the colour or shape half the time that of an object in the scene, else uniform) -> 0..4
  exist   "is there any <colour> <shape> ?" (half the time an object of the scene, else a uniform pair) -> yes/no
  relpos  "is the <colour> <shape> left of | right of | above | below the <colour> <shape> ?" for two objects
          whose colour-shape pairs are unique in the scene; left/right only between different grid columns,
          above/below only between different grid rows (by grid cell, not pixel, so never ambiguous) -> yes/no
Words are from a fixed vocabulary (`VOCAB`, id 0 = padding); answers from `ANSWERS` (21 classes).

Registered as the dataset "vqa_shapes" (no text corpus: runs have no tokenizer), model inputs after `preprocess`:
  `image` float32 [H, W, 3] in [-1, 1]; `question` int32 [L] (L = data.question_length, zero-padded);
  `question_length` int32 []; `label` int32 [] (answer id); `qtype` int32 [] (index into QTYPES); `index` int64 [].
Reads data.image_size, min_shapes, max_shapes, noise_std, seed (as shapes) and data.question_length.
"""
from __future__ import annotations

import numpy as np

from mmjax.data import DatasetEntry
from mmjax.data import shapes as shapes_lib
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

QTYPES = ("colour", "shape", "count", "exist", "relpos")
COLOUR_NAMES = tuple(shapes_lib.COLOURS)
ANSWERS = ("no", "yes", "0", "1", "2", "3", "4", *COLOUR_NAMES, *shapes_lib.SHAPES)
ANSWER_ID = {a: i for i, a in enumerate(ANSWERS)}
RELATIONS = ("left of", "right of", "above", "below")
_TEMPLATE_WORDS = ("what colour is the object at shape how many objects are there any of above below left right "
                   "? <unk>").split()
VOCAB = ("<pad>",) + tuple(sorted(set(_TEMPLATE_WORDS) | set(COLOUR_NAMES) | set(shapes_lib.SHAPES)
                                  | {w for p in shapes_lib.POSITIONS for w in p.split()}))
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
QA_SALT = 0x0A5
VQA_KEYS = {**shapes_lib.CONFIG_KEYS, "question_length": 12}   # the scenes' keys (as shapes) and the questions' length


def tokenize(question: str, length: int) -> tuple[np.ndarray, int]:
  """Question text -> (ids int32 [length] zero-padded, number of words); unknown words map to <unk>."""
  words = question.split()
  if len(words) > length:
    raise MmjaxError(f"question {question!r} has {len(words)} words > data.question_length={length}; raise it")
  ids = np.zeros(length, np.int32)
  ids[:len(words)] = [WORD_ID.get(w, WORD_ID["<unk>"]) for w in words]
  return ids, len(words)


def _row_col(obj: dict) -> tuple[int, int]:
  return divmod(int(obj["position"]), 3)


def _describe(obj: dict) -> str:
  return f"{COLOUR_NAMES[obj['colour']]} {shapes_lib.SHAPES[obj['shape']]}"


def make_question(objects: list[dict], rng: np.random.Generator, qtype: str | None = None) -> tuple[str, str, str]:
  """(question, answer, question type) about the scene `objects` (dicts of `shapes.sample_scene`)."""
  qtype = QTYPES[int(rng.integers(len(QTYPES)))] if qtype is None else qtype
  obj = objects[int(rng.integers(len(objects)))]
  shapes_in = [o["shape"] for o in objects]
  colours_in = [o["colour"] for o in objects]
  if qtype == "colour":
    if shapes_in.count(obj["shape"]) == 1 and rng.random() < 0.5:
      q = f"what colour is the {shapes_lib.SHAPES[obj['shape']]} ?"
    else:
      q = f"what colour is the object at the {shapes_lib.POSITIONS[obj['position']]} ?"
    return q, COLOUR_NAMES[obj["colour"]], qtype
  if qtype == "shape":
    if colours_in.count(obj["colour"]) == 1 and rng.random() < 0.5:
      q = f"what shape is the {COLOUR_NAMES[obj['colour']]} object ?"
    else:
      q = f"what shape is the object at the {shapes_lib.POSITIONS[obj['position']]} ?"
    return q, shapes_lib.SHAPES[obj["shape"]], qtype
  if qtype == "count":
    form = int(rng.integers(3))
    if form == 0:
      return "how many objects are there ?", str(len(objects)), qtype
    present = rng.random() < 0.5
    if form == 1:
      c = obj["colour"] if present else int(rng.integers(len(COLOUR_NAMES)))
      return f"how many {COLOUR_NAMES[c]} objects are there ?", str(colours_in.count(c)), qtype
    s = obj["shape"] if present else int(rng.integers(len(shapes_lib.SHAPES)))
    return f"how many {shapes_lib.SHAPES[s]} objects are there ?", str(shapes_in.count(s)), qtype
  if qtype == "relpos":
    pairs_in = [(o["colour"], o["shape"]) for o in objects]
    unique = [o for o in objects if pairs_in.count((o["colour"], o["shape"])) == 1]
    candidates = []
    for a in unique:
      for b in unique:
        if a is b:
          continue
        (ra, ca), (rb, cb) = _row_col(a), _row_col(b)
        rels = ([0, 1] if ca != cb else []) + ([2, 3] if ra != rb else [])
        candidates.extend((a, b, r) for r in rels)
    if candidates:
      a, b, r = candidates[int(rng.integers(len(candidates)))]
      (ra, ca), (rb, cb) = _row_col(a), _row_col(b)
      truth = (ca < cb, ca > cb, ra < rb, ra > rb)[r]
      return f"is the {_describe(a)} {RELATIONS[r]} the {_describe(b)} ?", "yes" if truth else "no", qtype
    qtype = "exist"   # fall back: one object, or no pair with unique descriptions
  if qtype == "exist":
    if rng.random() < 0.5:
      c, s = obj["colour"], obj["shape"]
    else:
      c, s = int(rng.integers(len(COLOUR_NAMES))), int(rng.integers(len(shapes_lib.SHAPES)))
    found = any(o["colour"] == c and o["shape"] == s for o in objects)
    return f"is there any {COLOUR_NAMES[c]} {shapes_lib.SHAPES[s]} ?", "yes" if found else "no", qtype
  raise MmjaxError(f"unknown question type {qtype!r}; use one of {', '.join(QTYPES)}")


def question_rng(index: int, split: str, cfg: shapes_lib.ShapesConfig) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([cfg.seed, shapes_lib.SPLIT_SALTS[split], int(index),
                                                       QA_SALT]))


def vqa_example(index: int, split: str, cfg: shapes_lib.ShapesConfig) -> dict:
  """The raw example: the rendered scene (`shapes.render_example` keys) plus `question`, `answer`, `qtype` str."""
  example = shapes_lib.render_example(index, split, cfg)
  objects = shapes_lib.sample_scene(index, split, cfg)
  q, a, t = make_question(objects, question_rng(index, split, cfg))
  return dict(example, question=q, answer=a, qtype=t)


class VQASource:
  """A grain random-access source of `vqa_example` dicts for one split."""

  def __init__(self, cfg: shapes_lib.ShapesConfig, split: str = "train", length: int = 2**31 - 1):
    self.shapes = shapes_lib.ShapesSource(cfg, split, length)   # validates split and length
    self.cfg, self.split, self.length = cfg, split, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -self.length <= index < self.length:
      raise IndexError(f"index {index} out of range for VQASource of length {self.length}")
    return vqa_example(index % self.length, self.split, self.cfg)


def vqa_source(data_cfg, split: str) -> VQASource:
  return VQASource(shapes_lib.config_from_data(data_cfg), split)


def vqa_preprocess(example: dict, data_cfg) -> dict:
  """Raw example -> model inputs (see the module docstring)."""
  length = int(data_cfg.get("question_length", VQA_KEYS["question_length"]))
  ids, n = tokenize(example["question"], length)
  return {"image": example["image"].astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0),
          "question": ids, "question_length": np.asarray(n, np.int32),
          "label": np.asarray(ANSWER_ID[example["answer"]], np.int32),
          "qtype": np.asarray(QTYPES.index(example["qtype"]), np.int32),
          "index": np.asarray(example["index"], np.int64)}


DATASETS.register("vqa_shapes")(DatasetEntry(source=vqa_source, preprocess=vqa_preprocess, config_keys=VQA_KEYS))
