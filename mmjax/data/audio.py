"""Audio front end: power STFT, mel filterbank, log-mel spectrogram, MFCC, pad/crop (NumPy or JAX).

Every function takes a NumPy or a JAX array and returns the same kind: NumPy in (e.g. in a grain worker) ->
NumPy out, JAX array or tracer in -> JAX out, so the same code serves the input pipeline and `jax.jit` /
`jax.vmap` inside a model. Leading axes are batch axes: `wave [..., N]` -> `[..., frames, n_mels]`.
Sizes (`sample_rate`, `n_fft`, `hop_length`, `n_mels`, ...) are Python numbers (static under jit).

Conventions (those of librosa, with time before frequency in the outputs):
  * STFT: periodic Hann window of length `n_fft` (= `scipy.signal.get_window("hann", n_fft)`), frames centred
    on `t * hop_length` by padding `n_fft // 2` samples on both sides with `pad_mode` ("reflect" as librosa
    < 0.10 and torchaudio; librosa >= 0.10 defaults to "constant", i.e. zeros), so a wave of N samples gives
    `1 + N // hop_length` frames (`num_frames`). Power = |rfft|^2, no normalisation.
  * Mel scale: Slaney's (librosa's default, `htk=False`: linear below 1 kHz at 200/3 Hz per mel, logarithmic
    above with step log(6.4)/27) or HTK's (`htk=True`: 2595 log10(1 + f/700)); triangular filters between
    `n_mels + 2` points equally spaced in mel from `fmin` to `fmax`, each scaled to unit area
    (`norm="slaney"`: 2 / (f_{i+2} - f_i)) or peak 1 (`norm=None`). Same as `librosa.filters.mel`.
  * Log-mel: natural log of the mel power, floored at `amin` and, with `top_db`, at (max over the example's
    frames and mels) - top_db decibels, as `librosa.power_to_db` but in nats (dB = 10 / ln 10 * nats).
  * MFCC: orthonormal DCT-II of the log-mel over the mel axis, first `n_mfcc` coefficients
    (librosa's `mfcc` applies the same DCT to dB values, i.e. its coefficients are 10 / ln 10 times these).

Defaults suit 8 kHz speech (FSDD): n_fft 256 (32 ms), hop 80 (10 ms), 40 mels from 0 Hz to 4 kHz.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 8000
N_FFT = 256
HOP_LENGTH = 80
N_MELS = 40
N_MFCC = 13


def _xp(*arrays):
  """jax.numpy if any input is a JAX array (or tracer), else NumPy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def to_float(wave):
  """Integer PCM -> float32 in [-1, 1) (int16 / 32768, int32 / 2**31, uint8 -> (x - 128) / 128); floats -> float32."""
  xp = _xp(wave)
  wave = xp.asarray(wave)
  if wave.dtype == np.uint8:
    return (wave.astype(xp.float32) - 128.0) / 128.0
  if xp.issubdtype(wave.dtype, xp.integer):
    return wave.astype(xp.float32) / float(2 ** (8 * wave.dtype.itemsize - 1))
  return wave.astype(xp.float32)


def pad_or_crop(wave, length: int, *, align: str = "start", axis: int = -1):
  """Zero-pads or crops `wave` along `axis` to exactly `length` samples.

  align="start": keep the first `length` samples / pad at the end; "center": crop or pad equally on both
  sides (the extra sample, if any, at the end). Shape [..., N] -> [..., length]; dtype kept.
  """
  if align not in ("start", "center"):
    raise ValueError(f"align must be 'start' or 'center', got {align!r}")
  xp = _xp(wave)
  wave = xp.asarray(wave)
  axis = axis % wave.ndim
  n = wave.shape[axis]
  if n > length:
    start = (n - length) // 2 if align == "center" else 0
    index = [slice(None)] * wave.ndim
    index[axis] = slice(start, start + length)
    return wave[tuple(index)]
  if n < length:
    before = (length - n) // 2 if align == "center" else 0
    widths = [(0, 0)] * wave.ndim
    widths[axis] = (before, length - n - before)
    return xp.pad(wave, widths)
  return wave


def num_frames(num_samples, hop_length: int = HOP_LENGTH):
  """Frames of a centred STFT of `num_samples` samples: 1 + N // hop (works on ints and int arrays);
  use it to mask the frames of zero-padded waves, e.g. the valid frames of a `pad_or_crop`ed batch."""
  return 1 + num_samples // hop_length


@functools.lru_cache(maxsize=32)
def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window [n_fft] float32: 0.5 - 0.5 cos(2 pi n / n_fft)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft_power(wave, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, center: bool = True,
               pad_mode: str = "reflect"):
  """Power spectrogram |STFT|^2 of `wave [..., N]` (float, or integer PCM scaled by `to_float`).

  Returns float32 [..., frames, n_fft // 2 + 1] with frames = 1 + N // hop_length when `center`
  (else 1 + (N - n_fft) // hop_length). Frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2).
  """
  xp = _xp(wave)
  wave = to_float(wave)
  if center:
    widths = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    wave = xp.pad(wave, widths, mode=pad_mode)
  n = wave.shape[-1]
  if n < n_fft:
    raise ValueError(f"wave of {n} samples (after padding) is shorter than n_fft={n_fft}")
  frames = 1 + (n - n_fft) // hop_length
  index = hop_length * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]     # [frames, n_fft]
  framed = wave[..., index] * hann_window(n_fft)                                   # [..., frames, n_fft]
  spec = xp.fft.rfft(framed, axis=-1)
  return (spec.real ** 2 + spec.imag ** 2).astype(xp.float32)


