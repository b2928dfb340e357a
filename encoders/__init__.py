"""Frozen audio encoders (MERT) behind one interface, plus long-audio windowing.

Import as `mu_llama.encoders` (never bare `encoders`: PyPI has an unrelated package of that name).
This package imports nothing from mu_llama except the leaf mu_llama.errors.
"""

from .base import ATTN_IMPLEMENTATIONS, DTYPES, AudioEncoder, EncoderOptions, EncoderOutput
from .descriptors import DESCRIPTOR_DIM, DescriptorEncoder, frame_descriptors
from .mert import MertEncoder, build_random, load_encoder, load_mert, normalize_clips, save_mert
from .mert_config import BUILTIN_CONFIGS, MertConfig, builtin_config
from .windowing import WindowedOutput, WindowFeatures, WindowOptions, WindowPlan, encode_stream, encode_windows

__all__ = [
    "ATTN_IMPLEMENTATIONS", "DTYPES", "AudioEncoder", "EncoderOptions", "EncoderOutput",
    "DESCRIPTOR_DIM", "DescriptorEncoder", "frame_descriptors",
    "MertEncoder", "build_random", "load_encoder", "load_mert", "normalize_clips", "save_mert",
    "BUILTIN_CONFIGS", "MertConfig", "builtin_config",
    "WindowedOutput", "WindowFeatures", "WindowOptions", "WindowPlan", "encode_stream", "encode_windows",
]
