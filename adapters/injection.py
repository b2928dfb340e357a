"""Gated music injection into the last K decoder layers of a LLaMA-family transformers model.

LLaMA-Adapter style, as MU-LLaMA: in each of the last K layers the adapter tokens
    a_i = prefix_query[i] + music tokens                      (B, M, H)
are projected with that layer's own k_proj / v_proj (no rotary on adapter keys) and attended to by the
layer's post-rotary queries; the result is added through a per-head, zero-initialised gate before o_proj:
    attn_out += tanh(gate_i) * softmax(q k_a^T / sqrt(d) + music_mask) v_a        (per head, GQA-aware)
With M = 1 (clip mode) the softmax is exactly 1 and this is MU-LLaMA's `output + gate.tanh() * adapter_v`.
Zero gates give the plain LLM's logits exactly.

The adapter K/V depend on the audio, so they are built once per batch: `with injection.music(tokens):`
projects every gated layer's adapter tokens on entry (under the caller's grad mode) and keeps the K/V in
the context; every forward and every decode step of `generate` inside the block reuses them (`kv_builds`
counts projections: K per context). Building them on entry, outside the decoder layers, keeps them valid
under gradient checkpointing (recomputed layers only read them). Outside a context the gated layers
behave exactly as the original attention (text-only).

`attach(llm)` swaps each target `layer.self_attn` for a `GatedAttention` that reuses the original
q/k/v/o projection modules (same objects, same state-dict names, so peft LoRA, bitsandbytes layers and
bias tuning apply to it unchanged) and re-implements LlamaAttention.forward with the model's own
attention interface (eager / sdpa / flash). `detach()` puts the original modules back (with whatever
projection modules are current, e.g. LoRA-wrapped or merged). No global monkey-patching.

Parameter layout (names in `MusicInjection.state_dict()`; MU-LLaMA names on the right, N = 32 layers, K = 20):

    prefix_query  (K, H)   <- prefix_query.weight (nn.Embedding(K * 1, H)); row i goes with gated layer i
    gates         (K, nH)  <- llama.layers.{N-K+i}.attention.gate (1, nH, 1, 1), i = 0..K-1
Gated layer i is decoder layer N-K+i. MU-LLaMA projects adapter values with the *base* wv (its LoRA
is not applied to the adapter): use kv_through_lora=False to reproduce that under peft LoRA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from mu_llama.errors import ConfigError

from .music_adapter import MusicTokens


@dataclass
class InjectionConfig:
    num_layers: int  # K: gated layers, counted from the top of the decoder (MU-LLaMA: 20 of 32)
    llm_dim: int  # H
    num_heads: int  # query heads (one gate per head)
    prefix_std: float = 0.02  # init std of prefix_query
    kv_through_lora: bool = True  # False: adapter K/V use the base projections (MU-LLaMA)

    def __post_init__(self):
        for name in ("num_layers", "llm_dim", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"invalid injection {name} {value!r}; must be a positive integer")
        if not self.prefix_std >= 0:
            raise ConfigError(f"invalid prefix_std {self.prefix_std!r}; must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _MusicContext:
    tokens: Tensor  # (B, M, H)
    mask: Tensor  # (B, M) bool
    kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # slot -> (B, nKV, M, d) each


def _unwrap(llm: nn.Module) -> nn.Module:
    """The transformers model under peft / other wrappers."""
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a LLaMA-family causal LM (plain or peft-wrapped)."""
    base = _unwrap(llm)
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers) or not hasattr(layers[0], "self_attn"):
        raise ConfigError(f"{type(base).__name__} is not a LLaMA-family causal LM (no model.layers[*].self_attn)")
    return layers


