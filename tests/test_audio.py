"""mmjax.data.audio against slow NumPy references written out here (per-frame DFT loop, mel formulas, DCT sum)."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data import audio


# ---------------------------------------------------------------- slow references (written independently)
def ref_hz_to_mel_slaney(f):
  # Slaney's Auditory Toolbox: 3 mel per 200 Hz below 1 kHz; 27 mel per factor 6.4 above.
  return f * 3.0 / 200.0 if f < 1000.0 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def ref_mel_to_hz_slaney(m):
  return m * 200.0 / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def ref_hz_to_mel_htk(f):
  return 2595.0 * math.log10(1.0 + f / 700.0)


def ref_mel_to_hz_htk(m):
  return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def ref_filterbank(sr, n_fft, n_mels, fmin, fmax, htk=False, area_norm=True):
  """Loop over filters and FFT bins: triangle from point i to i+2 (peak at i+1), optionally of unit area."""
  to_mel, to_hz = (ref_hz_to_mel_htk, ref_mel_to_hz_htk) if htk else (ref_hz_to_mel_slaney, ref_mel_to_hz_slaney)
  lo, hi = to_mel(fmin), to_mel(fmax)
  pts = [to_hz(lo + (hi - lo) * j / (n_mels + 1)) for j in range(n_mels + 2)]
  n_freqs = n_fft // 2 + 1
  fb = np.zeros((n_freqs, n_mels))
  for i in range(n_mels):
    left, centre, right = pts[i], pts[i + 1], pts[i + 2]
    for k in range(n_freqs):
      f = k * sr / n_fft
      if left < f <= centre:
        w = (f - left) / (centre - left)
      elif centre < f < right:
        w = (right - f) / (right - centre)
      else:
        w = 0.0
      fb[k, i] = w * (2.0 / (right - left) if area_norm else 1.0)
  return fb, pts


def ref_power_spectrogram(x, n_fft, hop):
  """Centred frames (reflect padding), periodic Hann, explicit DFT per frame."""
  pad = n_fft // 2
  n = len(x)
  # reflect padding written out: x[-1 - j] mirrored without repeating the edge sample
  padded = np.concatenate([x[1:pad + 1][::-1], x, x[n - pad - 1:n - 1][::-1]])
  window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * j / n_fft) for j in range(n_fft)])
  frames = []
  t = 0
  while t * hop + n_fft <= len(padded):
    seg = padded[t * hop:t * hop + n_fft] * window
    row = []
    for k in range(n_fft // 2 + 1):
      phase = np.exp(-2j * np.pi * k * np.arange(n_fft) / n_fft)
      row.append(abs(np.sum(seg * phase)) ** 2)
    frames.append(row)
    t += 1
  return np.array(frames)


def ref_dct_ortho(x, n_out):
  n = x.shape[-1]
  out = np.zeros(x.shape[:-1] + (n_out,))
  for k in range(n_out):
    scale = math.sqrt(1.0 / n) if k == 0 else math.sqrt(2.0 / n)
    out[..., k] = scale * sum(x[..., m] * math.cos(math.pi * k * (2 * m + 1) / (2 * n)) for m in range(n))
  return out


def _speechlike(n, sr=8000, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(n) / sr
  x = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.2 * np.sin(2 * np.pi * 900 * t) + 0.05 * rng.standard_normal(n)
  return x * np.hanning(n)


# ---------------------------------------------------------------- tests
def test_mel_scale_known_values():
  np.testing.assert_allclose(audio.hz_to_mel(1000.0), 15.0, rtol=1e-12)
  np.testing.assert_allclose(audio.hz_to_mel(440.0), 6.6, rtol=1e-12)          # linear region: 440 / (200/3)
  np.testing.assert_allclose(audio.hz_to_mel(6400.0), 42.0, rtol=1e-12)        # 15 + 27 (one factor of 6.4)
  np.testing.assert_allclose(audio.hz_to_mel(1000.0, htk=True), 1000.0, rtol=2e-4)
  f = np.array([0.0, 50.0, 999.0, 1000.0, 2500.0, 4000.0])
  for htk in (False, True):
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(f, htk), htk), f, atol=1e-9)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(8000, 256, 40, 0.0, None), (16000, 400, 64, 60.0, 7600.0)])
def test_filterbank_matches_reference(sr, n_fft, n_mels, fmin, fmax, htk):
  fb = audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk)
  ref, _ = ref_filterbank(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax, htk)
  assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == np.float32
  np.testing.assert_allclose(fb, ref, rtol=1e-5, atol=1e-8)
  assert (fb.max(axis=0) > 0).all(), "an empty mel filter"


def test_filterbank_unit_area_and_peak_one():
  # Slaney norm: each triangle has unit area in Hz (Riemann sum over 1 Hz bins of a fine FFT).
  sr, n_fft = 8000, 8000
  fb = audio.mel_filterbank(sr, n_fft, 20, 100.0, 3900.0)
  np.testing.assert_allclose(fb.sum(axis=0) * sr / n_fft, 1.0, rtol=2e-3)
  peak = audio.mel_filterbank(sr, n_fft, 20, 100.0, 3900.0, norm=None)
  np.testing.assert_allclose(peak.max(axis=0), 1.0, atol=1e-2)   # bins lie within 0.5 Hz of each peak


def test_stft_power_matches_dft_loop():
  x = _speechlike(1000).astype(np.float32)
  got = audio.stft_power(x, n_fft=64, hop_length=20)
  ref = ref_power_spectrogram(x.astype(np.float64), 64, 20)
  assert got.shape == ref.shape == (1 + 1000 // 20, 33)
  assert audio.num_frames(1000, 20) == got.shape[0]
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.max())


def test_stft_parseval():
  # sum_t sum_n (w x)^2 = (1/N) sum_t sum_k |X_k|^2 over the full spectrum (bins 1..N/2-1 counted twice).
  x = np.random.default_rng(1).standard_normal(700).astype(np.float32)
  p = audio.stft_power(x, n_fft=128, hop_length=32, center=False)
  weights = np.full(65, 2.0)
  weights[[0, -1]] = 1.0
  energy_freq = (p * weights).sum() / 128
  frames = np.stack([x[t * 32:t * 32 + 128] for t in range(p.shape[0])]) * audio.hann_window(128)
  np.testing.assert_allclose(energy_freq, (frames.astype(np.float64) ** 2).sum(), rtol=1e-4)


def test_log_mel_and_mfcc_match_reference():
  sr, n_fft, hop, n_mels = 8000, 256, 80, 40
  x = _speechlike(2400)
  wave16 = np.round(x * 20000).astype(np.int16)
  got = audio.log_mel_spectrogram(wave16, sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, top_db=None)
  power = ref_power_spectrogram(wave16.astype(np.float64) / 32768.0, n_fft, hop)
  fb, _ = ref_filterbank(sr, n_fft, n_mels, 0.0, sr / 2)
  ref = np.log(np.maximum(power @ fb, 1e-10))
  assert got.shape == (1 + 2400 // hop, n_mels) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, atol=2e-3)
  got_mfcc = audio.mfcc(wave16, sr, n_mfcc=13, top_db=None)
  np.testing.assert_allclose(got_mfcc, ref_dct_ortho(ref, 13), atol=1e-2)


def test_top_db_floor():
  x = _speechlike(1600)
  x[:800] = 0.0                                  # silence -> would sit at log(amin) without top_db
  lm = audio.log_mel_spectrogram(x, top_db=80.0)
  raw = audio.log_mel_spectrogram(x, top_db=None)
  floor = raw.max() - 80.0 * math.log(10) / 10
  np.testing.assert_allclose(lm, np.maximum(raw, floor), rtol=1e-6)
  assert raw.min() < floor - 1 and np.isclose(lm.min(), floor, rtol=1e-6)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("freq", [300.0, 1000.0, 2750.0])
def test_pure_tone_lands_in_its_mel_bin(freq, htk):
  sr = 8000
  t = np.arange(sr) / sr
  lm = audio.log_mel_spectrogram(np.sin(2 * np.pi * freq * t), sr, htk=htk, norm=None)
  _, pts = ref_filterbank(sr, 256, 40, 0.0, sr / 2, htk)
  centres = np.array(pts[1:-1])
  # the tone's energy lands in the one or two filters whose triangles contain it, highest where the centre is nearest
  best = int(np.argmax(lm[5:-5].mean(axis=0)))
  assert best == int(np.argmin(np.abs(centres - freq))), (best, centres[best], freq)


def test_pad_or_crop():
  x = np.arange(1, 8, dtype=np.int16)
  np.testing.assert_array_equal(audio.pad_or_crop(x, 4), [1, 2, 3, 4])
  np.testing.assert_array_equal(audio.pad_or_crop(x, 10), [1, 2, 3, 4, 5, 6, 7, 0, 0, 0])
  np.testing.assert_array_equal(audio.pad_or_crop(x, 4, align="center"), [2, 3, 4, 5])
  np.testing.assert_array_equal(audio.pad_or_crop(x, 10, align="center"), [0, 1, 2, 3, 4, 5, 6, 7, 0, 0])
  assert audio.pad_or_crop(x, 10).dtype == np.int16
  y = audio.pad_or_crop(jnp.ones((2, 5, 3)), 7, axis=1)
  assert isinstance(y, jax.Array) and y.shape == (2, 7, 3) and float(y.sum()) == 30.0


def test_to_float_scaling():
  np.testing.assert_array_equal(audio.to_float(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5])
  np.testing.assert_array_equal(audio.to_float(np.array([0, 128, 192], np.uint8)), [-1.0, 0.0, 0.5])


def test_numpy_in_numpy_out_jit_vmap_batched():
  rng = np.random.default_rng(0)
  waves = (rng.standard_normal((2, 3, 1200)) * 3000).astype(np.int16)
  ref = np.stack([[audio.log_mel_spectrogram(w) for w in row] for row in waves])
  assert isinstance(ref, np.ndarray) and ref.shape == (2, 3, 16, 40)
  batched = audio.log_mel_spectrogram(waves)
  assert isinstance(batched, np.ndarray)
  np.testing.assert_allclose(batched, ref, atol=1e-4)
  jitted = jax.jit(audio.log_mel_spectrogram, static_argnames=("n_mels",))(jnp.asarray(waves), n_mels=40)
  chex.assert_shape(jitted, (2, 3, 16, 40))
  np.testing.assert_allclose(np.asarray(jitted), ref, atol=1e-3)
  vm = jax.jit(jax.vmap(jax.vmap(lambda w: audio.mfcc(w, n_mfcc=20))))(jnp.asarray(waves))
  chex.assert_shape(vm, (2, 3, 16, 20))
  np.testing.assert_allclose(np.asarray(vm), audio.mfcc(waves, n_mfcc=20), atol=1e-2)


def test_mel_spectrogram_gradient():
  # The mel power is quadratic in the wave, so a central difference is exact up to float rounding.
  x = jnp.asarray(_speechlike(800), jnp.float32)
  v = jnp.asarray(np.random.default_rng(2).standard_normal(800), jnp.float32)
  f = lambda w: audio.mel_spectrogram(w).sum()
  g = jax.grad(f)(x)
  h = 1e-2
  fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
  np.testing.assert_allclose(float(jnp.vdot(g, v)), float(fd), rtol=1e-3)
