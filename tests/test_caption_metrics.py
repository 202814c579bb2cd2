"""Captioning metrics (mmjax/evals/captioning.py) against independent implementations: sacrebleu's corpus BLEU
(tokenize='none', no smoothing; closest reference length), coco-caption's Bleu and CIDEr-D scorers
(pycocoevalcap, pure Python parts only), closed forms, and the shapes generator's own labels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.evals.captioning import cider_d, corpus_bleu, parse_shapes_caption, shapes_attribute_scores

HYPS = ["a small red circle at the top left",
        "there is a large blue square in the center",
        "a green star at the bottom right , medium",
        "an image of a yellow diamond at the top"]
REFS = [["a small red circle at the top left", "a red circle , small sized , at the top left",
         "there is a small red circle at the top left"],
        ["a large blue square at the center", "an image of a large blue square in the center",
         "a blue square , large sized , at the center"],
        ["a medium green star at the bottom right", "a green star at the bottom right , medium",
         "a picture showing a green star in the bottom right"],
        ["a small yellow diamond at the top", "a yellow diamond at the top , small",
         "an image of a small yellow diamond in the top"]]


def _sacrebleu(hyps, refs, n):
  import sacrebleu                   # a test dependency (setup.cfg extra "test"): missing fails, never skips
  streams = [list(s) for s in zip(*refs)]              # sacrebleu takes one stream per reference index
  bleu = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, force=True)
  return bleu.corpus_score(hyps, streams).score / 100


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_sacrebleu(n):
  assert corpus_bleu(HYPS, REFS)[f"bleu{n}"] == pytest.approx(_sacrebleu(HYPS, REFS, n), rel=1e-9, abs=1e-12)


def test_bleu_short_hypotheses_brevity_penalty_matches_sacrebleu():
  hyps = ["red circle at the top", "blue square in the", "a star at the bottom right"]
  refs = [r[:2] for r in REFS[:3]]
  ours = corpus_bleu(hyps, refs)
  for n in range(1, 5):
    assert ours[f"bleu{n}"] == pytest.approx(_sacrebleu(hyps, refs, n), rel=1e-9, abs=1e-12)
  assert ours["bleu1"] < 1.0


def test_bleu_matches_coco_with_uneven_reference_counts():
  from pycocoevalcap.bleu import bleu as coco          # a test dependency (extra "test")
  refs = [REFS[0], REFS[1][:1], REFS[2][:2], REFS[3]]
  hyps = HYPS[:3] + ["a yellow diamond"]              # short: brevity penalty with the closest lengths
  score, _ = coco.Bleu(4).compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)},
                                        verbose=0)
  ours = corpus_bleu(hyps, refs)
  for n in range(4):
    assert ours[f"bleu{n + 1}"] == pytest.approx(score[n], rel=1e-6)


def test_bleu_closed_forms():
  # One hypothesis "a b", reference "a b c d": p1 = p2 = 1, BP = exp(1 - 4/2).
  out = corpus_bleu(["a b"], [["a b c d"]], max_n=2)
  assert out["bleu1"] == pytest.approx(math.exp(-1)) and out["bleu2"] == pytest.approx(math.exp(-1))
  # Clipping (Papineni's "the the the" example): p1 = 2/7.
  assert corpus_bleu(["the the the the the the the"], [["the cat is on the mat"]], max_n=1)["bleu1"] == \
      pytest.approx(2 / 7)
  # No 4-gram match: BLEU-4 is exactly 0 without smoothing (sacrebleu agrees).
  hyps, refs = ["a red circle top"], [["a red circle at the top"]]
  assert corpus_bleu(hyps, refs)["bleu4"] == 0.0 == _sacrebleu(hyps, refs, 4)
  with pytest.raises(MmjaxError, match="reference"):
    corpus_bleu(["a"], [[]])


def test_cider_d_matches_coco():
  from pycocoevalcap.cider import cider as coco        # a test dependency (extra "test")
  refs = [REFS[0], REFS[1][:1], REFS[2][:2], REFS[3], ["a white cross at the right"]]
  hyps = HYPS + ["a white cross , large , at the left"]
  score, per_image = coco.Cider().compute_score({i: r for i, r in enumerate(refs)},
                                                {i: [h] for i, h in enumerate(hyps)})
  ours, ours_per_image = cider_d(hyps, refs)
  assert ours == pytest.approx(score, rel=1e-9)
  np.testing.assert_allclose(ours_per_image, per_image, rtol=1e-9)
  assert 0 < ours < 10


def test_cider_d_length_penalty_and_idf():
  # Two images; the hypothesis of image 0 is its only reference: per-n cosine 1 for every n with n-grams, no length
  # penalty -> 10 * (1 + 1 + 1 + 1) / 4 = 10 when every n-gram has idf > 0 (appears in one image's refs only).
  refs = [["red circle at left"], ["blue star on top"]]
  _, per = cider_d(["red circle at left", "blue star"], refs)
  assert per[0] == pytest.approx(10.0)
  # Image 1: hypothesis "blue star" vs "blue star on top": bigram-count delta 2 -> penalty exp(-4 / 72); the
  # unigram and bigram cosines follow from tf-idf with equal weights log(2): 2/sqrt(2*4) and 1/sqrt(1*3).
  w = math.exp(-4 / 72)
  assert per[1] == pytest.approx(10 * w * (2 / math.sqrt(8) + 1 / math.sqrt(3)) / 4)


def test_shapes_captions_parse_to_their_labels():
  from mmjax.data import shapes
  cfg = shapes.ShapesConfig(image_size=16, min_shapes=1, max_shapes=3)
  examples = [shapes.render_example(i, "test", cfg) for i in range(60)]
  arrays = {k: np.stack([e[k] for e in examples]) for k in ("shape", "colour", "size", "position", "count")}
  for e in examples:
    truth = {(int(e["size"][k]), int(e["colour"][k]), int(e["shape"][k]), int(e["position"][k]))
             for k in range(int(e["count"]))}
    assert parse_shapes_caption(e["caption"]) == truth, e["caption"]
  assert shapes_attribute_scores([e["caption"] for e in examples], arrays)["exact_match"] == 1.0
  wrong = [e["caption"].replace("red", "blue") if "red" in e["caption"] else e["caption"] for e in examples]
  n_red = sum("red" in e["caption"] for e in examples)
  assert n_red > 0
  assert shapes_attribute_scores(wrong, arrays)["exact_match"] == pytest.approx(1 - n_red / len(examples))
  assert parse_shapes_caption("a red circle") is None              # no position
