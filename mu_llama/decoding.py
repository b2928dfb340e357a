"""Decoding options for caption / ask. Greedy when temperature == 0 (deterministic); sampling is seeded per call.

MU-LLaMA's defaults are available as DecodingOptions.mullama() (CLI: max_gen_len 512, temperature 0.6,
top_p 0.8) and DecodingOptions.mullama_demo() (temperature 0.25, top_p 1.0).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from mu_llama.errors import ConfigError


@dataclass(frozen=True)
class DecodingOptions:
    max_new_tokens: int = 200
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; >1 discourages repeats (HF semantics)
    seed: int | None = None  # sampling seed (None: 0, so sampling is reproducible by default)
    min_new_tokens: int = 0  # forbid EOS before this many tokens (benchmarks use it for fixed lengths)
    fact_fusion: float = 1.0  # weight of the model's audio fact tagger in decoding (mu_llama.fusion); 0 = off

    def __post_init__(self):
        _check_int("max_new_tokens", self.max_new_tokens, 1, 32768)
        _check_int("top_k", self.top_k, 0, 1_000_000)
        _check_int("min_new_tokens", self.min_new_tokens, 0, self.max_new_tokens)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_float("temperature", self.temperature, 0.0, 100.0, "[0, 100] (0 = greedy)")
        _check_float("top_p", self.top_p, 0.0, 1.0, "(0, 1]")
        _check_float("fact_fusion", self.fact_fusion, 0.0, 100.0, "[0, 100] (0 = off)")
        if self.top_p == 0:
            raise ConfigError("invalid top_p 0.0; valid range (0, 1]")
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, 100.0, "(0, 100] (1 = off)")
        if self.repetition_penalty == 0:
            raise ConfigError("invalid repetition_penalty 0.0; valid range (0, 100] (1 = off)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def mullama(cls, **overrides) -> DecodingOptions:
        return cls(**{"max_new_tokens": 512, "temperature": 0.6, "top_p": 0.8, **overrides})

    @classmethod
    def mullama_demo(cls, **overrides) -> DecodingOptions:
        return cls(**{"max_new_tokens": 512, "temperature": 0.25, "top_p": 1.0, **overrides})

    def generation_config(self, tokenizer, eos_token_ids: list[int] | None = None):
        """A fresh transformers GenerationConfig (the model's sampling defaults are not consulted).
        eos_token_ids: every id that ends an answer (default: the tokenizer's EOS)."""
        from transformers import GenerationConfig

        eos = eos_token_ids or tokenizer.eos_token_id
        kwargs = dict(max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens or None,
                      repetition_penalty=None if self.repetition_penalty == 1.0 else self.repetition_penalty,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                      bos_token_id=tokenizer.bos_token_id, use_cache=True)
        if self.greedy:
            return GenerationConfig(do_sample=False, **kwargs)
        return GenerationConfig(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                                top_k=self.top_k or None, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def seeded(options: DecodingOptions, device="cpu"):
    """Sampling draws from a generator seeded per call; the caller's global RNG state is left untouched."""
    import torch  # lazily: the CLI builds its parsers from this module without loading torch

    if options.greedy:
        yield
        return
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if options.seed is None else options.seed)
        yield


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"invalid {name} {value!r}; valid range: integers in [{lo}, {hi}]")


def _check_float(name: str, value, lo: float, hi: float, text: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise ConfigError(f"invalid {name} {value!r}; valid range {text}")
