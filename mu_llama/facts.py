"""The fact sheet of a music clip: what the corpus knows from the score and rendering, what captions describe,
and what the evaluation harness parses back out of generated text.

One vocabulary, shared by the corpus builder (writes facts and captions), the eval harness (parses and scores them)
and the emotion model (derives VAD targets from them). Values outside a vocabulary are rejected on construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mu_llama.errors import choice_error

# Instrument families. Mapped from General MIDI programs by `gm_family`; channel 10 is "drums".
FAMILIES = ("keyboard", "mallet percussion", "organ", "guitar", "bass", "strings", "voice",
            "brass", "woodwind", "synth", "drums", "other")
MODES = ("major", "minor")
METERS = ("2/4", "3/4", "4/4", "2/2", "3/8", "6/8", "9/8", "12/8", "other")
TEMPO_CLASSES = ("slow", "moderate", "fast")            # < 80, 80..119, >= 120 BPM (quarter-note beats)
TEXTURES = ("monophonic", "homophonic", "polyphonic")
REGISTERS = ("low", "middle", "high")                  # mean MIDI pitch < 55, 55..71, >= 72
DENSITIES = ("sparse", "moderate", "dense")            # notes per second < 3, 3..8, >= 8
DYNAMICS = ("soft", "medium", "loud")                  # mean MIDI velocity < 60, 60..95, >= 96
ERAS = ("medieval", "renaissance", "baroque", "classical", "romantic", "modern", "traditional")
STYLES = ("classical", "folk", "rock", "pop ballad", "funk", "reggae", "swing", "bossa nova", "waltz",
          "march", "electronic dance", "solo")
BASS_TYPES = ("none", "picked bass", "fingered bass", "slap bass", "synth bass", "acoustic bass", "tuba",
              "cello", "other")
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

_GM_FAMILY_RANGES = (  # (first program, last program, family); General MIDI level 1 program groups
    (0, 7, "keyboard"), (8, 15, "mallet percussion"), (16, 23, "organ"), (24, 31, "guitar"),
    (32, 39, "bass"), (40, 51, "strings"), (52, 54, "voice"), (55, 55, "other"), (56, 63, "brass"),
    (64, 79, "woodwind"), (80, 103, "synth"), (104, 111, "other"), (112, 119, "other"), (120, 127, "other"),
)


def gm_family(program: int, is_drum: bool = False) -> str:
    """General MIDI program number (0-127) -> instrument family."""
    if is_drum:
        return "drums"
    if not 0 <= program <= 127:
        raise ValueError(f"GM program must be in 0..127, got {program}")
    for lo, hi, fam in _GM_FAMILY_RANGES:
        if lo <= program <= hi:
            return fam
    raise AssertionError("unreachable: ranges cover 0..127")


def tempo_class(bpm: float) -> str:
    return "slow" if bpm < 80 else "moderate" if bpm < 120 else "fast"


def register_class(mean_pitch: float) -> str:
    return "low" if mean_pitch < 55 else "middle" if mean_pitch < 72 else "high"


def density_class(notes_per_second: float) -> str:
    return "sparse" if notes_per_second < 3 else "moderate" if notes_per_second < 8 else "dense"


def dynamics_class(mean_velocity: float) -> str:
    return "soft" if mean_velocity < 60 else "medium" if mean_velocity < 96 else "loud"


@dataclass
class FactSheet:
    """Ground truth for one rendered clip. Categorical fields use the vocabularies above."""

    instruments: list[str]                 # GM instrument names as rendered, e.g. ["Acoustic Grand Piano", "Violin"]
    families: list[str]                    # their families (FAMILIES), de-duplicated, in order of prominence
    key_tonic: str                         # PITCH_CLASSES
    mode: str                              # MODES
    meter: str                             # METERS
    tempo_bpm: float
    texture: str                           # TEXTURES
    voices: int                            # simultaneous independent parts
    register: str                          # REGISTERS
    note_density: float                    # notes per second
    dynamics: str                          # DYNAMICS
    composer: str                          # "Johann Sebastian Bach", or "traditional"
    era: str                               # ERAS
    genre: str                             # source collection's genre, e.g. "chorale", "string quartet", "folk song"
    style: str = "classical"               # STYLES (arrangements add rock, funk, ...)
    drums: bool = False
    bass_type: str = "none"                # BASS_TYPES
    lead_instrument: str = ""              # GM name of the melody instrument, "" when not applicable
    harmony: list[str] = field(default_factory=list)   # Roman numerals in order, when the corpus has an analysis
    work_id: str = ""                      # source work identifier (splits are by work)
    collection: str = ""                   # music21 corpus collection (licence facts are per collection)

    def __post_init__(self):
        checks = (("families", self.families, FAMILIES), ("key_tonic", [self.key_tonic], PITCH_CLASSES),
                  ("mode", [self.mode], MODES), ("meter", [self.meter], METERS),
                  ("texture", [self.texture], TEXTURES), ("register", [self.register], REGISTERS),
                  ("dynamics", [self.dynamics], DYNAMICS), ("era", [self.era], ERAS),
                  ("style", [self.style], STYLES), ("bass_type", [self.bass_type], BASS_TYPES))
        for name, values, vocab in checks:
            for v in values:
                if v not in vocab:
                    raise choice_error(f"fact {name}", v, vocab)
        if self.tempo_bpm <= 0 or self.voices < 1 or self.note_density < 0:
            raise ValueError(f"implausible facts: tempo {self.tempo_bpm}, voices {self.voices}, density {self.note_density}")

    @property
    def tempo_class(self) -> str:
        return tempo_class(self.tempo_bpm)

    @property
    def density_class(self) -> str:
        return density_class(self.note_density)

    @property
    def key(self) -> str:
        return f"{self.key_tonic} {self.mode}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tempo_class"] = self.tempo_class
        d["density_class"] = self.density_class
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FactSheet":
        derived = {"tempo_class", "density_class"}
        return cls(**{k: v for k, v in d.items() if k not in derived})
