"""Alignment report: spoken-digit recognition by DTW nearest neighbour (FSDD) and alignment figures.

  .venv/bin/python experiments/reports/alignment.py [--fsdd PATH] [--filip_steps 200] [--quick]

(a) Free Spoken Digit Dataset (Jackson et al.; ../shared/data/fsdd/recordings.zip): every test recording (index
    0-4, 300 files) is labelled with the digit of its DTW-nearest training recording (index 5-49, 2700 files),
    for several features / local costs / Sakoe-Chiba bands; accuracy with the raw DTW distance and with the
    distance divided by n + m (the lengths), plus the wall time of the 810,000 DTWs.
(b) Figures in experiments/tables/figures/: a cost matrix with the DTW path, soft-DTW expected alignments for
    several gammas, Sinkhorn couplings (audio frames; words x image patches), and word-to-patch similarity maps
    of a FILIP model (objective "filip", experiments/filip_shapes.py) trained here for a few hundred steps with
    the one training loop, next to the attention each patch receives in its ViT; plus a pointing-game score.
Writes experiments/tables/alignment.md. About 6-9 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import sys
import tempfile
import time
import wave
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax.alignment.dtw import dtw, dtw_cdist, soft_dtw_alignment  # noqa: E402
from mmjax.alignment.ot import sinkhorn_align  # noqa: E402
from mmjax.alignment.tokens import token_alignment  # noqa: E402
from mmjax.data import audio  # noqa: E402
from mmjax.errors import MmjaxError  # noqa: E402

TABLES = os.path.join(ROOT, "experiments", "tables")
FIGURES = os.path.join(TABLES, "figures")
DEFAULT_FSDD = os.path.join(ROOT, "..", "shared", "data", "fsdd", "recordings.zip")
SIZE_CLASSES = (40, 64, 96, 256)     # frames; sequences are padded to the next class (16 compiled programs)

# (features, local cost, Sakoe-Chiba radius in frames)
CONFIGS = [("mfcc", "sqeuclidean", None), ("mfcc", "sqeuclidean", 10), ("mfcc", "sqeuclidean", 3),
           ("logmel", "cosine", None)]
FEATURE_NAMES = {"mfcc": "MFCC 13 + CMN", "logmel": "log-mel 40 + CMN"}


# ---------------------------------------------------------------------------------------------- (a) FSDD
def load_fsdd(path: str) -> list[tuple[int, str, int, np.ndarray]]:
  """(digit, speaker, index, int16 wave) for every recordings/{digit}_{speaker}_{index}.wav in the zip."""
  if not os.path.exists(path):
    raise MmjaxError(f"FSDD zip {path!r} not found; pass --fsdd PATH to recordings.zip")
  out = []
  with zipfile.ZipFile(path) as z:
    for name in sorted(z.namelist()):
      m = re.match(r"recordings/(\d)_([a-z]+)_(\d+)\.wav$", name)
      if not m:
        continue
      with wave.open(io.BytesIO(z.read(name))) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != 8000:
          raise MmjaxError(f"{path}:{name} is not 8 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
      out.append((int(m[1]), m[2], int(m[3]), pcm))
  if len(out) != 3000:
    raise MmjaxError(f"{path} holds {len(out)} recordings, expected 3000 (6 speakers x 10 digits x 50)")
  return out


def features(pcm: np.ndarray, kind: str) -> np.ndarray:
  """[frames, D] float32: 32 ms Hann frames every 10 ms, 40 Slaney mels 0-4 kHz, per-utterance mean removed."""
  f = audio.mfcc(pcm, 8000, n_mfcc=13) if kind == "mfcc" else audio.log_mel_spectrogram(pcm, 8000)
  return (f - f.mean(axis=0, keepdims=True)).astype(np.float32)


def size_class(n: int) -> int:
  return next(c for c in SIZE_CLASSES if n <= c)


def cdist_bucketed(xs: list[np.ndarray], ys: list[np.ndarray], metric: str, band: int | None) -> np.ndarray:
  """All-pairs DTW [len(xs), len(ys)], sequences grouped by padded length so that little padding is computed."""
  lx, ly = np.array([len(v) for v in xs]), np.array([len(v) for v in ys])
  out = np.zeros((len(xs), len(ys)), np.float32)
  dim = xs[0].shape[1]

  def padded(seqs, idx, t):
    arr = np.zeros((len(idx), t, dim), np.float32)
    for k, i in enumerate(idx):
      arr[k, :len(seqs[i])] = seqs[i]
    return arr

  for cx in SIZE_CLASSES:
    ix = np.where([size_class(n) == cx for n in lx])[0]
    if not len(ix):
      continue
    for cy in SIZE_CLASSES:
      iy = np.where([size_class(n) == cy for n in ly])[0]
      if not len(iy):
        continue
      d = dtw_cdist(padded(xs, ix, cx), padded(ys, iy, cy), x_lengths=lx[ix], y_lengths=ly[iy], metric=metric,
                    band=band, batch_size=max(1, 4096 // len(iy)))
      out[np.ix_(ix, iy)] = np.asarray(d)
  return out


def fsdd_table(recs, feats) -> list[dict]:
  labels = np.array([r[0] for r in recs])
  index = np.array([r[2] for r in recs])
  test, train = np.where(index < 5)[0], np.where(index >= 5)[0]
  rows = []
  for kind, metric, band in CONFIGS:
    xs, ys = [feats[kind][i] for i in test], [feats[kind][i] for i in train]
    t = time.perf_counter()
    d = cdist_bucketed(xs, ys, metric, band)
    seconds = time.perf_counter() - t
    lx, ly = np.array([len(v) for v in xs]), np.array([len(v) for v in ys])
    dn = d / (lx[:, None] + ly[None, :])
    acc = np.mean(labels[train][d.argmin(1)] == labels[test])
    acc_n = np.mean(labels[train][dn.argmin(1)] == labels[test])
    # per-speaker accuracy of the normalised variant
    spk = np.array([recs[i][1] for i in test])
    worst = min((np.mean((labels[train][dn.argmin(1)] == labels[test])[spk == s]), s) for s in np.unique(spk))
    rows.append(dict(features=FEATURE_NAMES[kind], metric=metric, band=band, acc=acc, acc_norm=acc_n,
                     worst=worst, seconds=seconds, pairs=len(xs) * len(ys)))
    print(f"alignment: FSDD {kind} {metric} band={band}: {100 * acc:.1f}% / normalised {100 * acc_n:.1f}% "
          f"({seconds:.1f} s)", flush=True)
  return rows


# ---------------------------------------------------------------------------------------------- (b) figures
def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _save(fig, name: str) -> str:
  path = os.path.join(FIGURES, name)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110, bbox_inches="tight")
  os.replace(tmp, path)
  _plt().close(fig)
  return os.path.relpath(path, ROOT)


def audio_figures(recs, feats) -> tuple[list[str], dict]:
  """Cost matrix + DTW path, soft-DTW alignments for several gammas, Sinkhorn coupling (one same-digit pair)."""
  plt = _plt()
  find = {(r[0], r[1], r[2]): k for k, r in enumerate(recs)}
  a, b = find[(7, "jackson", 0)], find[(7, "theo", 5)]
  x, y = feats["mfcc"][a], feats["mfcc"][b]
  cost = np.asarray(jax.jit(lambda u, v: ((u[:, None] - v[None]) ** 2).sum(-1))(x, y))
  full = dtw(cost=cost)
  banded = dtw(cost=cost, band=3)
  paths = {}
  fig, ax = plt.subplots(figsize=(6.2, 5.2))
  im = ax.imshow(cost, origin="lower", cmap="viridis", aspect="auto")
  for res, style, label in [(full, "w-", "DTW path"), (banded, "r--", "DTW path, band 3")]:
    p = np.asarray(res.pairs[:int(res.path_length)])
    paths[label] = p
    ax.plot(p[:, 1], p[:, 0], style, lw=1.6, label=f"{label} (cost {float(res.distance):.0f})")
  n, m = cost.shape
  j = np.arange(m)
  ax.plot(j, j - 3, "r:", lw=0.8)
  ax.plot(j, j + 3 + (n - m if n > m else 0), "r:", lw=0.8)
  ax.set_xlim(-0.5, m - 0.5)
  ax.set_ylim(-0.5, n - 0.5)
  ax.set_xlabel(f"frame of '7' by theo (train #5), {m} x 10 ms")
  ax.set_ylabel(f"frame of '7' by jackson (test #0), {n} x 10 ms")
  ax.set_title("Squared-Euclidean MFCC cost and the DTW path")
  ax.legend(loc="upper left", fontsize=8)
  fig.colorbar(im, ax=ax, label="local cost")
  figs = [_save(fig, "alignment_dtw_path.png")]

  scale = float(np.median(cost))
  gammas = (0.01, 0.1, 1.0, 10.0)
  fig, axes = plt.subplots(1, len(gammas), figsize=(4 * len(gammas), 3.8))
  p = paths["DTW path"]
  for ax, g in zip(axes, gammas):
    _, e = soft_dtw_alignment(cost=cost / scale, gamma=g)
    ax.imshow(np.asarray(e), origin="lower", cmap="magma", aspect="auto", vmin=0, vmax=1)
    ax.plot(p[:, 1], p[:, 0], "c:", lw=0.6, alpha=0.6)
    ax.set_title(f"soft-DTW E, gamma = {g:g}")
    ax.set_xlabel("theo frame")
  axes[0].set_ylabel("jackson frame")
  fig.suptitle(f"Expected alignment E = d sdtw / d C (cost / median cost {scale:.1f}); cyan: hard DTW path")
  figs.append(_save(fig, "alignment_soft_dtw_gammas.png"))

  ot = sinkhorn_align(x, y, epsilon=0.01, relative_epsilon="mean")
  coupling = np.asarray(ot.coupling)
  fig, ax = plt.subplots(figsize=(6.2, 5.2))
  im = ax.imshow(coupling * n, origin="lower", cmap="magma", aspect="auto")
  ax.plot(p[:, 1], p[:, 0], "c-", lw=0.8, alpha=0.8, label="DTW path")
  ax.set_title("Sinkhorn coupling of the frames (eps = 0.01 x mean cost)")
  ax.set_xlabel("theo frame")
  ax.set_ylabel("jackson frame")
  ax.legend(loc="upper left", fontsize=8)
  fig.colorbar(im, ax=ax, label="transported mass x T1 (rows sum to 1)")
  figs.append(_save(fig, "alignment_sinkhorn_audio.png"))
  info = dict(pair=("7_jackson_0", "7_theo_5"), frames=(n, m), dtw=float(full.distance),
              dtw_band3=float(banded.distance), median_cost=scale, ot_converged=bool(ot.converged))
  return figs, info


def train_filip(steps: int):
  from mmjax.train import loop
  config = config_lib.load_experiment(os.path.join(ROOT, "experiments", "filip_shapes.py"))
  config.total_steps = steps
  config.batch_size = 64
  config.log_every = 50
  config.checkpoint_every = steps
  config.optim.warmup_steps = min(30, steps // 5)
  config.progress_bar = False
  config.evals.num_examples = 500
  with tempfile.TemporaryDirectory() as workdir:
    trainer = loop.Trainer(config, workdir)
    t = time.perf_counter()
    results = trainer.train()
    seconds = time.perf_counter() - t
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      last = [r for r in map(__import__("json").loads, f) if "train/loss" in r][-1]
  return trainer, config, results, seconds, last


def filip_figures(trainer, config, n_eval: int = 200) -> tuple[list[str], dict]:
  from mmjax.data import pipeline, shapes
  from mmjax.layers.attention import attention_weights
  plt = _plt()
  model, params, tok = trainer.model, trainer.state.params, trainer.tokenizer
  arrays = pipeline.make_eval_arrays(config.data, tok, n_eval, split="test")
  enc_img = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_image_tokens"))
  enc_txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method="encode_text_tokens"))
  attn = jax.jit(lambda p, x: attention_weights(model, {"params": p}, x, method="encode_image"))
  img_tok, _ = enc_img(params, arrays["image"])
  txt_tok, txt_mask = enc_txt(params, arrays["tokens"])
  weights = attn(params, arrays["image"])
  last = weights[max(weights, key=lambda k: int(k.split("resblocks_")[1].split("/")[0]))]
  # attention each patch receives in the last layer, averaged over heads and over the patch queries: [B, N]
  received = np.asarray(jnp.mean(last[:, :, 1:, 1:], axis=(1, 2)))
  sims = np.asarray(token_alignment(img_tok[:, 1:], txt_tok))                   # [B, L, N] words x patches
  size = config.data.image_size
  g = size // config.model.vision["patch_size"]
  cfg = shapes.config_from_data(config.data)
  centres = (np.arange(g) + 0.5) * (size / g)
  words = [[tok.decode(np.array([int(t)])).strip() for t in row] for row in arrays["tokens"]]
  mask = np.asarray(txt_mask)

  def first(row_words, row_mask, vocab):
    hits = [r for r, w in enumerate(row_words) if row_mask[r] and w in vocab]
    return hits[0] if hits else None

  kinds = {"colour": set(shapes.COLOURS), "shape": set(shapes.SHAPES),
           "position": {"top", "bottom", "left", "right", "center"}}
  hits = {k: [] for k in ("colour", "shape", "attention", "chance")}
  for i in range(n_eval):
    obj = shapes.sample_scene(int(arrays["index"][i]), "test", cfg)[0]
    (cx, cy), r = obj["centre"], obj["radius"]
    inside = ((centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2) <= (r + size / g / 2) ** 2  # [g, g]
    inside = inside.reshape(-1)
    hits["chance"].append(inside.mean())
    hits["attention"].append(inside[received[i].argmax()])
    for kind in ("colour", "shape"):
      rr = first(words[i], mask[i], kinds[kind])
      if rr is not None:
        hits[kind].append(inside[sims[i, rr].argmax()])
  pointing = {k: float(np.mean(v)) for k, v in hits.items()}

  show = list(range(4))
  cols = ["image", "colour word", "shape word", "position word", "ViT attention received"]
  fig, axes = plt.subplots(len(show), len(cols), figsize=(2.3 * len(cols), 2.5 * len(show)))
  for row, i in enumerate(show):
    image = np.clip((arrays["image"][i] + 1) / 2, 0, 1)
    maps = [None]
    titles = [arrays["caption"][i]]
    for kind in ("colour", "shape", "position"):
      rr = first(words[i], mask[i], kinds[kind])
      maps.append(None if rr is None else sims[i, rr])
      titles.append("-" if rr is None else f"'{words[i][rr]}'")
    maps.append(received[i])
    titles.append("attention received")
    for c, (mp, title) in enumerate(zip(maps, titles)):
      ax = axes[row, c]
      ax.imshow(image, interpolation="nearest")
      if mp is not None:
        ax.imshow(mp.reshape(g, g), cmap="jet", alpha=0.55, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                  interpolation="nearest")
      ax.set_title(title if c else "\n".join(_wrap(title, 28)), fontsize=7 if c == 0 else 9)
      ax.set_xticks([])
      ax.set_yticks([])
  for c, name in enumerate(cols):
    axes[-1, c].set_xlabel(name, fontsize=9)
  fig.suptitle("FILIP word-to-patch similarity <word token, patch token> (model trained here; colour scale per map) "
               "and the attention each patch receives in the ViT's last layer", fontsize=10)
  figs = [_save(fig, "alignment_filip_text_patch.png")]

  # Sinkhorn between the words of a caption and the image patches (cosine cost of the FILIP token features);
  # the patch marginal is relaxed (tau_b < 1): each word sends its mass to the patches it matches, and
  # background patches need not receive any.
  fig, axes = plt.subplots(2, 3, figsize=(14, 8.4), gridspec_kw=dict(width_ratios=[3, 1.1, 1.1]))
  for row, i in enumerate(show[:2]):
    valid = np.where(mask[i])[0]
    ot = sinkhorn_align(np.asarray(txt_tok[i, valid]), np.asarray(img_tok[i, 1:]), epsilon=0.02, cost="cosine",
                        tau_b=0.5)
    coupling = np.asarray(ot.coupling) * len(valid)
    labels = [words[i][r] or ("<sot>" if k == 0 else "<eot>") for k, r in enumerate(valid)]
    picks = [first(words[i], mask[i], kinds[k]) for k in ("colour", "shape")]
    picks = [int(np.where(valid == r)[0][0]) for r in picks]
    ax = axes[row, 0]
    ax.imshow(coupling, cmap="magma", aspect="auto")
    ax.set_yticks(range(len(valid)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel(f"image patch (row-major {g} x {g})")
    ax.set_title(f"test image {i}: semi-relaxed Sinkhorn coupling, caption tokens x patches (x L)", fontsize=9)
    for ax, k in zip(axes[row, 1:], picks):
      ax.imshow(np.clip((arrays["image"][i] + 1) / 2, 0, 1))
      ax.imshow(coupling[k].reshape(g, g), cmap="jet", alpha=0.5, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
      ax.set_title(f"where '{labels[k]}' is sent", fontsize=9)
      ax.set_xticks([])
      ax.set_yticks([])
  figs.append(_save(fig, "alignment_sinkhorn_words_patches.png"))
  return figs, dict(pointing=pointing, n_eval=n_eval, grid=g)


def _wrap(text: str, width: int) -> list[str]:
  lines, cur = [], ""
  for word in text.split():
    if len(cur) + len(word) + 1 > width and cur:
      lines.append(cur)
      cur = word
    else:
      cur = f"{cur} {word}".strip()
  return lines + [cur]


# ---------------------------------------------------------------------------------------------- report
def write_report(command: str, rows, audio_info, filip, figs, total_s: float) -> str:
  trainer, config, results, train_s, last = filip["train"]
  lines = [f"Generated by `{command}` on {datetime.date.today().isoformat()} "
           f"({jax.default_backend()}, {os.cpu_count()} cores, {total_s / 60:.1f} min in all).", ""]
  lines += ["# Alignment: DTW, soft-DTW, optimal transport, token-wise (FILIP) alignment", "",
            "## (a) Spoken-digit recognition by DTW 1-nearest-neighbour (FSDD)", "",
            "Free Spoken Digit Dataset, 6 speakers x 10 digits x 50 recordings (8 kHz): train = recordings 5-49 "
            "(2700), test = 0-4 (300), the data set's convention (speakers are shared between the splits). "
            "Each test recording gets the digit of its nearest training recording under DTW "
            "(`mmjax.alignment.dtw.dtw_cdist`, 810,000 DTWs per row).", "",
            "Features (`mmjax.data.audio`): 32 ms periodic-Hann frames every 10 ms (n_fft 256, hop 80, reflect "
            "padding), power spectrum, 40 Slaney mel filters 0-4 kHz, natural log floored at 80 dB below the "
            "utterance's maximum; MFCC = first 13 coefficients of the orthonormal DCT-II of that log-mel. Both with "
            "cepstral/spectral mean normalisation (the utterance's mean frame subtracted). Local cost between frames "
            "as listed; band = Sakoe-Chiba radius in frames (10 ms), widened by the length difference. "
            "'raw' ranks by the DTW distance, 'normalised' by distance / (n + m).", "",
            "| features | local cost | band | accuracy (raw) | accuracy (normalised) | worst speaker (normalised) "
            "| time for 810k DTWs |",
            "|---|---|---|---|---|---|---|"]
  for r in rows:
    band = "none" if r["band"] is None else f"{r['band']} frames"
    lines.append(f"| {r['features']} | {r['metric']} | {band} | {100 * r['acc']:.1f} % | "
                 f"{100 * r['acc_norm']:.1f} % | {100 * r['worst'][0]:.1f} % ({r['worst'][1]}) | "
                 f"{r['seconds']:.0f} s ({r['pairs'] / r['seconds']:,.0f} pairs/s) |")
  lines += ["", "Times include XLA compilation (one program per pair of padded-length classes "
            f"{list(SIZE_CLASSES)}; the band is a traced argument, so the band-3 row reuses the band-10 row's "
            "programs and shows the compute alone) and were measured on a shared 2-core machine.", ""]
  p = filip["info"]["pointing"]
  lines += ["## (b) Figures", "",
            f"- `{figs[0]}`: squared-Euclidean MFCC cost matrix between '7' by jackson (test #0, "
            f"{audio_info['frames'][0]} frames) and '7' by theo (train #5, {audio_info['frames'][1]} frames), with "
            f"the DTW path (cost {audio_info['dtw']:.0f}) and the band-3 path (cost {audio_info['dtw_band3']:.0f}; "
            "dotted: band edges).",
            f"- `{figs[1]}`: soft-DTW expected alignment E (the gradient of soft-DTW w.r.t. the cost, from the "
            "Algorithm-2 custom VJP) for gamma = 0.01, 0.1, 1, 10 on the cost divided by its median "
            f"({audio_info['median_cost']:.1f}): a sharp path at small gamma that spreads into a band as gamma grows.",
            f"- `{figs[2]}`: entropic OT (ott-jax Sinkhorn) coupling of the same frames, ignoring time order: "
            "frames couple to similar frames anywhere (e.g. onsets and tails), unlike the monotone DTW path.",
            f"- `{figs[3]}`: a FILIP model trained here with the one training loop (experiments/filip_shapes.py, "
            f"{config.total_steps} steps, batch {config.batch_size}, {train_s:.0f} s; last train loss "
            f"{last['train/loss']:.3f}); per test image the similarity of the colour / shape / position word "
            "token with every patch token, and the attention each patch receives in the ViT's last layer (mean over "
            "heads and patch queries; `mmjax.layers.attention.attention_weights`); colour scale per map (blue low, "
            "red high).",
            f"- `{figs[4]}`: Sinkhorn coupling (ott-jax; cosine cost on the FILIP token features, eps 0.02, patch "
            "marginal relaxed with tau_b = 0.5) between the caption's tokens and the 64 patch tokens of the first two "
            "test examples, and where their colour and shape words send their mass.",
            "",
            f"Pointing game on {filip['info']['n_eval']} test images (hit: the arg-max patch's centre lies within "
            "the object's radius + half a patch of its centre):", "",
            "| map | hit rate |", "|---|---|",
            f"| FILIP colour-word similarity | {100 * p['colour']:.1f} % |",
            f"| FILIP shape-word similarity | {100 * p['shape']:.1f} % |",
            f"| ViT attention received (last layer) | {100 * p['attention']:.1f} % |",
            f"| chance (fraction of patches that hit) | {100 * p['chance']:.1f} % |", "",
            "The FILIP model's pooled-embedding evaluation (the 'clip' evaluator, 500 test images): " +
            ", ".join(f"{k} {v:.1f}" for k, v in sorted(results.items())) + "."]
  path = os.path.join(TABLES, "alignment.md")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return os.path.relpath(path, ROOT)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--fsdd", default=DEFAULT_FSDD)
  ap.add_argument("--filip_steps", type=int, default=200)
  ap.add_argument("--quick", action="store_true", help="smoke run: first FSDD row only, 20 FILIP steps")
  args = ap.parse_args()
  if args.quick:
    del CONFIGS[1:]
    args.filip_steps = 20
  command = ".venv/bin/python experiments/reports/alignment.py" + "".join(
      f" {a}" for a in sys.argv[1:])
  t0 = time.perf_counter()
  os.makedirs(FIGURES, exist_ok=True)
  recs = load_fsdd(args.fsdd)
  feats = {kind: [features(r[3], kind) for r in recs] for kind in ("mfcc", "logmel")}
  rows = fsdd_table(recs, feats)
  figs, audio_info = audio_figures(recs, feats)
  trainer, config, results, train_s, last = train_filip(args.filip_steps)
  ffigs, finfo = filip_figures(trainer, config)
  md = write_report(command, rows, audio_info, {"train": (trainer, config, results, train_s, last), "info": finfo},
                    figs + ffigs, time.perf_counter() - t0)
  print(f"alignment: wrote {md} and {', '.join(figs + ffigs)} in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
  main()
