"""Trainable add-ons between a frozen music encoder and a frozen causal LLM (installed as mu_llama.adapters).

- music_adapter: encoder hidden states (L, B, T, D) + frame mask -> music tokens (B, M, llm_dim) (clip / time mode)
- injection:     gated LLaMA-Adapter attention of the last K decoder layers to those tokens
- lora:          LoRA (peft), zero-init bias tuning, norm tuning, training-stage selection

Each module's docstring documents its parameter names and shapes (the checkpoint layout).
Imports only torch / transformers / peft and the leaf mu_llama.errors.
"""

from .injection import InjectionConfig, MusicInjection, decoder_layers
from .lora import (
                   LoraOptions,
                   add_bias,
                   apply_lora,
                   canonical_name,
                   finetune_names,
                   finetune_state,
                   is_lora,
                   lora_state_dict,
                   mark_trainable,
                   merge_lora,
                   norm_names,
)
from .music_adapter import MusicAdapter, MusicAdapterConfig, MusicTokens, PooledMusic, pool_frames

__all__ = [
    "InjectionConfig", "MusicInjection", "decoder_layers",
    "LoraOptions", "add_bias", "apply_lora", "canonical_name", "finetune_names", "finetune_state", "is_lora",
    "lora_state_dict", "mark_trainable", "merge_lora", "norm_names",
    "MusicAdapter", "MusicAdapterConfig", "MusicTokens", "PooledMusic", "pool_frames",
]
