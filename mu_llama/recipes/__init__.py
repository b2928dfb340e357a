"""Training and evaluation recipes: programs-as-functions that build and measure the default model's parts.

Recipes import the library; the library never imports recipes. Each recipe exposes a function, most taking a frozen,
self-validating config dataclass, and each is a `mu-llama` verb whose module under mu_llama/cli/ only parses flags:

    pretrain_encoder    mu-llama pretrain-encoder     the small MERT-architecture encoder
    probe               mu-llama probe-encoder        linear probes of a pretrained encoder
    train               mu-llama train                the music adapter + LoRA (the LLM side)
                        mu-llama export               package a trained model folder
                        mu-llama predict              a trained model's predictions for a corpus split
    train_tagger        mu-llama train-tagger         the audio fact tagger
    generator_data      mu-llama generator-data       the generator's training data
    train_emotion       mu-llama train-emotion        the audio VAD estimator
    train_generator     mu-llama train-generator      the embedded music generator
    evaluate_generator  mu-llama eval-generator       the generator's control, diversity and speed figures
"""

from mu_llama.recipes.pretrain_encoder import PretrainConfig, pretrain_encoder
from mu_llama.recipes.probe import probe_report

__all__ = ["PretrainConfig", "pretrain_encoder", "probe_report"]
