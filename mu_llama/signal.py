"""Signal processing shared by every feature extractor: STFT framing, windows, mel / triangular / chroma filterbanks,
DCT (MFCC), onset envelope and peaks, autocorrelation and tempo profile.

Callers: the emotion features (mu_llama.emotion.features), the fact tagger's timbre features (mu_llama.tagger), the
descriptor hidden state (mu_llama.encoders.descriptors), the encoder recipe's log-mel targets (recipes/targets.py),
musicnn's input (recipes/musicnn.py), the demo's and the corpus report's spectrograms (plots.py, corpus/stats.py).
Trained estimators and the shipped model read these numbers, so where the callers differed (window, framing, mel
scale, normalisation, precision) the difference is a parameter here, not a change in their outputs:

- window: "hann" is numpy's symmetric np.hanning (every numpy caller but musicnn); "hann_periodic" is the DFT-even
  window of librosa and torch.stft (musicnn, the descriptors).
- framing: frame t covers samples [start + t hop, start + t hop + n_fft), zeros outside the signal. start None centres
  frame t on sample t hop (librosa's center=True with zero padding); the descriptors and the encoder targets centre
  frames on the encoder's own grid instead.
- xp: the array library a constant matrix is built with. numpy computes in float64 and returns float32; xp=torch
  computes in torch's float32, as the descriptor encoder (and so the shipped model) always has.

numpy only at import; torch is used when a caller hands in a tensor or xp=torch. Compared with librosa where both
compute the same thing, and pinned on the bundled clips: tests/test_signal.py.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mu_llama.errors import ConfigError

WINDOWS = ("hann", "hann_periodic")
MEL_SCALES = ("htk", "slaney")
MEL_NORMS = (None, "slaney")


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _choice(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(repr, valid))}")


# ------------------------------------------------------------------------------------------------ STFT


def get_window(name: str, n: int) -> np.ndarray:
    """(n,) float32 Hann window: "hann" symmetric (np.hanning), "hann_periodic" 0.5 - 0.5 cos(2 pi k / n)."""
    _choice("window", name, WINDOWS)
    if name == "hann":
        return np.hanning(n).astype(np.float32)
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def frame_count(n: int, n_fft: int, hop: int) -> int:
    """Number of centred frames of n samples: 1 + n // hop for an even n_fft (librosa's center=True)."""
    return 1 + max(0, n + 2 * (n_fft // 2) - n_fft) // hop


def _span(n: int, n_fft: int, hop: int, start: int | None, count: int | None) -> tuple[int, int, int, int, int]:
    """(count, lo, hi, left, right): samples [lo, hi) of an n-sample signal that `count` frames from `start` read (the
    defaults: centred frames), and the zeros around them: pad(x[lo:hi], (left, right)) holds every frame."""
    start = -(n_fft // 2) if start is None else start
    count = frame_count(n, n_fft, hop) if count is None else count
    stop = start + (max(count, 1) - 1) * hop + n_fft
    lo = min(max(start, 0), n)
    hi = min(max(stop, lo), n)
    left = lo - start if hi > lo else stop - start
    return count, lo, hi, left, stop - start - left - (hi - lo)


def frame(x: np.ndarray, n_fft: int, hop: int, *, start: int | None = None, count: int | None = None) -> np.ndarray:
    """(..., n) -> (..., count, n_fft) frames (a view of a zero-padded copy of the span they read): frame t covers
    samples [start + t hop, start + t hop + n_fft), zeros outside the signal. start None: -(n_fft // 2), frames centred
    on t hop; count None: frame_count(n, n_fft, hop)."""
    x = np.asarray(x)
    count, lo, hi, left, right = _span(x.shape[-1], n_fft, hop, start, count)
    if count <= 0:
        return np.zeros((*x.shape[:-1], 0, n_fft), x.dtype)
    seg = np.pad(x[..., lo:hi], [(0, 0)] * (x.ndim - 1) + [(left, right)])
    return np.lib.stride_tricks.sliding_window_view(seg, n_fft, axis=-1)[..., ::hop, :]


def spectrogram(x, n_fft: int, hop: int, *, power: float = 1.0, window: str = "hann", start: int | None = None,
                count: int | None = None):
    """(..., n) -> (..., n_fft // 2 + 1, T) |STFT| ** power, frames as in `frame`.

    numpy: np.fft.rfft of the windowed frames; the result is a transposed view of a C-ordered (..., T, F) array, in
    the input's precision (float32 in, float32 out). A torch tensor (1-D or (B, n)): torch.stft(center=False) on the
    same span, on the tensor's device."""
    _choice("window", window, WINDOWS)
    if _is_torch(x):
        import torch

        _, lo, hi, left, right = _span(x.shape[-1], n_fft, hop, start, count)
        seg = torch.nn.functional.pad(x[..., lo:hi], (left, right))
        win = torch.hann_window(n_fft, periodic=window == "hann_periodic", device=x.device)
        mag = torch.stft(seg, n_fft, hop, window=win, center=False, return_complex=True).abs()
        return mag if power == 1 else mag.pow(power)
    frames = frame(x, n_fft, hop, start=start, count=count)
    mag = np.abs(np.fft.rfft(frames * get_window(window, n_fft), axis=-1))        # (..., T, F)
    return np.swapaxes(mag if power == 1 else mag ** power, -1, -2)


def fft_frequencies(sample_rate: int, n_fft: int, *, xp=np):
    """(n_fft // 2 + 1,) centre frequency of each rfft bin in Hz (equal, bit for bit, to np.fft.rfftfreq)."""
    return xp.linspace(0, sample_rate / 2, n_fft // 2 + 1)


# ------------------------------------------------------------------------------------------------ filterbanks


_F_SP, _MIN_LOG_HZ = 200.0 / 3, 1000.0                  # Slaney's mel scale: linear below 1 kHz, log above
_MIN_LOG_MEL, _LOGSTEP = _MIN_LOG_HZ / _F_SP, np.log(6.4) / 27.0


def hz_to_mel(f, scale: str = "htk"):
    """Hz -> mel. "htk": 2595 log10(1 + f / 700); "slaney": Auditory Toolbox (librosa's default)."""
    _choice("mel scale", scale, MEL_SCALES)
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP)


def mel_to_hz(m, scale: str = "htk"):
    """mel -> Hz, the inverse of hz_to_mel (a torch tensor stays one, for the htk scale)."""
    _choice("mel scale", scale, MEL_SCALES)
    if scale == "htk":
        m = m if _is_torch(m) else np.asarray(m, dtype=np.float64)
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), m * _F_SP)


def mel_frequencies(n: int, fmin: float, fmax: float, *, scale: str = "htk", xp=np):
    """(n,) Hz, equally spaced on the mel scale from fmin to fmax (xp=torch: spaced in float32, htk only)."""
    if xp is not np and scale != "htk":
        raise ConfigError(f"mel scale {scale!r} is computed with numpy only; xp=torch takes 'htk'")
    return mel_to_hz(xp.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n), scale)


