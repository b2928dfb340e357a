"""Music adapter, gated injection and LoRA helpers on plain tensors and a tiny random LLaMA (CPU, no downloads)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
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
    canonical_name,
    finetune_names,
    finetune_state,
    mark_trainable,
    merge_lora,
    pool_frames,
)

from mu_llama.errors import ConfigError
from mu_llama.llm import build_random_llm

H, HEADS, KV_HEADS, LAYERS = 64, 4, 2, 4
SLOT = 1  # the last decoder layer's gate row when the last 2 layers are gated


def tiny_llm(attn: str = "sdpa"):
    llm, tok = build_random_llm("tiny-llama", seed=0)
    llm.config._attn_implementation = attn
    return llm, tok


def injected(llm, k=2, **kw):
    torch.manual_seed(1)
    inj = MusicInjection(InjectionConfig(num_layers=k, llm_dim=H, num_heads=HEADS, **kw))
    inj.attach(llm)
    return inj


def music(b=2, m=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return MusicTokens(torch.randn(b, m, H, generator=g), torch.ones(b, m, dtype=torch.bool))


def ids(b=2, s=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 260, (b, s), generator=g)


def logits(llm, inj=None, m=None, input_ids=None, mask=None):
    input_ids = ids() if input_ids is None else input_ids
    pos = None if mask is None else (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions from the mask
    with torch.no_grad():
        if inj is None:
            return llm(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits
        with inj.music(m):
            return llm(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits


# --------------------------------------------------------------------------------------------- adapter config
def test_adapter_config_validates_and_names_choices():
    with pytest.raises(ConfigError, match="clip, time"):
        MusicAdapterConfig(enc_layers=3, enc_dim=8, llm_dim=16, mode="frames")
    with pytest.raises(ConfigError, match="enc_layers"):
        MusicAdapterConfig(enc_layers=0, enc_dim=8, llm_dim=16)
    c = MusicAdapterConfig(enc_layers=25, enc_dim=1024, llm_dim=4096)
    assert c.bridge_hidden == 16384 and c.window_frames is None
    assert MusicAdapterConfig.from_dict(c.to_dict()) == c
    assert MusicAdapterConfig(3, 8, 16, mode="time", window_seconds=2.0, frame_rate=75.0).window_frames == 150


def test_mullama_sized_adapter_parameter_count():
    """MU-LLaMA's bridge is ~604M parameters (anchors): count ours on the meta device (no memory)."""
    with torch.device("meta"):
        a = MusicAdapter(MusicAdapterConfig(enc_layers=25, enc_dim=1024, llm_dim=4096))
    n = sum(p.numel() for p in a.parameters())
    assert 600e6 < n < 610e6
    assert tuple(a.layer_mix.weight.shape) == (1, 25, 1) and tuple(a.blocks[2].w2.weight.shape) == (4096, 16384)


# --------------------------------------------------------------------------------------------- pooling
def test_clip_pooling_ignores_padded_frames():
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(3, 2, 10, 8, generator=g)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    garbage = hs.clone()
    garbage[:, 1, 6:] = 1e3  # padded frames hold anything: they must not count
    p1, p2 = pool_frames(hs, mask), pool_frames(garbage, mask)
    assert torch.allclose(p1.means(), p2.means())
    ref = hs[:, 1, :6].mean(1)  # (L, D)
    assert torch.allclose(p1.means()[1, 0], ref, atol=1e-6) and p1.counts[1, 0] == 6


def test_time_pooling_windows_and_coarsen():
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(2, 1, 10, 4, generator=g)
    mask = torch.ones(1, 10, dtype=torch.bool)
    p = pool_frames(hs, mask, window_frames=3, frame_rate=1.5)  # windows [0,3) [3,6) [6,9) [9,10)
    assert p.sums.shape == (1, 4, 2, 4) and p.counts.tolist() == [[3, 3, 3, 1]] and p.seconds_per_window == 2.0
    assert torch.allclose(p.means()[0, 1], hs[:, 0, 3:6].mean(1), atol=1e-6)
    c = p.coarsen(2)  # merge pairs: frames [0,6) and [6,10): frame-weighted means
    assert c.counts.tolist() == [[6, 4]] and c.seconds_per_window == 4.0
    assert torch.allclose(c.means()[0, 1], hs[:, 0, 6:].mean(1), atol=1e-6)
    # chunks aligned to windows concatenate exactly
    parts = [pool_frames(hs[:, :, :6], mask[:, :6], 3, 1.5), pool_frames(hs[:, :, 6:], mask[:, 6:], 3, 1.5)]
    assert torch.allclose(PooledMusic.cat(parts).sums, p.sums, atol=1e-6)
    assert torch.allclose(PooledMusic.total(parts).means(), pool_frames(hs, mask).means(), atol=1e-6)


