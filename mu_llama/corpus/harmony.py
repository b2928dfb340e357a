"""Harmony for arrangements: diatonic chords named by Roman numeral, a Viterbi harmonisation of a melody, and
chords taken from a corpus Roman-numeral analysis when one exists.

A chord here is (figure, root pitch class, chord-tone pitch classes). Figures follow music21/RomanText conventions
(upper case major, lower case minor, 'o' diminished, a trailing 7 for a diatonic seventh), so they read the same as
the analyses shipped with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NAT_MINOR = (0, 2, 3, 5, 7, 8, 10)
NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii")


@dataclass(frozen=True)
class Chord:
    figure: str                 # "V7", "ii", "viio"
    root: int                   # pitch class 0..11
    tones: tuple[int, ...]      # pitch classes, root first (root, third, fifth[, seventh])


def diatonic_chord(tonic: int, mode: str, degree: int, seventh: bool = False) -> Chord:
    """Chord on scale degree 0..6 of a key. Minor keys raise the leading tone for V and viio (harmonic minor)."""
    scale = list(MAJOR if mode == "major" else NAT_MINOR)
    if mode == "minor" and degree in (4, 6):
        scale[6] = 11
    idx = [degree, degree + 2, degree + 4] + ([degree + 6] if seventh else [])
    pcs = [(tonic + scale[i % 7]) % 12 for i in idx]
    third = (pcs[1] - pcs[0]) % 12
    fifth = (pcs[2] - pcs[0]) % 12
    name = NUMERALS[degree]
    if third == 4:
        name = name.upper()
    if fifth == 6:
        name += "o"
    if seventh:
        name += "7"
    if mode == "minor" and degree in (2, 5, 6) and third == 4 and fifth == 7:
        pass                                  # III, VI, VII of natural minor: names already upper case
    return Chord(name, pcs[0], tuple(pcs))


# prior preference for each degree (major / minor) and common progressions
_PRIOR = {"major": (1.0, 0.35, 0.15, 0.8, 0.9, 0.5, -0.6), "minor": (1.0, 0.0, 0.35, 0.8, 0.9, 0.5, 0.3)}
_GOOD = {(4, 0), (3, 4), (1, 4), (0, 3), (5, 1), (5, 3), (0, 4), (3, 0), (0, 5), (2, 5), (6, 0), (1, 6)}


def harmonise(tonic: int, mode: str, segments: list[list[tuple[int, float]]], seventh_on: set[int] | None = None,
              cadence: bool = True) -> list[Chord]:
    """One diatonic chord per segment for a melody given as [(pitch class, weight), ...] per segment.

    Viterbi over degrees: fit = sum of weights of melody notes that are chord tones minus 0.7 x those that are not,
    plus a prior per degree, a bonus for common progressions and for holding nothing too long, and (cadence) a tonic
    at the end approached from V or IV."""
    n = len(segments)
    chords = [diatonic_chord(tonic, mode, d) for d in range(7)]
    fit = np.zeros((n, 7))
    for i, seg in enumerate(segments):
        tot = sum(w for _, w in seg) or 1.0
        for d, ch in enumerate(chords):
            s = sum((w if pc in ch.tones else -0.7 * w) for pc, w in seg) / tot
            fit[i, d] = 2.0 * s + 0.6 * _PRIOR[mode][d]
    if cadence and n >= 2:
        fit[-1, 0] += 1.5
        fit[-2, 4] += 0.5
    if n:
        fit[0, 0] += 0.5
    trans = np.full((7, 7), 0.0)
    for a, b in _GOOD:
        trans[a, b] += 0.4
    np.fill_diagonal(trans, -0.15)
    score = fit[0].copy()
    back = np.zeros((n, 7), dtype=int)
    for i in range(1, n):
        cand = score[:, None] + trans + fit[i][None, :]
        back[i] = np.argmax(cand, axis=0)
        score = cand[back[i], np.arange(7)]
    path = [int(np.argmax(score))] if n else []
    for i in range(n - 1, 0, -1):
        path.append(int(back[i][path[-1]]))
    path.reverse()
    seventh_on = seventh_on or set()
    return [diatonic_chord(tonic, mode, d, seventh=d in seventh_on) for d in path]


def chord_from_roman(figure: str, key: str, transpose: int = 0) -> Chord:
    """A chord from an analysis figure in its local key (e.g. 'V6/5', 'g minor'), transposed by `transpose`."""
    from music21 import roman

    tonic, mode = key.split() if key else ("C", "major")
    rn = roman.RomanNumeral(figure, tonic if mode == "major" else tonic.lower())
    pcs = [(p.pitchClass + transpose) % 12 for p in rn.pitches]
    root = (rn.root().pitchClass + transpose) % 12
    ordered = [root] + [pc for pc in dict.fromkeys(pcs) if pc != root]
    return Chord(str(rn.figure), root, tuple(ordered))


def voicing(chord: Chord, low: int, high: int, size: int = 3) -> list[int]:
    """Close-position voicing of the chord's first `size` tones (root position) starting at or above `low`."""
    tones = list(chord.tones[:max(size, 3)]) if size <= len(chord.tones) else list(chord.tones)
    base = low + ((tones[0] - low) % 12)
    out = [base]
    for pc in tones[1:size]:
        nxt = out[-1] + ((pc - out[-1]) % 12 or 12)
        out.append(nxt)
    while out and out[-1] > high and out[0] - 12 >= low - 6:
        out = [p - 12 for p in out]
    return out


def bass_note(pc: int, low: int = 31, high: int = 50) -> int:
    """The pitch of pitch class `pc` inside [low, high] (the lowest such)."""
    p = low + ((pc - low) % 12)
    return p if p <= high else p - 12
