"""Full-scale backend: transformers' MusicgenForConditionalGeneration + a VAD conditioner + a LoRA recipe.

VAD conditioner. The VAD triple becomes `n_tokens` learned prefix vectors in the decoder's width. Every decoder
cross-attention layer attends to them *next to* the text-encoder states, reusing that layer's own q/k/v/out
projections, and adds the result through a zero-initialised gate (LLaMA-Adapter's recipe, also MU-LLaMA's):

    cross_out = attn(q, text_states) + tanh(gate_l) * attn(q, vad_tokens)

Why gated instead of simply concatenating the tokens to the text states: softmax attention renormalises over
every key, so concatenating even all-zero tokens changes the output. With a zero gate the model is exactly the
pretrained MusicGen at step 0, and training opens the gate. Missing VAD (`vad=None`, also the unconditional half of
classifier-free guidance) uses a learned null prefix.

LoRA recipe (`lora_finetune`): peft LoRA on the decoder's self/cross-attention q/v projections plus the conditioner,
trained on rows labelled by `mu-llama label` (caption + VAD + audio): text -> T5 -> cross-attention, VAD -> prefix,
target = the clip's EnCodec codes in MusicGen's delay pattern. Real weights load from a hub id on a user's machine
(`facebook/musicgen-small`); tests use a tiny random MusicgenConfig built in code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mu_llama.errors import ConfigError, DependencyError


class VADConditioner(nn.Module):
    """VAD (B, 3) -> prefix tokens (B, n_tokens, hidden); per-layer zero-initialised gates."""

    def __init__(self, hidden_size: int, num_layers: int, n_tokens: int = 4):
        super().__init__()
        if n_tokens < 1:
            raise ConfigError(f"n_tokens must be >= 1, got {n_tokens}")
        self.n_tokens, self.hidden_size = n_tokens, hidden_size
        self.proj = nn.Sequential(nn.Linear(3, hidden_size), nn.GELU(), nn.Linear(hidden_size, n_tokens * hidden_size))
        self.null = nn.Parameter(torch.randn(n_tokens, hidden_size) * 0.02)
        self.gates = nn.Parameter(torch.zeros(num_layers))        # tanh(0) = 0: outputs unchanged at init
        self.current: torch.Tensor | None = None                   # (B, n, D) bound for the next forward/generate

    def tokens(self, vad: torch.Tensor | None, batch: int) -> torch.Tensor:
        if vad is None:
            return self.null.unsqueeze(0).expand(batch, -1, -1)
        return self.proj(vad.float()).view(vad.shape[0], self.n_tokens, self.hidden_size)

    @contextlib.contextmanager
    def bind(self, vad: torch.Tensor | None, batch: int):
        """Make `vad` (B, 3) or None the conditioning of every forward inside the block."""
        self.current = self.tokens(vad, batch)
        try:
            yield
        finally:
            self.current = None


class GatedVADCrossAttention:
    """A forward hook on one decoder layer's cross-attention (MusicgenAttention): adds the gated attention to the VAD
    prefix to the module's output, reusing its q/k/v/out projections.

    Why a hook and not a wrapper module: the attention keeps its own forward, signature and cache handling (its KV-cache
    argument was past_key_value in 4.x, then past_key_values, now cache; a wrapper that re-passes arguments can drop one
    silently), its state-dict keys stay MusicGen's, and the hook reads only two things, both checked per call:
    the query states (B, T, D), the call's first argument; the output, a tuple whose first item is (B, T, D).
    A plain object rather than a closure, so deepcopy of the model re-points it at the copied conditioner."""

    def __init__(self, conditioner: VADConditioner, layer: int):
        self.conditioner = conditioner
        self.layer = layer

    def __call__(self, attn: nn.Module, args: tuple, kwargs: dict, output):
        tok = self.conditioner.current
        if tok is None:
            return None                                            # no VAD bound: the module's output, untouched
        hidden_states = args[0] if args else kwargs.get("hidden_states")
        if not torch.is_tensor(hidden_states) or hidden_states.dim() != 3:
            raise _drift(f"{type(attn).__name__} was called without the query states (B, T, D) as first argument "
                         f"(got {type(hidden_states).__name__}; keyword arguments {sorted(kwargs)})")
        if not (isinstance(output, tuple) and output and torch.is_tensor(output[0])
                and output[0].shape == hidden_states.shape):
            raise _drift(f"{type(attn).__name__} returned {type(output).__name__}, not a tuple starting with the "
                         f"attention output of shape {tuple(hidden_states.shape)}")
        B = hidden_states.shape[0]
        if tok.shape[0] != B:
            if B % tok.shape[0]:
                raise ConfigError(f"VAD batch {tok.shape[0]} does not divide the decoder batch {B}")
            # classifier-free guidance doubles the batch as [conditional; unconditional]: null prefix for the rest
            extra = self.conditioner.tokens(None, B - tok.shape[0]).to(tok.dtype)
            tok = torch.cat([tok, extra], 0)
        h, d = attn.num_heads, attn.head_dim
        q = attn.q_proj(hidden_states).view(B, -1, h, d).transpose(1, 2)          # (B, H, T, d)
        k = attn.k_proj(tok.to(hidden_states.dtype)).view(B, -1, h, d).transpose(1, 2)   # (B, H, n_tokens, d)
        v = attn.v_proj(tok.to(hidden_states.dtype)).view(B, -1, h, d).transpose(1, 2)
        extra_out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, h * d)   # (B, T, D)
        gate = torch.tanh(self.conditioner.gates[self.layer]).to(output[0].dtype)
        return (output[0] + gate * attn.out_proj(extra_out), *output[1:])


# MusicGen's layout as read: decoder.model.decoder.layers[i].encoder_attn, a MusicgenAttention with q/k/v/out_proj.
TRANSFORMERS_SUPPORTED = ">=4.57,<6"  # the hook passes its tests on 4.57.3 and 5.24.0
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _drift(problem: str) -> DependencyError:
    return DependencyError("transformers", TRANSFORMERS_SUPPORTED, f"{problem} (mu_llama.generate.musicgen hooks "
                           "MusicGen's decoder cross-attention)")


def _decoder_layers(model) -> list:
    """A MusicgenForConditionalGeneration's decoder layers, each checked to carry a MusicGen-shaped encoder_attn."""
    layers = getattr(getattr(getattr(getattr(model, "decoder", None), "model", None), "decoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise _drift(f"{type(model).__name__} has no decoder.model.decoder.layers")
    hidden = model.decoder.config.hidden_size
    for i, layer in enumerate(layers):
        attn = getattr(layer, "encoder_attn", None)
        if not isinstance(attn, nn.Module) or not all(isinstance(getattr(attn, p, None), nn.Module)
                                                      for p in ATTENTION_PARTS):
            raise _drift(f"decoder layer {i} has no encoder_attn with {', '.join(ATTENTION_PARTS)}")
        if getattr(attn, "num_heads", 0) * getattr(attn, "head_dim", 0) != hidden:
            raise _drift(f"decoder layer {i}'s encoder_attn lacks num_heads x head_dim = hidden_size {hidden}")
    return list(layers)


def attach_vad_conditioner(model, n_tokens: int = 4) -> VADConditioner:
    """Add a VADConditioner to a MusicgenForConditionalGeneration (in place); returns it (also model.vad_conditioner).
    Each decoder layer's cross-attention gets a GatedVADCrossAttention forward hook; no module is replaced."""
    if hasattr(model, "vad_conditioner"):
        raise ConfigError("this model already has a VAD conditioner")
    layers = _decoder_layers(model)
    cond = VADConditioner(model.decoder.config.hidden_size, len(layers), n_tokens)
    for i, layer in enumerate(layers):
        layer.encoder_attn.register_forward_hook(GatedVADCrossAttention(cond, i), with_kwargs=True)
    model.add_module("vad_conditioner", cond)
    return cond


def _vad_tensor(vad) -> torch.Tensor | None:
    """VAD | list[VAD] | (B, 3) tensor | None -> (B, 3) tensor or None."""
    from mu_llama.emotion.vad import VAD

    if vad is None or torch.is_tensor(vad):
        return vad
    if isinstance(vad, VAD):
        vad = [vad]
    return torch.tensor([v.as_tuple() for v in vad], dtype=torch.float32)


def forward_with_vad(model, vad=None, **inputs):
    """model(**inputs) with the VAD prefix bound (vad: VAD, list of VAD, (B, 3) tensor, or None = null prefix)."""
    v = _vad_tensor(vad)
    batch = inputs["input_ids"].shape[0] if "input_ids" in inputs else v.shape[0]
    with model.vad_conditioner.bind(v, batch):
        return model(**inputs)


def generate_with_vad(model, vad=None, **generate_kwargs):
    """model.generate(...) with the VAD prefix bound; guidance_scale > 1 pairs the VAD with the null prefix."""
    v = _vad_tensor(vad)
    batch = generate_kwargs["input_ids"].shape[0] if "input_ids" in generate_kwargs else (v.shape[0] if v is not None else 1)
    with torch.no_grad(), model.vad_conditioner.bind(v, batch):
        return model.generate(**generate_kwargs)


# ---------------------------------------------------------------------------------------------------- LoRA recipe

@dataclass(frozen=True)
class LoraRecipe:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 1e-4
    steps: int = 1000
    batch_size: int = 4
    p_drop_text: float = 0.3        # classifier-free guidance dropout (MusicGen trains with 0.3)
    p_drop_vad: float = 0.3

    def __post_init__(self):
        if self.rank < 1 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("rank, steps, batch_size must be >= 1 and lr > 0")


def add_lora(model, recipe: LoraRecipe):
    """Wrap the decoder with peft LoRA; freeze everything except LoRA and the VAD conditioner."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                     target_modules=list(recipe.target_modules))
    model.decoder = get_peft_model(model.decoder, cfg)
    for p in model.vad_conditioner.parameters():
        p.requires_grad_(True)
    return model


def delayed_codes(model, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """EnCodec codes (B, K, T) -> (ids (B*K, T+K-1) in MusicGen's delay pattern with pad where delayed, pad id)."""
    B, K, T = codes.shape
    dec = model.decoder.get_base_model() if hasattr(model.decoder, "get_base_model") else model.decoder
    pad = model.generation_config.pad_token_id
    pad = dec.config.pad_token_id if pad is None else pad
    ids, mask = dec.build_delay_pattern_mask(codes.reshape(B * K, T), pad_token_id=pad, max_length=T + K)
    return dec.apply_delay_pattern_mask(ids, mask), int(pad)


def lora_step(model, processor, batch: list[dict], recipe: LoraRecipe, opt, generator: torch.Generator) -> float:
    """One optimisation step on rows {"caption": str, "vad": VAD, "audio": np.ndarray at the model's rate}.

    Teacher forcing on the delayed codes: decoder input = [start] + codes[:-1], target = codes (pad positions ignored).
    """
    import numpy as np

    keep_text = torch.rand(len(batch), generator=generator) >= recipe.p_drop_text
    keep_vad = torch.rand(len(batch), generator=generator) >= recipe.p_drop_vad
    texts = [r["caption"] if keep_text[i] else "" for i, r in enumerate(batch)]
    enc = processor(text=texts, padding=True, return_tensors="pt")
    audio = [np.asarray(r["audio"], np.float32) for r in batch]
    n = min(len(a) for a in audio)
    wav = torch.from_numpy(np.stack([a[:n] for a in audio]))[:, None]      # (B, 1, n)
    with torch.no_grad():
        codes = model.audio_encoder.encode(wav, bandwidth=None).audio_codes[0]   # (B, K', T)
    codes = codes[:, : model.decoder.config.num_codebooks]                 # the codebooks the decoder models
    ids, pad = delayed_codes(model, codes)                                 # (B*K, L)
    start = model.generation_config.decoder_start_token_id
    start = pad if start is None else start
    dec_in = torch.cat([torch.full_like(ids[:, :1], start), ids[:, :-1]], 1)
    target = ids.masked_fill(ids == pad, -100)
    vad = torch.tensor([r["vad"].as_tuple() for r in batch], dtype=torch.float32)
    tokens = model.vad_conditioner.tokens(vad, len(batch))
    null = model.vad_conditioner.tokens(None, len(batch))
    model.vad_conditioner.current = torch.where(keep_vad.view(-1, 1, 1), tokens, null)
    try:
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=dec_in).logits
    finally:
        model.vad_conditioner.current = None
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def lora_finetune(model, processor, rows: list[dict], recipe: LoraRecipe = LoraRecipe(), seed: int = 0,
                  progress: bool = True) -> list[float]:
    """Train LoRA + VAD conditioner on labelled rows; returns the loss curve. The model must already carry
    `attach_vad_conditioner` and `add_lora`."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr)
    model.train()
    losses = []
    for _ in tqdm(range(recipe.steps), disable=not progress, desc="musicgen-lora"):
        idx = torch.randint(0, len(rows), (recipe.batch_size,), generator=g).tolist()
        losses.append(lora_step(model, processor, [rows[i] for i in idx], recipe, opt, g))
    model.eval()
    return losses


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    """Only the LoRA and VAD-conditioner weights (what a fine-tune saves; the base model is not copied)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if "lora_" in k or k.startswith("vad_conditioner.")}


def tiny_musicgen(seed: int = 0):
    """A tiny random MusicgenForConditionalGeneration for tests and dry runs (no weights needed)."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config

    tc = T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ec = EncodecConfig(hidden_size=16, num_filters=4, num_residual_layers=1, upsampling_ratios=[4, 4],
                       codebook_size=32, codebook_dim=16, audio_channels=1, sampling_rate=8000,
                       target_bandwidths=[5.0], num_lstm_layers=1, compress=2)
    dc = MusicgenDecoderConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                               num_codebooks=2, max_position_embeddings=64, pad_token_id=32, bos_token_id=32,
                               decoder_start_token_id=32)
    cfg = MusicgenConfig(text_encoder=tc.to_dict(), audio_encoder=ec.to_dict(), decoder=dc.to_dict())
    torch.manual_seed(seed)
    m = MusicgenForConditionalGeneration(cfg).eval()
    m.generation_config.pad_token_id = 32
    m.generation_config.bos_token_id = 32
    m.generation_config.decoder_start_token_id = 32
    return m
