"""Gated music injection into the last K decoder layers of a LLaMA-family transformers model.

LLaMA-Adapter style, as MU-LLaMA: in each of the last K layers the adapter tokens
    a_i = prefix_query[i] + music tokens                      (B, M, H)
are projected with that layer's own k_proj / v_proj (no rotary on adapter keys) and attended to by the
layer's post-rotary queries; the result is added through a per-head, zero-initialised gate before o_proj:
    attn_out += tanh(gate_i) * softmax(q k_a^T / sqrt(d) + music_mask) v_a        (per head, GQA-aware)
With M = 1 (clip mode) the softmax is exactly 1 and this is MU-LLaMA's `output + gate.tanh() * adapter_v`.
Zero gates give the plain LLM's logits exactly.

The seam: transformers' attention-function registry (`AttentionInterface`). Every LLaMA-family attention module
computes q/k/v, applies rotary, updates its KV cache and then calls
    attention_function(module, query (B, nH, S, d), key, value, attention_mask, **kwargs) -> (B, S, nH, d), weights
looked up by name in that registry. `attach(llm)` registers one wrapper per base implementation
("mu_llama_gated:sdpa", ...: the base function, then the gated branch for modules that carry a slot) and switches
the model to it with the public `set_attn_implementation`. Nothing of upstream's forward is copied: the cache, the
rotary and the mask stay upstream's, so a renamed argument upstream cannot drop them. The attention modules are not
replaced (same objects, same state-dict names), so peft LoRA, bitsandbytes layers and bias tuning apply unchanged.
A gated layer that the registry never called while music was attached is an error (`check_dispatch`), not a
silently text-only answer.

The adapter K/V depend on the audio, so they are built once per batch: `with injection.music(tokens):`
projects every gated layer's adapter tokens on entry (under the caller's grad mode) and keeps the K/V in
the context; every forward and every decode step of `generate` inside the block reuses them (`kv_builds`
counts projections: K per context). Building them on entry, outside the decoder layers, keeps them valid
under gradient checkpointing (recomputed layers only read them). Outside a context the gated layers
behave exactly as the original attention (text-only). `detach()` restores the original implementation.

Parameter layout (names in `MusicInjection.state_dict()`; MU-LLaMA names on the right, N = 32 layers, K = 20):

    prefix_query  (K, H)   <- prefix_query.weight (nn.Embedding(K * 1, H)); row i goes with gated layer i
    gates         (K, nH)  <- llama.layers.{N-K+i}.attention.gate (1, nH, 1, 1), i = 0..K-1
Gated layer i is decoder layer N-K+i. MU-LLaMA projects adapter values with the *base* wv (its LoRA
is not applied to the adapter): use kv_through_lora=False to reproduce that under peft LoRA.
"""

from __future__ import annotations

from collections.abc import Iterator
import weakref
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


_SLOT_ATTR = "_mu_llama_gate"  # set on each gated attention module: a _GateSlot
_PREFIX = "mu_llama_gated:"


@dataclass(frozen=True)
class _GateSlot:
    injection: weakref.ref  # -> MusicInjection (weak: the module must not keep the injection alive or register it)
    slot: int  # row of prefix_query / gates


