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

from mu_llama.errors import ConfigError


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


class GatedVADCrossAttention(nn.Module):
    """Wraps one MusicgenAttention used for cross-attention; adds the gated attention to the VAD prefix."""

    def __init__(self, attn: nn.Module, conditioner: VADConditioner, layer: int):
        super().__init__()
        self.attn = attn
        self.layer = layer
        object.__setattr__(self, "_cond", conditioner)              # shared; not a submodule of every layer

    def forward(self, hidden_states, key_value_states=None, *args, **kwargs):
        out, weights = self.attn(hidden_states, key_value_states, *args, **kwargs)
        tok = self._cond.current
        if key_value_states is None or tok is None:
            return out, weights
        B = hidden_states.shape[0]
        if tok.shape[0] != B:
            if B % tok.shape[0]:
                raise ConfigError(f"VAD batch {tok.shape[0]} does not divide the decoder batch {B}")
            # classifier-free guidance doubles the batch as [conditional; unconditional]: null prefix for the rest
            extra = self._cond.tokens(None, B - tok.shape[0]).to(tok.dtype)
            tok = torch.cat([tok, extra], 0)
        a = self.attn
        h, d = a.num_heads, a.head_dim
        q = a.q_proj(hidden_states).view(B, -1, h, d).transpose(1, 2)          # (B, H, T, d)
        k = a.k_proj(tok.to(hidden_states.dtype)).view(B, -1, h, d).transpose(1, 2)
        v = a.v_proj(tok.to(hidden_states.dtype)).view(B, -1, h, d).transpose(1, 2)
        extra_out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, h * d)
        gate = torch.tanh(self._cond.gates[self.layer]).to(out.dtype)
        return out + gate * a.out_proj(extra_out), weights


def _decoder_layers(model) -> list:
    return list(model.decoder.model.decoder.layers)


def attach_vad_conditioner(model, n_tokens: int = 4) -> VADConditioner:
    """Add a VADConditioner to a MusicgenForConditionalGeneration (in place). Returns it; it is also `model.vad`."""
    if hasattr(model, "vad_conditioner"):
        raise ConfigError("this model already has a VAD conditioner")
    layers = _decoder_layers(model)
    cond = VADConditioner(model.decoder.config.hidden_size, len(layers), n_tokens)
    for i, layer in enumerate(layers):
        layer.encoder_attn = GatedVADCrossAttention(layer.encoder_attn, cond, i)
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