stft = stft_power  # the name used in the design notes


def hz_to_mel(f, htk: bool = False):
  """Hz -> mel (Slaney's scale unless `htk`); NumPy arrays or floats."""
  f = np.asarray(f, dtype=np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + f / 700.0)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
  mel = f / f_sp
  return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def mel_to_hz(m, htk: bool = False):
  """mel -> Hz, the inverse of `hz_to_mel`."""
  m = np.asarray(m, dtype=np.float64)
  if htk:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False, norm: str | None = "slaney") -> np.ndarray:
  """Triangular mel filters as a float32 matrix [n_fft // 2 + 1, n_mels] (multiply a power spectrum on the right).

  Filter i rises from mel point i to i+1 and falls to i+2 of `n_mels + 2` points equally spaced in mel between
  `fmin` and `fmax` (default sample_rate / 2); `norm="slaney"` scales it to unit area, `None` leaves peak 1.
  Equals `librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=..., htk=..., norm=...).T`.
  (Cached: treat the result as read-only.)
  """
  if norm not in ("slaney", None):
    raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
  fmax = sample_rate / 2 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, sr={sample_rate}")
  fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]                          # [n_mels + 2, n_freqs]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))                 # [n_mels, n_freqs]
  if norm == "slaney":
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
  fb = np.ascontiguousarray(weights.T.astype(np.float32))
  fb.flags.writeable = False
  return fb


def mel_spectrogram(wave, sample_rate: int = SAMPLE_RATE, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                    n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
                    norm: str | None = "slaney", center: bool = True, pad_mode: str = "reflect"):
  """Mel power spectrogram: `wave [..., N]` -> float32 [..., frames, n_mels] (frames = 1 + N // hop_length)."""
  power = stft_power(wave, n_fft=n_fft, hop_length=hop_length, center=center, pad_mode=pad_mode)
  fb = mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax), htk, norm)
  return power @ fb


def log_mel_spectrogram(wave, sample_rate: int = SAMPLE_RATE, *, n_fft: int = N_FFT,
                        hop_length: int = HOP_LENGTH, n_mels: int = N_MELS, fmin: float = 0.0,
                        fmax: float | None = None, htk: bool = False, norm: str | None = "slaney",
                        center: bool = True, pad_mode: str = "reflect", amin: float = 1e-10,
                        top_db: float | None = 80.0):
  """Log-mel spectrogram: `wave [..., N]` -> float32 [..., frames, n_mels], natural log of the mel power.

  Values are floored at log(amin) and, if `top_db` is set, at the example's maximum (over its frames and mels)
  minus `top_db` decibels (= top_db * ln(10) / 10 nats), as `librosa.power_to_db(..., top_db=80)` does.
  Integer PCM input (e.g. FSDD's int16) is scaled to [-1, 1) first.
  """
  xp = _xp(wave)
  mel = mel_spectrogram(wave, sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin,
                        fmax=fmax, htk=htk, norm=norm, center=center, pad_mode=pad_mode)
  logmel = xp.log(xp.maximum(mel, xp.float32(amin)))
  if top_db is not None:
    floor = logmel.max(axis=(-2, -1), keepdims=True) - xp.float32(top_db * math.log(10.0) / 10.0)
    logmel = xp.maximum(logmel, floor)
  return logmel.astype(xp.float32)


@functools.lru_cache(maxsize=32)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Orthonormal DCT-II as a float32 matrix [n_in, n_out]: `x @ D` = `scipy.fft.dct(x, type=2, norm="ortho")[..., :n_out]`."""
  m = np.arange(n_in)[:, None]
  k = np.arange(n_out)[None, :]
  d = np.cos(np.pi * k * (2 * m + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
  d[:, 0] /= np.sqrt(2.0)
  d = np.ascontiguousarray(d.astype(np.float32))
  d.flags.writeable = False
  return d


def mfcc(wave, sample_rate: int = SAMPLE_RATE, *, n_mfcc: int = N_MFCC, **log_mel_kwargs):
  """MFCCs: orthonormal DCT-II over the mel axis of `log_mel_spectrogram(wave, sample_rate, **log_mel_kwargs)`.

  `wave [..., N]` -> float32 [..., frames, n_mfcc]. Coefficient 0 is sqrt(n_mels) times the frame's mean log-mel.
  """
  logmel = log_mel_spectrogram(wave, sample_rate, **log_mel_kwargs)
  return logmel @ dct_matrix(logmel.shape[-1], n_mfcc)

