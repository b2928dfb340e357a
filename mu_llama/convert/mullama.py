"""Import MU-LLaMA's released checkpoint.pth as a mu-llama save_pretrained directory.

MU-LLaMA (crypto-code/MU-LLaMA, llama/llama_adapter.py + llama/llama.py) saves `{"model": state_dict, ...}`
whose trainable part is named as in its modules:
    mu_mert_agg (Conv1d L->1), mu_mert_proj (Linear D->H), mu_mert_norm_{k} / mu_mert_f{1,2,3}_{k} (bridge block k,
    1-based), prefix_query.weight (K x H embedding), llama.layers.{i}.attention.gate (1, nH, 1, 1),
    llama.layers.{i}.attention.lora_w{q,k,v,o}_l{1,2}, llama.layers.{i}.feed_forward.lora_w{1,2,3}_l{1,2}
    (l1 = down / A, l2 = up / B, no scaling), biases on wq / wo / w1 / w2 / w3, and every RMSNorm weight.
MULLAMA_RULES maps each name to ours (adapters.music_adapter / adapters.injection / adapters.lora docstrings);
a key that matches no rule, or a name our model expects that the checkpoint lacks, raises CheckpointError.

Conversion details that keep the logits identical:
  * the base LLaMA goes Meta -> HF with q/k rows permuted for rotary (meta_llama); the wq bias and the LoRA B
    (l2) matrices of wq / wk get the same row permutation, LoRA A (l1) is unchanged;
  * only the gates of the last K = prefix_query rows layers are used by MU-LLaMA's forward; earlier layers'
    gates are reported as skipped;
  * forward_audio multiplies the normalised music vector by its input weight 1 / (1 + 1e-6)
    ({'Audio': [audio, 1]} normalised by sum + 1e-6), folded here into mu_mert_proj.weight;
  * adapter values use the *base* wv (no LoRA): kv_through_lora=False; prompts use the mullama-compat template;
  * audio: only the first 60 s are heard by MU-LLaMA (one 60-s MERT window); kept unless full_audio=True.
Known gap: legacy_bridge checkpoints (LayerNorm bridge, eps 1e-5) convert with our eps 1e-6 (report note);
the released checkpoint uses the RMSNorm bridge (eps 1e-6, exact).
Frozen weights that a checkpoint may also carry (llama.* base weights, mert_model.*) are skipped: the
base model comes from `llama`, the encoder from `mert`. That MERT is loaded and checked against the checkpoint
(hidden states, width, 24 kHz) before anything is written (check_encoder); a gate, prefix or q/k tensor of the
wrong shape is a CheckpointError naming the key.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from mu_llama.adapters import LoraOptions, MusicAdapter
from mu_llama.adapters.lora import ATTN_TARGETS, MLP_TARGETS
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.model import ADAPTER_FILE, CONFIG_FILE, FORMAT, FORMAT_VERSION, LORA_FILE, MuLlamaConfig
from mu_llama.tagger import CHECKPOINT as TAGGER_CHECKPOINT

from .io import load_pth, tensor_dict
from .meta_llama import (
    LlamaShape,
    LlamaSource,
    convert_meta_to_hf,
    find_llama,
    is_conversion,
    is_conversion_of,
    permute_rotary,
)

PEFT = "base_model.model."  # peft's prefix in adapter_model.safetensors
ATTN = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}
FFN = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
LORA = {"l1": "lora_A", "l2": "lora_B"}
GROUP_VALUES = {"attn": ATTN, "ffn": FFN, "part": LORA}  # regex group -> value translation
INPUT_WEIGHT = 1.0 / (1.0 + 1e-6)  # forward_audio's normalised weight for the single 'Audio' input
SKIP_BASE, SKIP_MERT, SKIP_GATE = "base LLaMA weight (taken from --llama)", "MERT weight (taken from --mert)", \
    "gate of a layer without injection (unused by MU-LLaMA's forward)"


@dataclass(frozen=True)
class Rule:
    source: str  # regex, full match over MU-LLaMA names; named groups fill `target`
    target: str | None  # our name (None: skipped)
    kind: str  # "adapter" -> adapter.safetensors, "lora" -> adapter_model.safetensors, "gate", "skip"
    rotary: bool = False  # rows are q/k output rows (when the attn group is wq / wk and, for LoRA, part is l2)
    scale: float = 1.0
    note: str = ""


_L = r"llama\.layers\.(?P<layer>\d+)"
MULLAMA_RULES: tuple[Rule, ...] = (
    # music adapter; mu_mert_*_{k} bridge blocks are 1-based, ours 0-based
    Rule(r"mu_mert_agg\.(?P<p>weight|bias)", "music_adapter.layer_mix.{p}", "adapter"),
    Rule(r"mu_mert_proj\.weight", "music_adapter.proj.weight", "adapter", scale=INPUT_WEIGHT,
         note="forward_audio's input weight 1/(1+1e-6) folded in"),
    Rule(r"mu_mert_proj\.bias", "music_adapter.proj.bias", "adapter"),
    Rule(r"mu_mert_norm_(?P<block>\d+)\.(?P<p>weight|bias)", "music_adapter.blocks.{block}.norm.{p}", "adapter"),
    Rule(r"mu_mert_f(?P<w>[123])_(?P<block>\d+)\.(?P<p>weight|bias)", "music_adapter.blocks.{block}.w{w}.{p}",
         "adapter"),
    # gated injection
    Rule(r"prefix_query\.weight", "injection.prefix_query", "adapter"),
    Rule(_L + r"\.attention\.gate", "injection.gates", "gate", note="(1, nH, 1, 1) -> row layer - (N - K)"),
    # bias + norm tuning (canonical transformers names, see adapters.lora)
    Rule(_L + r"\.attention\.(?P<attn>w[qo])\.bias", "llm.model.layers.{layer}.self_attn.{attn}.bias", "adapter",
         rotary=True),
    Rule(_L + r"\.feed_forward\.(?P<ffn>w[123])\.bias", "llm.model.layers.{layer}.mlp.{ffn}.bias", "adapter"),
    Rule(_L + r"\.attention_norm\.weight", "llm.model.layers.{layer}.input_layernorm.weight", "adapter"),
    Rule(_L + r"\.ffn_norm\.weight", "llm.model.layers.{layer}.post_attention_layernorm.weight", "adapter"),
    Rule(r"llama\.norm\.weight", "llm.model.norm.weight", "adapter"),
    # LoRA (peft layout; MU-LLaMA's LoRA is unscaled: alpha = rank)
    Rule(_L + r"\.attention\.lora_(?P<attn>w[qkvo])_(?P<part>l[12])\.weight",
         PEFT + "model.layers.{layer}.self_attn.{attn}.{part}.weight", "lora", rotary=True),
    Rule(_L + r"\.feed_forward\.lora_(?P<ffn>w[123])_(?P<part>l[12])\.weight",
         PEFT + "model.layers.{layer}.mlp.{ffn}.{part}.weight", "lora"),
    # frozen weights a full state dict also carries
    Rule(r"llama\.(?:tok_embeddings|output)\.weight", None, "skip", note=SKIP_BASE),
    Rule(_L + r"\.attention\.w[qkvo]\.weight", None, "skip", note=SKIP_BASE),
    Rule(_L + r"\.feed_forward\.w[123]\.weight", None, "skip", note=SKIP_BASE),
    Rule(r"mert_model\..+", None, "skip", note=SKIP_MERT),
)
_COMPILED = [(re.compile(r.source), r) for r in MULLAMA_RULES]
LEGACY_NOTE = ("legacy_bridge checkpoint (LayerNorm bridge): MU-LLaMA's LayerNorm eps is 1e-5, the converted bridge "
               "uses 1e-6 (MuLlamaConfig has no bridge eps field yet), so logits match only approximately")
PEFT_CONFIG_FILE, CONVERSION_FILE, LLM_DIR = "adapter_config.json", "conversion.json", "llm"
# The files that make OUT a model, config.json first: what this converter writes, plus what MuLlama.save_pretrained
# may have left there (a fact tagger would be loaded with the new model). overwrite=True removes exactly these.
MODEL_FILES = (CONFIG_FILE, ADAPTER_FILE, LORA_FILE, PEFT_CONFIG_FILE, CONVERSION_FILE,
               f"{TAGGER_CHECKPOINT}.json", f"{TAGGER_CHECKPOINT}.safetensors")


@dataclass
class MappedCheckpoint:
    adapter: dict[str, Tensor]  # adapter.safetensors content (our names)
    lora: dict[str, Tensor]  # adapter_model.safetensors content (peft names)
    skipped: dict[str, int]  # reason -> number of keys
    injection_layers: int


@dataclass
class ConversionReport:
    out: str
    llm: str
    llm_converted: bool  # a Meta-layout LLaMA was converted to transformers' layout
    tensors: dict[str, int]  # "adapter" / "lora" -> tensors written
    skipped: dict[str, int]
    config: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # known inexactness, if any

    def to_dict(self) -> dict:
        return asdict(self)


def _format(rule: Rule, groups: dict[str, str]) -> str:
    values = {}
    for k, v in groups.items():
        if k in GROUP_VALUES:
            v = GROUP_VALUES[k][v]
        elif k == "block":
            v = str(int(v) - 1)
        values[k] = v
    return rule.target.format(**values)


def _rotary_rows(t: Tensor, n_heads: int) -> Tensor:
    """The Meta -> HF row permutation applied to wq / wk biases and LoRA B matrices (see meta_llama)."""
    return permute_rotary(t, n_heads)


def map_checkpoint(state: dict[str, Tensor], shape: LlamaShape, where: str | Path = "<checkpoint>") -> MappedCheckpoint:
    """MU-LLaMA names -> ours, through MULLAMA_RULES; unknown keys raise CheckpointError (all listed)."""
    hits, unknown = [], []
    for name in state:
        for pattern, rule in _COMPILED:
            m = pattern.fullmatch(name)
            if m:
                hits.append((name, rule, m.groupdict()))
                break
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(where, f"{len(unknown)} unknown key(s) (no MU-LLaMA mapping): "
                                     f"{', '.join(sorted(unknown)[:10])}")
    if "prefix_query.weight" not in state:
        raise CheckpointError(where, "missing key prefix_query.weight: not a MU-LLaMA / LLaMA-Adapter checkpoint")
    if state["prefix_query.weight"].dim() != 2:
        raise CheckpointError(where, f"prefix_query.weight has shape {tuple(state['prefix_query.weight'].shape)}, "
                                     "expected (injected layers, LLaMA dim)")
    k_layers, width = state["prefix_query.weight"].shape
    if width != shape.dim or not 1 <= k_layers <= shape.n_layers:
        raise CheckpointError(where, f"prefix_query.weight is {(k_layers, width)}; the LLaMA has dim {shape.dim} and "
                                     f"{shape.n_layers} layers (one prefix row per injected layer)")
    first = shape.n_layers - k_layers
    adapter, lora, gates, skipped = {}, {}, {}, Counter()
    for name, rule, groups in hits:
        t = state[name]
        if "layer" in groups and int(groups["layer"]) >= shape.n_layers:
            raise CheckpointError(where, f"{name}: layer index beyond the LLaMA's {shape.n_layers} layers")
        if rule.kind == "skip":
            skipped[rule.note] += 1
            continue
        if rule.kind == "gate":
            gate_shape = (1, shape.n_heads, 1, 1)  # MU-LLaMA's Attention.gate: one tanh gate per head
            if tuple(t.shape) != gate_shape:
                raise CheckpointError(where, f"{name} has shape {tuple(t.shape)}, expected {gate_shape} (one gate per "
                                             f"head of the LLaMA's {shape.n_heads} attention heads)")
            layer = int(groups["layer"])
            if layer < first:
                skipped[SKIP_GATE] += 1
            else:
                gates[layer - first] = t.detach().float().reshape(-1)
            continue
        t = t.detach().float()
        attn = groups.get("attn")
        if rule.rotary and attn in ("wq", "wk") and groups.get("part", "l2") == "l2":
            heads = shape.n_heads if attn == "wq" else shape.n_kv_heads
            if t.dim() == 0 or t.shape[0] != heads * shape.head_dim:  # the permutation needs whole heads
                raise CheckpointError(where, f"{name} has shape {tuple(t.shape)}, expected {heads * shape.head_dim} "
                                             f"rows ({heads} heads x {shape.head_dim})")
            t = _rotary_rows(t, heads)
        if rule.scale != 1.0:
            t = t * rule.scale
        (lora if rule.kind == "lora" else adapter)[_format(rule, groups)] = t.contiguous()
    missing_gates = [f"llama.layers.{first + i}.attention.gate" for i in range(k_layers) if i not in gates]
    if missing_gates:
        raise CheckpointError(where, f"{len(missing_gates)} missing key(s): {', '.join(missing_gates[:10])}")
    adapter["injection.gates"] = torch.stack([gates[i] for i in range(k_layers)])
    return MappedCheckpoint(adapter, lora, dict(skipped), k_layers)


def infer_config(mapped: MappedCheckpoint, *, encoder: str, llm: str, shape: LlamaShape,
                 full_audio: bool = False, where: str | Path = "<checkpoint>") -> MuLlamaConfig:
    """The MuLlamaConfig the mapped tensors belong to (sizes read off the tensors)."""
    a = mapped.adapter
    for name, ndim in (("music_adapter.layer_mix.weight", 3), ("music_adapter.proj.weight", 2)):
        if name not in a:
            raise CheckpointError(where, f"missing key {_source_name(name)}")
        if a[name].dim() != ndim:  # Conv1d (1, L, 1) and Linear (H, D): the encoder sizes are read off them
            raise CheckpointError(where, f"{_source_name(name)} has shape {tuple(a[name].shape)}; expected "
                                         f"{'(1, encoder layers, 1)' if ndim == 3 else '(out, encoder width)'}")
    blocks = sorted({int(k.split(".")[2]) for k in a if k.startswith("music_adapter.blocks.")})
    if blocks != list(range(len(blocks))):
        raise CheckpointError(where, f"bridge blocks {[b + 1 for b in blocks]} are not numbered 1..n")
    legacy = "music_adapter.blocks.0.norm.bias" in a  # legacy_bridge: LayerNorm + biased Linear layers
    hidden = a["music_adapter.blocks.0.w1.weight"].shape[0] if blocks and "music_adapter.blocks.0.w1.weight" in a \
        else None
    lora_options = _lora_options(mapped, where)
    cfg = MuLlamaConfig(
        encoder=encoder, llm=llm, adapter_mode="clip", bridge_blocks=len(blocks), bridge_hidden=hidden,
        bridge_norm="layer" if legacy else "rms", bridge_bias=legacy, normalize=True,
        injection_layers=mapped.injection_layers, kv_through_lora=False, lora=lora_options, template="mullama-compat",
        sample_rate=24000, max_audio_seconds=None if full_audio else 60.0,
        encoder_window_seconds=30.0 if full_audio else 60.0, encoder_hop_seconds=25.0 if full_audio else 60.0,
        enc_layers=a["music_adapter.layer_mix.weight"].shape[1], enc_dim=a["music_adapter.proj.weight"].shape[1],
        llm_dim=shape.dim, llm_layers=shape.n_layers)
    _check_expected(mapped, cfg, shape, where)
    return cfg


def _lora_options(mapped: MappedCheckpoint, where) -> LoraOptions | None:
    names = list(mapped.lora)
    llm_keys = [k for k in mapped.adapter if k.startswith("llm.")]
    if not names:
        if llm_keys:
            raise CheckpointError(where, "bias / norm tuning without LoRA is not supported "
                                                  f"(found e.g. {_source_name(llm_keys[0])})")
        return None  # a pretrain-stage checkpoint: adapter, prefix and gates only
    targets = tuple(t for t in ATTN_TARGETS if any(f".{t}.lora_" in n for n in names))
    mlp = any(f".{t}.lora_" in n for t in MLP_TARGETS for n in names)
    biases = tuple(t for t in ATTN_TARGETS + MLP_TARGETS if any(k.endswith(f".{t}.bias") for k in llm_keys))
    norms = any(k.endswith("norm.weight") for k in llm_keys)
    rank = next(v.shape[0] for k, v in mapped.lora.items() if ".lora_A." in k)
    try:
        return LoraOptions(rank=rank, alpha=float(rank), dropout=0.0, targets=targets, mlp=mlp, bias_targets=biases,
                           norm_tuning=norms)
    except ConfigError as e:
        raise CheckpointError(where, f"LoRA layout not representable: {e}") from None


def _expected_llm(shape: LlamaShape, options: LoraOptions) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """{name: shape} of the bias/norm tensors (adapter.safetensors) and LoRA tensors (peft) our model has."""
    h, q, kv, f = shape.dim, shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim, shape.ffn_dim
    io = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
          "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}  # (in, out)
    parent = {**{t: "self_attn" for t in ATTN_TARGETS}, **{t: "mlp" for t in MLP_TARGETS}}
    tuned, lora = {}, {}
    for i in range(shape.n_layers):
        p = f"model.layers.{i}"
        for t in options.bias_targets:
            tuned[f"llm.{p}.{parent[t]}.{t}.bias"] = (io[t][1],)
        if options.norm_tuning:
            tuned[f"llm.{p}.input_layernorm.weight"] = (h,)
            tuned[f"llm.{p}.post_attention_layernorm.weight"] = (h,)
        for t in options.target_modules:
            lora[f"{PEFT}{p}.{parent[t]}.{t}.lora_A.weight"] = (options.rank, io[t][0])
            lora[f"{PEFT}{p}.{parent[t]}.{t}.lora_B.weight"] = (io[t][1], options.rank)
    if options.norm_tuning:
        tuned["llm.model.norm.weight"] = (h,)
    return tuned, lora


def _check_expected(mapped: MappedCheckpoint, cfg: MuLlamaConfig, shape: LlamaShape, where) -> None:
    with torch.device("meta"):  # shapes only: no memory for the ~600M-parameter bridge
        adapter = MusicAdapter(cfg.adapter_config(frame_rate=75.0))
    expected = {f"music_adapter.{k}": tuple(v.shape) for k, v in adapter.state_dict().items()}
    expected["injection.prefix_query"] = (cfg.injection_layers, shape.dim)
    expected["injection.gates"] = (cfg.injection_layers, shape.n_heads)
    lora_expected: dict[str, tuple] = {}
    if cfg.lora is not None:
        tuned, lora_expected = _expected_llm(shape, cfg.lora)
        expected.update(tuned)
    problems = _diff(mapped.adapter, expected) + _diff(mapped.lora, lora_expected)
    if problems:
        raise CheckpointError(where, "; ".join(problems))


def _diff(got: dict[str, Tensor], expected: dict[str, tuple]) -> list[str]:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{_source_name(k)} has shape {tuple(got[k].shape)}, expected {expected[k]}"
              for k in sorted(set(got) & set(expected)) if tuple(got[k].shape) != expected[k]]
    out = []
    if missing:
        out.append(f"{len(missing)} missing key(s): {', '.join(_source_name(k) for k in missing[:10])}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected key(s): {', '.join(_source_name(k) for k in unexpected[:10])}")
    return out + shapes[:5]


def _source_name(ours: str) -> str:
    """Best-effort MU-LLaMA name for one of ours (error messages speak the checkpoint's language)."""
    inv = {v: k for table in GROUP_VALUES.values() for k, v in table.items()}
    m = re.fullmatch(r"music_adapter\.blocks\.(\d+)\.(norm|w[123])\.(weight|bias)", ours)
    if m:
        b, part, p = int(m[1]) + 1, m[2], m[3]
        return f"mu_mert_norm_{b}.{p}" if part == "norm" else f"mu_mert_f{part[1]}_{b}.{p}"
    simple = {"music_adapter.layer_mix.weight": "mu_mert_agg.weight", "music_adapter.layer_mix.bias": "mu_mert_agg.bias",
              "music_adapter.proj.weight": "mu_mert_proj.weight", "music_adapter.proj.bias": "mu_mert_proj.bias",
              "injection.prefix_query": "prefix_query.weight", "llm.model.norm.weight": "llama.norm.weight"}
    if ours in simple:
        return simple[ours]
    m = re.fullmatch(r"(?:llm\.|" + re.escape(PEFT) + r")model\.layers\.(\d+)\.(\w+)\.(\w+)\.(.+)", ours)
    if m:
        layer, _, mod, rest = m.groups()
        if mod in ("input_layernorm", "post_attention_layernorm"):
            return f"llama.layers.{layer}.{'attention_norm' if mod == 'input_layernorm' else 'ffn_norm'}.weight"
        meta = inv.get(mod, mod)
        where = "attention" if meta.startswith("w") and meta[1] in "qkvo" else "feed_forward"
        if rest == "bias":
            return f"llama.layers.{layer}.{where}.{meta}.bias"
        part = inv.get(rest.split(".")[0], rest)
        return f"llama.layers.{layer}.{where}.lora_{meta}_{part}.weight"
    return ours


def check_encoder(mert: str | Path, cfg: MuLlamaConfig, where: str | Path = "<checkpoint>") -> str:
    """Load the MERT `mert` names and check it is the encoder the checkpoint's adapter reads; -> the spec to record.

    The encoder is loaded for real (config, every weight key and shape: the loader's checks) and then dropped, so a
    wrong path, a HuBERT / MERT of the wrong size or sample rate, or a broken download fails here, before anything
    is written. Sizes: mu_mert_agg mixes cfg.enc_layers hidden states, mu_mert_proj reads cfg.enc_dim channels.
    A local directory is recorded as its absolute path (the model directory may be used from anywhere).
    """
    from mu_llama.encoders import load_encoder

    spec = str(mert)
    path = Path(spec).expanduser()
    if path.exists():
        spec = str(path.resolve())
    encoder = load_encoder(spec)  # ConfigError / CheckpointError name the file and the reason
    got = (encoder.num_layers, encoder.hidden_size, encoder.sample_rate)
    del encoder  # MERT-330M is ~1.3 GB in float32: not kept through the LLaMA conversion
    if got[:2] != (cfg.enc_layers, cfg.enc_dim):
        raise CheckpointError(where, f"mu_mert_agg / mu_mert_proj expect an encoder with {cfg.enc_layers} hidden "
                                     f"states of {cfg.enc_dim}; {str(mert)!r} has {got[0]} of {got[1]}")
    if got[2] != cfg.sample_rate:
        raise CheckpointError(spec, f"the encoder runs at {got[2]} Hz; the converted model needs {cfg.sample_rate} Hz "
                                    "(MU-LLaMA was trained on MERT features of 24 kHz audio)")
    return spec


def convert_mullama(checkpoint: str | Path, llama: str | Path, mert: str, out: str | Path, *,
                    llm_out: str | Path | None = None, tokenizer: str | Path | None = None,
                    llama_type: str | None = None, full_audio: bool = False, dtype: str | None = None,
                    overwrite: bool = False, progress: bool = False) -> ConversionReport:
    """MU-LLaMA checkpoint.pth + LLaMA (Meta or HF layout) + MERT spec -> save_pretrained directory `out`.

    A Meta-layout LLaMA is converted to transformers' layout in `llm_out` (default out/llm); an HF one is
    referenced where it is. Everything is checked before anything is written: the checkpoint is mapped, the MERT
    loaded and matched against it, and only then is the (slow) LLaMA converted and `out` written.
    overwrite=True replaces a model already in `out`: its MODEL_FILES and a LLaMA converted there earlier from other
    weights (llm_out / out/llm, only if convert_meta_to_hf wrote it); other files in `out` are left alone.
    """
    out = Path(out).expanduser()
    present = [name for name in MODEL_FILES if (out / name).exists()]
    if present and not overwrite:
        raise CheckpointError(out, f"already holds a model ({', '.join(present)}); pass overwrite=True / --force to "
                                   "replace it")
    src: LlamaSource = find_llama(llama, llama_type)
    if tokenizer is not None and src.layout == "hf":
        raise ConfigError("tokenizer applies only to a Meta-layout LLaMA; an HF directory brings its own")
    checkpoint = Path(checkpoint).expanduser()
    mapped = map_checkpoint(tensor_dict(load_pth(checkpoint), checkpoint, key="model"), src.shape, checkpoint)
    cfg = infer_config(mapped, encoder=str(mert), llm="<pending>", shape=src.shape, full_audio=full_audio,
                       where=checkpoint)
    cfg.encoder = check_encoder(mert, cfg, checkpoint)
    llm_target = (Path(llm_out).expanduser() if llm_out is not None else out / LLM_DIR) if src.layout == "meta" \
        else None
    if llm_target is not None and llm_target.is_dir() and any(llm_target.iterdir()):
        if not is_conversion(llm_target):  # never removed, not even with overwrite: not ours
            raise CheckpointError(llm_target, "exists and is not a LLaMA converted by mu-llama; remove it or choose "
                                              "another llm_out / --llm-out")
        if not overwrite and not is_conversion_of(llm_target, src, tokenizer=tokenizer, dtype=dtype):
            raise CheckpointError(llm_target, "holds a LLaMA converted from other weights; pass overwrite=True / "
                                              "--force to replace it, or choose another llm_out / --llm-out")
    if overwrite:
        inputs = [src.directory, checkpoint, Path(cfg.encoder)] + ([Path(tokenizer).expanduser()] if tokenizer else [])
        _remove_previous(out, llm_target, src, [p for p in inputs if p.exists()], tokenizer=tokenizer, dtype=dtype)
    if llm_target is not None:
        llm_dir = convert_meta_to_hf(src, llm_target, tokenizer=tokenizer, dtype=dtype, progress=progress)
    else:
        llm_dir = src.directory
    cfg.llm = str(Path(llm_dir).resolve())
    _write(out, cfg, mapped)
    notes = []
    if cfg.bridge_norm == "layer":
        notes.append(LEGACY_NOTE)
        warnings.warn(LEGACY_NOTE, stacklevel=2)
    report = ConversionReport(out=str(out), llm=cfg.llm, llm_converted=src.layout == "meta",
                              tensors={"adapter": len(mapped.adapter), "lora": len(mapped.lora)},
                              skipped=mapped.skipped, config=cfg.to_dict(), notes=notes)
    (out / CONVERSION_FILE).write_text(json.dumps({"source": str(checkpoint.resolve()), **report.to_dict()},
                                                  indent=2) + "\n")
    return report


def _remove_previous(out: Path, llm_target: Path | None, src: LlamaSource, inputs: list[Path], *,
                     tokenizer: str | Path | None, dtype: str | None) -> None:
    """overwrite=True: remove the model files in `out` and LLaMA folders converted there earlier from other weights.

    A LLaMA folder goes only if convert_meta_to_hf wrote it (it carries its marker), it is not this run's
    conversion of the same weights (reused as is), and it holds none of this run's inputs (an HF LLaMA or a
    tokenizer may live inside an old out/llm). Anything else under `out` is the user's and stays.
    """
    for name in MODEL_FILES:  # config.json first: a half-removed directory never reads as a model
        if (out / name).is_file() or (out / name).is_symlink():
            (out / name).unlink()
    resolved_inputs = [p.resolve() for p in inputs]
    for folder in dict.fromkeys(f for f in (out / LLM_DIR, llm_target) if f is not None):
        if not folder.is_dir() or not is_conversion(folder):
            continue  # absent, or not ours: convert_meta_to_hf refuses to write into a foreign folder
        if folder == llm_target and is_conversion_of(folder, src, tokenizer=tokenizer, dtype=dtype):
            continue  # the same weights, tokenizer and dtype: the conversion is reused
        if any(p == folder.resolve() or p.is_relative_to(folder.resolve()) for p in resolved_inputs):
            continue
        shutil.rmtree(folder)


def _write(out: Path, cfg: MuLlamaConfig, mapped: MappedCheckpoint) -> None:
    """The files MuLlama.save_pretrained writes, without loading the LLM."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(mapped.adapter, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    if cfg.lora is not None:
        from peft import LoraConfig

        save_file(mapped.lora, str(out / LORA_FILE), metadata={"format": "pt"})
        o = cfg.lora  # same arguments as adapters.lora.apply_lora
        peft_cfg = LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout,
                              target_modules=list(o.target_modules), bias="none", task_type="CAUSAL_LM").to_dict()
        peft_cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in peft_cfg.items()}
        peft_cfg["base_model_name_or_path"] = cfg.llm
        (out / PEFT_CONFIG_FILE).write_text(json.dumps(peft_cfg, indent=2, default=str) + "\n")
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(body, indent=2) + "\n")