# --------------------------------------------------------------------------------------------- adapter forward
def test_clip_adapter_matches_mullama_formula():
    torch.manual_seed(0)
    cfg = MusicAdapterConfig(enc_layers=3, enc_dim=8, llm_dim=16, bridge_blocks=2)
    a = MusicAdapter(cfg)
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.3)
    hs, mask = torch.randn(3, 2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    out = a(a.pool(hs, mask))
    assert out.tokens.shape == (2, 1, 16) and out.mask.all()
    # reference: mean over time per layer, conv1d(L->1,k=1) mix, L2 normalise, proj, residual RMSNorm-SwiGLU blocks
    means = hs.mean(2).transpose(0, 1)  # (B, L, D)
    x = (a.layer_mix.weight[0, :, 0, None] * means).sum(1) + a.layer_mix.bias
    x = a.proj(F.normalize(x, dim=-1))
    for blk in a.blocks:
        n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * blk.norm.weight
        x = x + blk.w2(F.silu(blk.w1(n)) * blk.w3(n))
    assert torch.allclose(out.tokens[:, 0], x, atol=1e-5)


def test_time_adapter_tokens_mask_and_position():
    torch.manual_seed(0)
    cfg = MusicAdapterConfig(enc_layers=3, enc_dim=8, llm_dim=16, mode="time", window_seconds=2.0, frame_rate=2.0,
                             max_music_tokens=8)
    a = MusicAdapter(cfg)
    hs = torch.randn(3, 1, 4, 8).repeat(1, 1, 3, 1)  # three identical 4-frame windows
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 10:] = False
    out = a(a.pool(hs, mask))
    assert out.tokens.shape == (1, 3, 16) and out.mask.tolist() == [[True, True, True]]
    # zero-init position: identical windows give identical tokens; a learned position signal tells them apart
    assert torch.allclose(out.tokens[0, 0], out.tokens[0, 1], atol=1e-6)
    torch.nn.init.normal_(a.position.weight)
    out2 = a(a.pool(hs, mask))
    assert not torch.allclose(out2.tokens[0, 0], out2.tokens[0, 1], atol=1e-3)
    # more windows than max_music_tokens: merged so the whole audio is heard
    long = torch.randn(3, 1, 4 * 20, 8)
    out3 = a(a.pool(long, torch.ones(1, 80, dtype=torch.bool)))
    assert out3.tokens.shape[1] <= 8 and out3.mask.all()


# --------------------------------------------------------------------------------------------- injection
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_zero_gates_give_identical_logits(attn):
    llm, _ = tiny_llm(attn)
    ref = logits(llm)
    inj = injected(llm)
    assert inj.gated_modules() == [layer.self_attn for layer in llm.model.layers[-2:]]
    assert llm.config._attn_implementation == f"mu_llama_gated:{attn}"
    assert torch.equal(logits(llm, inj, music()), ref)
    assert torch.equal(logits(llm, inj, None), ref)  # outside a music context: text-only


def test_nonzero_gate_changes_logits_and_detach_restores():
    llm, _ = tiny_llm()
    ref = logits(llm)
    originals = [layer.self_attn for layer in llm.model.layers]
    inj = injected(llm)
    with torch.no_grad():
        inj.gates.fill_(0.5)
    assert (logits(llm, inj, music()) - ref).abs().max() > 1e-3
    inj.detach()
    assert [layer.self_attn for layer in llm.model.layers] == originals
    assert llm.config._attn_implementation == "sdpa" and not inj.attached
    assert torch.equal(logits(llm), ref)


def test_padding_music_tokens_have_no_effect():
    llm, _ = tiny_llm()
    inj = injected(llm)
    with torch.no_grad():
        inj.gates.normal_()
    m = music(m=3)
    padded = MusicTokens(torch.cat([m.tokens, 100 * torch.randn(2, 2, H)], 1),
                         torch.cat([m.mask, torch.zeros(2, 2, dtype=torch.bool)], 1))
    assert torch.allclose(logits(llm, inj, m), logits(llm, inj, padded), atol=1e-6)
    # a row with no music at all behaves as the plain LLM
    none = MusicTokens(m.tokens, torch.tensor([[True] * 3, [False] * 3]))
    plain = logits(llm)
    assert torch.allclose(logits(llm, inj, none)[1], plain[1], atol=1e-6)


