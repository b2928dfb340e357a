"""Rendering: GM instrument ranges and ensembles, score excerpt -> Performance, and Performance -> 24 kHz mono audio.

Instrument choice respects range: each part gets a program whose practical range covers the part's notes after
transposition (transpositions are tried in a seeded order; a part no candidate can play falls back to piano,
strings or organ). Audio comes from the FluidSynth CLI with the FluidR3 GM soundfont, trimmed to the performance's
duration with a short fade, mixed to mono at 24 kHz.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.corpus.perf import Note, Performance, Track
from mu_llama.errors import ConfigError

SAMPLE_RATE = 24000
SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2")
SYNTH_GAIN = 0.6          # fluidsynth -g
MAKEUP_GAIN = 2.5         # fixed, so soft and loud clips stay different in level; peaks above PEAK are scaled down
PEAK = 0.95

# Practical ranges (lowest, highest MIDI pitch) of the GM programs the corpus uses.
RANGES: dict[int, tuple[int, int]] = {
    0: (21, 108), 1: (21, 108), 4: (28, 103), 5: (28, 103), 6: (29, 89), 7: (36, 96), 8: (60, 108),
    9: (79, 108), 11: (53, 89), 12: (45, 96), 13: (65, 108), 16: (24, 96), 19: (21, 108), 20: (36, 96),
    21: (53, 89), 22: (60, 84), 24: (40, 83), 25: (40, 83), 26: (40, 83), 27: (40, 86), 32: (28, 55), 33: (28, 60),
    34: (28, 60), 36: (28, 60), 37: (28, 60), 38: (24, 60), 39: (24, 60), 40: (55, 100), 41: (48, 88),
    42: (36, 76), 43: (28, 60), 45: (28, 96), 46: (24, 103), 48: (28, 100), 49: (28, 100), 50: (36, 96),
    52: (40, 84), 53: (48, 84), 56: (54, 86), 57: (34, 72), 58: (26, 58), 60: (34, 77), 61: (34, 86),
    64: (56, 88), 65: (49, 81), 66: (44, 76), 67: (36, 69), 68: (58, 91), 69: (52, 81), 70: (34, 72),
    71: (50, 91), 72: (74, 108), 73: (60, 96), 74: (60, 96), 75: (60, 96), 78: (72, 96), 79: (60, 84),
    80: (36, 96), 81: (36, 96), 87: (36, 84), 88: (36, 96), 89: (36, 96), 90: (36, 96), 91: (36, 96),
    105: (48, 84), 110: (55, 100),
}
FALLBACK = (0, 48, 19)    # piano, string ensemble, church organ: cover almost anything


@dataclass(frozen=True)
class Ensemble:
    """Candidate programs by role: the top part, inner parts, the bottom part. `uniform`: one program for all."""

    name: str
    top: tuple[int, ...]
    inner: tuple[int, ...]
    bottom: tuple[int, ...]
    uniform: bool = False


ENSEMBLES: dict[str, Ensemble] = {e.name: e for e in (
    Ensemble("string quartet", (40,), (40, 41), (42,)),
    Ensemble("string orchestra", (48, 49), (48, 49), (48, 49), uniform=True),
    Ensemble("pizzicato strings", (45,), (45,), (45,), uniform=True),
    Ensemble("organ", (19, 20, 16), (19, 20, 16), (19, 20, 16), uniform=True),
    Ensemble("piano", (0, 1), (0, 1), (0, 1), uniform=True),
    Ensemble("electric piano", (4, 5), (4, 5), (4, 5), uniform=True),
    Ensemble("harpsichord", (6,), (6,), (6,), uniform=True),
    Ensemble("choir", (52, 53), (52, 53), (52, 53), uniform=True),
    Ensemble("brass", (56, 60), (60, 57, 56), (57, 58)),
    Ensemble("woodwinds", (73, 68), (71, 69, 68), (70, 71)),
    Ensemble("saxophones", (64, 65), (65, 66), (67, 66)),
    Ensemble("consort", (74, 73), (71, 69), (70,)),
    Ensemble("guitars", (24, 25), (24, 25), (24, 25), uniform=True),
    Ensemble("harp", (46,), (46,), (46,), uniform=True),
    Ensemble("mallets", (11, 13, 12), (12, 11), (12,)),
    Ensemble("synth", (80, 81, 87), (89, 90, 88, 91), (81, 38, 39)),
    Ensemble("mixed chamber", (40, 73, 68, 71, 56, 64, 65, 11, 24),
             (41, 71, 69, 60, 65, 66, 12, 24, 46), (42, 70, 57, 67, 58, 43, 46, 0)),
)}

# ensemble weights per kind of source (collection name -> weights); monophonic tunes use SOLO instead
ENSEMBLE_WEIGHTS: dict[str, dict[str, float]] = {
    "chorale": {"organ": .18, "string quartet": .12, "string orchestra": .10, "choir": .15, "brass": .12,
                "woodwinds": .08, "piano": .05, "saxophones": .04, "synth": .04, "mixed chamber": .06,
                "guitars": .02, "electric piano": .02, "mallets": .02},
    "vocal polyphony": {"choir": .30, "string quartet": .08, "string orchestra": .08, "brass": .10,
                        "woodwinds": .08, "consort": .10, "organ": .10, "synth": .04, "mixed chamber": .08,
                        "harpsichord": .02, "guitars": .02},
    "string quartet": {"string quartet": .55, "string orchestra": .10, "woodwinds": .07, "brass": .04, "piano": .06,
                       "saxophones": .04, "synth": .04, "mixed chamber": .08, "pizzicato strings": .02},
    "keyboard and song": {"piano": .40, "electric piano": .08, "harpsichord": .06, "organ": .05,
                          "string orchestra": .08, "mixed chamber": .18, "mallets": .05, "synth": .05,
                          "harp": .05},
}
SOLO_WEIGHTS: dict[int, float] = {
    40: .09, 110: .08, 73: .10, 74: .05, 71: .06, 68: .05, 21: .06, 22: .02, 0: .07, 24: .05, 25: .04, 46: .05,
    75: .03, 78: .02, 11: .03, 12: .03, 56: .03, 64: .02, 65: .03, 105: .02, 8: .02, 79: .02, 80: .02, 81: .02,
    53: .02, 4: .02, 6: .02, 69: .02,
}

DYNAMIC_LEVELS = {"soft": 46, "medium": 78, "loud": 106}   # base velocities; facts are measured afterwards


def weighted_choice(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def fits(program: int, lo: int, hi: int) -> bool:
    a, b = RANGES.get(program, (21, 108))
    return a <= lo and hi <= b


def assign_programs(ranges: list[tuple[int, int]], ensemble: Ensemble, rng: np.random.Generator,
                    transpositions: list[int]) -> tuple[list[int], int]:
    """Programs for parts with the given (lo, hi) pitch ranges (top part first), and the transposition used.

    Tries each transposition in order and keeps the first where every part has a fitting candidate of its role;
    if none does, uses the transposition with most parts fitting and falls back per part to FALLBACK programs."""
    n = len(ranges)
    by_mean = sorted(range(n), key=lambda i: -(ranges[i][0] + ranges[i][1]))
    roles = {}
    for rank, i in enumerate(by_mean):
        roles[i] = ensemble.top if rank == 0 else ensemble.bottom if rank == n - 1 and n > 1 else ensemble.inner
    # one random preference order per role (uniform ensembles share one order, so all parts get the same program)
    uni = list(rng.permutation(ensemble.top)) if ensemble.uniform else None
    pref = {i: (uni if uni is not None else list(rng.permutation(roles[i]))) for i in range(n)}
    best = None
    for t in transpositions:
        progs = []
        for i, (lo, hi) in enumerate(ranges):
            ok = [p for p in pref[i] if fits(int(p), lo + t, hi + t)]
            progs.append(int(ok[0]) if ok else None)
        if ensemble.uniform and all(p is not None for p in progs):
            progs = [progs[0]] * n
        score = sum(p is not None for p in progs)
        if best is None or score > best[0]:
            best = (score, t, progs)
        if score == n:
            break
    _, t, progs = best
    for i, (lo, hi) in enumerate(ranges):
        if progs[i] is None:
            progs[i] = next((p for p in FALLBACK if fits(p, lo + t, hi + t)), 0)
    return progs, t


def velocities(rng: np.random.Generator, onsets_beats: np.ndarray, bar_beats: float, level: str,
               shape: float) -> np.ndarray:
    """MIDI velocities: a base level, downbeat accents, a linear swell/fade over the clip (`shape` in -1..1), jitter."""
    base = DYNAMIC_LEVELS[level]
    pos = onsets_beats / max(float(onsets_beats.max(initial=0.0)), 1e-6)
    accent = np.where(np.isclose(np.mod(onsets_beats, bar_beats), 0.0, atol=1e-3), 7.0, 0.0)
    v = base + accent + shape * 10.0 * (pos - 0.5) + rng.normal(0.0, 4.0, size=len(onsets_beats))
    return np.clip(np.round(v), 20, 127).astype(int)


# --- audio ----------------------------------------------------------------------------------------------------------

def soundfont() -> str:
    env = os.environ.get("MU_LLAMA_SOUNDFONT")
    for cand in ((env,) if env else ()) + SOUNDFONT_CANDIDATES:
        if cand and Path(cand).is_file():
            return cand
    raise ConfigError("no General MIDI soundfont found: install Debian fluid-soundfont-gm or set MU_LLAMA_SOUNDFONT")


def synthesize(midi_path: str | Path, duration: float) -> np.ndarray:
    """Render a MIDI file with FluidSynth -> float32 mono (round(duration * 24000),) with a 0.25 s fade-out.

    Uses the in-process synth (synth.py, soundfont loaded once per process); falls back to the fluidsynth CLI when
    libfluidsynth cannot be loaded."""
    from mu_llama.corpus.synth import FluidSynthMissing, shared_synth

    try:
        x = shared_synth(soundfont(), SAMPLE_RATE, SYNTH_GAIN).render_isolated(midi_path, duration)
    except FluidSynthMissing:
        x = _synthesize_cli(midi_path)
    y = x.mean(axis=1)
    n = int(round(duration * SAMPLE_RATE))
    y = np.pad(y, (0, max(0, n - len(y))))[:n] * MAKEUP_GAIN
    fade = min(len(y), int(0.25 * SAMPLE_RATE))
    if fade:
        y[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.abs(y).max(initial=0.0))
    if peak > PEAK:
        y *= PEAK / peak
    return y.astype(np.float32)


def _synthesize_cli(midi_path: str | Path) -> np.ndarray:
    if shutil.which("fluidsynth") is None:
        raise ConfigError("neither libfluidsynth nor the fluidsynth program is installed (Debian package fluidsynth)")
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="mu_llama_synth_") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["fluidsynth", "-ni", "-q", "-g", str(SYNTH_GAIN), "-r", str(SAMPLE_RATE), "-F", str(wav),
               soundfont(), str(midi_path)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, expected {SAMPLE_RATE}")
    return x


def make_track(role: str, program: int, notes: list[tuple[float, float, int, int]], is_drum: bool = False) -> Track:
    return Track(role, program, is_drum, [Note(round(s, 4), round(e, 4), int(p), int(v)) for s, e, p, v in notes])


__all__ = [
    "ENSEMBLES",
    "ENSEMBLE_WEIGHTS",
    "RANGES",
    "SAMPLE_RATE",
    "SOLO_WEIGHTS",
    "Ensemble",
    "Performance",
    "assign_programs",
    "fits",
    "make_track",
    "soundfont",
    "synthesize",
    "velocities",
    "weighted_choice",
]
