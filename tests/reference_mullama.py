"""A minimal, faithful re-implementation of MU-LLaMA's forward pass, for parity tests of the converter.

It follows crypto-code/MU-LLaMA (llama/llama.py: ModelArgs, RMSNorm, precompute_freqs_cis, apply_rotary_emb,
Attention with lora_w*_l1/l2 + gate, FeedForward with LoRA, Transformer; llama/llama_adapter.py: LLaMA_adapter's
mu_mert_* aggregator and bridge, prefix_query, forward_audio, forward) in the reference's own key layout and
Meta's weight layout, with the sizes it hard-codes (25 MERT layers, 1024, 4096, 20 query layers) turned into
config knobs so tiny random models can be built. Only what the forward needs is kept: no KV cache (the
training-mode path, mathematically the same as its cached decode), no kNN cache, no fp16 / autocast, no
model parallelism. Rotary runs as Meta does it: interleaved pairs rotated as complex numbers.

Not part of the library: tests import it to check that converted checkpoints give the same logits.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ReferenceArgs:
    # llama.ModelArgs (params.json fields + the adapter's flags)
    dim: int = 64
    n_layers: int = 4
    n_heads: int = 4
    vocab_size: int = 260
    multiple_of: int = 32
    norm_eps: float = 1e-5
    max_seq_len: int = 256
    w_bias: bool = True  # phase == "finetune"
    w_lora: bool = True
    lora_rank: int = 4
    # llama_adapter.LLaMA_adapter's hard-coded sizes
    enc_layers: int = 25  # MERT-330M hidden states
    enc_dim: int = 32  # 1024 in MU-LLaMA
    query_layer: int = 2  # 20 in MU-LLaMA
    legacy_bridge: bool = False

    def params_json(self) -> dict:
        """What Meta's params.json holds (vocab_size -1: taken from the tokenizer)."""
        return {"dim": self.dim, "multiple_of": self.multiple_of, "n_heads": self.n_heads,
                "n_layers": self.n_layers, "norm_eps": self.norm_eps, "vocab_size": -1}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    return torch.polar(torch.ones(end, dim // 2), torch.outer(t, freqs).float())  # (end, d/2) complex64


def apply_rotary_emb(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> tuple[Tensor, Tensor]:
    """Meta's rotary: consecutive pairs (2j, 2j+1) of each head as one complex number. x: (B, S, nH, d)."""
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    f = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
    return torch.view_as_real(xq_ * f).flatten(3).type_as(xq), torch.view_as_real(xk_ * f).flatten(3).type_as(xk)


class Attention(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.n_heads, self.head_dim = args.n_heads, args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, args.dim, bias=args.w_bias)
        self.wk = nn.Linear(args.dim, args.dim, bias=False)
        self.wv = nn.Linear(args.dim, args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=args.w_bias)
        self.w_lora = args.w_lora
        if args.w_lora:
            r = args.lora_rank
            for w in ("wq", "wk", "wv", "wo"):
                setattr(self, f"lora_{w}_l1", nn.Linear(args.dim, r, bias=False))
                setattr(self, f"lora_{w}_l2", nn.Linear(r, args.dim, bias=False))
        self.gate = nn.Parameter(torch.zeros(1, args.n_heads, 1, 1))

    def forward(self, x: Tensor, freqs_cis: Tensor, mask: Tensor, adapter: Tensor | None = None) -> Tensor:
        bsz, seqlen, _ = x.shape
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
        if self.w_lora:
            xq = xq + self.lora_wq_l2(self.lora_wq_l1(x))
            xk = xk + self.lora_wk_l2(self.lora_wk_l1(x))
            xv = xv + self.lora_wv_l2(self.lora_wv_l1(x))
        xq = xq.view(bsz, seqlen, self.n_heads, self.head_dim)
        xk = xk.view(bsz, seqlen, self.n_heads, self.head_dim)
        xv = xv.view(bsz, seqlen, self.n_heads, self.head_dim)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)
        if adapter is not None:  # adapter values through the BASE wv (no LoRA), no rotary
            adapter_len = adapter.shape[1]
            adapter_v = self.wv(adapter).view(bsz, adapter_len, self.n_heads, self.head_dim).transpose(1, 2)
            if adapter_len > 1:
                adapter_k = self.wk(adapter).view(bsz, adapter_len, self.n_heads, self.head_dim).transpose(1, 2)
        xq, keys, values = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
        scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        scores = F.softmax(scores.float(), dim=-1).type_as(xq)
        output = torch.matmul(scores, values)  # (B, nH, S, d)
        if adapter is not None:
            if adapter_len > 1:
                adapter_scores = torch.matmul(xq, adapter_k.transpose(2, 3)) / math.sqrt(self.head_dim)
                adapter_scores = self.gate.tanh() * F.softmax(adapter_scores.float(), dim=-1).type_as(xq)
                output = output + torch.matmul(adapter_scores, adapter_v)
            else:  # MU-LLaMA: one music token, softmax over one key == 1
                output = output + self.gate.tanh() * adapter_v
        output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
        if self.w_lora:
            return self.wo(output) + self.lora_wo_l2(self.lora_wo_l1(output))
        return self.wo(output)


class FeedForward(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        hidden = int(2 * (4 * args.dim) / 3)
        hidden = args.multiple_of * ((hidden + args.multiple_of - 1) // args.multiple_of)
        self.w1 = nn.Linear(args.dim, hidden, bias=args.w_bias)
        self.w2 = nn.Linear(hidden, args.dim, bias=args.w_bias)
        self.w3 = nn.Linear(args.dim, hidden, bias=args.w_bias)
        self.w_lora = args.w_lora
        if args.w_lora:
            r = args.lora_rank
            self.lora_w1_l1, self.lora_w1_l2 = nn.Linear(args.dim, r, bias=False), nn.Linear(r, hidden, bias=False)
            self.lora_w2_l1, self.lora_w2_l2 = nn.Linear(hidden, r, bias=False), nn.Linear(r, args.dim, bias=False)
            self.lora_w3_l1, self.lora_w3_l2 = nn.Linear(args.dim, r, bias=False), nn.Linear(r, hidden, bias=False)

    def forward(self, x):
        if self.w_lora:
            out = F.silu(self.w1(x) + self.lora_w1_l2(self.lora_w1_l1(x))) * (
                self.w3(x) + self.lora_w3_l2(self.lora_w3_l1(x)))
            return self.w2(out) + self.lora_w2_l2(self.lora_w2_l1(out))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, freqs_cis, mask, prompt=None):
        h = x + self.attention(self.attention_norm(x), freqs_cis, mask, prompt)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.freqs_cis = precompute_freqs_cis(args.dim // args.n_heads, args.max_seq_len * 2)  # not a buffer


class ReferenceMuLlama(nn.Module):
    """LLaMA_adapter minus MERT / tokenizer / kNN: state_dict() names are the reference checkpoint's."""

    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.args = args
        d, h = args.enc_dim, args.dim
        self.mu_mert_agg = nn.Conv1d(in_channels=args.enc_layers, out_channels=1, kernel_size=1)
        self.mu_mert_proj = nn.Linear(d, h)
        norm, bias = (nn.LayerNorm, True) if args.legacy_bridge else (RMSNorm, False)
        for k in (1, 2, 3):
            setattr(self, f"mu_mert_norm_{k}", norm(h))
            setattr(self, f"mu_mert_f1_{k}", nn.Linear(h, 4 * h, bias=bias))
            setattr(self, f"mu_mert_f2_{k}", nn.Linear(4 * h, h, bias=bias))
            setattr(self, f"mu_mert_f3_{k}", nn.Linear(h, 4 * h, bias=bias))
        self.llama = Transformer(args)
        self.query_layer, self.query_len = args.query_layer, 1
        self.prefix_query = nn.Embedding(self.query_layer * self.query_len, h)

    def encode_audio(self, hidden_states: Tensor) -> Tensor:
        """MERT hidden states (L, B, T, D) -> (B, D): per clip, time-mean of each layer, then the 1x1 Conv1d."""
        xs = []
        for b in range(hidden_states.shape[1]):
            all_layer_hidden_states = hidden_states[:, b]  # (L, T, D) == torch.stack(outputs.hidden_states).squeeze()
            aggoutputs = torch.zeros(1, self.args.enc_layers, self.args.enc_dim)
            aggoutputs += all_layer_hidden_states.mean(-2).unsqueeze(0)
            aggoutputs /= 1  # one 60-s window (audio under 60 minutes)
            xs.append(self.mu_mert_agg(aggoutputs).squeeze())
        return torch.stack(xs, dim=0)

    def forward_audio(self, hidden_states: Tensor) -> Tensor:
        """(L, B, T, D) -> music token (B, 1, H), as forward_audio({'Audio': [audio, 1]})."""
        outputs = [F.normalize(self.encode_audio(hidden_states), dim=-1)]
        outputs_weights = [x / (1 + 1e-6) for x in [1]]
        audio_feats = sum(o * w for o, w in zip(outputs, outputs_weights))
        audio_feats = self.mu_mert_proj(audio_feats.unsqueeze(1))
        for k in (1, 2, 3):
            n = getattr(self, f"mu_mert_norm_{k}")(audio_feats)
            audio_feats = audio_feats + getattr(self, f"mu_mert_f2_{k}")(
                F.silu(getattr(self, f"mu_mert_f1_{k}")(n)) * getattr(self, f"mu_mert_f3_{k}")(n))
        return audio_feats

    def forward(self, hidden_states: Tensor | None, tokens: Tensor) -> Tensor:
        """Logits (B, S, V) for tokens (B, S) with the music (None: zero music token is NOT the same as no music,
        so None runs the plain LLaMA without adapter prompts)."""
        _bsz, seqlen = tokens.shape
        h = self.llama.tok_embeddings(tokens)
        freqs_cis = self.llama.freqs_cis[:seqlen]
        mask = torch.triu(torch.full((1, 1, seqlen, seqlen), float("-inf")), diagonal=1).type_as(h)
        k = self.query_layer
        for layer in self.llama.layers[:-k]:
            h = layer(h, freqs_cis, mask)
        if hidden_states is None:
            for layer in self.llama.layers[-k:]:
                h = layer(h, freqs_cis, mask)
        else:
            audio_proj = self.forward_audio(hidden_states)
            prefix_query = self.prefix_query.weight.reshape(k, 1, self.args.dim).unsqueeze(1)
            for i, layer in enumerate(self.llama.layers[-k:]):
                h = layer(h, freqs_cis, mask, audio_proj + prefix_query[i].repeat(_bsz, 1, 1))
        return self.llama.output(self.llama.norm(h)).float()

    @torch.no_grad()
    def greedy(self, hidden_states: Tensor, tokens: Tensor, steps: int) -> Tensor:
        """Greedy continuation (temperature 0), recomputing the whole sequence each step. -> (B, steps)."""
        out = tokens
        for _ in range(steps):
            nxt = self(hidden_states, out)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
        return out[:, tokens.shape[1]:]


def format_prompt(instruction: str) -> str:
    """MU-LLaMA's llama.format_prompt as called by its inference: the `input` argument defaults to the builtin."""
    prompt_input = ("Below is an instruction that describes a task, paired with an input that provides further "
                    "context. Write a response that appropriately completes the request.\n\n"
                    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
    return prompt_input.format_map({"instruction": instruction, "input": input})


# --- random weights in the reference layout ------------------------------------------------------------------
BASE_SUFFIXES = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
                 "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
                 "attention_norm.weight", "ffn_norm.weight")


def is_base_key(name: str) -> bool:
    """A Meta consolidated weight (inside the reference: llama.<meta name>), i.e. not trained by MU-LLaMA.
    Norm weights are both: the base has them and finetuning retrains them."""
    n = name[len("llama."):] if name.startswith("llama.") else None
    return n is not None and (n in ("tok_embeddings.weight", "output.weight", "norm.weight")
                              or n.endswith(BASE_SUFFIXES))


def build_random(args: ReferenceArgs, seed: int = 0) -> ReferenceMuLlama:
    """Random weights with every trained part nonzero (gates, LoRA B, biases, norms) so parity is meaningful."""
    g = torch.Generator().manual_seed(seed)
    model = ReferenceMuLlama(args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or (name.startswith("mu_mert_norm_") and name.endswith(".weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".gate"):
                p.copy_(0.8 * torch.randn(p.shape, generator=g))
            elif name == "prefix_query.weight":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif ".lora_" in name or name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:  # weights: unit-variance outputs, so activations and logits are O(1)
                fan_in = p.shape[1] if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in) * (1.0 if p.dim() > 1 else 0.5))
    return model.eval()


def save_reference(model: ReferenceMuLlama, root: Path, *, phase: str = "finetune", full_state: bool = False,
                   early_gates: str = "zero") -> tuple[Path, Path]:
    """Write the reference's files: root/llama/7B/{consolidated.00.pth, params.json} and root/checkpoint.pth.

    checkpoint.pth is {"model": trained tensors, "epoch", "args": argparse.Namespace} as the training script saves.
    phase "finetune": both stages' tensors (mu_mert_*, prefix_query, gates, LoRA, biases, norms); the Meta base then
    holds different, pre-finetuning norm weights (ones), so a converter that drops the tuned norms is caught.
    phase "pretrain": mu_mert_*, prefix_query and gates only (the model must have w_bias = w_lora = False).
    full_state=True also puts the frozen base weights in the checkpoint. early_gates: the gates of layers
    without injection are "zero" (as training leaves them: they get no gradient) or "random".
    """
    state = model.state_dict()
    if early_gates == "zero":
        for i in range(model.args.n_layers - model.query_layer):
            state[f"llama.layers.{i}.attention.gate"] = torch.zeros_like(state[f"llama.layers.{i}.attention.gate"])
    meta = {k[len("llama."):]: v.clone() for k, v in state.items() if is_base_key(k)}
    if phase == "finetune":
        meta = {k: torch.ones_like(v) if k.endswith("norm.weight") else v for k, v in meta.items()}
    head = model.args.dim // model.args.n_heads
    meta["rope.freqs"] = 1.0 / (10000.0 ** (torch.arange(0, head, 2).float() / head))
    llama_dir = root / "llama" / "7B"
    llama_dir.mkdir(parents=True, exist_ok=True)
    torch.save(meta, llama_dir / "consolidated.00.pth")
    (llama_dir / "params.json").write_text(json.dumps(model.args.params_json()))

    def trained(k: str) -> bool:
        if k.startswith(("mu_mert_", "prefix_query.")) or k.endswith(".gate"):
            return True
        return phase == "finetune" and (".lora_" in k or k.endswith((".bias", "norm.weight")))

    ckpt_state = {k: v.clone() for k, v in state.items() if full_state or trained(k)}
    ckpt = root / "checkpoint.pth"
    torch.save({"model": ckpt_state, "epoch": 3, "args": argparse.Namespace(llama_type="7B", lr=1e-4)}, ckpt)
    return llama_dir.parent, ckpt
