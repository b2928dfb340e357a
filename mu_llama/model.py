"""MU-LLaMA: frozen music encoder -> music adapter -> gated injection into a (LoRA-tuned) LLaMA-family LLM.

    waves --encoder (frozen, no grad)--> hidden states (L, B, T, D) --pool--> PooledMusic (B, W, L, D)
          --MusicAdapter--> MusicTokens (B, M, H) --MusicInjection (last K layers)--> LLM --> text

Checkpoint directory (save_pretrained / from_pretrained), nothing pickled, only our own trainable tensors:
    config.json                {"format": "mu-llama", "format_version": 1, "config": MuLlamaConfig}; refers to the
                               base LLM and encoder by spec (built-in name / hub id / path)
    adapter.safetensors        "music_adapter.*", "injection.prefix_query", "injection.gates", and with LoRA
                               options the bias/norm tensors as "llm.<canonical name>" (see adapters.lora)
    adapter_model.safetensors  peft LoRA weights + adapter_config.json (only with LoRA options)
Loading fails loudly (CheckpointError) on any missing, unexpected or mis-shaped key.

Long audio is heard in full: recordings that fit one encoder window (30 s) are encoded as one batch; longer
ones go through mu_llama.encoders.encode_stream (overlapping windows) and their frames are pooled on the
global frame grid, so clip mode averages the whole recording and time mode gets one token per window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mu_llama.adapters import (
    InjectionConfig,
    LoraOptions,
    MusicAdapter,
    MusicAdapterConfig,
    MusicInjection,
    MusicTokens,
    PooledMusic,
    add_bias,
    apply_lora,
    finetune_state,
    is_lora,
    lora_state_dict,
    mark_trainable,
    merge_lora,
    pool_frames,
)
from mu_llama.adapters.music_adapter import ADAPTER_MODES, BRIDGE_NORMS, POSITIONS
from mu_llama.decoding import DecodingOptions, seeded
from mu_llama.encoders.descriptors import DESCRIPTOR_DIM, DescriptorEncoder
from mu_llama.errors import CheckpointError, ConfigError, choice_error
from mu_llama.llm import SMOLLM2, LLMOptions, cache_dir, load_llm, quantize_dynamic_int8
from mu_llama.prompts import TEMPLATES, resolve_template
from mu_llama.tagger import CHECKPOINT as TAGGER_CHECKPOINT
from mu_llama.tagger import TAG_FACTS, FactTagger

FORMAT, FORMAT_VERSION = "mu-llama", 1
CONFIG_FILE, ADAPTER_FILE, LORA_FILE = "config.json", "adapter.safetensors", "adapter_model.safetensors"
ENCODER_DTYPES = ("float32", "bfloat16")


@dataclass
class MuLlamaConfig:
    encoder: str = "random:tiny"  # "random:tiny|mert-95m|mert-330m", a MERT directory, or a hub id
    llm: str = SMOLLM2  # built-in name, LLaMA-architecture directory, or hub id
    encoder_seed: int = 0  # weights of "random:" encoders
    # music adapter (adapters.music_adapter)
    adapter_mode: str = "clip"
    bridge_blocks: int = 3
    bridge_hidden: int | None = None  # None -> 4 * llm hidden size
    bridge_norm: str = "rms"
    bridge_bias: bool = False
    normalize: bool = True
    window_seconds: float = 2.0  # time mode: audio per music token
    max_music_tokens: int = 256
    position: str = "sinusoidal"
    # True: the encoder is wrapped in mu_llama.encoders.DescriptorEncoder (timbre / chroma / triad / tempo descriptors
    # as one more hidden state) and the adapter reads them through its own zero-initialised MLP
    descriptors: bool = False
    # injection (adapters.injection)
    injection_layers: int = 20  # K: the last K decoder layers attend to the music
    prefix_std: float = 0.02
    kv_through_lora: bool = True
    # fine-tuning (None: no LoRA, no bias/norm tuning)
    lora: LoraOptions | None = None
    # text + audio
    template: str = "auto"
    sample_rate: int = 24000
    encoder_window_seconds: float = 30.0  # longer recordings are encoded in overlapping windows
    encoder_hop_seconds: float = 25.0
    max_audio_seconds: float | None = None  # None: hear everything; 60 + encoder window 60 = MU-LLaMA's cut
    encoder_dtype: str = "float32"
    init_seed: int = 0  # fresh adapter / prefix init
    # filled in when built, checked when loaded: the shapes the adapter weights belong to
    enc_layers: int | None = None
    enc_dim: int | None = None
    llm_dim: int | None = None
    llm_layers: int | None = None

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraOptions.from_dict(self.lora)
        if self.adapter_mode not in ADAPTER_MODES:
            raise choice_error("adapter_mode", self.adapter_mode, ADAPTER_MODES)
        if self.position not in POSITIONS:
            raise choice_error("position", self.position, POSITIONS)
        if self.bridge_norm not in BRIDGE_NORMS:
            raise choice_error("bridge_norm", self.bridge_norm, BRIDGE_NORMS)
        if self.template not in TEMPLATES:
            raise choice_error("template", self.template, TEMPLATES)
        if self.encoder_dtype not in ENCODER_DTYPES:
            raise choice_error("encoder_dtype", self.encoder_dtype, ENCODER_DTYPES)
        if not isinstance(self.injection_layers, int) or self.injection_layers < 1:
            raise ConfigError(f"invalid injection_layers {self.injection_layers!r}; must be a positive integer")
        if not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ConfigError(f"invalid sample_rate {self.sample_rate!r}; must be a positive integer")
        for name in ("encoder_window_seconds", "encoder_hop_seconds", "window_seconds"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"invalid {name} {v!r}; must be > 0 seconds")
        if self.encoder_hop_seconds > self.encoder_window_seconds:
            raise ConfigError("encoder_hop_seconds must not exceed encoder_window_seconds")
        if self.max_audio_seconds is not None and not self.max_audio_seconds > 0:
            raise ConfigError(f"invalid max_audio_seconds {self.max_audio_seconds!r}; must be > 0 or None")
        if self.lora is not None and not isinstance(self.lora, LoraOptions):
            raise ConfigError("lora must be LoraOptions, a dict of its fields, or None")

    @classmethod
    def mullama(cls, llm: str, encoder: str = "m-a-p/MERT-v1-330M", **overrides) -> MuLlamaConfig:
        """MU-LLaMA's architecture (for converted checkpoints): MERT-330M, clip mode, 3-block RMSNorm bridge,
        last 20 layers gated, LoRA/bias/norm as LoraOptions.mullama(), adapter values through the base wv,
        Alpaca prompt, and the first 60 s of audio in one encoder pass (what its loop hears in practice)."""
        return cls(**{"encoder": encoder, "llm": llm, "adapter_mode": "clip", "bridge_blocks": 3,
                      "bridge_norm": "rms", "bridge_bias": False, "normalize": True, "injection_layers": 20,
                      "kv_through_lora": False, "lora": LoraOptions.mullama(), "template": "mullama-compat",
                      "max_audio_seconds": 60.0, "encoder_window_seconds": 60.0, "encoder_hop_seconds": 60.0,
                      **overrides})

    def adapter_config(self, frame_rate: float) -> MusicAdapterConfig:
        return MusicAdapterConfig(
            enc_layers=self.enc_layers, enc_dim=self.enc_dim, llm_dim=self.llm_dim, bridge_blocks=self.bridge_blocks,
            bridge_hidden=self.bridge_hidden, bridge_norm=self.bridge_norm, bridge_bias=self.bridge_bias,
            normalize=self.normalize, mode=self.adapter_mode, window_seconds=self.window_seconds,
            frame_rate=frame_rate, max_music_tokens=self.max_music_tokens, position=self.position,
            descriptor_dim=DESCRIPTOR_DIM if self.descriptors else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora"] = None if self.lora is None else self.lora.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MuLlamaConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown MuLlamaConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> MuLlamaConfig:
        return cls.from_dict(json.loads(text))


def _resolve_dims(config: MuLlamaConfig, encoder, llm_config, where: str) -> None:
    """Fill the shape fields from the parts (fresh model) or check them (loaded checkpoint)."""
    actual = {"enc_layers": encoder.num_layers - (1 if config.descriptors else 0), "enc_dim": encoder.hidden_size,
              "llm_dim": llm_config.hidden_size, "llm_layers": llm_config.num_hidden_layers}
    for name, value in actual.items():
        saved = getattr(config, name)
        if saved is None:
            setattr(config, name, value)
        elif saved != value:
            raise CheckpointError(where, f"{name} is {saved} in the checkpoint but the loaded parts have {value} "
                                         f"(encoder {config.encoder!r}, llm {config.llm!r})")
    if encoder.sample_rate != config.sample_rate:
        raise ConfigError(f"encoder runs at {encoder.sample_rate} Hz, config says sample_rate {config.sample_rate}")
    if config.injection_layers > config.llm_layers:
        raise ConfigError(f"injection_layers {config.injection_layers} > the LLM's {config.llm_layers} layers")


class MuLlama(nn.Module):
    """Encoder + music adapter + gated injection + causal LM (+ LoRA).

    Build with MuLlama.build (fresh adapter), MuLlama.from_pretrained (saved directory) or load_model (registry)."""

    def __init__(self, config: MuLlamaConfig, encoder: nn.Module, llm: nn.Module, tokenizer, *, where: str = "<new>"):
        super().__init__()
        if config.descriptors and not isinstance(encoder, DescriptorEncoder):
            encoder = DescriptorEncoder(encoder)
        _resolve_dims(config, encoder, llm.config, where)
        self.config = config
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.template = resolve_template(config.template, tokenizer)
        device = llm.get_input_embeddings().weight.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.music_adapter = MusicAdapter(config.adapter_config(encoder.frame_rate)).to(device)
            self.injection = MusicInjection(InjectionConfig(
                num_layers=config.injection_layers, llm_dim=config.llm_dim, num_heads=llm.config.num_attention_heads,
                prefix_std=config.prefix_std, kv_through_lora=config.kv_through_lora)).to(device)
        self.injection.attach(llm)
        if config.lora is not None:
            add_bias(llm, config.lora.bias_targets)
            llm = apply_lora(llm, config.lora)
        self.llm = llm
        self.tagger = None          # an audio fact tagger (mu_llama.tagger) shipped with the checkpoint, if any
        self._fact_tokens = None    # its words' token ids (mu_llama.fusion), built on first use
        self.set_stage("frozen")
        self.eval()

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: MuLlamaConfig, options: LLMOptions | None = None, *, where: str = "<new>",
              quantize_now: bool = True) -> MuLlama:
        """Load the encoder and base LLM named by config and attach a fresh (zero-gate) adapter.

        quantize_now=False leaves an "int8-dynamic" LLM in float so weights can be loaded first.
        """
        from mu_llama.encoders import EncoderOptions, load_encoder

        options = options or LLMOptions()
        llm, tokenizer = load_llm(config.llm, options, defer_dynamic=True)
        enc_device = str(llm.get_input_embeddings().weight.device)  # the encoder sits with the LLM's input side
        encoder = load_encoder(config.encoder, EncoderOptions(device=enc_device, dtype=config.encoder_dtype),
                               seed=config.encoder_seed)
        model = cls(config, encoder, llm, tokenizer, where=where)
        if options.quantize == "int8-dynamic" and quantize_now:
            model.quantize_dynamic()
        return model

    def quantize_dynamic(self) -> None:
        """CPU int8 dynamic quantization of the LLM (merging LoRA first when that is exact)."""
        if is_lora(self.llm) and self.config.kv_through_lora:
            self.merge_lora()
        quantize_dynamic_int8(self.llm)

    def merge_lora(self) -> None:
        """Fold LoRA into the base weights (same logits; afterwards save_pretrained is no longer possible)."""
        if is_lora(self.llm):
            if not self.config.kv_through_lora:
                raise ConfigError("cannot merge LoRA with kv_through_lora=False: adapter K/V use the un-merged weights")
            self.llm = merge_lora(self.llm)

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    # --- training helpers ----------------------------------------------------------------------------
    def set_stage(self, stage: str) -> list[str]:
        """"pretrain" (adapter + prefix + gates), "finetune" (LoRA + bias + norm) or "frozen"."""
        return mark_trainable(stage, llm=self.llm, adapter_modules=[self.music_adapter, self.injection],
                              options=self.config.lora)

    def trainable_state(self) -> dict[str, Tensor]:
        """What adapter.safetensors holds: adapter, prefix, gates, and (with LoRA options) bias/norm tensors."""
        state = {f"music_adapter.{k}": v for k, v in self.music_adapter.state_dict().items()}
        state.update({f"injection.{k}": v for k, v in self.injection.state_dict().items()})
        if self.config.lora is not None:
            state.update({f"llm.{k}": v for k, v in finetune_state(self.llm, self.config.lora).items()})
        return state

    # --- audio -> music tokens ---------------------------------------------------------------------
    @torch.no_grad()
    def encode_audio(self, waves: Sequence[np.ndarray | Tensor]) -> PooledMusic:
        """Mono waveforms at self.sample_rate (any lengths) -> PooledMusic (B, W, L, D) on self.device."""
        from mu_llama.encoders import WindowOptions, WindowPlan, encode_stream

        enc, cfg = self.encoder, self.music_adapter.config
        opts = WindowOptions(window_s=self.config.encoder_window_seconds, hop_s=self.config.encoder_hop_seconds)
        cap = self.config.max_audio_seconds
        limit = None if cap is None else round(cap * enc.sample_rate)
        waves = [torch.as_tensor(np.asarray(w, dtype=np.float32))[:limit] for w in waves]
        if any(w.dim() != 1 for w in waves):
            raise ConfigError("encode_audio expects 1-D mono waveforms")
        short_max = WindowPlan.for_encoder(enc, opts).window_samples
        items: list[PooledMusic | None] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= short_max]
        if short:
            lengths = torch.tensor([len(waves[i]) for i in short])
            batch = torch.zeros(len(short), max(int(lengths.max()), 1))
            for row, i in enumerate(short):
                batch[row, :len(waves[i])] = waves[i]
            out = enc(batch, lengths)
            pooled = pool_frames(out.hidden_states, out.frame_mask, cfg.window_frames, enc.frame_rate)
            for row, i in enumerate(short):
                items[i] = pooled.select(row).to(self.device)
        for i, w in enumerate(waves):
            if items[i] is None:  # longer than one encoder window: overlapping windows, pooled on the global grid
                windows = encode_stream(enc, [w.numpy()], opts)
                items[i] = self._pool_stream(windows, enc.frames_for(len(w))).to(self.device)
        return PooledMusic.stack(items)

    def _pool_stream(self, windows, total_frames: int) -> PooledMusic:
        """Encoder windows of one long clip -> PooledMusic (1, W, L, D): frame sums per adapter window."""
        cfg = self.music_adapter.config
        wf = cfg.window_frames
        n_windows = 1 if wf is None else max(1, math.ceil(total_frames / wf))
        # L = every layer the encoder streams: MERT's hidden states, plus the descriptor layer when it has one
        sums = torch.zeros(n_windows, self.encoder.num_layers, self.encoder.hidden_size)
        counts = torch.zeros(n_windows)
        for win in windows:
            hs = win.hidden_states.float()  # (L, n, D): the frames this window contributes
            idx = win.first_frame + torch.arange(hs.shape[1])
            slot = torch.zeros_like(idx) if wf is None else idx // wf
            sums.index_add_(0, slot, hs.permute(1, 0, 2))
            counts.index_add_(0, slot, torch.ones(len(idx)))
        spw = None if wf is None else wf / self.encoder.frame_rate
        return PooledMusic(sums[None], counts[None], spw)

    def music_tokens(self, pooled: PooledMusic) -> MusicTokens:
        """The trainable part: PooledMusic -> MusicTokens (B, M, H)."""
        return self.music_adapter(pooled.to(self.device))

    def encode_music(self, waves: Sequence[np.ndarray | Tensor]) -> MusicTokens:
        return self.music_tokens(self.encode_audio(waves))

    # --- language model --------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, music: MusicTokens | None = None,
                labels: Tensor | None = None, **kwargs):
        """Teacher-forced LLM pass with the music attended to (training / scoring). Left or right padding:
        position ids follow the attention mask (as generate does), so padding never shifts positions.
        The music stays attached until the next forward: backward may recompute checkpointed layers."""
        if attention_mask is not None and "position_ids" not in kwargs:
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        self.injection.set_music(music)
        calls = self.injection.calls
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        if music is not None:
            self.injection.check_dispatch(calls)
        return out

    def pad_prompts(self, prompts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Left-pad token id lists -> input_ids, attention_mask (B, S) on self.device."""
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, music: MusicTokens | None, prompts: Sequence[Sequence[int]],
                 options: DecodingOptions | None = None, *, fusion=None) -> list[list[int]]:
        """Batched generation; returns the new token ids per row (up to, not including, EOS).
        fusion: a logits processor for these rows (fact_fusion()), or None."""
        options = options or DecodingOptions()
        input_ids, attention_mask = self.pad_prompts(prompts)
        stops = self.stop_token_ids()
        eos = set(stops) | ({self.tokenizer.pad_token_id} - {None})
        extra = {}
        if fusion is not None:   # it steers the generated tokens, which start after the padded prompts
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([fusion.for_prompt(input_ids.shape[1])])
        calls = self.injection.calls
        with self.injection.music(music), seeded(options, self.device):
            out = self.llm.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    generation_config=options.generation_config(self.tokenizer, stops), **extra)
        if music is not None:
            self.injection.check_dispatch(calls)  # the audio was really heard, not silently dropped
        result = []
        for row in out[:, input_ids.shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in eos), len(row))
            result.append(row[:cut])
        return result

    def fact_fusion(self, waves: Sequence[np.ndarray | Tensor] | None = None,
                    options: DecodingOptions | None = None, *, probs: dict[str, np.ndarray] | None = None,
                    repeat: int = 1):
        """A FactFusion logits processor (mu_llama.fusion) for one batch, or None when the model has no tagger or
        options.fact_fusion is 0. The tagger reads `waves` (mono, self.sample_rate, one per row; numpy on the CPU), or
        `probs` gives its output ({fact: (B, classes)}) directly. repeat: rows per wave, wave-major (several
        questions about each clip)."""
        from mu_llama.fusion import FactFusion, fact_token_classes

        weight = (options or DecodingOptions()).fact_fusion
        if self.tagger is None or weight == 0:
            return None
        if self._fact_tokens is None:
            self._fact_tokens = fact_token_classes(self.tokenizer)
        if probs is None:
            waves = [w.detach().float().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w) for w in waves]
            probs = self.tagger.tag_waves(waves, self.sample_rate)
        probs = {f: np.repeat(p, repeat, axis=0) for f, p in probs.items()}
        return FactFusion(self._fact_tokens, probs, TAG_FACTS, weight)

    def stop_token_ids(self) -> list[int]:
        """Tokens that end an answer: the tokenizer's EOS plus the model's own (e.g. LLaMA-3's <|eot_id|>)."""
        ids = [self.tokenizer.eos_token_id]
        model_eos = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        ids += model_eos if isinstance(model_eos, list) else [model_eos]
        return sorted({i for i in ids if i is not None})

    # --- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        if self.config.lora is not None and not is_lora(self.llm):
            raise ConfigError("cannot save a model whose LoRA was merged or quantized; save before merging")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.trainable_state().items()}
        save_file(state, str(directory / ADAPTER_FILE), metadata={"format": "pt"})
        if self.config.lora is not None:
            lora = {k: v.detach().float().cpu().contiguous() for k, v in lora_state_dict(self.llm).items()}
            save_file(lora, str(directory / LORA_FILE), metadata={"format": "pt"})
            peft_cfg = self.llm.peft_config["default"].to_dict()
            peft_cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in peft_cfg.items()}
            peft_cfg["base_model_name_or_path"] = self.config.llm
            (directory / "adapter_config.json").write_text(json.dumps(peft_cfg, indent=2, default=str) + "\n")
        if self.tagger is not None:
            self.tagger.save(directory)
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        (directory / CONFIG_FILE).write_text(json.dumps(body, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, options: LLMOptions | None = None, *,
                        encoder: nn.Module | None = None, llm=None) -> MuLlama:
        """Load a save_pretrained directory: base parts by spec (or the given encoder / (llm, tokenizer))."""
        directory = Path(directory)
        config = _resolve_bundled_parts(read_config(directory), directory)
        options = options or LLMOptions()
        if encoder is None and llm is None:
            model = cls.build(config, options, where=str(directory), quantize_now=False)
        else:
            model = cls(config, encoder, llm[0], llm[1], where=str(directory))
        model._load_weights(directory)
        if (directory / f"{TAGGER_CHECKPOINT}.json").is_file():
            model.tagger = FactTagger.load(directory)
        if options.quantize == "int8-dynamic":
            model.quantize_dynamic()
        return model

    def _load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_file

        target = self.trainable_state()
        _copy_checked(directory / ADAPTER_FILE, load_file(str(directory / ADAPTER_FILE)), target)
        if self.config.lora is not None:
            from peft import set_peft_model_state_dict

            path = directory / LORA_FILE
            if not path.is_file():
                raise CheckpointError(path, "missing: the config has LoRA options")
            saved = load_file(str(path))
            _check_keys(path, saved, lora_state_dict(self.llm))
            set_peft_model_state_dict(self.llm, saved)


def read_config(directory: Path) -> MuLlamaConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(path, "missing: not a mu-llama checkpoint directory")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"invalid JSON ({e})") from None
    if body.get("format") != FORMAT or body.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, f"not a {FORMAT} v{FORMAT_VERSION} config (format={body.get('format')!r}, "
                                    f"version={body.get('format_version')!r})")
    return MuLlamaConfig.from_dict(body["config"])


