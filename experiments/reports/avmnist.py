"""AV-MNIST fusion table and robustness curves -> experiments/tables/avmnist.md (+ .json) and figures.

  .venv/bin/python experiments/reports/avmnist.py [--data_dir /tmp/tfds_avmnist] [--seeds 3] [--epochs 6]
      [--n_train 6000] [--snr_db DB] [--methods NAME ...] [--quick]

Data: the AV-MNIST TFDS builder (mmjax/data/builders/avmnist.py) over ../shared/data (mnist/ + fsdd/): MNIST digits
paired with FSDD spoken digits of the same class, train 18000 / dev 2000 (a 20k MNIST training subset) / test 10000
(MNIST t10k), recording pools disjoint across splits. Training uses a stratified subset of `--n_train` train pairs
(seed 0; the CPU budget of the report), dev and test are whole. Both modalities are made hard, in the spirit of
CentralNet / MultiBench (Vielzeuf et al. 2018; Liang et al. 2021): images keep only ~25 % of their PCA energy
(`fit_image_pca` on the train images: the fewest leading components holding >= 25 % of the variance), recordings get
additive white Gaussian noise at an SNR chosen on dev (below), then become log-mel spectrograms [38, 32] (0.75 s at
8 kHz zero-padded / cropped, hop 20 ms, 32 mels), standardised with one train mean / std. Noise draws are fixed per
example (seeded per split).

Noise level, chosen on dev only: image-only and audio-only models are trained (seed 0, same budget as the table)
and scored on dev; the SNR is the least noisy one of a grid whose audio-only dev accuracy is no higher than the
image-only dev accuracy (both modalities then carry comparably incomplete evidence, so fusion matters).

Models: mmjax.models.FusionClassifier (per-modality encoders + a fusion from mmjax.fusion by name + MLP head), the
"classify" objective, mmjax.train.step.make_train_step and mmjax.train.optim.make_optimizer (the training loop's
step and optimizer), run by the one loop body (mmjax.train.run) on in-memory NumPy arrays (mmjax.train.arrays.
ArrayTask: seeded shuffles). Encoders: LeNet-like CNNs (mmjax/encoders/cnn.py:
four 3x3 conv + GroupNorm + ReLU + 2x2 max-pool stages with 8/16/32/64 channels, global average pooling), one for the
image and one for the spectrogram, as MultiBench's LeNet encoders. Early fusion concatenates the flattened raw
inputs (784 image values + 38 x 32 spectrogram values) into one MLP. MBT takes the last feature maps of 3-stage
CNNs as tokens (3 x 3 image tokens, 4 x 4 spectrogram tokens). Every run trains `--epochs` epochs; the parameters of
the epoch with the best dev accuracy are kept (the loop's config.select_best; as MultiBench keeps its best validation
model) and scored on test.

Robustness (mmjax/evals/robustness.py, MultiBench's protocol): every trained model is re-scored on a fixed stratified
test subset whose one modality is corrupted at levels 0, 0.1, ..., 1: images by `image_noise` (N(0, p^2) per pixel
and each pixel dropped with probability p), spectrograms by `timeseries_noise` (per-frame white noise, random drop,
structured drop of 3-frame windows, as MultiBench's audio noise) on the standardised log-mel frames.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from mmjax.data import builders  # noqa: E402
from mmjax.data.builders import avmnist as av  # noqa: E402
from mmjax.evals import robustness as rb  # noqa: E402
from mmjax.models import build_model  # noqa: E402
from mmjax.objectives import get_objective  # noqa: E402
from mmjax.train import best as best_lib  # noqa: E402
from mmjax.train import run as run_lib  # noqa: E402
from mmjax.train.arrays import ArrayTask, array_config  # noqa: E402
from mmjax.train.optim import make_optimizer  # noqa: E402
from mmjax.train.state import TrainState  # noqa: E402
from mmjax.train.step import make_train_step  # noqa: E402

TABLES = os.path.join(ROOT, "experiments", "tables")
MODALITIES = ("image", "audio")
KEEP_ENERGY = 0.25                          # CentralNet / MultiBench: "75 % of the energy removed"
SNR_GRID = (10.0, 0.0, -5.0, -10.0)         # dB, least noisy first
SPEC = dict(num_samples=6000, hop_length=160, n_mels=32)   # 0.75 s -> [38 frames, 32 mels]
NOISE = {"image": rb.image_noise, "audio": rb.timeseries_noise}
CHUNK = 500                                 # examples per forward pass at evaluation (--quick: 64)

CNN = lambda **kw: {"name": "cnn", "channels": (8, 16, 32, 64), "group_norm": True, **kw}
# name -> FusionClassifier fields (num_classes=10 and dropout are added).
METHODS = {
    "image only": dict(modalities=("image",), fusion="early", encoders={"image": CNN()}, head_hidden=(64,)),
    "audio only": dict(modalities=("audio",), fusion="early", encoders={"audio": CNN()}, head_hidden=(64,)),
    "early (flattened inputs, MLP)": dict(modalities=("image_flat", "audio_flat"), fusion="early",
                                          head_hidden=(128, 64)),
    "late (weighted concat)": dict(modalities=MODALITIES, fusion="late", fusion_kwargs={"mode": "concat"},
                                   encoders={m: CNN() for m in MODALITIES}, head_hidden=(64,)),
    "TFN": dict(modalities=MODALITIES, fusion="tfn", fusion_kwargs={"features": 64},
                encoders={m: CNN(features=16) for m in MODALITIES}, head_hidden=(64,)),
    "LMF (rank 4)": dict(modalities=MODALITIES, fusion="lmf", fusion_kwargs={"features": 64, "rank": 4},
                         encoders={m: CNN() for m in MODALITIES}, head_hidden=(64,)),
    "gated (GMU)": dict(modalities=MODALITIES, fusion="gmu", fusion_kwargs={"features": 64},
                        encoders={m: CNN() for m in MODALITIES}, head_hidden=(64,)),
    "MBT (bottleneck tokens)": dict(modalities=MODALITIES, fusion="mbt",
                                    fusion_kwargs={"width": 64, "num_heads": 4, "depth": 2, "fusion_layer": 1,
                                                   "num_bottlenecks": 4, "mlp_ratio": 2.0},
                                    encoders={m: CNN(channels=(8, 16, 32), tokens=True) for m in MODALITIES},
                                    head_hidden=(64,)),
}
LATE = "late (weighted concat)"
UNIMODAL = {"image": "image only", "audio": "audio only"}


# ------------------------------------------------------------------------------------------------ data
def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
  """Sorted indices of n examples with (as far as possible) equal counts per class, seeded."""
  labels = np.asarray(labels)
  if n >= len(labels):
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
  take, k = [], 0
  while len(take) < n:   # round robin over classes, in a seeded class order per round
    for c in rng.permutation(classes):
      if k < len(per_class[c]) and len(take) < n:
        take.append(per_class[c][k])
    k += 1
  return np.sort(np.asarray(take))


def load_raw(data_dir: str, manual_dir: str | None, n_train: int, n_test: int) -> dict[str, dict]:
  """Raw splits: image uint8 [N, 28, 28, 1], audio list of int16 waves, label int32 [N] (train / test subsets
  stratified, seed 0)."""
  b = builders.prepare("avmnist", data_dir=data_dir, manual_dir=manual_dir)
  out = {}
  for split, n in (("train", n_train), ("dev", None), ("test", n_test)):
    src = b.as_data_source(split)
    rows = sorted((src[i] for i in range(len(src))), key=lambda r: int(r["image_index"]))
    labels = np.asarray([r["label"] for r in rows], np.int32)
    keep = stratified_subset(labels, n, seed=0) if n else np.arange(len(rows))
    out[split] = {"image": np.stack([rows[i]["image"] for i in keep]), "audio": [rows[i]["audio"] for i in keep],
                  "label": labels[keep]}
  return out


def preprocess(raw: dict, pca: av.ImagePca, snr_db: float | None, seed: int) -> dict[str, np.ndarray]:
  """Raw split -> {"image" float32 [N, 28, 28, 1], "audio" float32 [N, 38, 32] log-mel, "label"} with
  `avmnist_preprocess` (PCA low-pass; white noise at `snr_db`, one fixed draw per example from `seed`)."""
  rng = np.random.default_rng(seed)
  images = pca.apply(raw["image"])
  specs = [av.avmnist_preprocess({"image": raw["image"][i], "audio": raw["audio"][i], "label": raw["label"][i]},
                                 rng=rng, audio_snr_db=snr_db, **SPEC)["audio"] for i in range(len(raw["label"]))]
  return {"image": images, "audio": np.stack(specs).astype(np.float32), "label": raw["label"]}


def prepare_splits(raw: dict, pca: av.ImagePca, snr_db: float | None) -> dict[str, dict]:
  """All splits preprocessed; spectrograms standardised with the train mean / std; flattened views added."""
  data = {s: preprocess(raw[s], pca, snr_db, seed=i) for i, s in enumerate(("train", "dev", "test"))}
  mu, sd = float(data["train"]["audio"].mean()), float(data["train"]["audio"].std())
  for s in data:
    data[s]["audio"] = (data[s]["audio"] - mu) / sd
    data[s].update(flat_views(data[s]))
  return data


def cnn_grid(hw: tuple[int, int], stages: int) -> tuple[int, int]:
  """Spatial size after `stages` CNNEncoder stages (2x2 max-pool, stride 2, while both sides are >= 2)."""
  h, w = hw
  for _ in range(stages):
    if min(h, w) >= 2:
      h, w = h // 2, w // 2
  return h, w


def flat_views(split: dict) -> dict[str, np.ndarray]:
  """Early-fusion inputs: {"image_flat" [N, H W C], "audio_flat" [N, T F]} (row-major flattening, no copy)."""
  return {f"{m}_flat": split[m].reshape(len(split[m]), -1) for m in MODALITIES}


# ------------------------------------------------------------------------------------------------ training
def optim_cfg(lr: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name="adamw", lr=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                        warmup_steps=50, schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
                                        no_decay_regex=r"(bias|scale|weights|rank_weights)$"))


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def make_predict(model):
  """(params, split dict) -> logits [N, 10], in chunks of CHUNK examples (the last one zero-padded)."""
  fwd = jax.jit(lambda p, *xs: model.apply({"params": p}, *xs))

  def predict(params, split: dict) -> np.ndarray:
    xs = [np.asarray(split[m]) for m in model.modalities]
    n, size = len(xs[0]), CHUNK    # one fixed chunk shape: one compilation for every split
    out = []
    for start in range(0, n, size):
      chunk = [x[start:start + size] for x in xs]
      pad = size - len(chunk[0])
      if pad:
        chunk = [np.concatenate([c, np.zeros((pad,) + c.shape[1:], c.dtype)]) for c in chunk]
      out.append(np.asarray(fwd(params, *chunk))[:size - pad])
    return np.concatenate(out)
  return predict


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))


@functools.lru_cache(maxsize=None)
def build(method: str, n: int, epochs: int, batch_size: int, lr: float, dropout: float):
  """(model, tx, jitted train step, predict) of a method; cached, so the seeds of a method share one compilation."""
  model = build_model(dict(name="fusion_classifier", num_classes=10, dropout=dropout, **METHODS[method]))
  tx, schedule = make_optimizer(optim_cfg(lr), epochs * (n // batch_size))
  step_fn = jax.jit(make_train_step(get_objective("classify"), model, tx, schedule))
  return model, tx, step_fn, make_predict(model)


def init_state(model, tx, train: dict, seed: int) -> TrainState:
  rng = jax.random.PRNGKey(seed)
  params = model.init({"params": rng, "dropout": rng}, *[jnp.asarray(train[m][:2]) for m in model.modalities])
  params = params["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.fold_in(rng, 1))


def train_one(method: str, data: dict, seed: int, epochs: int, batch_size: int = 64, lr: float = 3e-3,
              dropout: float = 0.1):
  """Trains `epochs` epochs on data["train"] through the one loop body (mmjax.train.run with an ArrayTask: epoch
  orders from `seed`, dev accuracy after each epoch, config.select_best keeping the epoch with the best one)
  -> (model, params of that epoch, predict, info)."""
  t0 = time.time()
  train, dev = data["train"], data["dev"]
  n = len(train["label"])
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  model, tx, step_fn, predict = build(method, n, epochs, batch_size, lr, dropout)
  config = array_config(seed=seed, total_steps=epochs * steps_per_epoch, eval_every=steps_per_epoch,
                        select_best="dev/accuracy")
  with tempfile.TemporaryDirectory(prefix="avmnist_run_") as workdir:
    task = ArrayTask(config, workdir, state=init_state(model, tx, train, seed), step_fn=step_fn,
                     arrays={k: train[k] for k in [*model.modalities, "label"]}, batch_size=batch_size,
                     evaluate=lambda params: {"dev/accuracy": accuracy(predict(params, dev), dev["label"])})
    run_lib.train(task)
    params, record = jax.device_get(task.best_params()), best_lib.read(workdir)
  info = {"final_loss": float(task.last_metrics["loss"]), "dev_acc": record["value"],
          "best_epoch": record["step"] // steps_per_epoch, "dev_curve": [r["dev/accuracy"] for _, r in task.evals],
          "params": count_params(params), "train_s": time.time() - t0}
  return model, params, predict, info


def robustness_curves(model, params, predict, split: dict) -> dict[str, np.ndarray]:
  """Accuracy vs noise level on each modality (MultiBench protocol), one fixed noise key (common random numbers)."""
  def predict_noisy(inputs):
    inputs = dict(inputs)
    inputs.update(flat_views(inputs))
    return predict(params, inputs)
  inputs = {m: jnp.asarray(split[m]) for m in MODALITIES}
  return {m: rb.robustness_curve(predict_noisy, inputs, split["label"], m, noise_fn=NOISE[m], seed=1)
          for m in MODALITIES}


# ------------------------------------------------------------------------------------------------ report
def fmt(xs, scale=100.0, digits=1) -> str:
  xs = np.asarray(xs, np.float64) * scale
  return f"{xs.mean():.{digits}f} ± {xs.std():.{digits}f}"


def calibrate_snr(raw: dict, pca: av.ImagePca, epochs: int, grid=SNR_GRID) -> tuple[float, dict]:
  """The least noisy SNR of `grid` whose audio-only dev accuracy <= the image-only dev accuracy (seed 0)."""
  data = prepare_splits(raw, pca, None)
  image_dev = train_one("image only", data, 0, epochs)[3]["dev_acc"]
  log = {"image only": image_dev, "audio only": {}}
  print(f"calibration: image only dev {image_dev:.4f}", flush=True)
  chosen = grid[-1]
  for snr in grid:
    data = prepare_splits(raw, pca, snr)
    acc = train_one("audio only", data, 0, epochs)[3]["dev_acc"]
    log["audio only"][str(snr)] = acc
    print(f"calibration: audio only at {snr:+.0f} dB dev {acc:.4f}", flush=True)
    if acc <= image_dev:
      chosen = snr
      break
  return chosen, log


def write_report(out_dir: str, args, cmd: str, elapsed: float, sizes: dict, shapes: dict, pca_info: dict,
                 snr: float,
                 calib: dict | None, results: dict, curves: dict) -> str:
  figures = os.path.join(out_dir, "figures")
  os.makedirs(figures, exist_ok=True)
  multimodal = [m for m in results if m not in UNIMODAL.values()]
  figs = {}
  for mod in MODALITIES:
    shown = multimodal + [UNIMODAL[mod]] if UNIMODAL[mod] in results else multimodal
    figs[mod] = rb.plot_robustness(
        {m: curves[m][mod] for m in shown}, os.path.join(figures, f"avmnist_robustness_{mod}.png"),
        title=f"AV-MNIST: noise on {mod} at test time ({args.seeds} seeds)", ylabel="test accuracy",
        stds={m: np.std([r["curves"][mod] for r in results[m]], axis=0) for m in shown})
  lines = [f"<!-- generated by: {cmd} on {datetime.date.today().isoformat()} ({elapsed / 60:.1f} min, "
           f"{jax.devices()[0].platform}) -->",
           "# AV-MNIST: fusion methods and robustness", "",
           "Regenerate with", "", f"    {cmd}", "",
           f"AV-MNIST as built by mmjax/data/builders/avmnist.py (MNIST digits paired with FSDD spoken digits of the "
           f"same class; ../shared/data). Train on {sizes['train']} of the 18000 train pairs (stratified, seed 0), "
           f"model selection on dev ({sizes['dev']}), scored on {sizes['test']} test pairs (MNIST t10k). Both "
           f"modalities are degraded as in CentralNet / MultiBench: images keep {pca_info['k']} PCA components "
           f"({100 * pca_info['kept_energy']:.1f} % of the variance, fitted on the train images), recordings get "
           f"white Gaussian noise at {snr:+.0f} dB SNR (chosen on dev, see below) before the log-mel spectrogram "
           f"({SPEC['num_samples'] / 8000:g} s, {shapes['audio'][0]} frames x {shapes['audio'][1]} mels, "
           f"standardised). {args.seeds} seeds per method (init, dropout, batch order); {args.epochs} epochs "
           f"(AdamW 3e-3, cosine, batch 64, dropout 0.1, weight decay 1e-4), the epoch with the best dev accuracy "
           f"kept.", "",
           "## Test accuracy", "",
           "| method | test accuracy (%) | dev accuracy (%) | best epoch | parameters | train time / run (s) |",
           "|---|---|---|---|---|---|"]
  for m, r in results.items():
    lines.append(f"| {m} | {fmt([x['acc'] for x in r])} | {fmt([x['dev_acc'] for x in r])} | "
                 f"{np.mean([x['best_epoch'] for x in r]):.1f} | {r[0]['params']:,} | "
                 f"{np.mean([x['train_s'] for x in r]):.0f} |")
  lines += ["", "mean ± std over seeds; train time is the wall time of one run (compilation, training and the "
            "per-epoch dev evaluations) on this machine, shared with other jobs, so only roughly comparable. "
            f"Encoders: LeNet-like CNNs (four 3x3 conv + GroupNorm + ReLU + 2x2 max-pool stages, 8/16/32/64 "
            f"channels, global average pooling) for the image {list(shapes['image'])} and the spectrogram "
            f"{list(shapes['audio'])}; head MLP 64. Early fusion: the flattened image ({shapes['image_flat']}) and "
            f"spectrogram ({shapes['audio_flat']}) concatenated, [B, {shapes['image_flat'] + shapes['audio_flat']}], "
            f"into one MLP (128, 64): concatenating raw inputs of different shapes is only meaningful flattened. "
            f"Late: learnably weighted concatenation of the pooled CNN features (64 + 64). TFN: CNN features 16 "
            f"each, outer product 17 x 17 = 289, Dense 64. LMF: rank 4, 64 features. GMU: 64 features. MBT: the "
            f"last feature maps of 3-stage CNNs (8/16/32 channels) as tokens (image {shapes['image_tokens']}, "
            f"spectrogram {shapes['audio_tokens']}), width 64, 4 heads, 2 layers, fusion from layer 1 on through 4 "
            f"bottleneck tokens, the two CLS outputs concatenated.", "",
            "Published numbers are not comparable and are not put beside these rows: MultiBench (Liang et al. "
            "2021) and CentralNet (Vielzeuf et al. 2018) use the full 60k MNIST (MultiBench: 55k train / 5k "
            "validation / 10k test), their own noise recordings and 112 x 112 spectrograms. From memory of the "
            "MultiBench paper (not checked against a copy of it here), its LeNet-based fusions (EF, LF, TF, LRTF) "
            "reach roughly 70-72 % on its AV-MNIST and its unimodal image model roughly 65 %; treat these as "
            "orders of magnitude, not as reference values.", ""]
  at_last = [m for m, r in results.items() if all(x["best_epoch"] == args.epochs for x in r)]
  lines += ["### Dev accuracy after each epoch", "",
            "Mean over seeds (%). " + (
                f"{', '.join(at_last)}: best dev accuracy at the last epoch in every seed, i.e. the budget "
                f"({args.epochs} epochs of {sizes['train']} pairs, set by the report's 30-minute CPU budget) stops "
                f"them before convergence and their test numbers understate what they can reach."
                if at_last else "No method had its best dev accuracy at the last epoch in every seed."), "",
            "| method | " + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " |",
            "|---|" + "---|" * args.epochs]
  for m, r in results.items():
    dev = np.mean([x["dev_curve"] for x in r], axis=0)
    lines.append(f"| {m} | " + " | ".join(f"{100 * a:.1f}" for a in dev) + " |")
  lines.append("")
  if calib is not None:
    lines += ["### Noise level chosen on dev", "",
              f"Seed 0, same budget and model selection as the table, scored on dev. Image only (PCA "
              f"{100 * pca_info['kept_energy']:.1f} %): {100 * calib['image only']:.1f} %. Audio only per SNR "
              f"(least noisy first; the first one at or below the image-only accuracy is used):", "",
              "| SNR (dB) | " + " | ".join(f"{float(s):+.0f}" for s in calib["audio only"]) + " |",
              "|---|" + "---|" * len(calib["audio only"]),
              "| audio only, dev (%) | " + " | ".join(f"{100 * a:.1f}" for a in calib["audio only"].values()) + " |",
              ""]
  else:
    lines += [f"The SNR ({snr:+.0f} dB) was given on the command line (--snr_db); no dev calibration in this run.",
              ""]
  lines += ["## Robustness (MultiBench protocol)", "",
            f"Test accuracy on a fixed stratified subset of {sizes['robust']} test pairs as one modality is corrupted "
            "at level p = 0, 0.1, …, 1 (image: N(0, p²) per pixel plus each pixel dropped with probability p; "
            "spectrogram, standardised: per-frame white noise N(0, p²), random drop and structured drop of 3-frame "
            "windows with probability p); mean over seeds. Relative robustness = area under the curve; effective "
            "robustness = sum over levels of the accuracy above the late-fusion curve shifted to the method's clean "
            "accuracy (MultiBench's definitions, before their max-min normalisation).", "",
            "| method | noise on | clean acc | acc at p=0.5 | acc at p=1 | relative robustness | effective robustness |",
            "|---|---|---|---|---|---|---|"]
  for mod in MODALITIES:
    for m in multimodal + ([UNIMODAL[mod]] if UNIMODAL[mod] in results else []):
      c = curves[m][mod]
      eff = f"{rb.effective_robustness(c, curves[LATE][mod]):+.3f}" if LATE in curves else "–"
      lines.append(f"| {m} | {mod} | {100 * c[0]:.1f} | {100 * c[5]:.1f} | {100 * c[-1]:.1f} | "
                   f"{rb.relative_robustness(c):.3f} | {eff} |")
  lines += [""] + [f"![noise on {mod}](figures/{os.path.basename(figs[mod])})" for mod in MODALITIES]
  lines += ["", "Raw per-seed numbers: `avmnist.json` beside this file."]
  path = os.path.join(out_dir, "avmnist.md")
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(path + ".tmp", path)
  return path


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--data_dir", default="/tmp/tfds_avmnist")
  ap.add_argument("--manual_dir", default=None, help="raw mnist/ + fsdd/ root (default ../shared/data)")
  ap.add_argument("--out_dir", default=TABLES, help="where avmnist.md/.json and figures/ go")
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--epochs", type=int, default=6)
  ap.add_argument("--n_train", type=int, default=6000)
  ap.add_argument("--n_test", type=int, default=10000)
  ap.add_argument("--n_robust", type=int, default=500)
  ap.add_argument("--snr_db", type=float, default=None, help="skip the dev calibration and use this SNR")
  ap.add_argument("--methods", nargs="*", default=None, help=f"subset of: {list(METHODS)}")
  ap.add_argument("--quick", action="store_true",
                  help="200 train / 200 test / 100 robustness pairs, 1 seed, 1 epoch (a smoke run)")
  args = ap.parse_args(argv)
  global CHUNK
  if args.quick:
    args.seeds, args.epochs, args.n_train, args.n_test, args.n_robust = 1, 1, 200, 200, 100
    CHUNK = 64
  methods = args.methods or list(METHODS)
  unknown = set(methods) - set(METHODS)
  if unknown:
    ap.error(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
  t0 = time.time()
  raw = load_raw(args.data_dir, args.manual_dir, args.n_train, args.n_test)
  pca = av.fit_image_pca(raw["train"]["image"], KEEP_ENERGY)
  pca_info = {"k": int(pca.components.shape[1]), "kept_energy": pca.kept_energy}
  print(f"loaded in {time.time() - t0:.0f}s; PCA keeps {pca_info['k']} components "
        f"({100 * pca.kept_energy:.1f} %)", flush=True)
  calib = None
  snr = args.snr_db
  if snr is None:
    snr, calib = calibrate_snr(raw, pca, args.epochs, SNR_GRID[:2] if args.quick else SNR_GRID)
  data = prepare_splits(raw, pca, snr)
  robust_idx = stratified_subset(data["test"]["label"], args.n_robust, seed=1)
  robust = {k: v[robust_idx] for k, v in data["test"].items()}
  sizes = {s: len(data[s]["label"]) for s in data} | {"robust": len(robust_idx)}
  shapes = {m: data["test"][m].shape[1:] for m in (*MODALITIES, "image_flat", "audio_flat")}
  shapes = {k: v[0] if k.endswith("flat") else v for k, v in shapes.items()}
  for m in MODALITIES:
    h, w = cnn_grid(shapes[m][:2], 3)
    shapes[f"{m}_tokens"] = f"{h} x {w} = {h * w}"
  results, curves = {}, {}
  for method in methods:
    runs = []
    for seed in range(args.seeds):
      model, params, predict, info = train_one(method, data, seed, args.epochs)
      acc = accuracy(predict(params, data["test"]), data["test"]["label"])
      rc = robustness_curves(model, params, predict, robust)
      runs.append(dict(info, acc=acc, curves={m: c.tolist() for m, c in rc.items()}))
      print(f"{method} seed {seed}: test {acc:.4f} dev {info['dev_acc']:.4f} (epoch {info['best_epoch']}) "
            f"train {info['train_s']:.0f}s [{time.time() - t0:.0f}s]", flush=True)
    results[method] = runs
    curves[method] = {m: np.mean([r["curves"][m] for r in runs], axis=0) for m in MODALITIES}
  elapsed = time.time() - t0
  cmd = " ".join([".venv/bin/python experiments/reports/avmnist.py", *(sys.argv[1:] if argv is None else argv)])
  os.makedirs(args.out_dir, exist_ok=True)
  path = write_report(args.out_dir, args, cmd, elapsed, sizes, shapes, pca_info, snr, calib, results, curves)
  with open(os.path.join(args.out_dir, "avmnist.json"), "w") as f:
    json.dump({"results": results, "snr_db": snr, "calibration": calib, "pca": pca_info, "sizes": sizes,
               "shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in shapes.items()},
               "levels": list(rb.LEVELS), "args": vars(args), "elapsed_s": elapsed}, f)
  print(f"wrote {path} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
  main()
