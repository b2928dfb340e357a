"""A produced-song stand-in: a seeded multi-track arrangement (GM drum kit, bass, chords, lead) rendered in stereo.

Users caption produced songs of 2-6 minutes at 44.1 / 48 kHz, while the corpus and the bundled clips are short score
renders. Tests, benchmarks and docs need real-shaped input that they can make offline and reproducibly: this module
writes a song with intro / verse / chorus sections, four-on-the-floor drums, a root-fifth bass line, sustained
chords and a lead melody on a synth or guitar, rendered through the GM soundfont by FluidSynth (the corpus renderer)
at the requested rate, stereo. The same (seconds, sample_rate, seed) always gives the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# I-V-vi-IV and vi-IV-I-V in semitones above the tonic, (root, minor?)
_PROGRESSIONS = (((0, False), (7, False), (9, True), (5, False)), ((9, True), (5, False), (0, False), (7, False)))
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
# GM drum keys
_KICK, _SNARE, _CLOSED_HAT, _OPEN_HAT, _CRASH = 36, 38, 42, 46, 49


@dataclass(frozen=True)
class SongSpec:
    """What the arrangement uses; defaults are a mid-tempo pop/electronic song."""

    bpm: float = 112.0
    tonic: int = 57  # A3
    bass_program: int = 38  # Synth Bass 1
    chord_program: int = 89  # Pad 2 (warm)
    lead_program: int = 81  # Lead 2 (sawtooth)
    gain: float = 0.6

    def __post_init__(self):
        if not 40 <= self.bpm <= 240:
            raise ValueError(f"bpm {self.bpm!r} out of range 40-240")
        for name in ("bass_program", "chord_program", "lead_program"):
            if not 0 <= getattr(self, name) <= 127:
                raise ValueError(f"{name} {getattr(self, name)!r} is not a GM program 0-127")


def song_midi(seconds: float, seed: int = 0, spec: SongSpec | None = None):
    """The arrangement as a pretty_midi.PrettyMIDI covering `seconds` (sections of 8 bars, 4/4)."""
    import pretty_midi

    spec = spec or SongSpec()
    rng = np.random.default_rng(seed)
    beat = 60.0 / spec.bpm
    bars = int(np.ceil(seconds / (4 * beat)))
    pm = pretty_midi.PrettyMIDI(initial_tempo=spec.bpm)
    drums = pretty_midi.Instrument(0, is_drum=True, name="drums")
    bass = pretty_midi.Instrument(spec.bass_program, name="bass")
    chords = pretty_midi.Instrument(spec.chord_program, name="chords")
    lead = pretty_midi.Instrument(spec.lead_program, name="lead")

    def note(inst, pitch, start, dur, vel):
        if start < seconds:
            inst.notes.append(pretty_midi.Note(int(vel), int(pitch), start, min(start + dur, seconds)))

    for bar in range(bars):
        section = (bar // 8) % 4  # 0 intro/breakdown, 1 verse, 2 chorus, 3 verse
        t0 = bar * 4 * beat
        root, minor = _PROGRESSIONS[section == 2][bar % 4]
        chord_root = spec.tonic + root
        triad = (0, 3 if minor else 4, 7)
        for k in triad:  # chords: one sustained triad per bar, louder in the chorus
            note(chords, chord_root + k, t0, 4 * beat, 70 if section == 2 else 55)
        if section:  # bass: root on the beat, fifth on the off-beats
            for b in range(8):
                pitch = chord_root - 24 + (7 if b % 2 else 0)
                note(bass, pitch, t0 + b * beat / 2, beat / 2 * 0.9, 90)
        for b in range(4):  # drums: kick on every beat, snare on 2 and 4, eighth-note hats
            if section or bar % 8 >= 4:
                note(drums, _KICK, t0 + b * beat, 0.1, 110)
            if section and b % 2:
                note(drums, _SNARE, t0 + b * beat, 0.1, 100)
            for h in range(2):
                note(drums, _OPEN_HAT if (h and section == 2) else _CLOSED_HAT, t0 + (b + h / 2) * beat, 0.05,
                     60 + int(rng.integers(0, 20)))
        if bar % 8 == 0 and section:
            note(drums, _CRASH, t0, 1.0, 100)
        if section:  # lead: a seeded stepwise melody in eighths and quarters over the chord tones
            t, degree = t0, int(rng.integers(0, 7))
            while t < t0 + 4 * beat:
                dur = beat * (0.5 if rng.random() < 0.6 else 1.0)
                degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
                pitch = spec.tonic + 12 + 12 * (degree // 7) + _MAJOR[degree % 7]
                if rng.random() > 0.15:  # a few rests
                    note(lead, pitch, t, dur * 0.95, 85 + int(rng.integers(0, 20)))
                t += dur
    pm.instruments.extend([drums, bass, chords, lead])
    return pm


def make_song(seconds: float, sample_rate: int = 44100, seed: int = 0, spec: SongSpec | None = None) -> np.ndarray:
    """float32 stereo (round(seconds * sample_rate), 2), peak <= 0.9, with a 2-s fade-out."""
    import tempfile

    from mu_llama.corpus.render import soundfont
    from mu_llama.corpus.synth import shared_synth

    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    spec = spec or SongSpec()
    with tempfile.TemporaryDirectory(prefix="mu_llama_song_") as tmp:
        mid = Path(tmp) / "song.mid"
        song_midi(seconds, seed, spec).write(str(mid))
        x = shared_synth(soundfont(), sample_rate, spec.gain).render_isolated(mid, seconds).copy()
    fade = min(len(x), 2 * sample_rate)
    x[len(x) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    peak = float(np.abs(x).max(initial=0.0))
    if peak > 0.9:
        x *= 0.9 / peak
    return x.astype(np.float32)


def write_song(path: str | Path, seconds: float, sample_rate: int = 44100, seed: int = 0,
               spec: SongSpec | None = None) -> Path:
    """make_song written to `path` (the format from its suffix: .wav, .flac, .ogg, .mp3)."""
    from mu_llama.audio import write_audio

    return write_audio(path, make_song(seconds, sample_rate, seed, spec), sample_rate)
