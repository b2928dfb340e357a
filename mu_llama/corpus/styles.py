"""Popular-music styles for arrangements: meter, tempo range, instrument choices and drum/bass/chord patterns.

Patterns are data: lists of (beat position within the bar, ...) in quarter-note beats. Each style has a few pattern
variants; arrange.py picks one per clip, adds fills at phrase ends and humanises timing and velocity.
GM percussion keys: 35/36 kick, 37 side stick, 38 snare, 39 clap, 42 closed hat, 44 pedal hat, 46 open hat,
49 crash, 51 ride, 53 ride bell, 45/47/50 toms, 54 tambourine, 70 maracas, 75 claves.
"""

from __future__ import annotations

from dataclasses import dataclass

KICK, STICK, SNARE, CLAP, HAT, PEDAL, OPEN, CRASH, RIDE = 36, 37, 38, 39, 42, 44, 46, 49, 51
TOM_LO, TOM_MID, TOM_HI, SHAKER = 45, 47, 50, 70

Hit = tuple[float, int, int]          # (beat in bar, GM key, base velocity)


@dataclass(frozen=True)
class Style:
    name: str
    meters: tuple[str, ...]            # source meters the style accepts ("2/4", "4/4", "2/2", "3/4", "6/8", ...)
    bar_beats: int                     # quarter-note beats per bar of the arrangement
    tempo: tuple[int, int]             # quarter-note BPM
    leads: dict[int, float]            # GM program -> weight
    chords: dict[int, float]
    basses: dict[int, float]
    drum_variants: tuple[tuple[Hit, ...], ...]
    chord_rhythms: tuple[tuple[tuple[float, float], ...], ...]   # (beat, length in beats) strikes per bar
    bass_rhythm: str                   # name of a bass generator in arrange.py
    drum_prob: float = 1.0             # chance the arrangement has a drum kit
    swing: float = 0.0                 # off-beat eighth delay as a fraction of a beat (0.17 ~ triplet swing)
    sevenths: bool = False             # jazz-style diatonic sevenths
    chord_change_beats: tuple[int, ...] = (4,)   # allowed harmonic rhythms (beats per chord)


def _grid(step: float, beats: int, key: int, vel: int, accent_every: float | None = None) -> tuple[Hit, ...]:
    n = int(round(beats / step))
    return tuple((i * step, key, vel + (8 if accent_every and (i * step) % accent_every == 0 else 0)) for i in range(n))


