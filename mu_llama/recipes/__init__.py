"""Training recipes: scripts-as-functions that build the default model's parts from the corpus.

Recipes import the library; the library never imports recipes. Each recipe exposes one function taking a frozen,
self-validating config dataclass (the CLI's `mu-llama train ...` only parses flags into it) and returns a Path.
"""

from mu_llama.recipes.pretrain_encoder import PretrainConfig, pretrain_encoder
from mu_llama.recipes.probe import probe_report

__all__ = ["PretrainConfig", "pretrain_encoder", "probe_report"]
