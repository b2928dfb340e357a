"""Symbolic music: the Piece/Note types the generator works on, MIDI I/O, and score-level measurements.

A Piece is one instrument's notes on a beat (quarter-note) time line plus global tempo, meter and program. The
measurements here (key and mode by Krumhansl-Kessler profile correlation, mean pitch/velocity, density, voices) read
the notes themselves, so they measure generated music independently of any learned estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mu_llama.errors import ConfigError

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone key profiles (tonic first).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Note:
    onset: float      # beats (quarter notes) from the start
    duration: float   # beats
    pitch: int        # MIDI 0..127
    velocity: int     # MIDI 1..127


@dataclass
class Piece:
    notes: list[Note]
    bpm: float = 120.0
    meter: str = "4/4"
    program: int = 0                 # General MIDI program (0-127)
    key_tonic: int | None = None     # 0..11, None = estimate from notes
    mode: str | None = None          # "major" | "minor" | None = estimate
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0 <= self.program <= 127:
            raise ConfigError(f"GM program must be in 0..127, got {self.program}")
        if self.bpm <= 0:
            raise ConfigError(f"tempo must be positive, got {self.bpm}")

    @property
    def bar_beats(self) -> float:
        num, den = (int(x) for x in self.meter.split("/"))
        return num * 4.0 / den

    @property
    def end_beats(self) -> float:
        return max((n.onset + n.duration for n in self.notes), default=0.0)

    @property
    def seconds(self) -> float:
        return self.end_beats * 60.0 / self.bpm


def monophonic_per_pitch(notes: list[Note]) -> list[Note]:
    """Drop duplicate (onset, pitch) notes and cut a note short where the same pitch starts again.

    MIDI cannot hold two overlapping notes of one pitch on one channel, so this is what survives a MIDI round trip.
    """
    by_key: dict[tuple[float, int], Note] = {}
    for n in notes:
        k = (round(n.onset, 6), n.pitch)
        if k not in by_key or n.duration > by_key[k].duration:
            by_key[k] = n
    out: list[Note] = []
    last: dict[int, int] = {}                       # pitch -> index in out of its latest note
    for n in sorted(by_key.values(), key=lambda n: (n.onset, n.pitch)):
        j = last.get(n.pitch)
        if j is not None and out[j].onset + out[j].duration > n.onset + 1e-9:
            prev = out[j]
            out[j] = Note(prev.onset, n.onset - prev.onset, prev.pitch, prev.velocity)
        last[n.pitch] = len(out)
        out.append(n)
    return out


# ----------------------------------------------------------------------------------------------------- measurements

def pitch_class_histogram(notes: list[Note]) -> np.ndarray:
    """(12,) duration-weighted pitch-class histogram."""
    h = np.zeros(12)
    for n in notes:
        h[n.pitch % 12] += n.duration
    return h


def key_scores(hist: np.ndarray) -> np.ndarray:
    """(2, 12) Pearson correlation of a pitch-class histogram with KK major (row 0) / minor (row 1) keys by tonic."""
    out = np.zeros((2, 12))
    if hist.sum() <= 0 or np.allclose(hist, hist[0]):
        return out
    for m, prof in enumerate((KK_MAJOR, KK_MINOR)):
        for t in range(12):
            out[m, t] = np.corrcoef(hist, np.roll(prof, t))[0, 1]
    return out


def estimate_key(notes: list[Note]) -> tuple[int, str, float]:
    """(tonic 0..11, "major"|"minor", major-minus-minor best correlation) of a note list."""
    s = key_scores(pitch_class_histogram(notes))
    m, t = np.unravel_index(np.argmax(s), s.shape)
    return int(t), ("major", "minor")[m], float(s[0].max() - s[1].max())


def major_share(piece: Piece, window_bars: int = 4) -> float:
    """Share of windows (of `window_bars` bars, by note time) whose estimated key is major; 0.5 for no notes."""
    win = piece.bar_beats * window_bars
    if not piece.notes:
        return 0.5
    n_win = max(1, int(np.ceil(piece.end_beats / win)))
    votes, weights = 0.0, 0.0
    for w in range(n_win):
        sub = [n for n in piece.notes if w * win <= n.onset < (w + 1) * win]
        if len(sub) < 4:
            continue
        _, mode, _ = estimate_key(sub)
        votes += len(sub) * (mode == "major")
        weights += len(sub)
    if weights == 0:
        _, mode, _ = estimate_key(piece.notes)
        return float(mode == "major")
    return votes / weights


def max_polyphony(notes: list[Note]) -> int:
    events = sorted([(n.onset, 1) for n in notes] + [(n.onset + n.duration, -1) for n in notes])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def piece_stats(piece: Piece) -> dict:
    """Score-level facts of a piece (independent of any learned model)."""
    notes = piece.notes
    secs = max(piece.seconds, 1e-6)
    tonic, mode, clarity = estimate_key(notes) if notes else (0, "major", 0.0)
    # "voices": median number of simultaneously sounding notes at note onsets
    onsets = sorted({n.onset for n in notes})
    sounding = [sum(1 for n in notes if n.onset <= t < n.onset + n.duration) for t in onsets[:400]]
    return {
        "n_notes": len(notes),
        "seconds": secs,
        "bpm": piece.bpm,
        "notes_per_second": len(notes) / secs,
        "mean_pitch": float(np.mean([n.pitch for n in notes])) if notes else 64.0,
        "mean_velocity": float(np.mean([n.velocity for n in notes])) if notes else 64.0,
        "key_tonic": tonic, "mode": mode, "mode_clarity": clarity,
        "major_share": major_share(piece),
        "voices": float(np.median(sounding)) if sounding else 0.0,
        "max_polyphony": max_polyphony(notes),
        "program": piece.program,
    }


# --------------------------------------------------------------------------------------------------------- MIDI I/O

def piece_to_midi(piece: Piece):
    """Piece -> pretty_midi.PrettyMIDI (one instrument, constant tempo, its meter)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=float(piece.bpm))
    num, den = (int(x) for x in piece.meter.split("/"))
    pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, 0.0))
    inst = pretty_midi.Instrument(program=piece.program, name=pretty_midi.program_to_instrument_name(piece.program))
    spb = 60.0 / piece.bpm
    min_s = 2.5 * 60.0 / (piece.bpm * 220)   # > 2 ticks at pretty_midi's 220 ticks per beat
    for n in sorted(piece.notes, key=lambda n: (n.onset, n.pitch)):
        # a note whose on and off land on one tick is written off-before-on: it would never stop sounding
        start = n.onset * spb
        inst.notes.append(pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch),
                                           start=start, end=max(start + min_s, (n.onset + n.duration) * spb)))
    pm.instruments.append(inst)
    return pm


def midi_to_piece(midi) -> Piece:
    """A MIDI file path or PrettyMIDI -> Piece. Non-drum instruments are merged; the first one's program is kept.

    Times become beats through the file's tempo map (tick / resolution), so tempo changes do not shift the grid;
    the piece's tempo is the first tempo.
    """
    import pretty_midi

    pm = midi if isinstance(midi, pretty_midi.PrettyMIDI) else pretty_midi.PrettyMIDI(str(Path(midi)))
    _, tempi = pm.get_tempo_changes()
    bpm = float(tempi[0]) if len(tempi) else 120.0
    ts = pm.time_signature_changes[0] if pm.time_signature_changes else None
    meter = f"{ts.numerator}/{ts.denominator}" if ts else "4/4"
    insts = [i for i in pm.instruments if not i.is_drum]
    notes = []
    for inst in insts:
        for n in inst.notes:
            on = pm.time_to_tick(n.start) / pm.resolution
            off = pm.time_to_tick(n.end) / pm.resolution
            notes.append(Note(on, max(off - on, 1e-3), n.pitch, n.velocity))
    notes.sort(key=lambda n: (n.onset, n.pitch))
    return Piece(notes, bpm=bpm, meter=meter, program=insts[0].program if insts else 0)
