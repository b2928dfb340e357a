"""mu-llama: music understanding and captioning.

The Python API mirrors the CLI (`mu-llama caption` / `ask`):

    import mu_llama
    model = mu_llama.load_model()                       # the default model, mu-llama-mini
    mu_llama.caption(model, ["a.flac", "b.mp3"])        # -> list of captions
    mu_llama.ask(model, "a.flac", "Is this in a major or a minor key?")

Names are imported on first use, so `import mu_llama` (and the CLI) stay light.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "load_model": "mu_llama.model", "MuLlama": "mu_llama.model", "MuLlamaConfig": "mu_llama.model",
    "DEFAULT_MODEL": "mu_llama.model", "caption": "mu_llama.tasks", "ask": "mu_llama.tasks",
    "Conversation": "mu_llama.tasks", "DecodingOptions": "mu_llama.decoding", "LLMOptions": "mu_llama.llm",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mu_llama' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