def triangular_filterbank(edges, freqs):
    """(len(edges) - 2, F) triangles: filter i rises from edges[i] to 1 at edges[i + 1] and falls to 0 at edges[i + 2],
    evaluated at freqs (F,); numpy arrays or torch tensors, in their precision."""
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    tri = np.minimum(up, down) if isinstance(up, np.ndarray) else up.minimum(down)
    return tri.clip(min=0)


def _float32(a, xp):
    if xp is np:
        a = a.astype(np.float32)
        a.flags.writeable = False                       # cached and shared: nobody writes into it
        return a
    return a.to(xp.float32)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, *,
                   scale: str = "htk", norm: str | None = None, xp=np):
    """(n_mels, n_fft // 2 + 1) float32 triangular filters equally spaced on the mel scale from fmin to fmax (None:
    sample_rate / 2). norm None: peak 1; "slaney": unit area in Hz (a flat spectrum gives every band one value).
    scale "slaney" with norm "slaney" is librosa.filters.mel's default; the htk scale is librosa's htk=True. Cached:
    the array is shared and read-only (a torch tensor when xp=torch)."""
    _choice("mel normalisation", norm, MEL_NORMS)
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ConfigError(f"need 0 <= fmin < fmax <= sample_rate / 2; got fmin={fmin}, fmax={fmax}")
    edges = mel_frequencies(n_mels + 2, fmin, fmax, scale=scale, xp=xp)      # (n_mels + 2,) Hz
    fb = triangular_filterbank(edges, fft_frequencies(sample_rate, n_fft, xp=xp))
    if norm == "slaney":
        fb = fb * (2.0 / (edges[2:, None] - edges[:-2, None]))
    return _float32(fb, xp)