def _gated_function(base: str) -> str:
    """Register (once) the registry entry that runs attention `base`, then the gated music branch. Returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    name = _PREFIX + base
    if name in ALL_ATTENTION_FUNCTIONS:
        return name
    if base not in ALL_MASK_ATTENTION_FUNCTIONS:
        valid = ", ".join(sorted(k for k in ALL_MASK_ATTENTION_FUNCTIONS if not k.startswith(_PREFIX)))
        raise ConfigError(f"gated injection cannot wrap attention implementation {base!r}; use one of {valid}")
    base_fn = ALL_ATTENTION_FUNCTIONS.get_interface(base, eager_attention_forward)

    def gated_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, **kwargs):
        # query: (B, nH, S, d) post-rotary; key/value: (B, nKV, S_past + S, d) with the cache already applied
        out, weights = base_fn(module, query, key, value, attention_mask, **kwargs)  # out: (B, S, nH, d)
        gate = getattr(module, _SLOT_ATTR, None)
        injection = None if gate is None else gate.injection()
        if injection is not None:
            extra = injection.adapter_attention(module, gate.slot, query)
            if extra is not None:
                out = out + extra.to(out.dtype)
        return out, weights

    AttentionInterface.register(name, gated_attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])  # masks exactly as the base builds them
    return name


def _check_attention(attn: nn.Module) -> None:
    for name in ("k_proj", "v_proj", "head_dim", "num_key_value_groups", "scaling"):
        if not hasattr(attn, name):
            raise ConfigError(f"{type(attn).__name__} lacks {name}: gated injection supports LLaMA-style attention")
    for name in ("q_norm", "k_norm"):  # adapter keys would need the same normalisation: not replicated
        if getattr(attn, name, None) is not None:
            raise ConfigError(f"{type(attn).__name__} uses {name}, which gated injection does not replicate")


class MusicInjection(nn.Module):
    """Owns prefix_query (K, H) and gates (K, nH); gates the attention of the last K layers of an LLM."""

    def __init__(self, config: InjectionConfig):
        super().__init__()
        self.config = config
        self.prefix_query = nn.Parameter(torch.randn(config.num_layers, config.llm_dim) * config.prefix_std)
        self.gates = nn.Parameter(torch.zeros(config.num_layers, config.num_heads))
        self._context: _MusicContext | None = None
        self._gated: list[nn.Module] = []  # the gated attention modules, slot order; a plain list: not registered
        # (transformers model whose implementation we switched, its implementation before); a tuple, so not a submodule
        self._host: tuple[nn.Module, str] | None = None
        self._embeddings: list[nn.Module] = []  # the LLM's input embeddings: their dtype is the activation dtype
        self.kv_builds = 0  # adapter K/V projections computed (one per gated layer per music context)
        self.calls = 0  # gated-branch calls with music attached (check_dispatch reads it)

    # --- attach / detach -------------------------------------------------------------------------
    def attach(self, llm: nn.Module) -> None:
        if self._gated:
            raise ConfigError("music injection is already attached; detach() first")
        layers = decoder_layers(llm)
        k = self.config.num_layers
        if k > len(layers):
            raise ConfigError(f"injection layers {k} > the LLM's {len(layers)} decoder layers")
        base = _unwrap(llm)
        hidden, heads = base.config.hidden_size, base.config.num_attention_heads
        if (hidden, heads) != (self.config.llm_dim, self.config.num_heads):
            raise ConfigError(f"injection built for hidden {self.config.llm_dim} / {self.config.num_heads} heads, "
                              f"LLM has {hidden} / {heads}")
        impl = base.config._attn_implementation
        if impl.startswith(_PREFIX):
            raise ConfigError("the LLM already carries a music injection")
        targets = [layer.self_attn for layer in layers[len(layers) - k:]]
        for attn in targets:
            _check_attention(attn)
        base.set_attn_implementation(_gated_function(impl))
        if base.config._attn_implementation != _PREFIX + impl:  # the model refused the switch (no registry dispatch)
            raise ConfigError(f"{type(base).__name__} does not dispatch attention through transformers' "
                              "AttentionInterface; gated injection needs it")
        for slot, attn in enumerate(targets):
            setattr(attn, _SLOT_ATTR, _GateSlot(weakref.ref(self), slot))
        self._gated, self._host = targets, (base, impl)
        self._embeddings = [base.get_input_embeddings()]

    def detach(self) -> None:
        """Restore the original attention implementation; the projections stay as they are (LoRA / merged)."""
        for attn in self._gated:
            delattr(attn, _SLOT_ATTR)
        if self._host is not None:
            model, impl = self._host
            model.set_attn_implementation(impl)
        self._gated, self._host, self._embeddings = [], None, []

    @property
    def attached(self) -> bool:
        return bool(self._gated)

    def gated_modules(self) -> list[nn.Module]:
        """The attention modules that carry a gate, slot order (decoder layers N-K .. N-1)."""
        return list(self._gated)

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
        if not self._gated:
            raise ConfigError("music injection is not attached to an LLM; call attach(llm) first")
        ctx = _MusicContext(music.tokens, music.mask)
        dtype = self._embeddings[0].weight.dtype
        for slot, attn in enumerate(self._gated):
            ctx.kv[slot] = self._project(attn, ctx.tokens, dtype)
        self._context = ctx

    def check_dispatch(self, calls_before: int) -> None:
        """Raise if no gated layer ran since `calls_before` (= self.calls then) although music was attached:
        the LLM no longer reaches our attention function, so the audio would be silently ignored."""
        if self.calls == calls_before:
            impl = None if self._host is None else self._host[0].config._attn_implementation
            raise RuntimeError(f"the music branch was never called (attention implementation {impl!r}): this "
                               "transformers version does not dispatch LLaMA attention through AttentionInterface "
                               "as mu-llama expects; install the locked versions (scripts/setup.sh)")

    def _project(self, attn: nn.Module, tokens: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Adapter K/V of one gated layer: (B, nKV, M, d) each, no rotary."""
        device = _device_of(attn.k_proj, tokens.device)  # layers may sit on different GPUs (device_map)
        slot = getattr(attn, _SLOT_ATTR).slot
        a = (tokens + self.prefix_query[slot].to(tokens.dtype)).to(device, dtype)  # (B, M, H)
        k_proj = attn.k_proj if self.config.kv_through_lora else _base_proj(attn.k_proj)
        v_proj = attn.v_proj if self.config.kv_through_lora else _base_proj(attn.v_proj)
        shape = (*a.shape[:2], -1, attn.head_dim)
        self.kv_builds += 1
        return k_proj(a).view(shape).transpose(1, 2), v_proj(a).view(shape).transpose(1, 2)

    def adapter_attention(self, attn: nn.Module, slot: int, q: Tensor) -> Tensor | None:
        """Gated adapter attention for post-rotary queries q (B, nH, S, d) -> (B, S, nH, d), or None."""
        ctx = self._context
        if ctx is None:
            return None
        self.calls += 1
        k, v = ctx.kv[slot]
        k, v, mask = k.to(q.device, q.dtype), v.to(q.device, q.dtype), ctx.mask.to(q.device)
        if q.shape[0] != k.shape[0]:  # generate expanded the batch (num_return_sequences / beams)
            if q.shape[0] % k.shape[0]:
                raise ValueError(f"batch of {q.shape[0]} queries does not match {k.shape[0]} music rows")
            r = q.shape[0] // k.shape[0]
            k, v, mask = k.repeat_interleave(r, 0), v.repeat_interleave(r, 0), mask.repeat_interleave(r, 0)
        groups = attn.num_key_value_groups
        if groups > 1:  # GQA: each KV head serves `groups` query heads
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = torch.matmul(q, k.transpose(2, 3)).float() * attn.scaling  # (B, nH, S, M)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1)
        probs = probs * mask.any(-1).to(probs.dtype)[:, None, None, None]  # rows without music add nothing
        out = torch.matmul(probs.to(v.dtype), v)  # (B, nH, S, d)
        gate = torch.tanh(self.gates[slot]).to(out.device, out.dtype)[None, :, None, None]
        return (gate * out).transpose(1, 2)
