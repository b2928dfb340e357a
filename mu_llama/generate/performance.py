"""Expressive performance of a generated score from the requested emotion (a documented rule layer after sampling).

The token LM writes the score (its header picks tempo, dynamics, register, mode from the conditioning). How the notes
are *played* also carries emotion: in performance studies, high-arousal expression (happy, angry) is played louder,
more detached (staccato) and with sharper accents, low-arousal expression (sad, tender) softer and legato
(Juslin 2001; Bresin & Friberg 2000, "Emotional colouring of computer-controlled music performances"; Gabrielsson &
Lindstrom 2010). The LM, trained on excerpts whose dynamics were randomised independently of tempo, put loudness on
dominance alone; this layer lets requested *arousal* also move dynamics and articulation, so that arousal is audible
through loudness as the cue rules (mu_llama.emotion.targets: arousal <- tempo, loudness, density) say it should be.
Dominance keeps its own route (the header's dynamic level and register); the arousal shift is smaller than the
dynamic-level range, so the two stay separable.

Rules (a = requested arousal in [-1, 1], s = `strength`):
  velocity      v' = v + s * velocity_per_arousal * a                    (louder when aroused)
  accents       v' = m + (v' - m) * (1 + s * accent_per_arousal * a)     (m: mean velocity; more contrast when aroused)
  articulation  d' = d * (1 - s * articulation_per_arousal * a)          (a > 0 detached, a < 0 legato)
strength 0 (or no VAD) leaves the piece unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mu_llama.errors import ConfigError
from mu_llama.generate.symbolic import Note, Piece


@dataclass(frozen=True)
class PerformanceOptions:
    strength: float = 1.0
    velocity_per_arousal: float = 40.0     # MIDI velocity units at |a| = 1
    accent_per_arousal: float = 0.4
    articulation_per_arousal: float = 0.35

    def __post_init__(self):
        if not 0.0 <= self.strength <= 2.0:
            raise ConfigError(f"performance strength must be in [0, 2], got {self.strength}")
        if self.articulation_per_arousal * self.strength >= 1.0 or self.accent_per_arousal * self.strength >= 1.0:
            raise ConfigError("articulation_per_arousal and accent_per_arousal times strength must be < 1")


def perform(piece: Piece, arousal: float | None, opts: PerformanceOptions = PerformanceOptions()) -> Piece:
    """Apply the arousal performance rules (module docstring); returns a new Piece."""
    if arousal is None or opts.strength == 0.0 or not piece.notes:
        return piece
    a = float(np.clip(arousal, -1.0, 1.0)) * opts.strength
    shifted = [n.velocity + opts.velocity_per_arousal * a for n in piece.notes]
    m = float(np.mean(shifted))
    k = 1.0 + opts.accent_per_arousal * a
    art = 1.0 - opts.articulation_per_arousal * a
    notes = [Note(n.onset, max(1.0 / 32, n.duration * art), n.pitch, int(np.clip(round(m + (v - m) * k), 1, 127)))
             for n, v in zip(piece.notes, shifted)]
    return Piece(notes, bpm=piece.bpm, meter=piece.meter, program=piece.program, key_tonic=piece.key_tonic,
                 mode=piece.mode, meta=dict(piece.meta))
