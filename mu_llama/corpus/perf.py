"""A performance: the exact notes a clip renders (seconds, MIDI pitches, velocities, GM programs).

Both plain renders of scores (render.py) and popular-music arrangements (arrange.py) produce a `Performance`; the
fact sheet is computed from it (analyze.py), it is written to the clip's .mid file, and that file is what FluidSynth
renders. `read_midi` reads a .mid back so tests can re-analyse what was rendered independently of the builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DRUM_KIT_NAME = "Drum Kit"


@dataclass
class Note:
    start: float      # seconds from clip start
    end: float        # seconds
    pitch: int        # MIDI pitch (drums: GM percussion key)
    velocity: int     # 1..127


@dataclass
class Track:
    role: str                 # "part" (a score part), "melody", "bass", "chords", "pad", "drums"
    program: int              # GM program 0..127 (ignored for drums)
    is_drum: bool = False
    notes: list[Note] = field(default_factory=list)

    @property
    def name(self) -> str:
        return DRUM_KIT_NAME if self.is_drum else program_name(self.program)


@dataclass
class Performance:
    tracks: list[Track]
    duration: float                      # seconds of audio to keep (music + release tail)
    tempo_bpm: float                     # quarter-note BPM as rendered
    time_signature: tuple[int, int]      # (numerator, denominator) at the clip start

    @property
    def pitched(self) -> list[Track]:
        return [t for t in self.tracks if not t.is_drum and t.notes]


def program_name(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(program)


def write_midi(perf: Performance, path: str | Path) -> None:
    """Write the performance as a type-1 MIDI file: one track per Track, drums on channel 10 (pretty_midi is_drum)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=perf.tempo_bpm, resolution=480)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(*perf.time_signature, 0.0))
    for t in perf.tracks:
        inst = pretty_midi.Instrument(program=0 if t.is_drum else t.program, is_drum=t.is_drum, name=t.role)
        for n in t.notes:
            inst.notes.append(pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch),
                                               start=float(n.start), end=float(n.end)))
        pm.instruments.append(inst)
    pm.write(str(path))


def read_midi(path: str | Path, duration: float | None = None) -> Performance:
    """Read a .mid written by `write_midi` (or any MIDI file) back into a Performance."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    _, tempi = pm.get_tempo_changes()
    ts = pm.time_signature_changes[0] if pm.time_signature_changes else None
    tracks = [Track(inst.name or "part", inst.program, inst.is_drum,
                    [Note(n.start, n.end, n.pitch, n.velocity) for n in inst.notes]) for inst in pm.instruments]
    return Performance(tracks, duration if duration is not None else pm.get_end_time(),
                       float(tempi[0]) if len(tempi) else 120.0, (ts.numerator, ts.denominator) if ts else (4, 4))
