"""Classification data sets for the fusion classifiers (models/fusion_classifier.py): CMU-MOSI and AV-MNIST.

Both are read from their TFDS builders (mmjax/data/builders/mosi.py, avmnist.py) through `image_text.prepared`,
so they honour `data.manual_dir`, `data.data_dir`, `data.skip_bad` and `data.fake_raw` (n > 0: the builder's
`make_fake_raw` with n examples instead of ../shared/data; tests and CI use it). Both are small, so every split
a process uses is preprocessed once, in that process, and served from memory (`ArraySource`: random access for
grain, no per-example work); the arrays are cached per process, keyed by the prepared data dir and the
preprocessing keys (AV-MNIST, measured on 2 busy CPU cores: train 18000 examples in ~11 s, 194 MiB; test 10000 in
~4 s, 108 MiB). With data.num_workers > 0 grain pickles the source, arrays included, into every worker process.
Neither has text to train a tokenizer on (`corpus=None`: runs have no tokenizer).

"mosi" (Zadeh et al. 2016; utterance-level features of Poria et al. 2017), splits train 1447 / test 752:
  `text` float32 [100], `audio` float32 [73], `video` float32 [100], `label` int32 (0 negative, 1 positive),
  `index` int64 (the example's row in its split). Every modality is standardised with the mean / std of the
  train split (features constant on train stay centred, std taken as 1), as experiments/reports/mosi.py does.

"avmnist" (MNIST digits paired with FSDD spoken digits; see builders/avmnist.py for the protocol), splits
train 18000 / dev 2000 / test 10000, through `avmnist_preprocess`:
  `image` float32 [28, 28, 1], pixels / 255 (with `data.image_pca_energy` > 0: low-passed by the PCA of the train
  images keeping that share of the variance, `fit_image_pca`; with `data.image_noise_std` > 0: plus Gaussian noise),
  `audio` float32 [T, F, 1] log-mel spectrogram of the first `data.audio_num_samples` samples (zero-padded),
  T = 1 + audio_num_samples // data.audio_hop_length frames (time first) of F = `data.audio_n_mels` mel bands,
  after white noise at `data.audio_snr_db` dB SNR (None: clean), standardised with the scalar mean / std of the
  train spectrograms (`data.audio_standardize`); `label` int32 0-9, `index` int64.
  Noise is drawn once per example from (`data.noise_seed`, split, index): a fixed noisy data set, as the
  corrupted AV-MNIST of CentralNet / MultiBench is. Defaults: 1 s (8000 samples), hop 160, 40 mels -> [51, 40, 1].
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from mmjax.data import DatasetEntry
from mmjax.data.builders import avmnist as avmnist_builder
from mmjax.data.builders import mosi as mosi_builder
from mmjax.data.image_text import _cfg, prepared
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

_CACHE: dict[str, dict[str, np.ndarray]] = {}   # (data set, data dir, options, split) -> arrays; per process
SPLIT_IDS = {"train": 0, "dev": 1, "test": 2}


class ArraySource:
  """A grain random-access source over arrays with a leading example axis: example i = {k: arrays[k][i]} plus
  `index` (i, int64)."""

  def __init__(self, arrays: dict[str, np.ndarray], what: str = ""):
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise MmjaxError(f"{what}: arrays of different lengths {sizes}")
    self.arrays, self.what, self._n = arrays, what, next(iter(sizes.values()))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> dict:
    i = int(index)
    return {**{k: v[i] for k, v in self.arrays.items()}, "index": np.int64(i)}

  def __repr__(self) -> str:
    return f"ArraySource({self.what}, {self._n} examples, {sorted(self.arrays)})"


def _check_split(builder, split: str) -> None:
  if split not in builder.info.splits:
    raise MmjaxError(f"data set {builder.name!r} has no split {split!r}; it has {', '.join(builder.info.splits)} "
                     f"(config key evals.classification.split or evals.vqa.split)")


def _split_source(builder, split: str):
  _check_split(builder, split)
  return builder.as_data_source(split)


def _key(*parts: Any) -> str:
  return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _log(message: str) -> None:
  import jax
  if jax.process_index() == 0:
    print(f"mmjax: {message}", flush=True)


# ------------------------------------------------------------------------------------------------ MOSI
MOSI_MODALITIES = tuple(mosi_builder.DIMS)


def mosi_arrays(data_cfg, split: str) -> dict[str, np.ndarray]:
  """The standardised arrays of one MOSI split (see module docstring); cached per process."""
  b = prepared(data_cfg, "mosi")
  _check_split(b, split)
  key = _key("mosi", b.data_dir, split)
  if key not in _CACHE:
    stats_key = _key("mosi", b.data_dir, "train_stats")
    if stats_key not in _CACHE:
      train = _read_mosi(b, "train")
      _CACHE[stats_key] = {m: np.stack([train[m].mean(0), _safe_std(train[m])]) for m in MOSI_MODALITIES}
    stats, raw = _CACHE[stats_key], _read_mosi(b, split)
    out = {m: ((raw[m] - stats[m][0]) / stats[m][1]).astype(np.float32) for m in MOSI_MODALITIES}
    out["label"] = raw["label"]
    _CACHE[key] = out
  return _CACHE[key]


def _safe_std(x: np.ndarray) -> np.ndarray:
  sd = x.std(0)
  return np.where(sd < 1e-6, 1.0, sd)


def _read_mosi(builder, split: str) -> dict[str, np.ndarray]:
  src = _split_source(builder, split)
  rows = [src[i] for i in range(len(src))]
  out = {m: np.stack([r[m] for r in rows]).astype(np.float64) for m in MOSI_MODALITIES}
  out["label"] = np.asarray([r["label"] for r in rows], np.int32)
  return out


def mosi_source(data_cfg, split: str) -> ArraySource:
  return ArraySource(mosi_arrays(data_cfg, split), f"mosi {split}")


# ------------------------------------------------------------------------------------------------ AV-MNIST
AVMNIST_KEYS = {
    "image_pca_energy": 0.0,      # > 0: keep the leading PCA components (fitted on train) holding this share
    "image_noise_std": 0.0,       # std of Gaussian noise added to the [0, 1] images
    "audio_snr_db": None,         # white noise at this SNR (dB) before the spectrogram; None: clean
    "audio_num_samples": avmnist_builder.SAMPLE_RATE,   # waves zero-padded / cropped to this length (8 kHz)
    "audio_hop_length": 160,      # STFT hop (samples, 20 ms): T = 1 + audio_num_samples // hop frames
    "audio_n_mels": 40,           # mel bands F
    "audio_standardize": True,    # (x - mean) / std with the train spectrograms' scalar statistics
    "noise_seed": 0,              # noise of example i of split s: np.random.default_rng([noise_seed, s, i])
}


def avmnist_options(data_cfg) -> dict[str, Any]:
  opts = {k: _cfg(data_cfg, k, v) for k, v in AVMNIST_KEYS.items()}
  if not 0.0 <= float(opts["image_pca_energy"]) <= 1.0:
    raise MmjaxError(f"config key data.image_pca_energy={opts['image_pca_energy']} must be in [0, 1] "
                     f"(0: no PCA filter)")
  for k in ("audio_num_samples", "audio_hop_length", "audio_n_mels"):
    if int(opts[k]) < 1:
      raise MmjaxError(f"config key data.{k}={opts[k]} must be >= 1")
  return opts


def avmnist_arrays(data_cfg, split: str) -> dict[str, np.ndarray]:
  """The preprocessed arrays of one AV-MNIST split (see module docstring); cached per process. The train split
  is always preprocessed first (the PCA and the audio mean / std are fitted on it)."""
  b = prepared(data_cfg, "avmnist")
  _check_split(b, split)
  opts = avmnist_options(data_cfg)
  key = _key("avmnist", b.data_dir, sorted(opts.items()), split)
  if key in _CACHE:
    return _CACHE[key]
  fit_key = _key("avmnist", b.data_dir, sorted(opts.items()), "fit")
  if fit_key not in _CACHE:
    _CACHE[fit_key] = _avmnist_fit(b, opts)
  fit = _CACHE[fit_key]
  if split == "train" and "train" in fit:
    out = fit.pop("train")
  else:
    out = _avmnist_split(_read(b, split), split, opts, fit["pca"])
  if opts["audio_standardize"]:
    out["audio"] = ((out["audio"] - fit["audio_mean"]) / fit["audio_std"]).astype(np.float32)
  _CACHE[key] = out
  return out


def _avmnist_fit(builder, opts) -> dict[str, Any]:
  """Fits the train-split statistics: the image PCA and the spectrograms' scalar mean / std (the train split,
  preprocessed on the way, is kept under "train")."""
  examples = _read(builder, "train")
  pca = None
  if float(opts["image_pca_energy"]) > 0:
    images = np.stack([e["image"] for e in examples])
    pca = avmnist_builder.fit_image_pca(images, keep_energy=float(opts["image_pca_energy"]))
    _log(f"avmnist: image PCA fitted on {len(images)} train images: {pca.components.shape[1]} components hold "
         f"{100 * pca.kept_energy:.1f} % of the variance")
  train = _avmnist_split(examples, "train", opts, pca)
  fit: dict[str, Any] = {"pca": pca, "audio_mean": np.float32(0.0), "audio_std": np.float32(1.0), "train": train}
  if opts["audio_standardize"]:
    audio = train["audio"].astype(np.float64)
    fit.update(audio_mean=np.float32(audio.mean()), audio_std=np.float32(max(audio.std(), 1e-6)))
  return fit


def _read(builder, split: str) -> list[dict]:
  src = _split_source(builder, split)
  return [src[i] for i in range(len(src))]


def _avmnist_split(examples: list[dict], split: str, opts, pca) -> dict[str, np.ndarray]:
  n = len(examples)
  t0 = time.time()
  if n > 1000:
    _log(f"avmnist: preprocessing the {split} split ({n} examples: log-mel spectrograms in memory) ...")
  kwargs = dict(num_samples=int(opts["audio_num_samples"]), image_pca=pca,
                image_noise_std=float(opts["image_noise_std"]), audio_snr_db=opts["audio_snr_db"],
                hop_length=int(opts["audio_hop_length"]), n_mels=int(opts["audio_n_mels"]))
  noisy = bool(kwargs["image_noise_std"]) or kwargs["audio_snr_db"] is not None
  images = audio = labels = None
  for i, example in enumerate(examples):
    rng = np.random.default_rng([int(opts["noise_seed"]), SPLIT_IDS.get(split, 3), i]) if noisy else None
    ex = avmnist_builder.avmnist_preprocess(example, rng=rng, **kwargs)
    if images is None:
      images = np.empty((n, *ex["image"].shape), np.float32)
      audio = np.empty((n, *ex["audio"].shape, 1), np.float32)
      labels = np.empty((n,), np.int32)
    images[i], audio[i, ..., 0], labels[i] = ex["image"], ex["audio"], ex["label"]
  if n > 1000:
    _log(f"avmnist: {split} split ready in {time.time() - t0:.1f} s (audio {list(audio.shape[1:])}, "
         f"{(images.nbytes + audio.nbytes) / 2**20:.0f} MiB)")
  return {"image": images, "audio": audio, "label": labels}


def avmnist_source(data_cfg, split: str) -> ArraySource:
  return ArraySource(avmnist_arrays(data_cfg, split), f"avmnist {split}")


# ------------------------------------------------------------------------------------------------ registry
def as_inputs(example: dict, data_cfg) -> dict:
  """The sources above serve model inputs already: each example is passed on as it is."""
  return dict(example)


DATASETS.register("mosi")(DatasetEntry(source=mosi_source, preprocess=as_inputs))
DATASETS.register("avmnist")(DatasetEntry(source=avmnist_source, preprocess=as_inputs, config_keys=AVMNIST_KEYS))