def _device_of(module: nn.Module, default: torch.device) -> torch.device:
    """Device of a module's first tensor (torch dynamic-int8 Linear has none registered: CPU, the default)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return default


def _base_proj(proj: nn.Module) -> nn.Module:
    """The projection without LoRA (peft LoraLayer keeps the original as base_layer)."""
    return proj.get_base_layer() if hasattr(proj, "get_base_layer") else proj


class GatedAttention(nn.Module):
    """LlamaAttention with a gated music-adapter branch. Holds the original q/k/v/o modules as its own."""

    def __init__(self, attn: nn.Module, injection: MusicInjection, slot: int):
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "num_key_value_groups", "scaling"):
            if not hasattr(attn, name):
                raise ConfigError(f"{type(attn).__name__} lacks {name}: gated injection supports LLaMA-style attention")
        for name in ("q_norm", "k_norm", "sliding_window"):
            if getattr(attn, name, None) is not None:
                raise ConfigError(f"{type(attn).__name__} uses {name}, which gated injection does not replicate")
        self.config = attn.config
        self.layer_idx = attn.layer_idx
        self.head_dim = attn.head_dim
        self.num_key_value_groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.attention_dropout = getattr(attn, "attention_dropout", 0.0)
        self.is_causal = getattr(attn, "is_causal", True)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.slot = slot
        # not registered as submodules: the original comes back on detach, the injection owns the gates
        object.__setattr__(self, "_original", attn)
        object.__setattr__(self, "_injection", injection)

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor] | None = None,
                attention_mask: Tensor | None = None, past_key_values=None, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nH, S, d)
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nKV, S, d)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                    eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, q, k, v, attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling, **kwargs)
        # attn_output: (B, S, nH, d)
        extra = self._injection.adapter_attention(self, q)
        if extra is not None:
            attn_output = attn_output + extra
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class MusicInjection(nn.Module):
    """Owns prefix_query (K, H) and gates (K, nH); attaches GatedAttention to the last K layers of an LLM."""

    def __init__(self, config: InjectionConfig):
        super().__init__()
        self.config = config
        self.prefix_query = nn.Parameter(torch.randn(config.num_layers, config.llm_dim) * config.prefix_std)
        self.gates = nn.Parameter(torch.zeros(config.num_layers, config.num_heads))
        self._context: _MusicContext | None = None
        self._attached: list[tuple[nn.Module, GatedAttention]] = []  # (decoder layer, wrapper); not registered
        self._embeddings: list[nn.Module] = []  # the LLM's input embeddings: their dtype is the activation dtype
        self.kv_builds = 0  # adapter K/V projections computed (one per gated layer per music context)

    # --- attach / detach -------------------------------------------------------------------------
    def attach(self, llm: nn.Module) -> None:
        if self._attached:
            raise ConfigError("music injection is already attached; detach() first")
        layers = decoder_layers(llm)
        k = self.config.num_layers
        if k > len(layers):
            raise ConfigError(f"injection layers {k} > the LLM's {len(layers)} decoder layers")
        hidden = _unwrap(llm).config.hidden_size
        heads = _unwrap(llm).config.num_attention_heads
        if (hidden, heads) != (self.config.llm_dim, self.config.num_heads):
            raise ConfigError(f"injection built for hidden {self.config.llm_dim} / {self.config.num_heads} heads, "
                              f"LLM has {hidden} / {heads}")
        for slot, layer in enumerate(layers[len(layers) - k:]):
            if isinstance(layer.self_attn, GatedAttention):
                raise ConfigError("the LLM already carries a music injection")
            wrapper = GatedAttention(layer.self_attn, self, slot)
            layer.self_attn = wrapper
            self._attached.append((layer, wrapper))
        self._embeddings = [_unwrap(llm).get_input_embeddings()]

    def detach(self) -> None:
        """Restore the original attention modules (with the current projections: LoRA / merged / quantized)."""
        for layer, wrapper in self._attached:
            original = wrapper._original
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(original, name, getattr(wrapper, name))
            layer.self_attn = original
        self._attached = []
        self._embeddings = []

    @property
    def attached(self) -> bool:
        return bool(self._attached)

    # --- music context ---------------------------------------------------------------------------
    @contextmanager
    def music(self, music: MusicTokens | None) -> Iterator[None]:
        """Within the block, gated layers attend to `music`; its adapter K/V are built here, once per layer.
        The previous music (if any) comes back on exit."""
        prev = self._context
        self.set_music(music)
        try:
            yield
        finally:
            self._context = prev

    def set_music(self, music: MusicTokens | None) -> None:
        """Attach `music` until the next set_music / music() call (None: text-only). Training uses this form:
        the music must still be attached when backward recomputes checkpointed layers."""
        if music is None:
            self._context = None
            return
        if not self._attached:
            raise ConfigError("music injection is not attached to an LLM; call attach(llm) first")
        ctx = _MusicContext(music.tokens, music.mask)
        dtype = self._embeddings[0].weight.dtype
        for _, layer in self._attached:
            ctx.kv[layer.slot] = self._project(layer, ctx.tokens, dtype)
        self._context = ctx

    def _project(self, layer: GatedAttention, tokens: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Adapter K/V of one gated layer: (B, nKV, M, d) each, no rotary."""
        device = _device_of(layer.k_proj, tokens.device)  # layers may sit on different GPUs (device_map)
        a = (tokens + self.prefix_query[layer.slot].to(tokens.dtype)).to(device, dtype)  # (B, M, H)
        k_proj = layer.k_proj if self.config.kv_through_lora else _base_proj(layer.k_proj)
        v_proj = layer.v_proj if self.config.kv_through_lora else _base_proj(layer.v_proj)
        shape = (*a.shape[:2], -1, layer.head_dim)
        self.kv_builds += 1
        return k_proj(a).view(shape).transpose(1, 2), v_proj(a).view(shape).transpose(1, 2)

    def adapter_attention(self, layer: GatedAttention, q: Tensor) -> Tensor | None:
        """Gated adapter attention for post-rotary queries q (B, nH, S, d) -> (B, S, nH, d), or None."""
        ctx = self._context
        if ctx is None:
            return None
        k, v = ctx.kv[layer.slot]
        k, v, mask = k.to(q.device, q.dtype), v.to(q.device, q.dtype), ctx.mask.to(q.device)
        if q.shape[0] != k.shape[0]:  # generate expanded the batch (num_return_sequences / beams)
            if q.shape[0] % k.shape[0]:
                raise ValueError(f"batch of {q.shape[0]} queries does not match {k.shape[0]} music rows")
            r = q.shape[0] // k.shape[0]
            k, v, mask = k.repeat_interleave(r, 0), v.repeat_interleave(r, 0), mask.repeat_interleave(r, 0)
        groups = layer.num_key_value_groups
        if groups > 1:  # GQA: each KV head serves `groups` query heads
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = torch.matmul(q, k.transpose(2, 3)).float() * layer.scaling  # (B, nH, S, M)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1)
        probs = probs * mask.any(-1).to(probs.dtype)[:, None, None, None]  # rows without music add nothing
        out = torch.matmul(probs.to(v.dtype), v)  # (B, nH, S, d)
        gate = torch.tanh(self.gates[layer.slot]).to(out.device, out.dtype)[None, :, None, None]
        return (gate * out).transpose(1, 2)
