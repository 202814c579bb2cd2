"""Captioning metrics and the "captioning" evaluator.

corpus_bleu: BLEU-1..4 (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation"):
  modified (clipped by the per-reference maximum count) n-gram precisions summed over the corpus, geometric mean
  of p_1..p_n, brevity penalty exp(1 - r / c) when c < r with r the sum over sentences of the reference length
  closest to the hypothesis length (ties: the shorter), as COCO's and sacrebleu's "closest". No smoothing: a zero
  precision gives 0.
cider_d: CIDEr-D (Vedantam et al. 2015, "CIDEr: Consensus-based Image Description Evaluation"): n-grams 1..4
  weighted by tf-idf with document frequencies over the reference sets of the corpus, per-n cosine similarity
  with clipping min(g_hyp, g_ref) * g_ref, Gaussian length penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6,
  averaged over n and references, times 10; the corpus score is the mean over images. As the reference code
  (coco-caption `CiderScorer`), the length is counted in bigrams (words - 1 for non-empty sentences).
Sentences are lower-cased and split on whitespace (`tokenize`); punctuation stays attached to its word.

Evaluator "captioning": greedy- (`evals.captioning.caption_beam_size` 1) or beam-decodes (> 1, length penalty
`evals.captioning.caption_alpha`) the eval images (`evals.num_examples` of the test split, jitted, in batches
of `evals.batch_size`), scores the detokenised captions against every reference caption of each image
("captioning/bleu1".."bleu4", "captioning/cider"), on shapes also "captioning/exact_match" (the set of
(size, colour, shape, position) objects read from the caption equals the image's) and per-attribute accuracies
of the one-object scenes; writes `<workdir>/captions.png` (the first `evals.captioning.caption_images` images with their
generated and first reference captions) when the evaluation has a workdir.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from typing import Sequence

import jax
import numpy as np

from mmjax.errors import MmjaxError
from mmjax.evals.base import EVAL_CHECKS, EVAL_KEYS
from mmjax.registry import EVALUATORS

# images in captions.png; beam size (1: greedy) and GNMT length-penalty alpha of the decoder
EVAL_KEYS["captioning"] = {"caption_images": 8, "caption_beam_size": 1, "caption_alpha": 0.6}


def tokenize(sentence: str) -> list[str]:
  return sentence.lower().split()


def ngrams(words: Sequence[str], n: int) -> Counter:
  return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
  if len(hypotheses) != len(references):
    raise MmjaxError(f"captioning metrics: {len(hypotheses)} hypotheses but {len(references)} reference sets")
  if any(len(r) == 0 for r in references):
    raise MmjaxError("captioning metrics: every hypothesis needs at least one reference caption")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[str, float]:
  """hypotheses: N str; references: N lists of str -> {"bleu1": .., "bleu{max_n}": ..} in [0, 1]."""
  _check(hypotheses, references)
  correct, total = np.zeros(max_n), np.zeros(max_n)
  hyp_len = ref_len = 0
  for hyp, refs in zip(hypotheses, references):
    h = tokenize(hyp)
    rs = [tokenize(r) for r in refs]
    hyp_len += len(h)
    ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
    for n in range(1, max_n + 1):
      counts = ngrams(h, n)
      max_ref: Counter = Counter()
      for r in rs:
        max_ref |= ngrams(r, n)          # elementwise max of the counts
      correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
      total[n - 1] += max(len(h) - n + 1, 0)
  bp = 1.0 if hyp_len > ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0)
  out = {}
  for n in range(1, max_n + 1):
    p = correct[:n] / np.maximum(total[:n], 1)
    out[f"bleu{n}"] = 0.0 if np.any(correct[:n] == 0) else float(bp * math.exp(np.mean(np.log(p))))
  return out


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0,
            max_n: int = 4) -> tuple[float, np.ndarray]:
  """-> (corpus CIDEr-D, per-image scores [N])."""
  _check(hypotheses, references)
  ref_counts = [[_all_ngrams(tokenize(r), max_n) for r in refs] for refs in references]
  df: Counter = Counter()
  for refs in ref_counts:
    df.update(set(g for r in refs for g in r))
  log_n = math.log(len(references))

  def vectorise(counts: Counter):
    vec = [dict() for _ in range(max_n)]
    for g, tf in counts.items():
      vec[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
    norms = [math.sqrt(sum(x * x for x in v.values())) for v in vec]
    length = sum(c for g, c in counts.items() if len(g) == 2)      # bigrams, as the reference code
    return vec, norms, length

  scores = np.zeros(len(hypotheses))
  for i, (hyp, refs) in enumerate(zip(hypotheses, ref_counts)):
    vh, nh, lh = vectorise(_all_ngrams(tokenize(hyp), max_n))
    total = 0.0
    for r in refs:
      vr, nr, lr = vectorise(r)
      penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
      for n in range(max_n):
        val = sum(min(x, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, x in vh[n].items())
        if nh[n] != 0 and nr[n] != 0:
          val /= nh[n] * nr[n]
        total += val * penalty
    scores[i] = 10.0 * total / (max_n * len(refs))
  return float(np.mean(scores)), scores


def _all_ngrams(words: list[str], max_n: int) -> Counter:
  out: Counter = Counter()
  for n in range(1, max_n + 1):
    out.update(ngrams(words, n))
  return out


# ------------------------------------------------------------------------------------------------ shapes
def parse_shapes_caption(caption: str) -> set[tuple[int, int, int, int]] | None:
  """A shapes caption (mmjax.data.shapes) -> its set of (size, colour, shape, position) label tuples; None when
  a clause does not name exactly one of each."""
  from mmjax.data import shapes
  words = re.sub(r"[^a-z ]", " ", caption.lower())
  for prefix in ("there is ", "an image of ", "a picture showing "):
    words = words.strip()
    if words.startswith(prefix):
      words = words[len(prefix):]
  colours = list(shapes.COLOURS)
  positions = sorted(range(len(shapes.POSITIONS)), key=lambda p: -len(shapes.POSITIONS[p]))   # longest first
  out = set()
  for clause in re.split(r"\band\b", words):
    toks = clause.split()
    found = []
    for names in (shapes.SIZES, colours, shapes.SHAPES):
      hits = [i for i, name in enumerate(names) if name in toks]
      if len(hits) != 1:
        return None
      found.append(hits[0])
    pos = None
    for p in positions:
      if re.search(rf"\bthe {shapes.POSITIONS[p]}\b", clause):
        pos = p
        break
    if pos is None:
      return None
    out.add((*found, pos))
  return out


def shapes_attribute_scores(captions: Sequence[str], arrays: dict) -> dict[str, float]:
  """exact_match: the caption's object set equals the image's; {size, colour, shape, position}_acc: per-attribute
  accuracy over the images with one object whose caption parses to one object."""
  exact, attr_hits, single = 0, np.zeros(4), 0
  for i, cap in enumerate(captions):
    truth = {(int(arrays["size"][i][k]), int(arrays["colour"][i][k]), int(arrays["shape"][i][k]),
              int(arrays["position"][i][k])) for k in range(int(arrays["count"][i]))}
    got = parse_shapes_caption(cap)
    exact += got == truth
    if len(truth) == 1:
      single += 1
      if got is not None and len(got) == 1:
        attr_hits += np.asarray(next(iter(got))) == np.asarray(next(iter(truth)))
  out = {"exact_match": exact / max(len(captions), 1)}
  if single:
    out.update({f"{name}_acc": float(h / single) for name, h in zip(("size", "colour", "shape", "position"),
                                                                      attr_hits)})
  return out


# --------------------------------------------------------------------------------------------- evaluator
def check_captioning(cfg, model) -> None:
  if not getattr(model, "can_caption", False):
    raise MmjaxError(f"evaluator 'captioning' needs a captioning model (model.name='captioner', or "
                     f"'multitask_clip' with model.heads.caption); got "
                     f"model.name={cfg.model.name!r} (remove 'captioning' from evals.names)")


EVAL_CHECKS["captioning"] = check_captioning


@EVALUATORS.register("captioning")
def captioning_eval(params, ctx) -> dict[str, float]:
  from mmjax.decoding import caption_beam, caption_greedy
  from mmjax.evals import plots
  from mmjax.evals.base import batched_apply, eval_arrays, predict_fn, setting
  cfg, model = ctx.config, ctx.model
  check_captioning(cfg, model)
  arrays = eval_arrays(ctx)
  images = arrays["image"]
  bs = min(int(cfg.evals.batch_size), len(images))
  beam, alpha = int(setting(cfg, "captioning", "caption_beam_size")), float(setting(cfg, "captioning", "caption_alpha"))
  if beam < 1:
    raise MmjaxError(f"evals.captioning.caption_beam_size={beam} must be >= 1 (1: greedy decoding)")
  decode = ((lambda p, x: caption_greedy(model, p, x)) if beam == 1 else
            (lambda p, x: caption_beam(model, p, x, beam_size=beam, alpha=alpha)[0]))
  decode = predict_fn(ctx, "captioning", decode, static=(beam, alpha))    # compiled once per run and setting
  tokens = np.asarray(jax.device_get(batched_apply(decode, params, images, bs)))
  hyps = ctx.tokenizer.decode(tokens)
  refs: list[list[str]] = [[] for _ in range(len(images))]
  for cap, img in zip(arrays["caption"], np.asarray(arrays["txt_to_img"])):
    refs[int(img)].append(cap)
  results = dict(corpus_bleu(hyps, refs))
  results["cider"], _ = cider_d(hyps, refs)
  if str(cfg.data.name) == "shapes":
    results.update(shapes_attribute_scores(hyps, arrays))
  if ctx.workdir is not None and jax.process_index() == 0:
    k = min(int(setting(cfg, "captioning", "caption_images")), len(images))
    printable = lambda t: "".join(ch if ch.isprintable() else "?" for ch in t)
    captions = [f"{printable(h)}\nref: {printable(r[0])}" for h, r in zip(hyps[:k], refs[:k])]
    plots.image_grid([images[:k]], ["image"], os.path.join(ctx.workdir, "captions.png"),
                     title=f"{cfg.model.name}: {'greedy' if beam == 1 else f'beam-{beam}'} captions (CIDEr-D {results['cider']:.2f})", captions=captions)
  return {f"captioning/{k}": float(v) for k, v in results.items()}
