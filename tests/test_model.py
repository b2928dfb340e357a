"""MuLlama end to end on tiny random parts (random:tiny MERT + random:tiny-llama): config, checkpoints, batching,
long audio, prompts, decoding options and the caption / ask CLIs. CPU, no downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from mu_llama.adapters import LoraOptions, MusicTokens, pool_frames

from mu_llama.decoding import DecodingOptions
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.model import MuLlama, MuLlamaConfig, load_model
from mu_llama.prompts import build_prompt, encode_prompt, mullama_prompt
from mu_llama.tasks import Conversation, ask, caption

SR = 24000


def tiny_config(**kw) -> MuLlamaConfig:
    return MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=2, **kw)


def randomize(model: MuLlama, seed: int = 0) -> MuLlama:
    """Non-trivial adapter / gates / LoRA / bias / norm values so every saved tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_state().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05, generator=g)
    return model


def waves(*seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in seconds]


@pytest.fixture(scope="module")
def lora_model():
    return randomize(MuLlama.build(tiny_config(lora=LoraOptions(rank=2, dropout=0.0))))


@pytest.fixture(scope="module")
def saved(lora_model, tmp_path_factory):
    return lora_model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def score(model, music, ids):
    with torch.no_grad():
        return model(ids, torch.ones_like(ids), music).logits


# --------------------------------------------------------------------------------------------- config
def test_config_json_round_trip_and_validation():
    c = tiny_config(lora=LoraOptions.mullama(), adapter_mode="time", window_seconds=4.0)
    assert MuLlamaConfig.from_json(c.to_json()) == c
    with pytest.raises(ConfigError, match="clip, time"):
        tiny_config(adapter_mode="frames")
    with pytest.raises(ConfigError, match="auto, chat, mullama-compat"):
        tiny_config(template="vicuna")
    with pytest.raises(ConfigError, match="unknown MuLlamaConfig fields: colour"):
        MuLlamaConfig.from_dict({"colour": 1})


def test_injection_layers_checked_against_llm():
    with pytest.raises(ConfigError, match="injection_layers 9"):
        MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=9))


# --------------------------------------------------------------------------------------------- checkpoints
def test_save_writes_only_trainable_keys(lora_model, saved):
    from safetensors.torch import load_file

    assert sorted(p.name for p in saved.iterdir()) == ["adapter.safetensors", "adapter_config.json",
                                                       "adapter_model.safetensors", "config.json"]
    adapter = load_file(str(saved / "adapter.safetensors"))
    assert {"injection.prefix_query", "injection.gates", "music_adapter.proj.weight"} <= set(adapter)
    llm_keys = [k for k in adapter if k.startswith("llm.")]
    assert llm_keys and all(k.endswith(("_proj.bias", "norm.weight")) for k in llm_keys)
    assert all(k.startswith(("music_adapter.", "injection.", "llm.")) for k in adapter)
    lora = load_file(str(saved / "adapter_model.safetensors"))
    assert lora and all(".lora_A." in k or ".lora_B." in k for k in lora)
    assert not any(k.endswith(("proj.weight", "embed_tokens.weight", "lm_head.weight")) and "lora" not in k
                   and not k.startswith("music_adapter.") for k in [*adapter, *lora])  # no copy of the base model
    body = json.loads((saved / "config.json").read_text())
    assert body["format"] == "mu-llama" and body["config"]["llm"] == "random:tiny-llama"


def test_save_load_identical_logits(lora_model, saved):
    loaded = MuLlama.from_pretrained(saved)
    w = waves(1.0, 0.6)
    ids = torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(1))
    m1, m2 = lora_model.encode_music(w), loaded.encode_music(w)
    assert torch.equal(m1.tokens, m2.tokens)
    assert torch.equal(score(lora_model, m1, ids), score(loaded, m2, ids))


