"""VAD from musical facts: documented cue rules, the training target of the audio estimator and the generator.

These are derived labels (no listener ratings exist here). Directions follow the cue-emotion associations summarised
by Gabrielsson & Lindstrom (2010) and Juslin & Laukka (2004); weights are project design values:

- valence   <- mode (major +, minor -) first; then tempo (faster a little brighter) and register (higher brighter).
- arousal   <- tempo (log scale) first; then loudness (mean velocity) and note density.
- dominance <- loudness first; then register (low = powerful), texture (full / many voices = powerful,
               solo line = fragile) and instrument family (brass/organ powerful, woodwind/mallets light).

Each cue is first mapped to [-1, 1] (`cue_values`), the axes are weighted sums clipped to [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mu_llama.emotion.vad import VAD

# (cue, weight) per axis. Weights of an axis sum to 1, so a clip at every cue's extreme reaches +-1.
WEIGHTS: dict[str, dict[str, float]] = {
    "valence": {"mode": 0.65, "tempo": 0.2, "pitch": 0.15},
    "arousal": {"tempo": 0.5, "velocity": 0.3, "density": 0.2},
    "dominance": {"velocity": 0.55, "pitch": 0.2, "texture": 0.15, "family": 0.1},
}
# Instrument family -> power cue in [-1, 1] (families from mu_llama.facts.FAMILIES; others 0).
FAMILY_POWER = {"brass": 1.0, "organ": 0.8, "drums": 0.6, "bass": 0.4, "strings": 0.2, "keyboard": 0.0, "synth": 0.0,
                "guitar": -0.2, "voice": -0.2, "woodwind": -0.5, "mallet percussion": -0.6}
# Class midpoints used when only categorical facts are known.
VELOCITY_OF = {"soft": 50.0, "medium": 78.0, "loud": 104.0}
PITCH_OF = {"low": 50.0, "middle": 64.0, "high": 76.0}
TEXTURE_OF = {"monophonic": -1.0, "homophonic": 0.3, "polyphonic": 0.6}


@dataclass(frozen=True)
class MusicCues:
    """Continuous musical facts of a clip (what the rules read)."""

    major_share: float        # 0..1: share of time in a major key (1 = all major); 0.5 when unknown
    tempo_bpm: float          # quarter-note beats per minute
    notes_per_second: float
    mean_velocity: float      # MIDI velocity 1..127 (or an audio-derived equivalent)
    mean_pitch: float         # MIDI pitch of the average sounding note
    texture: float = 0.0      # -1 solo line .. +1 full polyphony
    family_power: float = 0.0  # FAMILY_POWER of the lead family


def _clip(x: float) -> float:
    return max(-1.0, min(1.0, x))


def cue_values(c: MusicCues) -> dict[str, float]:
    """Each cue mapped to [-1, 1]."""
    return {
        "mode": _clip(2.0 * c.major_share - 1.0),
        "tempo": _clip(math.log2(max(c.tempo_bpm, 1.0) / 100.0) / 0.9),      # 54 bpm -> -1, 100 -> 0, 186 -> +1
        "velocity": _clip((c.mean_velocity - 78.0) / 32.0),                    # 46 -> -1, 110 -> +1
        "density": _clip(math.log2(max(c.notes_per_second, 0.1) / 4.0) / 2.0),  # 1/s -> -1, 16/s -> +1
        "pitch": _clip((c.mean_pitch - 64.0) / 14.0),                           # 50 -> -1, 78 -> +1
        "texture": _clip(c.texture),
        "family": _clip(c.family_power),
    }


def vad_from_cues(c: MusicCues) -> VAD:
    v = cue_values(c)
    sign = {"pitch": {"dominance": -1.0}}   # low register is the powerful one
    out = []
    for axis, ws in WEIGHTS.items():
        out.append(sum(w * v[cue] * sign.get(cue, {}).get(axis, 1.0) for cue, w in ws.items()))
    return VAD.clipped(*out, source="facts")


def cues_from_facts(facts) -> MusicCues:
    """mu_llama.facts.FactSheet -> cues (categorical dynamics/register become class midpoints)."""
    lead = facts.families[0] if facts.families else "other"
    return MusicCues(
        major_share=1.0 if facts.mode == "major" else 0.0,
        tempo_bpm=facts.tempo_bpm,
        notes_per_second=facts.note_density,
        mean_velocity=VELOCITY_OF[facts.dynamics],
        mean_pitch=PITCH_OF[facts.register],
        texture=TEXTURE_OF[facts.texture] if facts.voices <= 1 or facts.texture != "monophonic" else -1.0,
        family_power=FAMILY_POWER.get(lead, 0.0),
    )


def vad_from_facts(facts) -> VAD:
    """Derived VAD of a FactSheet (mu_llama.facts) by the cue rules above."""
    return vad_from_cues(cues_from_facts(facts))


def blend(*pairs: tuple[VAD, float], source: str = "blend") -> VAD:
    """Weighted mean of VADs, e.g. blend((facts_vad, 0.75), (text_vad, 0.25))."""
    total = sum(w for _, w in pairs)
    vals = [sum(v.as_tuple()[a] * w for v, w in pairs) / total for a in range(3)]
    return VAD.clipped(*vals, source=source)
