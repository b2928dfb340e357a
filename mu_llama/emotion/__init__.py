"""Emotion as Valence-Arousal-Dominance: one VAD type and derived estimators from text, musical facts and audio.

    from mu_llama.emotion import VAD, estimate
    estimate("a slow, mournful lament in a minor key")   # text -> VAD (lexicon-derived)
    estimate("clip.wav")                                 # audio file -> VAD (regressor on derived targets)

Every estimate is derived (lexicons, published PAD centroids, documented musical cue rules), not human-annotated:
see mu_llama/emotion/vad.py for the meaning of the axes and mu_llama/emotion/{text,targets,audio}.py for each source.
"""

from __future__ import annotations

from pathlib import Path

from mu_llama.emotion.targets import MusicCues, vad_from_cues, vad_from_facts
from mu_llama.emotion.text import estimate_text, vad_from_text
from mu_llama.emotion.vad import AXES, VAD

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus", ".m4a")


def looks_like_audio(x: str) -> bool:
    """True when `x` names an existing file or has an audio suffix (so typos in paths fail loudly, not as text)."""
    return Path(x).suffix.lower() in AUDIO_SUFFIXES or Path(x).is_file()


def estimate(x: str) -> VAD:
    """VAD of an audio file path or of a text (the same dispatch as `mu-llama emotion AUDIO|TEXT`)."""
    if looks_like_audio(x):
        from mu_llama.emotion.audio import vad_from_audio

        return vad_from_audio(x)
    return vad_from_text(x)


def vad_from_audio(path, **kw) -> VAD:
    from mu_llama.emotion.audio import vad_from_audio as f

    return f(path, **kw)


__all__ = ["AXES", "VAD", "MusicCues", "estimate", "estimate_text", "looks_like_audio", "vad_from_audio",
           "vad_from_cues", "vad_from_facts", "vad_from_text"]
