"""Flag parsers that several verbs share."""

from __future__ import annotations

from mu_llama.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N): this process takes items K, K+N, K+2N, ..."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"invalid --shard {text!r}: expected K/N, e.g. 0/2") from None
    return k, n
