"""REMI-like event tokens for one-instrument music, with a header of explicit control tokens.

Sequence: BOS, header, body, EOS.
  header  TS_<meter> TEMPO_<bin> PROG_<program> DYN_<level> REG_<class> DENS_<class> MODE_<mode> KEY_<tonic>
          The header is measured from the notes when encoding; when generating, the model samples it first from the
          conditioning (text + VAD), and then writes music that agrees with it. These are the controls that make the
          emotion conditioning audible: mode (valence), tempo/density/dynamics (arousal), dynamics/register (dominance).
  body    BAR, then per onset POS_<16th in bar>, then per note [VEL_<bin> when it changes] PITCH_<p> DUR_<d>.
Time grid: sixteenth notes (4 positions per quarter beat). Durations use a grid of sixteenth counts (DURATIONS).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from mu_llama import facts
from mu_llama.errors import ConfigError, choice_error
from mu_llama.facts import DENSITIES, MODES, REGISTERS, density_class, register_class
from mu_llama.generate.symbolic import Note, Piece, estimate_key, monophonic_per_pitch

# The time signatures a TS_<meter> token can name: the fact sheet's meters without "other" (in that order, which the
# token ids depend on). Register, density and mode classes are the fact sheet's own (mu_llama.facts).
TOKEN_METERS = tuple(m for m in facts.METERS if m != "other")
TICKS_PER_BEAT = 4
MAX_BAR_TICKS = 32                                    # up to 8 quarter notes per bar
DURATIONS = tuple(range(1, 17)) + (18, 20, 24, 28, 32, 40, 48, 64)   # in sixteenths
N_TEMPO = 16
TEMPO_MIN, TEMPO_MAX = 40.0, 220.0
N_VEL = 16
DYN_LEVELS = (45, 60, 75, 90, 105)                    # pp p mf f ff: mean velocity centres
PITCH_LO, PITCH_HI = 21, 108
SPECIALS = ("PAD", "BOS", "EOS", "BAR")
HEADER_KINDS = ("TS", "TEMPO", "PROG", "DYN", "REG", "DENS", "MODE", "KEY")


def tempo_bins() -> np.ndarray:
    """(N_TEMPO,) log-spaced bin centres in BPM."""
    return TEMPO_MIN * (TEMPO_MAX / TEMPO_MIN) ** (np.arange(N_TEMPO) / (N_TEMPO - 1))


def tempo_to_bin(bpm: float) -> int:
    return int(np.argmin(np.abs(np.log(tempo_bins()) - math.log(max(bpm, 1.0)))))


def velocity_to_bin(v: int) -> int:
    return min(N_VEL - 1, max(0, int(v) // 8))


def bin_to_velocity(b: int) -> int:
    return 8 * b + 4


def dyn_level(mean_velocity: float) -> int:
    return int(np.argmin([abs(mean_velocity - c) for c in DYN_LEVELS]))


def duration_to_token_ticks(ticks: int) -> int:
    """Nearest duration on the grid (ties -> the shorter)."""
    i = bisect.bisect_left(DURATIONS, ticks)
    if i == 0:
        return DURATIONS[0]
    if i == len(DURATIONS):
        return DURATIONS[-1]
    lo, hi = DURATIONS[i - 1], DURATIONS[i]
    return lo if ticks - lo <= hi - ticks else hi


def _build_vocab() -> list[str]:
    v = list(SPECIALS)
    v += [f"TS_{m}" for m in TOKEN_METERS]
    v += [f"TEMPO_{i}" for i in range(N_TEMPO)]
    v += [f"PROG_{p}" for p in range(128)]
    v += [f"DYN_{i}" for i in range(len(DYN_LEVELS))]
    v += [f"REG_{r}" for r in REGISTERS]
    v += [f"DENS_{d}" for d in DENSITIES]
    v += [f"MODE_{m}" for m in MODES]
    v += [f"KEY_{k}" for k in range(12)]
    v += [f"POS_{i}" for i in range(MAX_BAR_TICKS)]
    v += [f"VEL_{i}" for i in range(N_VEL)]
    v += [f"PITCH_{p}" for p in range(PITCH_LO, PITCH_HI + 1)]
    v += [f"DUR_{d}" for d in DURATIONS]
    return v


@dataclass(frozen=True)
class Header:
    """The control tokens of a sequence, as values."""

    meter: str
    tempo_bin: int
    program: int
    dyn: int
    register: str
    density: str
    mode: str
    key_tonic: int

    @property
    def bpm(self) -> float:
        return float(tempo_bins()[self.tempo_bin])


class Tokenizer:
    """Piece <-> token ids. Stateless apart from the vocabulary; `vocab` is fixed by the module constants."""

    def __init__(self):
        self.vocab = _build_vocab()
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.pad, self.bos, self.eos, self.bar = (self.index[t] for t in SPECIALS)
        self.kind_of = np.array([t.split("_")[0] for t in self.vocab])   # (V,) token kind, for masks

    def __len__(self) -> int:
        return len(self.vocab)

    # ------------------------------------------------------------------------------------------------ encoding
    def header_of(self, piece: Piece) -> Header:
        if piece.meter not in TOKEN_METERS:
            raise choice_error("meter", piece.meter, TOKEN_METERS)
        notes = piece.notes
        secs = max(piece.seconds, 1e-6)
        mean_v = float(np.mean([n.velocity for n in notes])) if notes else 75.0
        mean_p = float(np.mean([n.pitch for n in notes])) if notes else 64.0
        if piece.key_tonic is not None and piece.mode is not None:
            tonic, mode = piece.key_tonic, piece.mode
        else:
            tonic, mode, _ = estimate_key(notes) if notes else (0, "major", 0.0)
        return Header(piece.meter, tempo_to_bin(piece.bpm), piece.program, dyn_level(mean_v),
                      register_class(mean_p), density_class(len(notes) / secs), mode, tonic)

    def header_tokens(self, h: Header) -> list[int]:
        names = [f"TS_{h.meter}", f"TEMPO_{h.tempo_bin}", f"PROG_{h.program}", f"DYN_{h.dyn}", f"REG_{h.register}",
                 f"DENS_{h.density}", f"MODE_{h.mode}", f"KEY_{h.key_tonic}"]
        return [self.index[n] for n in names]

    def encode(self, piece: Piece, *, eos: bool = True) -> list[int]:
        """Piece -> ids. Onsets snap to the sixteenth grid, durations to DURATIONS, pitches must be 21..108."""
        h = self.header_of(piece)
        ids = [self.bos] + self.header_tokens(h)
        bar_ticks = round(piece.bar_beats * TICKS_PER_BEAT)
        if bar_ticks > MAX_BAR_TICKS:
            raise ConfigError(f"bars longer than {MAX_BAR_TICKS // TICKS_PER_BEAT} beats are not supported")
        events = sorted(((round(n.onset * TICKS_PER_BEAT), n.pitch, n) for n in piece.notes), key=lambda e: e[:2])
        n_bars = (events[-1][0] // bar_ticks + 1) if events else 0
        vel = None
        k = 0
        for b in range(n_bars):
            ids.append(self.bar)
            last_pos = None
            while k < len(events) and events[k][0] < (b + 1) * bar_ticks:
                tick, pitch, n = events[k]
                if not PITCH_LO <= pitch <= PITCH_HI:
                    raise ConfigError(f"pitch {pitch} outside the piano range {PITCH_LO}..{PITCH_HI}")
                pos = tick - b * bar_ticks
                if pos != last_pos:
                    ids.append(self.index[f"POS_{pos}"])
                    last_pos = pos
                vb = velocity_to_bin(n.velocity)
                if vb != vel:
                    ids.append(self.index[f"VEL_{vb}"])
                    vel = vb
                d = duration_to_token_ticks(max(1, round(n.duration * TICKS_PER_BEAT)))
                ids += [self.index[f"PITCH_{pitch}"], self.index[f"DUR_{d}"]]
                k += 1
        if eos:
            ids.append(self.eos)
        return ids

    # ------------------------------------------------------------------------------------------------ decoding
    def parse_header(self, ids: list[int]) -> Header:
        """Header values found among ids (first of each kind); missing kinds take neutral defaults."""
        found: dict[str, str] = {}
        for i in ids:
            kind, _, val = self.vocab[i].partition("_")
            if kind in HEADER_KINDS and kind not in found:
                found[kind] = val
            if kind in ("BAR", "POS", "PITCH"):
                break
        return Header(found.get("TS", "4/4"), int(found.get("TEMPO", tempo_to_bin(120))), int(found.get("PROG", 0)),
                      int(found.get("DYN", 2)), found.get("REG", "middle"), found.get("DENS", "moderate"),
                      found.get("MODE", "major"), int(found.get("KEY", 0)))

    def decode(self, ids: list[int]) -> Piece:
        """ids -> Piece. Tolerant of sampled sequences: tokens out of place are skipped, a PITCH with no DUR gets a
        quarter note, decoding stops at EOS, and same-pitch overlaps are cut (as MIDI would)."""
        h = self.parse_header(ids)
        bar_ticks = round(Piece([], meter=h.meter).bar_beats * TICKS_PER_BEAT)
        notes: list[Note] = []
        bar, pos, vel = -1, 0, bin_to_velocity(velocity_to_bin(DYN_LEVELS[h.dyn]))
        pending: int | None = None
        for i in ids:
            tok = self.vocab[i]
            kind, _, val = tok.partition("_")
            if pending is not None and kind != "DUR":
                notes.append(Note((max(bar, 0) * bar_ticks + pos) / TICKS_PER_BEAT, 1.0, pending, vel))
                pending = None
            if tok == "EOS":
                break
            if tok == "BAR":
                bar, pos = bar + 1, 0
            elif kind == "POS":
                pos = min(int(val), bar_ticks - 1)
            elif kind == "VEL":
                vel = bin_to_velocity(int(val))
            elif kind == "PITCH":
                pending = int(val)
            elif kind == "DUR" and pending is not None:
                onset = (max(bar, 0) * bar_ticks + pos) / TICKS_PER_BEAT
                notes.append(Note(onset, int(val) / TICKS_PER_BEAT, pending, vel))
                pending = None
        if pending is not None:
            notes.append(Note((max(bar, 0) * bar_ticks + pos) / TICKS_PER_BEAT, 1.0, pending, vel))
        return Piece(monophonic_per_pitch(notes), bpm=h.bpm, meter=h.meter, program=h.program,
                     key_tonic=h.key_tonic, mode=h.mode)

    def beats_elapsed(self, ids: list[int], meter: str) -> float:
        """Beats from the start up to the last BAR/POS in ids (used to stop generation at a duration)."""
        bar_ticks = round(Piece([], meter=meter).bar_beats * TICKS_PER_BEAT)
        bar, pos = -1, 0
        for i in ids:
            kind, _, val = self.vocab[i].partition("_")
            if kind == "BAR":
                bar, pos = bar + 1, 0
            elif kind == "POS":
                pos = int(val)
        return (max(bar, 0) * bar_ticks + pos) / TICKS_PER_BEAT