def _resolve_bundled_parts(config: MuLlamaConfig, directory: Path) -> MuLlamaConfig:
    """A relative encoder / LLM spec that names a sub-folder of the model folder (mu-llama-mini ships its encoder as
    ./encoder) resolves against that folder, wherever the folder was copied to; other specs stay as they are."""
    from dataclasses import replace

    found = {name: str(directory / spec) for name in ("encoder", "llm")
             if not Path(spec := str(getattr(config, name))).is_absolute() and (directory / spec).is_dir()}
    return replace(config, **found) if found else config


def _check_keys(path: Path, saved: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    missing, unexpected = sorted(set(target) - set(saved)), sorted(set(saved) - set(target))
    if missing or unexpected:
        parts = [f"{len(missing)} missing key(s): {', '.join(missing[:5])}" if missing else "",
                 f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}" if unexpected else ""]
        raise CheckpointError(path, "; ".join(p for p in parts if p))
    for k, v in saved.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise CheckpointError(path, f"{k} has shape {tuple(v.shape)}, the model expects {tuple(target[k].shape)}")


def _copy_checked(path: Path, saved: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    _check_keys(path, saved, target)
    with torch.no_grad():
        for k, v in saved.items():
            target[k].copy_(v.to(target[k].dtype))


# --- model registry: name -> how to get it ----------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    description: str
    config: MuLlamaConfig | None = None  # built fresh from this config (untrained)
    checkpoint: str | None = None  # save_pretrained directory name under models_dir() (or absolute)
    extra: dict = field(default_factory=dict)


def models_dir() -> Path:
    """Where named checkpoints ship: mu_llama/assets/<name>/ (packaged); <cache>/models/<name>/ is searched next."""
    return Path(__file__).parent / "assets"


MODELS: dict[str, ModelEntry] = {
    "untrained:smollm2": ModelEntry(
        "random tiny MERT-shaped encoder + SmolLM2-135M-Instruct + fresh adapter (zero gates: answers as plain SmolLM2;"
        " exercises every stage)",
        config=MuLlamaConfig(encoder="random:tiny", llm=SMOLLM2, injection_layers=20)),
    "mu-llama-mini": ModelEntry("MERT + SmolLM2-135M-Instruct music captioner trained by mu-llama",
                                checkpoint="mu-llama-mini"),
    # MU-LLaMA's full size from the hub (needs access to both repos). Its adapter starts untrained: train it with
    # `mu-llama train --set model.encoder=m-a-p/MERT-v1-330M --set model.llm=meta-llama/Llama-2-7b-hf`, or load
    # MU-LLaMA's released weights through `mu-llama convert mullama` (a directory for --model).
    "untrained:mert330m-llama2-7b": ModelEntry(
        "full-size configuration: MERT-v1-330M + LLaMA-2-7B from the hub, fresh adapter (train or convert it)",
        config=MuLlamaConfig(encoder="m-a-p/MERT-v1-330M", llm="meta-llama/Llama-2-7b-hf", injection_layers=20,
                             lora=LoraOptions())),
}
DEFAULT_MODEL = "mu-llama-mini"


def locate_model(name_or_path: str | Path = DEFAULT_MODEL) -> Path | MuLlamaConfig:
    """Where load_model finds a model, without loading weights: a save_pretrained directory, or the config of a
    registry model that is built fresh (untrained:*)."""
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    entry = MODELS.get(spec)
    if entry is None and _looks_like_hub_id(spec) and not path.exists():
        return _hub_snapshot(spec)
    if entry is None:
        raise ConfigError(f"unknown model {spec!r}; valid choices: {', '.join(MODELS)} "
                          "or a directory written by MuLlama.save_pretrained")
    if entry.config is not None:
        return MuLlamaConfig.from_dict(entry.config.to_dict())
    for root in (models_dir(), cache_dir() / "models"):
        candidate = Path(entry.checkpoint) if Path(entry.checkpoint).is_absolute() else root / entry.checkpoint
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ConfigError(f"model {spec!r} is not installed (looked in {models_dir()} and {cache_dir() / 'models'}); "
                      "use --model untrained:smollm2 to run the pipeline with an untrained adapter")


def model_config(name_or_path: str | Path = DEFAULT_MODEL) -> MuLlamaConfig:
    """A model's config without loading weights; parts bundled in its folder (./encoder) resolved to paths."""
    where = locate_model(name_or_path)
    return where if isinstance(where, MuLlamaConfig) else _resolve_bundled_parts(read_config(where), where)


def load_model(name_or_path: str | Path = DEFAULT_MODEL, options: LLMOptions | None = None) -> MuLlama:
    """A registry name (MODELS) or a save_pretrained directory -> MuLlama."""
    where = locate_model(name_or_path)
    if isinstance(where, MuLlamaConfig):
        return MuLlama.build(where, options)
    return MuLlama.from_pretrained(where, options)


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def _hub_snapshot(repo_id: str) -> Path:
    """Download (or reuse the cached) save_pretrained directory of a hub repo. Needs a machine that reaches the hub."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, "*.safetensors", "*.json"]))
    except Exception as e:  # offline, unknown repo, auth: one clear line
        raise ConfigError(f"model {repo_id!r} is neither a registry name ({', '.join(MODELS)}) nor a local directory, "
                          f"and the hub could not provide it: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
