"""retrieval_metrics vs a brute-force sort-based reference: random data, 5 captions per image, ties, hand-made."""
from __future__ import annotations

import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.evals.retrieval import retrieval_metrics, retrieval_ranks


def brute_force(img, txt, txt_to_img, ks=(1, 5, 10)):
  """Loops and stable sorts; ties broken pessimistically by listing wrong items before correct ones."""
  sim = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T
  n, m = sim.shape
  out = {}
  for k in ks:
    hits = []
    for i in range(n):
      correct = {j for j in range(m) if txt_to_img[j] == i}
      if not correct:
        continue
      order = sorted(range(m), key=lambda j: (-sim[i, j], j in correct))
      hits.append(any(j in correct for j in order[:k]))
    out[f"i2t_R@{k}"] = 100.0 * np.mean(hits)
  for k in ks:
    hits = []
    for j in range(m):
      order = sorted(range(n), key=lambda i: (-sim[i, j], i == txt_to_img[j]))
      hits.append(txt_to_img[j] in order[:k])
    out[f"t2i_R@{k}"] = 100.0 * np.mean(hits)
  out["mean_R"] = float(np.mean(list(out.values())))
  return out


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def check(got, want):
  assert got.keys() == want.keys()
  for key in want:
    assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_random_one_caption(chunk_size):
  rng = np.random.default_rng(0)
  img = unit(rng.normal(size=(40, 8)).astype(np.float32))
  txt = unit(img + 0.6 * rng.normal(size=img.shape).astype(np.float32))
  got = retrieval_metrics(img, txt, np.arange(40), chunk_size=chunk_size)
  check(got, brute_force(img, txt, np.arange(40)))
  assert 0 < got["i2t_R@1"] < 100


@pytest.mark.parametrize("chunk_size", [1024, 16, 13])
def test_random_five_captions_per_image(chunk_size):
  rng = np.random.default_rng(1)
  n, d = 30, 6
  img = unit(rng.normal(size=(n, d)).astype(np.float32))
  txt_to_img = rng.permutation(np.repeat(np.arange(n), 5))                   # Flickr style, shuffled
  txt = unit(img[txt_to_img] + 0.8 * rng.normal(size=(5 * n, d)).astype(np.float32))
  got = retrieval_metrics(img, txt, txt_to_img, ks=(1, 5, 10), chunk_size=chunk_size)
  check(got, brute_force(img, txt, txt_to_img))


def test_ties_are_pessimistic():
  rng = np.random.default_rng(2)
  # Small-integer embeddings: many exactly equal dot products in float32 and float64 alike.
  img = rng.integers(-1, 2, size=(25, 3)).astype(np.float32)
  txt_to_img = np.concatenate([np.arange(25), rng.integers(0, 25, size=15)])
  txt = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
  got = retrieval_metrics(img, txt, txt_to_img, ks=(1, 3, 10), chunk_size=8)
  check(got, brute_force(img, txt, txt_to_img, ks=(1, 3, 10)))
  # Identical embeddings everywhere: every wrong item ties and ranks first.
  same = np.ones((4, 2), np.float32) / np.sqrt(2)
  got = retrieval_metrics(same, same, np.arange(4), ks=(1, 3, 4))
  assert got["i2t_R@1"] == got["t2i_R@3"] == 0.0 and got["i2t_R@4"] == got["t2i_R@4"] == 100.0


def test_hand_made():
  # 3 images along the axes; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2.
  img = np.eye(3, dtype=np.float32)
  txt = unit(np.array([[0.2, 1.0, 0.0],     # image 0's caption, closest to image 1
                       [0.9, 0.1, 0.0],     # image 0's caption, correct
                       [0.0, 1.0, 0.1],     # image 1, correct
                       [0.0, 0.8, 0.6]],    # image 2, second to image 1
                      np.float32))
  got = retrieval_metrics(img, txt, np.array([0, 0, 1, 2]), ks=(1, 2))
  # i2t: image 0 -> caption 1 first (hit@1); image 1 -> caption 2 (0.995) > caption 0 (0.98) (hit@1);
  # image 2 -> caption 3 (0.6) first (hit@1).
  # t2i: caption 0 -> image 1 first, image 0 second; captions 1, 2 hit@1; caption 3 -> image 1 first.
  assert got == {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 50.0, "t2i_R@2": 100.0, "mean_R": 87.5}
  i2t, t2i = retrieval_ranks(img, txt, np.array([0, 0, 1, 2]))
  np.testing.assert_array_equal(i2t, [0, 0, 0])
  np.testing.assert_array_equal(t2i, [1, 0, 0, 1])


def test_image_without_caption_left_out_of_i2t():
  img = np.eye(3, dtype=np.float32)
  got = retrieval_metrics(img, img[:2], np.array([0, 1]), ks=(1,))
  assert got["i2t_R@1"] == 100.0 and got["t2i_R@1"] == 100.0


def test_bad_inputs():
  img, txt = np.zeros((4, 3), np.float32), np.zeros((5, 3), np.float32)
  with pytest.raises(MmjaxError, match="img_emb"):
    retrieval_metrics(img[0], txt, np.zeros(5, int))
  with pytest.raises(MmjaxError, match="txt_emb"):
    retrieval_metrics(img, txt[:, :2], np.zeros(5, int))
  with pytest.raises(MmjaxError, match="txt_to_img"):
    retrieval_metrics(img, txt, np.zeros(4, int))
  with pytest.raises(MmjaxError, match="txt_to_img"):
    retrieval_metrics(img, txt, np.zeros(5, np.float32))
  with pytest.raises(MmjaxError, match="txt_to_img values"):
    retrieval_metrics(img, txt, np.array([0, 1, 2, 3, 4]))
  with pytest.raises(MmjaxError, match="ks"):
    retrieval_metrics(img, txt, np.zeros(5, int), ks=(0,))