ROCK = (
    _grid(0.5, 4, HAT, 70, 1.0) + ((0, KICK, 105), (2, KICK, 100), (1, SNARE, 105), (3, SNARE, 108)),
    _grid(0.5, 4, HAT, 72, 1.0) + ((0, KICK, 105), (1.5, KICK, 90), (2, KICK, 100), (1, SNARE, 105), (3, SNARE, 108)),
    _grid(0.5, 4, RIDE, 70, 1.0) + ((0, KICK, 105), (2.5, KICK, 95), (1, SNARE, 105), (3, SNARE, 108)),
)
BALLAD = (
    _grid(0.5, 4, HAT, 55) + ((0, KICK, 85), (2.5, KICK, 70), (1, STICK, 75), (3, STICK, 78)),
    _grid(1.0, 4, RIDE, 55) + ((0, KICK, 85), (2, KICK, 75), (1, SNARE, 70), (3, SNARE, 75)),
)
FUNK = (
    _grid(0.25, 4, HAT, 60, 0.5) + ((0, KICK, 108), (0.75, KICK, 90), (2.5, KICK, 100), (1, SNARE, 110),
                                    (3, SNARE, 110), (1.75, SNARE, 40), (3.25, SNARE, 40), (3.75, SNARE, 45)),
    _grid(0.25, 4, HAT, 62, 1.0) + ((0, KICK, 108), (1.5, KICK, 92), (2.25, KICK, 95), (1, SNARE, 110),
                                    (3, SNARE, 110), (2.75, SNARE, 42), (3.5, OPEN, 70)),
)
REGGAE = (  # one drop: kick and side stick together on beat 3
    _grid(0.5, 4, HAT, 58) + ((2, KICK, 100), (2, STICK, 95)),
    _grid(0.5, 4, HAT, 58) + ((2, KICK, 100), (2, SNARE, 90), (3.5, OPEN, 55)),
)
SWING = (  # ride "spang-a-lang" (off-beats shifted by the swing setting), hat pedal on 2 and 4, feathered kick
    ((0, RIDE, 75), (1, RIDE, 80), (1.5, RIDE, 62), (2, RIDE, 75), (3, RIDE, 80), (3.5, RIDE, 62),
     (1, PEDAL, 70), (3, PEDAL, 70), (0, KICK, 45), (1, KICK, 40), (2, KICK, 45), (3, KICK, 40)),
    ((0, RIDE, 75), (1, RIDE, 80), (1.5, RIDE, 62), (2, RIDE, 75), (3, RIDE, 80), (3.5, RIDE, 62),
     (1, PEDAL, 70), (3, PEDAL, 70), (2.5, SNARE, 50), (0, KICK, 45)),
)
BOSSA = (
    _grid(0.5, 4, HAT, 50) + ((0, KICK, 80), (1.5, KICK, 60), (2, KICK, 80), (3.5, KICK, 60),
                              (0, STICK, 70), (1.5, STICK, 70), (3, STICK, 70), (1, STICK, 65), (2.5, STICK, 65)),
    _grid(0.5, 4, SHAKER, 50) + ((0, KICK, 80), (1.5, KICK, 60), (2, KICK, 80), (3.5, KICK, 60),
                                 (0.5, STICK, 68), (2, STICK, 70), (3, STICK, 68)),
)
WALTZ = (
    ((0, KICK, 90), (1, HAT, 60), (2, HAT, 60), (1, STICK, 62), (2, STICK, 60)),
    ((0, KICK, 90), (0, RIDE, 70), (1, RIDE, 60), (2, RIDE, 60), (1, PEDAL, 55)),
)
MARCH = (  # 2/4: bass drum on both beats, snare on the off-beats with a 16th flourish
    ((0, KICK, 100), (1, KICK, 95), (0.5, SNARE, 85), (1.5, SNARE, 85), (1.75, SNARE, 70), (0, CRASH, 60)),
    ((0, KICK, 100), (1, KICK, 95), (0, SNARE, 80), (0.5, SNARE, 90), (0.75, SNARE, 65), (1.5, SNARE, 90)),
)
EDM = (  # four on the floor, claps on 2 and 4, open hats on the off-beats
    _grid(1.0, 4, KICK, 112) + ((1, CLAP, 100), (3, CLAP, 100)) + tuple((b + 0.5, OPEN, 80) for b in range(4)),
    _grid(1.0, 4, KICK, 112) + ((1, CLAP, 100), (3, CLAP, 100)) + _grid(0.25, 4, HAT, 55, 0.5),
)