def test_load_fails_loudly_on_key_mismatch(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    state = load_file(str(bad / "adapter.safetensors"))
    state["injection.extra"] = torch.zeros(1)
    del state["injection.gates"]
    save_file(state, str(bad / "adapter.safetensors"))
    with pytest.raises(CheckpointError, match="missing key.*injection.gates.*unexpected key.*injection.extra"):
        MuLlama.from_pretrained(bad)
    (bad / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a mu-llama v1 config"):
        MuLlama.from_pretrained(bad)


def test_merge_lora_same_logits(saved):
    model = MuLlama.from_pretrained(saved)
    music = model.encode_music(waves(0.8))
    ids = torch.randint(4, 260, (1, 6), generator=torch.Generator().manual_seed(2))
    before = score(model, music, ids)
    model.merge_lora()
    assert torch.allclose(score(model, music, ids), before, atol=1e-5)
    with pytest.raises(ConfigError, match="merged"):
        model.save_pretrained(saved.parent / "merged")


def test_int8_dynamic_generates(saved):
    from mu_llama.llm import LLMOptions

    model = MuLlama.from_pretrained(saved, LLMOptions(quantize="int8-dynamic"))
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert all(isinstance(model.llm.model.layers[i].self_attn.q_proj, DynamicLinear) for i in (0, -1))
    fp32 = MuLlama.from_pretrained(saved)
    music = fp32.encode_music(waves(0.8))
    ids = torch.randint(4, 260, (1, 6), generator=torch.Generator().manual_seed(2))
    # approximately the float model (int8 weights and activations)
    assert torch.allclose(score(model, music, ids), score(fp32, music, ids), atol=0.1)
    out = caption(model, waves(0.8)[0], DecodingOptions(max_new_tokens=4, min_new_tokens=4))
    assert isinstance(out, str)


def test_pretrain_gradients_reach_adapter_also_with_checkpointing():
    model = MuLlama.build(tiny_config())
    with torch.no_grad():
        model.injection.gates.fill_(0.5)  # at init (zero gates) only the gates get gradient, by design
    trainable = model.set_stage("pretrain")
    model.train()
    pooled = model.encode_audio(waves(0.6, 0.9))
    ids = torch.randint(4, 260, (2, 8), generator=torch.Generator().manual_seed(0))

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids, torch.ones_like(ids), model.music_tokens(pooled), labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    assert set(plain) == {f"music_adapter.{n}" for n, _ in model.music_adapter.named_parameters()} | {
        "injection.prefix_query", "injection.gates"}
    assert len(trainable) == len(plain)
    assert all(plain[n].abs().sum() > 0 for n in ("injection.gates", "injection.prefix_query",
                                                   "music_adapter.proj.weight"))
    model.llm.gradient_checkpointing_enable()  # transformers' default: non-reentrant
    checkpointed = grads()
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


# --------------------------------------------------------------------------------------------- batching / audio
def test_batch_equals_single_greedy(lora_model):
    w = waves(1.2, 0.5, 0.9, seed=3)
    opts = DecodingOptions(max_new_tokens=8, min_new_tokens=8)
    batched = caption(lora_model, w, opts, batch_size=3)
    singles = [caption(lora_model, x, opts) for x in w]
    assert batched == singles
    # and the logits themselves (left padding + position ids from the mask)
    music = lora_model.encode_music(w)
    prompts = [encode_prompt(lora_model.template, lora_model.tokenizer, q) for q in ("a?", "a longer question?", "b")]
    ids, mask = lora_model.pad_prompts(prompts)
    with torch.no_grad():
        both = lora_model(ids, mask, music).logits
    for row, p in enumerate(prompts):
        one_music = MusicTokens(music.tokens[row:row + 1], music.mask[row:row + 1])
        one = score(lora_model, one_music, torch.tensor([p]))
        assert torch.allclose(both[row, -len(p):], one[0], atol=1e-5)


def test_time_mode_batch_equals_single():
    model = randomize(MuLlama.build(tiny_config(adapter_mode="time", window_seconds=0.25)), seed=5)
    w = waves(1.1, 0.4, seed=6)
    music = model.encode_music(w)
    assert music.mask.sum(1).tolist() == [5, 2]  # one token per 0.25 s window; the short clip's row is padded
    ids = torch.randint(4, 260, (2, 7), generator=torch.Generator().manual_seed(3))
    both = score(model, music, ids)
    for row in range(2):
        alone = model.encode_music(w[row:row + 1])
        assert torch.allclose(score(model, alone, ids[row:row + 1])[0], both[row], atol=1e-5)


def test_mullama_preset_config():
    c = MuLlamaConfig.mullama(llm="/models/llama-2-7b-hf")
    assert c.injection_layers == 20 and c.lora.rank == 16 and c.template == "mullama-compat"
    assert not c.kv_through_lora and MuLlamaConfig.from_json(c.to_json()) == c


def test_generate_builds_adapter_kv_once(lora_model):
    music = lora_model.encode_music(waves(0.7))
    prompt = encode_prompt(lora_model.template, lora_model.tokenizer, "hi")
    before = lora_model.injection.kv_builds
    lora_model.generate(music, [prompt], DecodingOptions(max_new_tokens=6, min_new_tokens=6))
    assert lora_model.injection.kv_builds - before == 2  # K = 2 gated layers, once each


def test_long_audio_heard_in_full_clip_and_time():
    from mu_llama.encoders import WindowOptions, encode_windows

    clip = MuLlama.build(tiny_config(encoder_window_seconds=0.5, encoder_hop_seconds=0.4))
    w = waves(1.5, seed=4)[0]  # 3 encoder windows
    pooled = clip.encode_audio([w])
    stitched = encode_windows(clip.encoder, w, WindowOptions(window_s=0.5, hop_s=0.4)).hidden_states  # (L, F, D)
    assert pooled.counts.item() == clip.encoder.frames_for(len(w)) == stitched.shape[1]
    assert torch.allclose(pooled.sums[0, 0], stitched.sum(1), atol=1e-3)

    timed = MuLlama.build(tiny_config(encoder_window_seconds=0.5, encoder_hop_seconds=0.4, adapter_mode="time",
                                      window_seconds=0.2, max_music_tokens=5))
    p = timed.encode_audio([w])
    ref = pool_frames(stitched[:, None], torch.ones(1, stitched.shape[1], dtype=torch.bool), 15, 75.0)
    assert p.num_windows == 8 and torch.allclose(p.sums, ref.sums, atol=1e-3)
    tokens = timed.music_tokens(p)  # 8 windows > max 5: merged pairwise, nothing dropped
    assert tokens.tokens.shape[1] == 4 and tokens.mask.all()
    mixed = timed.encode_audio([w, waves(0.3)[0]])  # a short clip batched with a long one
    assert mixed.counts[1].gt(0).sum() == 2 and torch.equal(mixed.counts[0], p.counts[0])


def test_audio_inputs_paths_arrays_and_errors(lora_model, tmp_path):
    from mu_llama.errors import AudioError

    path = tmp_path / "a.wav"
    w = waves(0.8)[0]
    sf.write(path, w, SR)
    opts = DecodingOptions(max_new_tokens=5, min_new_tokens=5)
    from_file = caption(lora_model, str(path), opts)
    assert from_file == caption(lora_model, sf.read(path, dtype="float32")[0], opts)
    assert isinstance(caption(lora_model, (w, SR), opts), str)
    with pytest.raises(AudioError, match="zero length"):
        caption(lora_model, np.zeros(100, dtype=np.float32), opts)
    with pytest.raises(ConfigError, match="2 audio inputs but 3 questions"):
        ask(lora_model, [w, w], ["a", "b", "c"], options=opts)


# --------------------------------------------------------------------------------------------- prompts / decoding
def test_mullama_compat_prompt_exact():
    expected = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\nDescribe the Audio\n\n### Input:\n<built-in function input>\n\n### Response:")
    assert mullama_prompt("Describe the Audio") == expected
    two = mullama_prompt("And the tempo?", [("Describe the Audio", "A piano piece.")])
    assert two.startswith(expected + "\nA piano piece.\n\n### Instruction:\nAnd the tempo?")
    from mu_llama.llm import byte_tokenizer

    tok = byte_tokenizer()
    ids = encode_prompt("mullama-compat", tok, "Describe the Audio")
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == expected and ids[-1] != tok.eos_token_id
    chat = build_prompt("chat", tok, "q2", [("q1", "a1")])
    assert chat.index("q1") < chat.index("a1") < chat.index("q2") and chat.endswith("<s>assistant\n")


def test_decoding_options_validate_and_seed(lora_model):
    with pytest.raises(ConfigError, match=r"top_p 1.5; valid range \(0, 1\]"):
        DecodingOptions(top_p=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        DecodingOptions(temperature=-1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        DecodingOptions(max_new_tokens=0)
    w = waves(0.6)
    sample = DecodingOptions(max_new_tokens=8, min_new_tokens=8, temperature=1.0, seed=7)
    state = torch.random.get_rng_state()
    a, b = caption(lora_model, w, sample), caption(lora_model, w, sample)
    assert a == b and torch.equal(torch.random.get_rng_state(), state)  # seeded per call, global RNG untouched
    greedy = DecodingOptions(max_new_tokens=8, min_new_tokens=8)
    assert caption(lora_model, w, greedy) == caption(lora_model, w, greedy)


def test_conversation_keeps_history(lora_model):
    w = waves(0.6)[0]
    chat = Conversation(lora_model, w, DecodingOptions(max_new_tokens=4, min_new_tokens=4))
    first = chat.ask("What instrument?")
    chat.ask("And the tempo?")
    assert chat.history[0] == ("What instrument?", first) and len(chat.history) == 2
    again = ask(lora_model, w, "And the tempo?", history=[("What instrument?", first)],
                options=DecodingOptions(max_new_tokens=4, min_new_tokens=4))
    assert again == chat.history[1][1]


def test_registry_names():
    with pytest.raises(ConfigError, match="untrained:smollm2"):
        load_model("no-such-model")


def test_full_size_entry_names_hub_repos_and_fails_in_one_line_offline(monkeypatch):
    from mu_llama.model import MODELS

    cfg = MODELS["untrained:mert330m-llama2-7b"].config
    assert (cfg.encoder, cfg.llm, cfg.injection_layers) == ("m-a-p/MERT-v1-330M", "meta-llama/Llama-2-7b-hf", 20)
    assert cfg.lora is not None and "q_proj" in cfg.lora.targets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here: a clear error naming the repo, not a traceback
    with pytest.raises((ConfigError, CheckpointError)) as err:
        load_model("untrained:mert330m-llama2-7b")
    assert "\n" not in str(err.value) and ("Llama-2-7b" in str(err.value) or "MERT-v1-330M" in str(err.value))


# --------------------------------------------------------------------------------------------- CLI
def test_caption_cli_records_bad_files(saved, tmp_path, capsys):
    from mu_llama.cli.main import main

    audio = tmp_path / "clips"
    audio.mkdir()
    for i, w in enumerate(waves(0.7, 0.4, 0.9)):
        sf.write(audio / f"c{i}.wav", w, SR)
    (audio / "broken.wav").write_text("not audio")
    out = tmp_path / "out.jsonl"
    code = main(["caption", str(audio), "--model", str(saved), "--batch-size", "2", "--out", str(out),
                 "--max-new-tokens", "4"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 1 and len(rows) == 4
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.wav") and bad[0]["caption"] is None
    assert all(isinstance(r["caption"], str) for r in rows if not r["error"])
    assert "1 failed" in capsys.readouterr().err


def test_ask_cli_once_and_interactive(saved, tmp_path, capsys, monkeypatch):
    import io

    from mu_llama.cli.main import main

    path = tmp_path / "a.wav"
    sf.write(path, waves(0.6)[0], SR)
    assert main(["ask", str(path), "What is this?", "--model", str(saved), "--max-new-tokens", "3"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("first?\n\n/reset\nsecond?\n/quit\n"))
    assert main(["ask", str(path), "--interactive", "--model", str(saved), "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.count("mu-llama> ") == 2 and "conversation reset" in out.err
    assert main(["ask", str(path), "--model", str(saved)]) == 2  # no question, not interactive


def test_unknown_hub_id_fails_in_one_line_offline(monkeypatch):
    from mu_llama.errors import ConfigError
    from mu_llama.model import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="someorg/somemodel.*hub could not provide it") as e:
        load_model("someorg/somemodel")
    assert "\n" not in str(e.value)