def test_adapter_attention_matches_reference_gqa():
    llm, _ = tiny_llm("eager")
    inj = injected(llm)
    with torch.no_grad():
        inj.gates.normal_()
    layer = llm.model.layers[-1].self_attn
    m = music(m=3)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, HEADS, 4, H // HEADS, generator=g)
    with inj.music(m), torch.no_grad():
        out = inj.adapter_attention(layer, SLOT, q)  # (B, S, nH, d)
    d, groups = H // HEADS, HEADS // KV_HEADS
    a = m.tokens + inj.prefix_query[SLOT]
    k = layer.k_proj(a).view(2, 3, KV_HEADS, d)
    v = layer.v_proj(a).view(2, 3, KV_HEADS, d)
    for h in range(HEADS):
        kv = h // groups  # query head h reads KV head h // groups (transformers' repeat_kv)
        w = torch.softmax(q[:, h] @ k[:, :, kv].transpose(1, 2) / math.sqrt(d), -1)
        ref = torch.tanh(inj.gates[SLOT, h]) * (w @ v[:, :, kv])
        assert torch.allclose(out[:, :, h], ref, atol=1e-5)


def test_single_music_token_is_mullama_gate_times_value():
    llm, _ = tiny_llm()
    inj = injected(llm)
    with torch.no_grad():
        inj.gates.normal_()
    layer = llm.model.layers[-1].self_attn
    m = music(m=1)
    q = torch.randn(2, HEADS, 5, H // HEADS)
    with inj.music(m), torch.no_grad():
        out = inj.adapter_attention(layer, SLOT, q)
        v = layer.v_proj(m.tokens + inj.prefix_query[SLOT]).view(2, 1, KV_HEADS, -1)
    v = v.repeat_interleave(HEADS // KV_HEADS, 2)  # (B, 1, nH, d)
    ref = torch.tanh(inj.gates[SLOT])[None, None, :, None] * v
    assert torch.allclose(out, ref.expand_as(out), atol=1e-6)


def test_adapter_kv_built_once_per_generate_and_cache_consistent():
    llm, tok = tiny_llm()
    inj = injected(llm, k=3)
    with torch.no_grad():
        inj.gates.fill_(1.0)
    x = ids(b=2, s=5)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad(), inj.music(music()):
        cached = llm.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw)
    assert inj.kv_builds == 3  # once per gated layer, not per decode step
    with torch.no_grad(), inj.music(music()):
        uncached = llm.generate(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, **kw)
    assert inj.kv_builds == 6
    assert torch.equal(cached, uncached)


def test_left_padded_batch_logits_equal_single():
    llm, tok = tiny_llm()
    inj = injected(llm)
    with torch.no_grad():
        inj.gates.normal_()
    m = music(b=2)
    long, short = ids(1, 8)[0], ids(1, 5, seed=9)[0]
    batch = torch.stack([long, torch.cat([torch.full((3,), tok.pad_token_id), short])])
    mask = torch.tensor([[1] * 8, [0] * 3 + [1] * 5])
    both = logits(llm, inj, m, batch, mask)
    one = logits(llm, inj, MusicTokens(m.tokens[1:], m.mask[1:]), short[None], torch.ones(1, 5, dtype=torch.long))
    assert torch.allclose(both[1, 3:], one[0], atol=1e-5)


# --------------------------------------------------------------------------------------------- LoRA / bias / norm
def test_lora_options_validate():
    with pytest.raises(ConfigError, match="q_proj"):
        LoraOptions(targets=("wq",))
    with pytest.raises(ConfigError, match="rank"):
        LoraOptions(rank=0)
    o = LoraOptions.mullama()
    assert o.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert LoraOptions.from_dict(o.to_dict()) == o


def test_bias_norm_lora_merge_same_logits():
    llm, _ = tiny_llm()
    inj = injected(llm)
    ref = logits(llm, inj, music())
    opts = LoraOptions(rank=4, alpha=8, dropout=0.0, mlp=True)
    names = add_bias(llm, opts.bias_targets)
    assert names[0] == "model.layers.0.self_attn.q_proj.bias" and len(names) == 4 * LAYERS
    assert torch.equal(logits(llm, inj, music()), ref)  # zero biases change nothing
    peft_llm = apply_lora(llm, opts)
    assert torch.equal(logits(peft_llm, inj, music()), ref)  # LoRA B = 0 at init
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        inj.gates.normal_(generator=g)
        for n, p in peft_llm.named_parameters():
            if "lora_B" in n or n.endswith(".bias"):
                p.normal_(std=0.05, generator=g)
    before = logits(peft_llm, inj, music())
    assert (before - ref).abs().max() > 1e-3
    state = finetune_state(peft_llm, opts)
    assert set(state) == set(finetune_names(peft_llm, opts))
    assert all(".base_layer." not in n and not n.startswith("base_model") for n in state)
    merged = merge_lora(peft_llm)
    assert merge_lora(merged) is merged  # idempotent
    assert inj.gated_modules()[-1] is merged.model.layers[-1].self_attn
    assert torch.allclose(logits(merged, inj, music()), before, atol=1e-5)
    inj.detach()  # the restored attention keeps the merged projections
    assert not hasattr(merged.model.layers[-1].self_attn.q_proj, "lora_A")


def test_kv_through_lora_false_uses_base_projections():
    llm, _ = tiny_llm()
    inj = injected(llm, kv_through_lora=False)
    peft_llm = apply_lora(llm, LoraOptions(rank=4, dropout=0.0, bias_targets=()))
    with torch.no_grad():
        for n, p in peft_llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    layer = llm.model.layers[-1].self_attn
    m = music(m=1)
    with inj.music(m), torch.no_grad():
        k, v = inj._context.kv[SLOT]
        base_v = layer.v_proj.base_layer(m.tokens + inj.prefix_query[SLOT]).view(2, 1, KV_HEADS, -1)
    assert torch.allclose(v, base_v.transpose(1, 2), atol=1e-6)


def test_stages_select_parameters():
    llm, _ = tiny_llm()
    inj = injected(llm)
    adapter = MusicAdapter(MusicAdapterConfig(enc_layers=3, enc_dim=8, llm_dim=H, bridge_blocks=1))
    opts = LoraOptions(rank=2)
    add_bias(llm, opts.bias_targets)
    peft_llm = apply_lora(llm, opts)
    names = mark_trainable("pretrain", llm=peft_llm, adapter_modules=[adapter, inj], options=opts)
    assert "prefix_query" in names and "gates" in names
    assert not any(p.requires_grad for p in peft_llm.parameters())
    assert inj.gates.requires_grad and all(p.requires_grad for p in adapter.parameters())
    names = mark_trainable("finetune", llm=peft_llm, adapter_modules=[adapter, inj], options=opts)
    assert not inj.gates.requires_grad and not any(p.requires_grad for p in adapter.parameters())
    trainable = {canonical_name(n) for n, p in peft_llm.get_base_model().named_parameters() if p.requires_grad}
    assert trainable == set(names)
    assert any(".lora_A." in n for n in trainable) and "model.norm.weight" in trainable
    assert "model.layers.0.self_attn.k_proj.bias" in trainable
    assert not any(n.endswith("q_proj.weight") or "embed_tokens" in n for n in trainable)
    with pytest.raises(ConfigError, match="pretrain, finetune, frozen"):
        mark_trainable("warmup", llm=peft_llm, adapter_modules=[], options=opts)


# --------------------------------------------------------------------------------------------- quantized LLMs
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_bnb_quantized_llm_injection_generates(quantize):
    pytest.importorskip("bitsandbytes")
    from mu_llama.llm import LLMOptions, load_llm

    llm, tok = load_llm("random:tiny-llama", LLMOptions(quantize=quantize))
    kind = type(llm.model.layers[-1].self_attn.k_proj).__name__
    assert kind == ("Linear4bit" if quantize == "4bit" else "Linear8bitLt")
    x = ids(b=2, s=5)
    ref = logits(llm, input_ids=x)
    inj = injected(llm)
    add_bias(llm, ("q_proj", "v_proj"))
    assert torch.equal(logits(llm, inj, music(), input_ids=x), ref)  # zero gates, zero biases
    inj.kv_builds = 0
    with torch.no_grad():
        inj.gates.fill_(1.0)
        out = _gen(llm, inj, x, tok)
    assert out.shape == (2, 9) and inj.kv_builds == 2


def _gen(llm, inj, x, tok):
    with inj.music(music()):
        return llm.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=4, min_new_tokens=4,
                            do_sample=False, pad_token_id=tok.pad_token_id)


def test_music_branch_that_is_never_called_fails_loudly():
    """If the LLM stops dispatching attention through the registry, the audio would be silently ignored: an error."""
    llm, tok = tiny_llm()
    inj = injected(llm)
    calls = inj.calls
    with inj.music(music()), torch.no_grad():
        llm(input_ids=ids())
    inj.check_dispatch(calls)  # reached: 2 gated layers ran
    llm.config._attn_implementation_internal = "sdpa"  # what an upstream that bypasses the registry looks like
    calls = inj.calls
    with inj.music(music()), torch.no_grad():
        llm(input_ids=ids())
    with pytest.raises(RuntimeError, match="music branch was never called"):
        inj.check_dispatch(calls)


def test_attach_refuses_a_second_injection_and_unknown_implementations():
    llm, _ = tiny_llm()
    injected(llm)
    with pytest.raises(ConfigError, match="already"):
        injected(llm)
    llm2, _ = tiny_llm()
    llm2.config._attn_implementation_internal = "no-such-attention"
    with pytest.raises(ConfigError, match="sdpa"):
        injected(llm2)
