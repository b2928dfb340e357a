"""The one emotion type of the toolkit: a point in Valence-Arousal-Dominance space.

Meaning (Mehrabian & Russell's PAD model, with "pleasure" called valence as in music-emotion work):
- valence:   unpleasant / sad / dark (-1)  ..  pleasant / happy / bright (+1)
- arousal:   calm / sleepy / still (-1)     ..  excited / energetic / agitated (+1)
- dominance: submissive / fragile / intimate (-1) .. dominant / powerful / commanding (+1)
Each axis is in [-1, 1]; 0 is neutral.

Provenance: no human-annotated VAD data exists in this toolkit. Every VAD value here is *derived*: from text via
NRC EmoLex categories + VADER valence + published PAD values of basic emotions (mu_llama.emotion.text), from the
musical facts of a score via documented cue rules (mu_llama.emotion.targets), or by a regressor trained on those
derived targets (mu_llama.emotion.audio). `VAD.source` records which one produced a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mu_llama.errors import ConfigError

AXES = ("valence", "arousal", "dominance")


@dataclass(frozen=True)
class VAD:
    valence: float
    arousal: float
    dominance: float
    source: str = field(default="", compare=False)   # "text", "facts", "audio", "user", ... (not part of equality)

    def __post_init__(self):
        for name in AXES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"VAD {name} must be a finite number in [-1, 1], got {v!r}")
            if not -1.0 <= v <= 1.0:
                raise ConfigError(f"VAD {name} must be in [-1, 1], got {v}")
            object.__setattr__(self, name, float(v))

    @classmethod
    def clipped(cls, valence: float, arousal: float, dominance: float, source: str = "") -> "VAD":
        """Build from unbounded values by clipping each axis to [-1, 1] (for computed, not user-given, values)."""
        c = lambda x: min(1.0, max(-1.0, float(x)))  # noqa: E731
        return cls(c(valence), c(arousal), c(dominance), source)

    @classmethod
    def neutral(cls) -> "VAD":
        return cls(0.0, 0.0, 0.0, "neutral")

    def shifted(self, valence: float = 0.0, arousal: float = 0.0, dominance: float = 0.0) -> "VAD":
        """Move by the given deltas, clipping to the valid range (used by `generate --from-audio --shift-valence`)."""
        for name, d in (("valence", valence), ("arousal", arousal), ("dominance", dominance)):
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
                raise ConfigError(f"VAD shift of {name} must be a finite number, got {d!r}")
        return VAD.clipped(self.valence + valence, self.arousal + arousal, self.dominance + dominance,
                           f"{self.source}+shift" if self.source else "shift")

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.valence, self.arousal, self.dominance)

    def to_dict(self) -> dict:
        d = {a: round(getattr(self, a), 4) for a in AXES}
        if self.source:
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VAD":
        missing = [a for a in AXES if a not in d]
        if missing:
            raise ConfigError(f"VAD needs {', '.join(AXES)}; missing {', '.join(missing)}")
        return cls(d["valence"], d["arousal"], d["dominance"], d.get("source", ""))

    def __str__(self) -> str:
        return f"V={self.valence:+.2f} A={self.arousal:+.2f} D={self.dominance:+.2f}"
