"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tok():
    """The generator's event tokenizer."""
    from mu_llama.generate.tokenizer import Tokenizer

    return Tokenizer()


@pytest.fixture(scope="module")
def gen(tok):
    """A tiny random text+VAD generator with a hashing text embedder (no MiniLM needed)."""
    from mu_llama.generate import (
        EmbeddedGenerator,
        GeneratorConfig,
        HashTextEmbedder,
        MusicTokenLM,
    )

    torch.manual_seed(0)
    tiny = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=48, text_dim=384)
    return EmbeddedGenerator(MusicTokenLM(GeneratorConfig(vocab_size=len(tok), **tiny)), HashTextEmbedder())