@functools.lru_cache(maxsize=16)
def dct_matrix(n_in: int, n_out: int, *, xp=np):
    """(n_out, n_in) float32 orthonormal DCT-II rows (scipy.fft.dct(type=2, norm="ortho"), as MFCCs use). Cached."""
    dtype = np.float64 if xp is np else xp.float32
    k = xp.arange(n_out, dtype=dtype)[:, None]
    n = xp.arange(n_in, dtype=dtype)[None]
    m = xp.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return _float32(m, xp)


def mfcc(logmel, n_mfcc: int):
    """(..., n_mels, T) log-mel -> (..., n_mfcc, T) MFCCs (orthonormal DCT-II over the bands), numpy or torch."""
    if _is_torch(logmel):
        import torch

        d = dct_matrix(logmel.shape[-2], n_mfcc, xp=torch).to(logmel.device)
        return torch.einsum("km,...mt->...kt", d, logmel)
    return dct_matrix(logmel.shape[-2], n_mfcc) @ logmel


def fft_midi(sample_rate: int, n_fft: int, *, xp=np):
    """(n_fft // 2 + 1,) the nearest MIDI pitch of each rfft bin, round(69 + 12 log2(f / 440)), as floats (bin 0,
    at 0 Hz, gets the pitch of 1 Hz)."""
    f = fft_frequencies(sample_rate, n_fft, xp=xp)
    return xp.round(69 + 12 * xp.log2(f.clip(min=1.0) / 440.0))


@functools.lru_cache(maxsize=16)
def chroma_filterbank(sample_rate: int, n_fft: int, fmin: float = 55.0, fmax: float = 4186.0, *, xp=np):
    """(12, n_fft // 2 + 1) float32 0/1: each rfft bin in [fmin, fmax] maps to the pitch class (C = 0) of its nearest
    MIDI pitch. Cached."""
    f = fft_frequencies(sample_rate, n_fft, xp=xp)
    pc = fft_midi(sample_rate, n_fft, xp=xp) % 12
    m = (pc[None] == xp.arange(12)[:, None]) & ((f >= fmin) & (f <= fmax))[None]
    return _float32(m, xp)


# ------------------------------------------------------------------------------------------------ onsets and tempo


def onset_envelope(M, *, mean: bool = False):
    """(..., bands, T) compressed (log) spectrogram -> (..., T - 1) onset envelope: the positive spectral flux
    max(0, M[:, t + 1] - M[:, t]) summed over bands (mean=True: averaged). numpy or torch."""
    d = (M[..., 1:] - M[..., :-1]).clip(min=0)
    return d.mean(-2) if mean else d.sum(-2)


def onset_peaks(env: np.ndarray, delta: float, width: int = 9) -> np.ndarray:
    """(T,) bool: local maxima of an onset envelope above its `width`-frame moving average + delta."""
    thr = np.convolve(env, np.ones(width) / width, mode="same") + delta
    return (env > thr) & (env > np.roll(env, 1)) & (env >= np.roll(env, -1))


def autocorrelation(env: np.ndarray) -> np.ndarray:
    """(T,) -> (T,): sum_t env[t] env[t + lag] for lag = 0 .. T - 1."""
    return np.correlate(env, env, mode="full")[len(env) - 1:]


def lag_bpm(n: int, fps: float) -> np.ndarray:
    """(n,) the tempo 60 fps / lag (BPM) of lags 0 .. n - 1 of an envelope at fps frames per second; lag 0 is given
    lag 1's tempo (callers leave it out)."""
    return 60 * fps / np.maximum(np.arange(n), 1)


def tempo_profile(ac: np.ndarray, fps: float, edges) -> np.ndarray:
    """(len(edges) - 1,): the largest autocorrelation `ac` (lag 0 first) over lags >= 1 whose tempo lies in
    [edges[b], edges[b + 1]) BPM; 0 for a bin no lag falls in."""
    lags = np.arange(len(ac))
    bpm = lag_bpm(len(ac), fps)
    out = np.zeros(len(edges) - 1)
    for b in range(len(out)):
        m = (bpm >= edges[b]) & (bpm < edges[b + 1]) & (lags >= 1)
        out[b] = ac[m].max() if m.any() else 0.0
    return out


__all__ = ["MEL_NORMS", "MEL_SCALES", "WINDOWS", "autocorrelation", "chroma_filterbank", "dct_matrix",
           "fft_frequencies", "fft_midi", "frame", "frame_count", "get_window", "hz_to_mel", "lag_bpm",
           "mel_filterbank", "mel_frequencies", "mel_to_hz", "mfcc", "onset_envelope", "onset_peaks", "spectrogram",
           "tempo_profile", "triangular_filterbank"]
