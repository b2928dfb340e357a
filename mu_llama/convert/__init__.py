"""Importing foreign checkpoints: MU-LLaMA's released weights and Meta-layout LLaMA.

- meta_llama: Meta consolidated.*.pth + params.json <-> transformers LlamaForCausalLM (rotary q/k row permutation)
- mullama:    MU-LLaMA checkpoint.pth -> a MuLlama.save_pretrained directory (name map kept as data: MULLAMA_RULES)
- io:         torch.load(weights_only=True) of foreign pickles, sharded safetensors writing
"""

from .io import load_pth, save_sharded, tensor_dict
from .meta_llama import (META_TO_HF, LlamaShape, LlamaSource, convert_meta_to_hf, find_llama, hf_to_meta_state,
                         load_meta_state, meta_to_hf_state, permute_rotary, unpermute_rotary)
from .mullama import MULLAMA_RULES, ConversionReport, Rule, check_encoder, convert_mullama, infer_config, map_checkpoint

__all__ = [
    "load_pth", "save_sharded", "tensor_dict",
    "META_TO_HF", "LlamaShape", "LlamaSource", "convert_meta_to_hf", "find_llama", "hf_to_meta_state",
    "load_meta_state", "meta_to_hf_state", "permute_rotary", "unpermute_rotary",
    "MULLAMA_RULES", "ConversionReport", "Rule", "check_encoder", "convert_mullama", "infer_config", "map_checkpoint",
]
