"""Fine-tuning add-ons for the LLM: LoRA (via peft), zero-init bias tuning, norm tuning, training stages.

MU-LLaMA (LLaMA-Adapter-v2 lineage) fine-tunes LoRA rank 16 on wq/wk/wv/wo and the FFN w1/w2/w3, zero-init
biases on wq/wo/w1/w2/w3, and every RMSNorm weight; its pretrain stage trains only the music adapter,
prefix_query and gates. `LoraOptions.mullama()` reproduces that selection on transformers module names
(wq/wk/wv/wo = q_proj/k_proj/v_proj/o_proj, w1/w3/w2 = gate_proj/up_proj/down_proj; its LoRA has no
scaling, i.e. alpha == rank).

Converting MU-LLaMA (Meta layout) to transformers names: HF's conversion permutes the rows of wq/wk for its
rotary convention, so the same row permutation applies to lora_wq_l2 / lora_wk_l2 (-> lora_B) and to the wq
bias; lora_*_l1 (-> lora_A), wo/FFN biases and norms carry over unpermuted. The per-head gates and
prefix_query are unaffected (the permutation stays within each head).

Names: bias/norm parameters are addressed by *canonical* names, relative to the transformers model and
without peft's wrapping ("model.layers.3.self_attn.q_proj.bias", "model.norm.weight"), so a checkpoint
does not depend on whether LoRA is applied, merged or absent. LoRA weights keep peft's own layout
(adapter_model.safetensors: "base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight" (r, in),
"...lora_B.weight" (out, r); MU-LLaMA's lora_wq_l1 -> lora_A, lora_wq_l2 -> lora_B).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mu_llama.errors import ConfigError, choice_error

from .injection import _unwrap, decoder_layers

ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
STAGES = ("pretrain", "finetune", "frozen")


@dataclass(frozen=True)
class LoraOptions:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ATTN_TARGETS  # LoRA on these projections of every decoder layer
    mlp: bool = False  # also LoRA on gate_proj / up_proj / down_proj
    bias_targets: tuple[str, ...] = ATTN_TARGETS  # zero-init biases (trainable in stage 2); () = none
    norm_tuning: bool = True  # RMSNorm weights trainable in stage 2

    def __post_init__(self):
        valid = ATTN_TARGETS + MLP_TARGETS
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "bias_targets", tuple(self.bias_targets))
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"invalid LoRA rank {self.rank!r}; must be a positive integer")
        if not self.alpha > 0:
            raise ConfigError(f"invalid LoRA alpha {self.alpha!r}; must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"invalid LoRA dropout {self.dropout!r}; must be in [0, 1)")
        for name in self.targets + self.bias_targets:
            if name not in valid:
                raise choice_error("LoRA/bias target", name, valid)
        if not self.targets and not self.mlp:
            raise ConfigError("LoRA needs at least one target module")

    @property
    def target_modules(self) -> tuple[str, ...]:
        extra = tuple(t for t in MLP_TARGETS if self.mlp and t not in self.targets)
        return self.targets + extra

    @classmethod
    def mullama(cls) -> LoraOptions:
        """MU-LLaMA's fine-tuning selection (rank 16, unscaled, attention + FFN LoRA, biases on q/o/FFN)."""
        return cls(rank=16, alpha=16.0, dropout=0.0, targets=ATTN_TARGETS, mlp=True,
                   bias_targets=("q_proj", "o_proj") + MLP_TARGETS, norm_tuning=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"], d["bias_targets"] = list(self.targets), list(self.bias_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoraOptions:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown LoraOptions fields: {', '.join(sorted(unknown))}")
        return cls(**{**d, "targets": tuple(d.get("targets", ATTN_TARGETS)),
                      "bias_targets": tuple(d.get("bias_targets", ATTN_TARGETS))})


def canonical_name(name: str) -> str:
    """Parameter name relative to the transformers model, peft wrapping removed."""
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def _canonical_params(llm: nn.Module) -> dict[str, nn.Parameter]:
    return {canonical_name(n): p for n, p in _unwrap(llm).named_parameters()}