DUPLE = ("2/4", "4/4", "2/2")
STYLES: dict[str, Style] = {s.name: s for s in (
    Style("rock", DUPLE, 4, (100, 140), {29: .35, 30: .25, 81: .15, 18: .15, 27: .10}, {30: .3, 29: .3, 27: .2, 18: .2},
          {34: .6, 33: .4}, ROCK, (((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 0.5), (2, 0.5), (2.5, 0.5), (3, 0.5), (3.5, 0.5)),
                                  ((0, 1.5), (1.5, 2.5)), ((0, 4),)), "eighths"),
    Style("pop ballad", DUPLE + ("6/8",), 4, (62, 82), {0: .2, 73: .15, 53: .15, 65: .1, 49: .15, 4: .1, 24: .1, 40: .05},
          {0: .35, 4: .2, 89: .15, 48: .15, 24: .15}, {33: .8, 32: .2}, BALLAD,
          (((0, 4),), ((0, 2), (2, 2)), ((0, 1), (1, 1), (2, 1), (3, 1))), "roots", drum_prob=0.75,
          chord_change_beats=(2, 4)),
    Style("funk", DUPLE, 4, (92, 114), {65: .25, 66: .2, 56: .15, 61: .15, 80: .15, 7: .1}, {7: .35, 28: .3, 4: .2, 61: .15},
          {36: .4, 37: .15, 33: .25, 38: .2}, FUNK,
          (((0, 0.25), (0.75, 0.25), (1.5, 0.25), (2.25, 0.25), (3, 0.25), (3.5, 0.25)),
           ((0.5, 0.25), (1.5, 0.25), (2.5, 0.25), (3.5, 0.25), (2.75, 0.25))), "funk", sevenths=True),
    Style("reggae", DUPLE, 4, (66, 86), {16: .2, 22: .15, 56: .15, 65: .15, 114: .15, 24: .1, 81: .1},
          {28: .35, 27: .35, 16: .3}, {33: .6, 38: .4}, REGGAE,
          (((1, 0.4), (3, 0.4)), ((0.5, 0.3), (1.5, 0.3), (2.5, 0.3), (3.5, 0.3))), "reggae"),
    Style("swing", DUPLE + ("6/8",), 4, (112, 180), {66: .25, 56: .2, 71: .15, 11: .15, 57: .1, 65: .15},
          {0: .5, 26: .3, 11: .2}, {32: 1.0}, SWING, (((0, 1.4), (1.5, 0.5)), ((0, 1), (1, 1), (2, 1), (3, 1)),
                                                      ((1, 0.8), (3, 0.8))),
          "walking", drum_prob=0.85, swing=0.17, sevenths=True),
    Style("bossa nova", DUPLE, 4, (120, 146), {73: .3, 66: .15, 65: .15, 11: .15, 4: .1, 24: .15},
          {24: .6, 4: .2, 0: .2}, {32: .6, 33: .4}, BOSSA,
          (((0, 1), (1.5, 1), (3, 0.5), (3.5, 0.5)), ((0, 0.5), (1, 0.5), (1.5, 1), (2.5, 0.5), (3.5, 0.5))),
          "bossa", drum_prob=0.8, sevenths=True),
    Style("waltz", ("3/4", "3/8"), 3, (96, 168), {40: .25, 21: .2, 73: .15, 71: .15, 0: .15, 110: .1},
          {0: .35, 21: .25, 48: .2, 46: .2}, {32: .5, 58: .3, 33: .2}, WALTZ, (((1, 0.8), (2, 0.8)), ((0, 3),)),
          "waltz", drum_prob=0.55, chord_change_beats=(3,)),
    Style("march", DUPLE + ("6/8",), 2, (104, 124), {56: .35, 72: .15, 71: .15, 61: .2, 9: .15},
          {61: .4, 57: .3, 60: .3}, {58: 1.0}, MARCH, (((0.5, 0.4), (1.5, 0.4)),), "march",
          chord_change_beats=(2, 4)),
    Style("electronic dance", DUPLE, 4, (120, 130), {81: .35, 80: .25, 87: .2, 90: .2}, {81: .3, 90: .3, 89: .2, 88: .2},
          {38: .6, 39: .4}, EDM, (((0.5, 0.3), (1.5, 0.3), (2.5, 0.3), (3.5, 0.3)), ((0, 4),)), "offbeat"),
    Style("solo", DUPLE + ("3/4", "6/8", "3/8", "9/8", "12/8"), 0, (60, 116),
          {0: .3, 24: .2, 46: .15, 40: .08, 73: .08, 12: .07, 11: .07, 42: .05}, {}, {}, (), (), "none",
          drum_prob=0.0),
)}
# programs that can play chords/accompaniment under a solo melody (solo style: one instrument does both)
SELF_ACCOMPANYING = {0, 24, 46, 12, 11}
EXTRA_RANGES = {18: (36, 96), 28: (40, 83), 29: (40, 86), 30: (40, 86), 114: (60, 84), 59: (54, 82)}
