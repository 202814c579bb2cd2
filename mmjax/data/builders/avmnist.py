"""AV-MNIST: each MNIST digit image paired with a spoken recording of the same digit (FSDD).

Protocol here (deterministic, built from `mnist/` and `fsdd/` under one manual dir, see `../shared/data`):

  split  images                                          recordings (FSDD index)      size (real files)
  train  MNIST 20k subset `x_train.npz` rows 0..17999     5..49 except dev's: 10..49   18,000  (2,400 recordings)
  dev    MNIST 20k subset rows 18000..19999 (last tenth)  5..9                         2,000  (300 recordings)
  test   official MNIST test set (t10k IDX), all 10,000   0..4 (FSDD's test split)     10,000  (300 recordings)

Image and recording pools of the three splits are disjoint (FSDD's own split is by recording index, not by
speaker: all 6 speakers appear in every split). Pairing: the images of digit d of a split, in file order, take
the recordings of digit d of that split in a seeded random order, a new permutation after every pass over
the pool (`pair_recordings`; seed 0/1/2 for train/dev/test), so every recording is reused about equally often
(~7.5x in train, ~6.7x in dev, ~33x in test). Pairs are part of the data set's version. The split "train+dev"
(`builder.as_data_source("train+dev")`) is the whole 20k subset.

Each example: `image` uint8 [28, 28, 1], `audio` int16 [n] (8 kHz mono PCM, n = 1148..18262 samples, mean 3499),
`label` 0-9, `audio_id` ("7_jackson_32"), `speaker`, `image_index` (row in its MNIST file).

Relation to the published AV-MNIST (CentralNet, Vielzeuf et al. 2018; reused by MultiBench, Liang et al.
2021): they pair MNIST with FSDD too, but use the full 60k MNIST training set (MultiBench's release: 55k train /
5k validation / 10k test) and make both modalities harder: images keep only 25 % of their PCA energy ("75 % of
the energy removed") and audio is mixed with background noise and turned into 112x112 spectrograms. The raw
data here do not include the full 60k MNIST or their noise recordings, so numbers are not comparable with
theirs. `avmnist_preprocess` offers the analogous corruptions: `image_pca` (a projection fitted by
`fit_image_pca` on train images: reconstruction from the fewest leading principal components that hold at
least `keep_energy` of the variance - our reading of "removing 75 % of the energy"; on the 20k subset, 0.25
keeps 4 components holding 28.7 %) and `audio_snr_db` (additive white Gaussian noise at a given SNR, a
stand-in for their noise), then returns float32 images and fixed-size log-mel spectrograms.

Cite: Vielzeuf, Lechervy, Pateux, Jurie. "CentralNet: a Multilayer Approach for Multimodal Fusion."
ECCV Workshops 2018. Liang et al. "MultiBench: Multiscale Benchmarks for Multimodal Representation Learning."
NeurIPS Datasets and Benchmarks 2021. MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0). FSDD (Jackson et al.; CC BY-SA 4.0).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import pathlib
import re
import wave
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import audio as audio_lib
from mmjax.data.builders import RAW_ENV, BadInput, MmjaxBuilder, open_zip, register
from mmjax.errors import MmjaxError

SAMPLE_RATE = 8000
X_TRAIN, Y_TRAIN = "mnist/x_train.npz", "mnist/y_train.npz"
T10K_IMAGES, T10K_LABELS = "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"
FSDD_ZIP = "fsdd/recordings.zip"
RECORDING_INDICES = {"train": range(10, 50), "dev": range(5, 10), "test": range(0, 5)}
PAIRING_SEEDS = {"train": 0, "dev": 1, "test": 2}
DEV_FRACTION = 10          # dev = the last 1/10 of the 20k subset
_MEMBER = re.compile(r"(?:.*/)?(\d)_([A-Za-z]+)_(\d+)\.wav$")


# ---------------------------------------------------------------------------------------------- raw readers
def read_npz(path: pathlib.Path, shape_tail: tuple[int, ...]) -> np.ndarray:
  """The single uint8 array `arr_0` of an .npz with shape [N, *shape_tail]; BadInput names the file."""
  try:
    with np.load(path) as f:
      arr = f["arr_0"]
  except Exception as e:
    raise BadInput(str(path), f"unreadable .npz ({type(e).__name__}: {e}); expected one uint8 array 'arr_0'") from None
  if arr.dtype != np.uint8 or arr.shape[1:] != shape_tail:
    raise BadInput(str(path), f"array arr_0 is {arr.dtype}{list(arr.shape)}, expected uint8[N, "
                              f"{', '.join(map(str, shape_tail))}]".replace("N, ]", "N]"))
  return arr


def read_idx(path: pathlib.Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
  """A gzipped IDX file (MNIST format) of uint8 [N, *shape_tail]; BadInput names the file."""
  try:
    b = gzip.open(path).read()
  except Exception as e:
    raise BadInput(str(path), f"unreadable gzip ({type(e).__name__}: {e})") from None
  if len(b) < 4 or int.from_bytes(b[:4], "big") != magic:
    raise BadInput(str(path), f"bad IDX magic {b[:4].hex()}, expected {magic:08x}")
  n_dims = b[3]
  dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims)]
  offset = 4 + 4 * n_dims
  if tuple(dims[1:]) != shape_tail or len(b) - offset != int(np.prod(dims)):
    raise BadInput(str(path), f"IDX header says {dims} ({int(np.prod(dims))} bytes), file holds "
                              f"{len(b) - offset} bytes; expected [N, {', '.join(map(str, shape_tail))}]")
  return np.frombuffer(b, np.uint8, offset=offset).reshape(dims)


def check_labels(labels: np.ndarray, n_images: int, path) -> np.ndarray:
  if labels.ndim != 1 or len(labels) != n_images:
    raise BadInput(str(path), f"{labels.shape} labels for {n_images} images")
  bad = np.flatnonzero(labels > 9)
  if len(bad):
    raise BadInput(f"{path}:{bad[0]}", f"label {labels[bad[0]]} is not a digit 0-9")
  return labels.astype(np.int64)


def read_wav(data: bytes, where: str) -> np.ndarray:
  """Checks a FSDD recording (RIFF/WAVE, PCM 16-bit, mono, 8 kHz, complete) -> int16 [n]; BadInput names `where`."""
  if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
    raise BadInput(where, "not a RIFF/WAVE file")
  try:
    with wave.open(io.BytesIO(data)) as w:
      params = w.getparams()
      frames = w.readframes(params.nframes)
  except (wave.Error, EOFError, ValueError) as e:
    raise BadInput(where, f"unreadable WAV ({type(e).__name__}: {e})") from None
  if (params.nchannels, params.sampwidth, params.framerate) != (1, 2, SAMPLE_RATE):
    raise BadInput(where, f"WAV is {params.nchannels} channel(s), {8 * params.sampwidth}-bit, {params.framerate} Hz; "
                          f"expected mono 16-bit PCM at {SAMPLE_RATE} Hz")
  if params.nframes == 0 or len(frames) != 2 * params.nframes:
    raise BadInput(where, f"truncated WAV: header says {params.nframes} samples, data holds {len(frames) // 2}")
  return np.frombuffer(frames, "<i2").astype(np.int16)


def recording_pools(names: list[str], split: str, where: str) -> dict[int, list[str]]:
  """Zip member names -> {digit: sorted members of `split`'s recording indices}; BadInput names a bad member."""
  pools: dict[int, list[str]] = {d: [] for d in range(10)}
  for name in names:
    if not name.lower().endswith(".wav"):
      continue
    m = _MEMBER.match(name)
    if not m:
      raise BadInput(f"{where}:{name}", "WAV name is not '{digit}_{speaker}_{index}.wav'")
    if int(m.group(3)) in RECORDING_INDICES[split]:
      pools[int(m.group(1))].append(name)
  return {d: sorted(p) for d, p in pools.items()}


def pair_recordings(labels: np.ndarray, pools: dict[int, list[str]], seed: int) -> list[str]:
  """For each image (in order), the recording of its digit: the images of digit d take digit d's pool in a
  seeded random order, re-permuted after each pass. Deterministic in (labels, pools, seed)."""
  rng = np.random.default_rng(seed)
  out: list[str] = [""] * len(labels)
  for d in range(10):
    idx = np.flatnonzero(labels == d)
    if not len(idx):
      continue
    pool = pools[d]
    if not pool:
      raise MmjaxError(f"avmnist: no recording of digit {d} for the images of this split; the FSDD zip must hold "
                       f"recordings/{d}_<speaker>_<index>.wav for every digit and split")
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-len(idx) // len(pool)))])
    for i, k in zip(idx, order):
      out[i] = pool[k]
  return out


# ---------------------------------------------------------------------------------------------- builder
@register("avmnist")
class AvMnist(MmjaxBuilder):
  VERSION = tfds.core.Version("1.0.0")
  FOLDER = ""                  # the manual dir is a root holding mnist/ and fsdd/
  REQUIRED_FILES = (X_TRAIN, Y_TRAIN, T10K_IMAGES, T10K_LABELS, FSDD_ZIP)
  DESCRIPTION = ("AV-MNIST: MNIST digits paired with FSDD spoken digits (8 kHz) of the same class; "
                 "train 18000 / dev 2000 (from a 20k MNIST training subset) / test 10000 (MNIST t10k).")
  HOMEPAGE = "https://github.com/Jakobovski/free-spoken-digit-dataset"
  CITATION = ("Vielzeuf, Lechervy, Pateux, Jurie. CentralNet: a Multilayer Approach for Multimodal Fusion. "
              "ECCV Workshops 2018.")
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Use a manual dir holding mnist/ and fsdd/ as in ../shared/data "
                                  "(see their README.md files).")

  def check_raw_dir(self) -> None:
    if not self.raw_dir.is_dir():
      raise MmjaxError(f"{self.name}: manual dir {self.raw_dir} does not exist; pass --manual_dir DIR (a folder "
                       f"holding mnist/ and fsdd/) or set {RAW_ENV} to such a folder")
    super().check_raw_dir()

  def _features(self):
    return tfds.features.FeaturesDict({
        # stored as raw bytes, not as an int64 list of values: several times faster to write, and smaller
        "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES),
        "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        "audio_id": tfds.features.Text(),
        "speaker": tfds.features.Text(),
        "image_index": tfds.features.Scalar(dtype=np.int32),
    })

  def _split_generators(self, dl_manager):
    raw = self.raw_dir
    x = read_npz(raw / X_TRAIN, (28, 28))
    y = check_labels(read_npz(raw / Y_TRAIN, ()), len(x), raw / Y_TRAIN)
    xt = read_idx(raw / T10K_IMAGES, 0x803, (28, 28))
    yt = check_labels(read_idx(raw / T10K_LABELS, 0x801, ()), len(xt), raw / T10K_LABELS)
    n_dev = len(x) // DEV_FRACTION
    cut = len(x) - n_dev
    images = {"train": (x[:cut], y[:cut], 0), "dev": (x[cut:], y[cut:], cut), "test": (xt, yt, 0)}
    return {split: self._generate_examples(split, *images[split]) for split in ("train", "dev", "test")}

  def _generate_examples(self, split, images, labels, first_index):
    zip_path = self.raw_dir / FSDD_ZIP
    zf = open_zip(zip_path)
    with zf:
      pairs = pair_recordings(labels, recording_pools(zf.namelist(), split, str(zip_path)), PAIRING_SEEDS[split])
      cache: dict[str, np.ndarray | BadInput] = {}
      for i in self.limited(list(range(len(labels)))):
        with self.example_guard():
          member = pairs[i]
          if member not in cache:
            try:
              cache[member] = read_wav(_read_member(zf, member, zip_path), f"{zip_path}:{member}")
            except BadInput as e:
              cache[member] = e
          wav = cache[member]
          if isinstance(wav, BadInput):
            raise wav
          digit, speaker, _ = _MEMBER.match(member).groups()
          audio_id = member.rpartition("/")[2][:-4]
          yield f"{split}_{i:05d}", {"image": images[i][:, :, None], "audio": wav, "label": int(labels[i]),
                                     "audio_id": audio_id, "speaker": speaker,
                                     "image_index": first_index + i}

  @classmethod
  def make_fake_raw(cls, root, n: int = 40, seed: int = 0) -> pathlib.Path:
    """Writes a tiny fake manual dir in the real format under `root` (returned): `mnist/` with n training and
    n t10k images (a noisy per-digit template, so the data are learnable) and `fsdd/recordings.zip` with
    2 speakers x 10 digits x recording indices {0, 1, 5, 6, 10, 11} (a per-digit tone + noise, 0.15-0.3 s)."""
    root = pathlib.Path(root)
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    (root / "fsdd").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 28, 28)) * (rng.uniform(size=(10, 28, 28)) < 0.3)

    def images(labels):
      noisy = templates[labels] + rng.normal(0, 30, (len(labels), 28, 28))
      return np.clip(noisy, 0, 255).astype(np.uint8)

    y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    np.savez(root / X_TRAIN, images(y))
    np.savez(root / Y_TRAIN, y)
    np.savez(root / "mnist/x_test.npz", images(y[: n // 2]))
    np.savez(root / "mnist/y_test.npz", y[: n // 2])
    yt = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    with gzip.open(root / T10K_IMAGES, "wb") as f:
      f.write(bytes.fromhex("00000803") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + images(yt).tobytes())
    with gzip.open(root / T10K_LABELS, "wb") as f:
      f.write(bytes.fromhex("00000801") + n.to_bytes(4, "big") + yt.tobytes())
    with zipfile.ZipFile(root / FSDD_ZIP, "w", zipfile.ZIP_STORED) as zf:
      for speaker in ("alice", "bob"):
        for digit in range(10):
          for index in (0, 1, 5, 6, 10, 11):
            t = np.arange(int(rng.integers(1200, 2400))) / SAMPLE_RATE
            x = 0.4 * np.sin(2 * np.pi * (300 + 150 * digit) * t) + 0.05 * rng.standard_normal(len(t))
            pcm = np.round(x * np.hanning(len(t)) * 32767).astype("<i2")
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
              w.setnchannels(1)
              w.setsampwidth(2)
              w.setframerate(SAMPLE_RATE)
              w.writeframes(pcm.tobytes())
            zf.writestr(f"recordings/{digit}_{speaker}_{index}.wav", buf.getvalue())
    return root


def _read_member(zf: zipfile.ZipFile, member: str, zip_path) -> bytes:
  try:
    return zf.read(member)
  except (zipfile.BadZipFile, OSError, EOFError) as e:   # bad CRC, truncated archive
    raise BadInput(f"{zip_path}:{member}", f"cannot read member ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------- pipeline side
@dataclasses.dataclass(frozen=True)
class ImagePca:
  """A PCA low-pass of images: x -> mean + (x - mean) C C^T with C [D, k] orthonormal, D = H*W*C (784 for
  MNIST), in [0, 1] pixel units."""
  mean: np.ndarray            # [D] float32
  components: np.ndarray      # [D, k] float32
  kept_energy: float          # fraction of the (centred) variance the k components hold

  def apply(self, images: np.ndarray) -> np.ndarray:
    """uint8 or float [..., H, W, C] (uint8 scaled to [0, 1]) -> float32 [..., H, W, C]."""
    x = np.asarray(images, np.float32)
    if np.asarray(images).dtype == np.uint8:
      x = x / 255.0
    flat = x.reshape(*x.shape[:-3], -1)
    if flat.shape[-1] != self.mean.size:
      raise MmjaxError(f"ImagePca was fitted on images of {self.mean.size} pixels, got shape {x.shape}")
    flat = flat - self.mean
    out = (flat @ self.components) @ self.components.T + self.mean
    return out.reshape(x.shape).astype(np.float32)


def fit_image_pca(images: np.ndarray, keep_energy: float = 0.25) -> ImagePca:
  """Fits `ImagePca` on images [N, H, W(, C)] keeping the fewest leading components whose share of the variance
  reaches `keep_energy` (0.25: "75 % of the energy removed", as in CentralNet's AV-MNIST). Fit on train only."""
  if not 0 < keep_energy <= 1:
    raise MmjaxError(f"keep_energy must be in (0, 1], got {keep_energy}")
  x = np.asarray(images, np.float64).reshape(len(images), -1) / 255.0
  mean = x.mean(axis=0)
  centred = x - mean
  c32 = centred.astype(np.float32)
  evals, evecs = np.linalg.eigh((c32.T @ c32).astype(np.float64))   # [D], [D, D], ascending
  evals, evecs = np.maximum(evals[::-1], 0.0), evecs[:, ::-1]
  share = np.cumsum(evals) / np.sum(evals)
  k = int(np.searchsorted(share, keep_energy - 1e-12) + 1)
  return ImagePca(mean.astype(np.float32), np.ascontiguousarray(evecs[:, :k].astype(np.float32)), float(share[k - 1]))


def add_white_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
  """wave [..., n] float -> wave + N(0, s^2) with s^2 = mean(wave^2) / 10^(snr_db / 10) (per wave), float32."""
  wave = np.asarray(wave, np.float32)
  power = np.mean(wave.astype(np.float64) ** 2, axis=-1, keepdims=True)
  std = np.sqrt(power / 10.0 ** (snr_db / 10.0))
  return (wave + std * rng.standard_normal(wave.shape)).astype(np.float32)


def avmnist_preprocess(example: dict, *, rng: np.random.Generator | None = None, num_samples: int = SAMPLE_RATE,
                       image_pca: ImagePca | None = None, image_noise_std: float = 0.0,
                       audio_snr_db: float | None = None, **log_mel_kwargs) -> dict:
  """An AV-MNIST example -> model inputs (NumPy; use in a grain `map`).

  Returns `image` float32 [28, 28, 1] in [0, 1] (PCA-filtered by `image_pca` if given, plus Gaussian noise of
  std `image_noise_std`, not clipped), `audio` float32 [frames, n_mels] log-mel (`audio.log_mel_spectrogram`,
  8 kHz defaults: frames = 1 + num_samples // 80 = 101 for 1 s) of the wave zero-padded/cropped to
  `num_samples` after adding white Gaussian noise at `audio_snr_db` dB SNR (relative to the recording's mean
  power), `audio_frames` int32 (frames not coming from padding only) and `label` int32.
  Noise needs `rng` (a seeded np.random.Generator, e.g. per example index for a fixed noisy test set).
  """
  if (image_noise_std or audio_snr_db is not None) and rng is None:
    raise MmjaxError("avmnist_preprocess: image_noise_std / audio_snr_db need rng=np.random.default_rng(seed)")
  image = np.asarray(example["image"])
  image = image_pca.apply(image) if image_pca is not None else image.astype(np.float32) / 255.0
  if image_noise_std:
    image = image + rng.normal(0.0, image_noise_std, image.shape).astype(np.float32)
  wave_ = audio_lib.to_float(np.asarray(example["audio"]))
  if audio_snr_db is not None:
    wave_ = add_white_noise(wave_, audio_snr_db, rng)
  n = len(wave_)
  wave_ = audio_lib.pad_or_crop(wave_, num_samples)
  hop = log_mel_kwargs.get("hop_length", audio_lib.HOP_LENGTH)
  logmel = audio_lib.log_mel_spectrogram(wave_, SAMPLE_RATE, **log_mel_kwargs)
  frames = min(int(audio_lib.num_frames(min(n, num_samples), hop)), logmel.shape[0])
  return {"image": image.astype(np.float32), "audio": logmel, "audio_frames": np.int32(frames),
          "label": np.int32(example["label"])}
