"""Emotion- and text-conditioned music generation (ECMusicLM-style: text + Valence-Arousal-Dominance).

Two backends share the typed `Conditioning(text, vad)`:
- embedded (default, CPU): a small token LM over REMI-like music events with explicit control tokens, rendered with
  fluidsynth (mu_llama.generate.api.EmbeddedGenerator; weights in mu_llama/assets/generator).
- full scale: transformers' MusicgenForConditionalGeneration with a zero-initialised VAD prepend conditioner and a
  LoRA recipe (mu_llama.generate.musicgen; real weights load from a hub id on a user's machine).
"""

from __future__ import annotations

from mu_llama.generate.api import (
           EmbeddedGenerator,
           Generation,
           vad_and_caption_from_audio,
)
from mu_llama.generate.conditioning import (
           Conditioning,
           HashTextEmbedder,
           MiniLMTextEmbedder,
)
from mu_llama.generate.model import (
           GeneratorConfig,
           MusicTokenLM,
           load_generator,
           save_generator,
)
from mu_llama.generate.performance import PerformanceOptions, perform
from mu_llama.generate.planner import HeaderPlanner
from mu_llama.generate.prompt_facts import PromptFacts
from mu_llama.generate.sampling import SamplingOptions

__all__ = [
           "Conditioning",
           "EmbeddedGenerator",
           "Generation",
           "GeneratorConfig",
           "HeaderPlanner",
           "HashTextEmbedder",
           "MiniLMTextEmbedder",
           "MusicTokenLM",
           "PerformanceOptions",
           "PromptFacts",
           "SamplingOptions",
           "load_generator",
           "perform",
           "save_generator",
           "vad_and_caption_from_audio",
]
