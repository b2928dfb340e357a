"""Figures for the demo and for reports: waveform + mel spectrogram, and points on the valence-arousal plane.

UI-agnostic: every function returns a matplotlib `Figure` built without pyplot (no global figure state, so
concurrent Streamlit sessions cannot draw into each other's figures) on the Agg canvas; `figure_png` turns one
into PNG bytes. The mel spectrogram is plain numpy (mu_llama.signal: Hann STFT, HTK mel scale, Slaney-normalised
triangles; dB relative to the peak), so it needs neither torchaudio nor librosa. matplotlib is imported lazily: it is
an extra (`mu-llama[demo]` / `[data]`), and only these figure functions need it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mu_llama import signal
from mu_llama.errors import ConfigError

MAX_COLUMNS = 2000  # time columns drawn at most (waveform buckets, spectrogram frames): more than a screen shows

# Russell's circumplex: the affect words conventionally placed in each valence-arousal quadrant.
QUADRANTS = {(1, 1): "excited, happy", (-1, 1): "tense, angry", (-1, -1): "sad, gloomy", (1, -1): "calm, relaxed"}


def _check_wave(wave, sample_rate: int) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ConfigError(f"expected a non-empty 1-D mono waveform, got shape {x.shape}")
    if not (isinstance(sample_rate, int) and sample_rate > 0):
        raise ConfigError(f"invalid sample_rate {sample_rate!r}; must be a positive integer")
    return x


def mel_spectrogram_db(wave, sample_rate: int, *, n_fft: int = 2048, hop: int | None = None, n_mels: int = 80,
                       top_db: float = 80.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-mel power spectrogram for display.

    Returns (S_db (n_mels, T) in dB relative to the loudest cell and floored at -top_db, frame times (T,) in
    seconds, band centre frequencies (n_mels,) in Hz). `hop` None: 512 samples, or longer so that T <= MAX_COLUMNS.
    """
    x = _check_wave(wave, sample_rate)
    hop = hop or max(512, math.ceil(len(x) / MAX_COLUMNS))
    power = signal.spectrogram(x, n_fft, hop, power=2)             # (F, T), centred frames as librosa / torchaudio
    mel = signal.mel_filterbank(sample_rate, n_fft, n_mels, norm="slaney") @ power   # (n_mels, T)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db - db.max(), -top_db).astype(np.float32)
    times = np.arange(mel.shape[1]) * hop / sample_rate
    centres = signal.mel_frequencies(n_mels + 2, 0.0, sample_rate / 2)[1:-1]
    return db, times, centres


def envelope(wave, buckets: int = MAX_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of each of `buckets` consecutive spans (fewer for short audio): what a waveform plot draws."""
    x = np.asarray(wave, dtype=np.float32)
    n = max(1, min(buckets, len(x)))
    edges = np.linspace(0, len(x), n + 1).astype(int)
    return np.minimum.reduceat(x, edges[:-1]), np.maximum.reduceat(x, edges[:-1])


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError("plots need matplotlib: pip install 'mu-llama[demo]'") from e
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def waveform_figure(wave, sample_rate: int, *, title: str | None = None, width: float = 9.0,
                    height: float = 4.2):
    """Two stacked panels sharing the time axis: the waveform envelope and the log-mel spectrogram."""
    x = _check_wave(wave, sample_rate)
    fig = _new_figure(width, height)
    ax_w, ax_m = fig.subplots(2, 1, sharex=True, height_ratios=(1, 2))
    lo, hi = envelope(x)
    t = np.linspace(0.0, len(x) / sample_rate, len(lo))
    ax_w.fill_between(t, lo, hi, color="#1f77b4", linewidth=0.6)
    peak = float(max(abs(lo.min()), abs(hi.max()), 1e-3))
    ax_w.set_ylim(-peak * 1.05, peak * 1.05)
    ax_w.set_ylabel("amplitude")
    ax_w.set_xlim(0.0, len(x) / sample_rate)
    if title:
        ax_w.set_title(title, fontsize=10)
    db, times, centres = mel_spectrogram_db(x, sample_rate)
    # pcolormesh on band indices, labelled in Hz: the mel bands are equally spaced on screen, as a mel plot should be
    mesh = ax_m.pcolormesh(times, np.arange(len(centres)), db, shading="auto", cmap="magma", vmin=-80.0, vmax=0.0)
    ticks = [i for i in np.linspace(0, len(centres) - 1, 6).astype(int)]
    ax_m.set_yticks(ticks, [f"{centres[i] / 1000:.1f}k" if centres[i] >= 1000 else f"{centres[i]:.0f}" for i in ticks])
    ax_m.set_ylabel("mel band (Hz)")
    ax_m.set_xlabel("time (s)")
    fig.colorbar(mesh, ax=ax_m, label="dB", pad=0.01)
    return fig


def va_plane_figure(points: Mapping[str, object] | Sequence[tuple], *, size: float = 4.0,
                    title: str | None = "Valence-arousal plane"):
    """Points on the valence (x) - arousal (y) plane, both in [-1, 1], with the circumplex quadrant words.

    `points`: {label: obj with .valence/.arousal (e.g. mu_llama.emotion.VAD)} or [(label, valence, arousal)] /
    [(label, valence, arousal, dominance)]. Dominance, when given, sets the marker size (bigger = more dominant)."""
    items = []
    for entry in (points.items() if isinstance(points, Mapping) else points):
        if isinstance(points, Mapping):
            label, p = entry
            v, a, d = float(p.valence), float(p.arousal), getattr(p, "dominance", None)
        else:
            label, v, a, d = (*entry, None) if len(entry) == 3 else entry
            v, a = float(v), float(a)
        if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
            raise ConfigError(f"VA point {label!r} ({v}, {a}) lies outside [-1, 1]^2")
        items.append((str(label), v, a, None if d is None else float(d)))
    fig = _new_figure(size, size)
    ax = fig.subplots()
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.axvline(0.0, color="0.7", linewidth=0.8)
    ax.add_patch(_circle())
    for (sx, sy), words in QUADRANTS.items():
        ax.text(0.97 * sx, 0.97 * sy, words, fontsize=7, color="0.45", ha="right" if sx > 0 else "left",
                va="top" if sy > 0 else "bottom")
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    shapes = ["o", "s", "D", "^", "v", "P"]  # distinct shapes (and alpha) keep coinciding estimates visible
    for i, (label, v, a, d) in enumerate(items):
        size_pt = 60.0 if d is None else 25.0 + 90.0 * (d + 1.0) / 2.0
        ax.scatter([v], [a], s=size_pt * (1.6 if i == 0 else 1.0), color=colours[i % len(colours)],
                   marker=shapes[i % len(shapes)], alpha=0.85, edgecolor="black", linewidth=0.6, label=label,
                   zorder=3 + i)
    ax.set_xlabel("valence  (unpleasant → pleasant)")
    ax.set_ylabel("arousal  (calm → energetic)")
    if title:
        ax.set_title(title, fontsize=10)
    if items:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False, ncol=min(2, len(items)))
    return fig


def _circle():
    from matplotlib.patches import Circle

    return Circle((0.0, 0.0), 1.0, fill=False, color="0.85", linestyle="--", linewidth=0.8)


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a figure from this module."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
