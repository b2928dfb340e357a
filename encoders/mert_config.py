"""MERT's config.json, read field by field into a validated dataclass, and mapped onto transformers' HubertConfig.

MERT (m-a-p/MERT-v1-95M, -330M) ships remote code (MERTConfig/MERTModel). With its CQT front-end and
deepnorm off, as in both released configs, MERTModel builds exactly transformers' HubertModel modules
(same names, same math), so we load it into HubertModel without trust_remote_code. Every config field
is either mapped, known to be irrelevant at inference (listed below, or one of transformers' generic config
keys: generic_config_fields), or refused with the field named.

Deliberate facts from the released configs (see tests/fixtures/mert_configs/):
- 95M: 12 x 768, post-LN encoder, group-norm conv front-end, conv_bias false.
- 330M: 24 x 1024, FFN 4096, 16 heads, pre-LN ("stable layer norm") encoder, and, like 95M, a
  GROUP-norm conv front-end (feat_extract_norm "group"), conv_bias false, attention_relax 32.0.
- attention_relax only reaches the math inside MERT's deepnorm encoder; without deepnorm MERTModel uses the
  stock Hubert encoders and ignores it. (Even there it is softmax(x - max) rescaling: shift-invariant.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mu_llama.errors import ConfigError, choice_error

if TYPE_CHECKING:  # transformers is imported when a model is built, not when mu_llama.encoders is imported
    from transformers import HubertConfig

MODEL_TYPES = ("mert_model", "hubert")
FEAT_EXTRACT_NORMS = ("group", "layer")

# Fields that are only about training, heads, tokenizers or bookkeeping: they never change the hidden states
# of a frozen encoder at inference (dropout and SpecAugment are off in eval mode). transformers' generic config
# keys are added to these by generic_config_fields() (derived from transformers, not typed here).
IGNORED_FIELDS = frozenset({
    "_name_or_path", "architectures", "auto_map", "transformers_version", "torch_dtype", "dtype", "tokenizer_class",
    "model_type", "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "gradient_checkpointing",
    "initializer_range", "use_weighted_layer_sum", "classifier_proj_size", "ctc_loss_reduction", "ctc_zero_infinity",
    "activation_dropout", "attention_dropout", "hidden_dropout", "hidden_dropout_prob", "feat_proj_dropout",
    "feat_extract_dropout", "final_dropout", "layerdrop", "feat_quantizer_dropout",
    "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks", "mask_time_min_space",
    "mask_time_other", "mask_time_selection", "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks",
    "mask_channel_prob", "mask_channel_length", "mask_channel_min_space", "mask_channel_other", "mask_channel_selection",
    "feature_extractor_cqt_bins",  # only read when feature_extractor_cqt is on (refused)
    "attention_relax",  # only read by MERT's deepnorm encoder (refused); see module docstring
    "_attn_implementation", "attn_implementation",
})
# Generic keys that transformers 4.x's PretrainedConfig.to_dict() wrote into every config.json (so into MERT
# re-saved with 4.x) and that 5.x no longer defines, so they cannot be derived from the installed transformers.
# None reaches a HubertModel / MERTModel forward (torchscript and tie_* only tie or export weights, is_decoder /
# add_cross_attention are read by text decoders only). pruned_heads is NOT here: it removes heads (refused below).
LEGACY_GENERIC_FIELDS = frozenset({
    "torchscript", "use_bfloat16", "tf_legacy_loss", "tie_word_embeddings", "tie_encoder_decoder", "is_decoder",
    "add_cross_attention", "cross_attention_hidden_size", "finetuning_task", "prefix", "sep_token_id",
    "task_specific_params", "num_labels", "_commit_hash", "_attn_implementation_autoset",
})

# Fields that change the architecture; each maps onto a HubertConfig field (plus sample_rate and the checks).
ARCH_FIELDS = (
    "sample_rate", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride", "conv_kernel", "conv_bias",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "conv_pos_batch_norm", "do_stable_layer_norm",
    "feat_proj_layer_norm", "layer_norm_eps",
)
# Optional architecture fields and the value MERTConfig/HubertConfig use when a config omits them.
OPTIONAL_DEFAULTS: dict[str, Any] = {"conv_pos_batch_norm": False, "feat_proj_layer_norm": True, "layer_norm_eps": 1e-5}
# Fields we read only to refuse what we cannot represent exactly: field -> the only accepted value.
# null counts as "off" for each of them.
REFUSED_UNLESS: dict[str, Any] = {"feature_extractor_cqt": False, "deepnorm": False, "adapter_attn_dim": None,
                                   "add_adapter": False, "pruned_heads": {}}
REFUSAL_REASONS = {
    "feature_extractor_cqt": "the CQT front-end (nnAudio features concatenated to the conv features) is not part of HubertModel",
    "deepnorm": "deepnorm rescales every residual connection (MERT's HubertEncoder_extend), which HubertModel does not do",
    "adapter_attn_dim": "attention adapters are not used by MERT and are not supported",
    "add_adapter": "output adapters are not used by MERT and are not supported",
    "pruned_heads": "pruned attention heads change the layer shapes, which the HubertModel we build does not do",
}


@functools.lru_cache(maxsize=1)
def generic_config_fields() -> frozenset[str]:
    """transformers' model-independent config keys: never architecture, so ignored when a config.json carries them.

    Derived from the installed transformers: the keys of a default PretrainedConfig().to_dict() (bookkeeping,
    output flags, labels, dtype) and of GenerationConfig().to_dict() (the generation parameters 4.x configs carried:
    num_beams, bad_words_ids, output_scores, ...; 5.x pops them on load), plus LEGACY_GENERIC_FIELDS. Our own
    architecture and refused fields are taken out, so a generic key can never hide one of them.
    """
    from transformers import GenerationConfig, PretrainedConfig

    keys = set(PretrainedConfig().to_dict()) | set(GenerationConfig().to_dict()) | LEGACY_GENERIC_FIELDS
    return frozenset(keys - set(ARCH_FIELDS) - set(REFUSED_UNLESS) - {"num_feat_extract_layers"})


@dataclass(frozen=True)
class MertConfig:
    """The architecture of a MERT/HuBERT encoder plus its waveform normalisation. Validates itself."""

    sample_rate: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    feat_extract_norm: str
    feat_extract_activation: str
    conv_dim: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_bias: bool
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int
    conv_pos_batch_norm: bool = False
    do_stable_layer_norm: bool = False
    feat_proj_layer_norm: bool = True
    layer_norm_eps: float = 1e-5
    do_normalize: bool = True  # Wav2Vec2FeatureExtractor's zero-mean unit-variance per clip (preprocessor_config.json)

    def __post_init__(self):
        for name in ("sample_rate", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.feat_extract_norm not in FEAT_EXTRACT_NORMS:
            raise choice_error("feat_extract_norm", self.feat_extract_norm, FEAT_EXTRACT_NORMS)
        from transformers.activations import ACT2FN

        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in ACT2FN:
                raise choice_error(name, getattr(self, name), sorted(ACT2FN))
        n = len(self.conv_dim)
        if n == 0 or len(self.conv_stride) != n or len(self.conv_kernel) != n:
            raise ConfigError(f"conv_dim, conv_stride and conv_kernel must have the same non-zero length, got "
                              f"{len(self.conv_dim)}, {len(self.conv_stride)}, {len(self.conv_kernel)}")
        if any(x <= 0 for x in (*self.conv_dim, *self.conv_stride, *self.conv_kernel)):
            raise ConfigError("conv_dim, conv_stride and conv_kernel must be positive")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by "
                              f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")

    @property
    def frame_stride(self) -> int:
        """Samples between consecutive frames (product of conv strides; 320 for MERT)."""
        s = 1
        for x in self.conv_stride:
            s *= x
        return s

    @property
    def receptive_field(self) -> int:
        """Samples seen by one frame (400 for MERT): R = k_last, then R = (R - 1) * s + k going down the stack."""
        r = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            r = (r - 1) * s + k
        return r

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "config.json", *, do_normalize: bool = True) -> MertConfig:
        """Read a MERT (or plain HuBERT) config.json dict; refuse anything we cannot represent exactly."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"{source}: model_type {model_type!r} is not supported; valid choices: {', '.join(MODEL_TYPES)}")
        for field, accepted in REFUSED_UNLESS.items():
            if field in raw and raw[field] is not None and raw[field] != accepted:
                raise ConfigError(f"{source}: {field}={json.dumps(raw[field])} is not supported: {REFUSAL_REASONS[field]}")
        unknown = sorted(set(raw) - IGNORED_FIELDS - generic_config_fields() - set(ARCH_FIELDS) - set(REFUSED_UNLESS)
                         - {"num_feat_extract_layers"})
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; cannot tell whether they change the model")
        values: dict[str, Any] = {}
        for field in ARCH_FIELDS:
            if field in raw:
                values[field] = raw[field]
            elif field in OPTIONAL_DEFAULTS:
                values[field] = OPTIONAL_DEFAULTS[field]
            elif field == "sample_rate" and model_type == "hubert":
                values[field] = 16000  # HuBERT checkpoints are 16 kHz and do not record it
            else:
                raise ConfigError(f"{source}: required field {field!r} is missing")
        for field in ("conv_dim", "conv_stride", "conv_kernel"):
            if not isinstance(values[field], (list, tuple)) or not all(isinstance(x, int) for x in values[field]):
                raise ConfigError(f"{source}: {field} must be a list of integers, got {values[field]!r}")
            values[field] = tuple(values[field])
        for field in ("conv_bias", "conv_pos_batch_norm", "do_stable_layer_norm", "feat_proj_layer_norm"):
            if not isinstance(values[field], bool):
                raise ConfigError(f"{source}: {field} must be true or false, got {values[field]!r}")
        if "num_feat_extract_layers" in raw and raw["num_feat_extract_layers"] != len(values["conv_dim"]):
            raise ConfigError(f"{source}: num_feat_extract_layers {raw['num_feat_extract_layers']} != len(conv_dim) "
                              f"{len(values['conv_dim'])}")
        try:
            return cls(**values, do_normalize=do_normalize)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:  # e.g. a string where a number belongs
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> MertConfig:
        """Read config.json, plus do_normalize and sampling_rate from preprocessor_config.json when it sits next to it.

        The sample rate comes from config.json's sample_rate (MERT's own field); a config without one (an HF-native
        "hubert" directory, e.g. MERT re-saved with HubertModel.save_pretrained) takes the feature extractor's
        sampling_rate, and only a HuBERT with neither is assumed 16 kHz. The two files disagreeing is an error.
        """
        path = Path(path)
        raw = _read_json(path)
        do_normalize = True
        pre = path.parent / "preprocessor_config.json"
        if pre.is_file():
            pre_raw = _read_json(pre)
            if not isinstance(pre_raw, Mapping):
                raise ConfigError(f"{pre}: expected a JSON object, got {type(pre_raw).__name__}")
            do_normalize = pre_raw.get("do_normalize", True)
            if not isinstance(do_normalize, bool):
                raise ConfigError(f"{pre}: do_normalize must be true or false, got {do_normalize!r}")
            rate = pre_raw.get("sampling_rate")
            if rate is not None:
                if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
                    raise ConfigError(f"{pre}: sampling_rate must be a positive integer (Hz), got {rate!r}")
                own = raw.get("sample_rate") if isinstance(raw, Mapping) else None
                if own is None and isinstance(raw, Mapping):
                    raw = {**raw, "sample_rate": rate}
                elif own != rate:
                    raise ConfigError(f"{pre}: sampling_rate {rate} disagrees with {path.name} sample_rate {own}; "
                                      "fix one of the two files")
        return cls.from_dict(raw, str(path), do_normalize=do_normalize)

    def to_mert_dict(self) -> dict[str, Any]:
        """The config.json fields (MERT names) that describe this architecture, with CQT and deepnorm off."""
        d = asdict(self)
        d.pop("do_normalize")
        for k in ("conv_dim", "conv_stride", "conv_kernel"):
            d[k] = list(d[k])
        return {"model_type": "mert_model", **d, "num_feat_extract_layers": len(self.conv_dim),
                "feature_extractor_cqt": False, "deepnorm": False, "attention_relax": -1.0}

    def to_hubert(self, attn_implementation: str = "sdpa") -> HubertConfig:
        """The exact HubertConfig for this encoder, in inference form: no dropout, no SpecAugment, no mask vector."""
        from transformers import HubertConfig

        return HubertConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act, feat_extract_norm=self.feat_extract_norm,
            feat_extract_activation=self.feat_extract_activation, conv_dim=list(self.conv_dim),
            conv_stride=list(self.conv_stride), conv_kernel=list(self.conv_kernel), conv_bias=self.conv_bias,
            num_conv_pos_embeddings=self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
            conv_pos_batch_norm=self.conv_pos_batch_norm, do_stable_layer_norm=self.do_stable_layer_norm,
            feat_proj_layer_norm=self.feat_proj_layer_norm, layer_norm_eps=self.layer_norm_eps,
            hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
            final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0, apply_spec_augment=False,
            attn_implementation=attn_implementation,
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed JSON ({e})") from None


# Built-in architectures by name, in config.json field names (the released MERT values; "tiny" for tests).
_MERT_COMMON: dict[str, Any] = {
    "model_type": "mert_model", "sample_rate": 24000, "hidden_act": "gelu", "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "feat_proj_layer_norm": True, "layer_norm_eps": 1e-5,
    "feature_extractor_cqt": False, "deepnorm": False,
}
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "mert-95m": {**_MERT_COMMON, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "do_stable_layer_norm": False, "attention_relax": -1.0},
    "mert-330m": {**_MERT_COMMON, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "intermediate_size": 4096, "do_stable_layer_norm": True, "attention_relax": 32.0},
    # Same conv geometry as MERT (24 kHz, stride 320, receptive field 400), toy widths: for tests and smoke runs.
    "tiny": {**_MERT_COMMON, "conv_dim": [16] * 7, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 64, "num_conv_pos_embeddings": 16,
             "num_conv_pos_embedding_groups": 4, "do_stable_layer_norm": False},
}


def builtin_config(name: str) -> MertConfig:
    if name not in BUILTIN_CONFIGS:
        raise choice_error("encoder config", name, BUILTIN_CONFIGS)
    return MertConfig.from_dict(BUILTIN_CONFIGS[name], f"built-in config {name!r}")
