"""The embedded generator: a small decoder-only transformer over music event tokens, conditioned on text + VAD.

Conditioning is fused by *prepend* (as in MusicGen's conditioner "prepend" slot): the caption embedding becomes
`n_text_tokens` vectors and the VAD triple `n_vad_tokens` vectors, placed before the music tokens; music tokens attend
to them causally. A missing part uses a learned null vector, and training drops parts at random, so the same network
gives the conditional and the unconditional predictions that classifier-free guidance mixes.
Checkpoints: config.json + model.safetensors (`save_generator` / `load_generator`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mu_llama.errors import CheckpointError, ConfigError


@dataclass
class GeneratorConfig:
    vocab_size: int = 341
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 768
    max_len: int = 512            # music tokens per window (conditioning vectors come on top)
    text_dim: int = 384
    n_text_tokens: int = 2
    n_vad_tokens: int = 2
    dropout: float = 0.1
    info: dict = field(default_factory=dict)   # free-form provenance (training data, steps, ...)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "text_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"generator config {name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.n_text_tokens < 1 or self.n_vad_tokens < 1:
            raise ConfigError("n_text_tokens and n_vad_tokens must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def n_prefix(self) -> int:
        return self.n_text_tokens + self.n_vad_tokens


class Block(nn.Module):
    def __init__(self, c: GeneratorConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.ln1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, D). With `cache` ({"k","v"}: (B, H, S, Dh) or empty) the new positions attend to cached ones."""
        B, T, D = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        q, k, v = (t.view(B, T, h, D // h).transpose(1, 2) for t in (q, k, v))      # (B, H, T, Dh)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]
        if T == 1:
            a = F.scaled_dot_product_attention(q, k, v)                              # one new query sees all
        else:
            if S == T:   # no cache: plain causal (the fast kernel; no attention dropout, it costs ~2x on CPU)
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:        # causal over the last T of S positions (prefilling after a cached prefix)
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff(self.ln2(x)))


class MusicTokenLM(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        c = self.config = config
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.n_prefix + c.max_len, c.d_model)
        self.text_proj = nn.Linear(c.text_dim, c.n_text_tokens * c.d_model)
        self.vad_proj = nn.Sequential(nn.Linear(3, c.d_model), nn.GELU(), nn.Linear(c.d_model, c.n_vad_tokens * c.d_model))
        self.null_text = nn.Parameter(torch.zeros(c.n_text_tokens, c.d_model))
        self.null_vad = nn.Parameter(torch.zeros(c.n_vad_tokens, c.d_model))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight                   # tied
        self.apply(self._init)
        nn.init.normal_(self.null_text, std=0.02)
        nn.init.normal_(self.null_vad, std=0.02)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def prefix(self, text_emb: torch.Tensor | None, vad: torch.Tensor | None,
               text_on: torch.Tensor | None = None, vad_on: torch.Tensor | None = None, batch: int = 1) -> torch.Tensor:
        """Conditioning vectors (B, P, D). text_emb (B, text_dim), vad (B, 3); *_on (B,) bool picks real vs null."""
        c = self.config
        B = text_emb.shape[0] if text_emb is not None else vad.shape[0] if vad is not None else batch
        null_t = self.null_text.unsqueeze(0).expand(B, -1, -1)
        null_v = self.null_vad.unsqueeze(0).expand(B, -1, -1)
        t = null_t if text_emb is None else self.text_proj(text_emb).view(B, c.n_text_tokens, c.d_model)
        v = null_v if vad is None else self.vad_proj(vad).view(B, c.n_vad_tokens, c.d_model)
        if text_emb is not None and text_on is not None:
            t = torch.where(text_on.view(B, 1, 1), t, null_t)
        if vad is not None and vad_on is not None:
            v = torch.where(vad_on.view(B, 1, 1), v, null_v)
        return torch.cat([t, v], dim=1)

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor, caches: list[dict] | None = None,
                start: int = 0) -> torch.Tensor:
        """tokens (B, T) music ids; prefix (B, P, D) or None when `caches` already hold it.

        Returns logits (B, T, V) for the next token after each music position. `start` is the position of tokens[0]
        within the music window (for positional embeddings when continuing from a cache).
        """
        P = self.config.n_prefix
        x = self.tok(tokens)
        T = tokens.shape[1]
        pos = torch.arange(P + start, P + start + T, device=tokens.device)
        x = x + self.pos(pos)
        n_pre = 0
        if prefix is not None:
            x = torch.cat([prefix + self.pos(torch.arange(P, device=tokens.device)), x], dim=1)
            n_pre = P
        for i, b in enumerate(self.blocks):
            x = b(x, caches[i] if caches is not None else None)
        return self.head(self.ln_f(x[:, n_pre:]))


# ------------------------------------------------------------------------------------------------------ checkpoints

def save_generator(model: MusicTokenLM, directory: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json + model.safetensors (tied head weight stored once)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "mu-llama-generator"})
    (d / "config.json").write_text(json.dumps(asdict(model.config), indent=1))
    return d


def load_generator(directory: str | Path) -> MusicTokenLM:
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise CheckpointError(d, "not a generator checkpoint (needs config.json and model.safetensors)")
    try:
        cfg = GeneratorConfig(**json.loads((d / "config.json").read_text()))
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(d / "config.json", f"bad generator config: {e}") from e
    model = MusicTokenLM(cfg)
    sd = {k: v.float() for k, v in load_file(str(d / "model.safetensors")).items()}
    expected = {k for k in model.state_dict() if k != "head.weight"}
    missing, unexpected = expected - sd.keys(), sd.keys() - expected
    if missing or unexpected:
        raise CheckpointError(d / "model.safetensors",
                              f"keys do not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    for k, v in sd.items():
        if v.shape != model.state_dict()[k].shape:
            raise CheckpointError(d / "model.safetensors", f"{k}: shape {tuple(v.shape)} != {tuple(model.state_dict()[k].shape)}")
    model.load_state_dict(sd, strict=False)
    model.eval()
    return model