def _linear(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def _find_targets(llm: nn.Module, names: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """(canonical module path, module) for each target projection in every decoder layer."""
    found = []
    base = _unwrap(llm)
    paths = {id(m): canonical_name(n) for n, m in base.named_modules()}
    for layer in decoder_layers(llm):
        for parent in (layer.self_attn, getattr(layer, "mlp", None)):
            for name in names:
                module = getattr(parent, name, None) if parent is not None else None
                if module is not None:
                    found.append((paths[id(module)], module))
    return found


def add_bias(llm: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Give each target projection a zero-init bias (kept if it has one). Returns canonical bias names.

    Zero biases leave the logits unchanged. Works on nn.Linear, bitsandbytes Linear4bit/8bitLt and
    peft LoRA layers (the bias goes on the base layer, so LoRA merging keeps it).
    """
    names = []
    for path, module in _find_targets(llm, tuple(targets)):
        lin = _linear(module)
        if getattr(lin, "bias", None) is None:
            w = lin.weight
            dtype = w.dtype if w.dtype.is_floating_point else torch.float32
            lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=dtype, device=w.device))
        names.append(f"{path}.bias")
    return names


def norm_names(llm: nn.Module) -> list[str]:
    """Canonical names of every normalisation weight/bias in the LLM (RMSNorm / LayerNorm)."""
    names = []
    for name, module in _unwrap(llm).named_modules():
        if type(module).__name__.endswith("RMSNorm") or isinstance(module, nn.LayerNorm):
            names += [canonical_name(f"{name}.{p}") for p, _ in module.named_parameters(recurse=False)]
    return names


def finetune_names(llm: nn.Module, options: LoraOptions) -> list[str]:
    """Canonical names of the bias + norm parameters stage 2 trains and checkpoints save."""
    names = [f"{path}.bias" for path, _ in _find_targets(llm, options.bias_targets)]
    if options.norm_tuning:
        names += norm_names(llm)
    return names


def finetune_state(llm: nn.Module, options: LoraOptions) -> dict[str, torch.Tensor]:
    """{canonical name: tensor} of the bias/norm parameters (what adapter.safetensors stores for the LLM)."""
    params = _canonical_params(llm)
    missing = [n for n in finetune_names(llm, options) if n not in params]
    if missing:
        raise ConfigError(f"bias tuning not applied: missing {missing[0]} (call add_bias first)")
    return {n: params[n] for n in finetune_names(llm, options)}


def apply_lora(llm: nn.Module, options: LoraOptions):
    """Wrap the LLM with peft LoRA on options.target_modules; returns the PeftModel (LoRA B = 0: a no-op)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(llm, config)


def is_lora(llm: nn.Module) -> bool:
    return hasattr(llm, "peft_config")


def lora_state_dict(llm: nn.Module) -> dict[str, torch.Tensor]:
    """peft's own LoRA state dict (adapter_model.safetensors layout)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(llm, save_embedding_layers=False)


def merge_lora(llm: nn.Module) -> nn.Module:
    """Fold LoRA into the base weights (peft merge_and_unload); returns the plain transformers model.

    Idempotent: a model without LoRA comes back unchanged. Biases added by add_bias stay on the base layers.
    """
    if not is_lora(llm):
        return llm
    return llm.merge_and_unload()


def mark_trainable(stage: str, *, llm: nn.Module, adapter_modules: list[nn.Module],
                   options: LoraOptions | None) -> list[str]:
    """Set requires_grad for a training stage; returns the trainable parameter names (canonical for the LLM).

    pretrain: the music adapter, prefix_query and gates (adapter_modules); the LLM frozen.
    finetune: LoRA + bias + norm parameters of the LLM; the adapter modules frozen.
    frozen:   nothing trainable (inference).
    """
    if stage not in STAGES:
        raise choice_error("training stage", stage, STAGES)
    for p in _unwrap(llm).parameters():
        p.requires_grad_(False)
    for module in adapter_modules:
        module.requires_grad_(stage == "pretrain")
    trainable = []
    if stage == "pretrain":
        for module in adapter_modules:
            trainable += [n for n, _ in module.named_parameters()]
    elif stage == "finetune":
        params = _canonical_params(llm)
        names = [n for n in params if ".lora_" in n]
        if options is not None:
            names += [n for n in finetune_names(llm, options) if n in params]
        for n in names:
            params[n].requires_grad_(True)
        trainable = names
    return trainable
