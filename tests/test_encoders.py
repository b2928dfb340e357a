"""MERT encoder: config mapping, checkpoint loading, parity with HubertModel, batching, windowing, embed CLI.

Everything runs on CPU with tiny random models built in code; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from mu_llama.encoders import (
    BUILTIN_CONFIGS, AudioEncoder, EncoderOptions, EncoderOutput, MertConfig, WindowOptions, WindowPlan,
    build_random, builtin_config, encode_stream, encode_windows, load_encoder, load_mert, normalize_clips, save_mert,
)
from mu_llama.errors import CheckpointError, ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "mert_configs"
SR = 24000

# Tiny MERT-shaped variants: the real conv geometry (stride 320, receptive field 400), toy widths.
VARIANTS = {
    "95m-shape": {"feat_extract_norm": "group", "do_stable_layer_norm": False},  # post-LN, group-norm front-end
    "330m-shape": {"feat_extract_norm": "group", "do_stable_layer_norm": True},  # pre-LN, group-norm front-end (real 330M)
    "layer-norm": {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True},  # HuBERT-large style
}


def tiny(variant: str = "95m-shape", seed: int = 0, attn: str = "sdpa", layers: int = 3):
    cfg = MertConfig.from_dict({**BUILTIN_CONFIGS["tiny"], **VARIANTS[variant], "num_hidden_layers": layers})
    return build_random(cfg, seed=seed, options=EncoderOptions(attn_implementation=attn))


def noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    return 0.3 * torch.sin(2 * np.pi * 220 * t) + 0.1 * torch.randn(n, generator=g) + 0.05


def reference_states(encoder, wave: torch.Tensor) -> list[torch.Tensor]:
    """Plain HubertModel forward on the normalised clip, with MERT/transformers-4.x hidden-state semantics."""
    x = normalize_clips(wave[None], torch.tensor([len(wave)]))
    out = encoder.model(x, output_hidden_states=True)
    states = list(out.hidden_states)
    assert len(states) == encoder.num_layers  # the embedding output + one per layer
    if encoder.config.do_stable_layer_norm:
        states[-1] = out.last_hidden_state  # 4.x / MERT remote code: the last state is after the final layer norm
    else:
        assert torch.equal(states[-1], out.last_hidden_state)  # post-LN: the last layer's output is the final state
    return [s[0] for s in states]


# ------------------------------------------------------------------------------------------------ configs


def test_frame_count_formula():
    enc = tiny()
    for n in [*range(0, 2000, 7), 24000, 719_999, 720_000, 1_234_567]:
        assert enc.frames_for(n) == (0 if n < 400 else (n - 400) // 320 + 1)
    for n in (400, 719, 720, 1039, 1040, 24000):
        assert enc(noise(n)[None]).hidden_states.shape[2] == (n - 400) // 320 + 1
        assert enc.model._get_feat_extract_output_lengths(n) == (n - 400) // 320 + 1
    assert enc.frame_rate == 75.0 and enc.receptive_field == 400 and enc.frame_stride == 320


@pytest.mark.parametrize("name, fixture, layers, width, stable, params_m",
                         [("mert-95m", "mert-v1-95m", 12, 768, False, (94, 96)),
                          ("mert-330m", "mert-v1-330m", 24, 1024, True, (314, 317))])
def test_real_configs_map_to_hubert(tmp_path, name, fixture, layers, width, stable, params_m):
    d = tmp_path / fixture
    d.mkdir()
    shutil.copy(FIXTURES / f"{fixture}.config.json", d / "config.json")
    shutil.copy(FIXTURES / "mert-v1.preprocessor_config.json", d / "preprocessor_config.json")
    cfg = MertConfig.from_file(d / "config.json")
    assert cfg == builtin_config(name)  # the built-in names describe exactly the released architectures
    assert cfg.do_normalize and cfg.sample_rate == 24000
    hub = cfg.to_hubert()
    assert (hub.num_hidden_layers, hub.hidden_size, hub.do_stable_layer_norm) == (layers, width, stable)
    assert hub.feat_extract_norm == "group" and hub.conv_bias is False and hub.feat_proj_layer_norm
    assert hub.intermediate_size == 4 * width and hub.num_conv_pos_embeddings == 128
    assert hub.mask_time_prob == 0 and hub.layerdrop == 0 and hub.hidden_dropout == 0  # inference form
    with torch.device("meta"):  # shapes only: no full-size weights are allocated
        n = sum(p.numel() for p in HubertModel(hub).parameters())
    assert params_m[0] * 1e6 < n < params_m[1] * 1e6


@pytest.mark.parametrize("field, value, needle", [
    ("feature_extractor_cqt", True, "feature_extractor_cqt"),
    ("deepnorm", True, "deepnorm"),
    ("model_type", "wav2vec2", "model_type"),
    ("feat_extract_norm", "batch", "feat_extract_norm"),
    ("some_new_switch", 1, "some_new_switch"),
    ("conv_stride", [5, 2], "same non-zero length"),
    ("num_attention_heads", 5, "divisible"),
])
def test_config_refusals(field, value, needle):
    raw = json.loads((FIXTURES / "mert-v1-95m.config.json").read_text())
    raw[field] = value
    with pytest.raises(ConfigError, match=needle):
        MertConfig.from_dict(raw, "config.json")


def test_config_missing_field_and_malformed_json(tmp_path):
    raw = json.loads((FIXTURES / "mert-v1-95m.config.json").read_text())
    del raw["hidden_size"]
    with pytest.raises(ConfigError, match="hidden_size"):
        MertConfig.from_dict(raw)
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "mert_model",')
    with pytest.raises(ConfigError, match="malformed JSON"):
        MertConfig.from_file(bad)
    with pytest.raises(ConfigError, match="malformed JSON"):
        load_mert(tmp_path)


def test_attention_relax_without_deepnorm_is_accepted():
    raw = json.loads((FIXTURES / "mert-v1-330m.config.json").read_text())
    assert raw["attention_relax"] == 32.0 and raw["deepnorm"] is False
    MertConfig.from_dict(raw)  # unused by the stock Hubert encoders MERTModel builds without deepnorm


# What transformers 4.x's PretrainedConfig.to_dict() wrote into every config.json (MERT re-saved with 4.x carries
# them next to its own fields); values as 4.x wrote them by default.
TRANSFORMERS_4X_GENERIC = {
    "return_dict": True, "output_hidden_states": False, "output_attentions": False, "torchscript": False,
    "torch_dtype": "float32", "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {},
    "tie_word_embeddings": True, "chunk_size_feed_forward": 0, "is_encoder_decoder": False, "is_decoder": False,
    "cross_attention_hidden_size": None, "add_cross_attention": False, "tie_encoder_decoder": False,
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0,
    "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "architectures": ["MERTModel"], "finetuning_task": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "tokenizer_class": None, "prefix": None, "bos_token_id": 1,
    "pad_token_id": 0, "eos_token_id": 2, "sep_token_id": None, "decoder_start_token_id": None,
    "task_specific_params": None, "problem_type": None, "_name_or_path": "m-a-p/MERT-v1-95M",
    "transformers_version": "4.31.0",
}


def test_transformers_generic_config_keys_are_ignored():
    """MERT re-saved with transformers 4.x (generic + generation keys) or 5.x reads as the released architecture."""
    from transformers import GenerationConfig, PretrainedConfig

    from mu_llama.encoders.mert_config import ARCH_FIELDS, generic_config_fields

    raw = json.loads((FIXTURES / "mert-v1-95m.config.json").read_text())
    resaved_4x = {**raw, **TRANSFORMERS_4X_GENERIC}
    assert MertConfig.from_dict(resaved_4x) == builtin_config("mert-95m")
    # whatever the installed transformers writes as generic keys is ignored as well (derived, not typed)
    current = {**PretrainedConfig().to_dict(), **GenerationConfig().to_dict()}
    current = {k: v for k, v in current.items() if k not in ARCH_FIELDS}
    assert MertConfig.from_dict({**raw, **current, "model_type": "mert_model"}) == builtin_config("mert-95m")
    fields = generic_config_fields()
    assert {"num_beams", "bad_words_ids", "output_scores", "torchscript", "dtype"} <= fields
    assert not fields & {*ARCH_FIELDS, "feature_extractor_cqt", "deepnorm", "pruned_heads"}


@pytest.mark.parametrize("field, value, needle", [
    ("feature_extractor_cqt", True, "feature_extractor_cqt=true is not supported"),
    ("deepnorm", True, "deepnorm=true is not supported"),
    ("pruned_heads", {"0": [1, 2]}, "pruned_heads"),
    ("num_codebooks", 8, r"unknown field\(s\) num_codebooks"),
    ("conv_dim", [512] * 6, "num_feat_extract_layers 7 != len"),
])
def test_generic_keys_do_not_hide_model_fields(field, value, needle):
    raw = {**json.loads((FIXTURES / "mert-v1-95m.config.json").read_text()), **TRANSFORMERS_4X_GENERIC, field: value}
    with pytest.raises(ConfigError, match=needle):
        MertConfig.from_dict(raw, "config.json")


def _hf_native_dir(path: Path, sampling_rate: int | None = SR, **config_overrides) -> tuple[Path, object]:
    """MERT saved by transformers itself: HubertModel.save_pretrained (model_type "hubert", no sample_rate) plus a
    Wav2Vec2FeatureExtractor preprocessor_config.json."""
    enc = tiny(seed=8)
    enc.model.save_pretrained(path)
    if sampling_rate is not None:
        Wav2Vec2FeatureExtractor(sampling_rate=sampling_rate).save_pretrained(path)
    if config_overrides:
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, **config_overrides}))
    return path, enc


def test_hf_native_hubert_directory_takes_the_preprocessor_sampling_rate(tmp_path):
    path, enc = _hf_native_dir(tmp_path / "mert")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "hubert" and "sample_rate" not in cfg
    loaded = load_mert(path)
    assert loaded.sample_rate == 24000 and loaded.config == enc.config
    wave = noise(7000)
    torch.testing.assert_close(loaded(wave[None]).hidden_states, enc(wave[None]).hidden_states, atol=0, rtol=0)
    # a HuBERT that records no rate anywhere is HuBERT's 16 kHz
    bare, _ = _hf_native_dir(tmp_path / "bare", sampling_rate=None)
    assert load_mert(bare).sample_rate == 16000


@pytest.mark.parametrize("sampling_rate, overrides, needle", [
    (24000, {"sample_rate": 16000}, "sampling_rate 24000 disagrees with config.json sample_rate 16000"),
    ("24k", {}, "sampling_rate must be a positive integer"),
    (0, {}, "sampling_rate must be a positive integer"),
])
def test_preprocessor_sampling_rate_conflicts_are_one_line(tmp_path, sampling_rate, overrides, needle):
    path, _ = _hf_native_dir(tmp_path / "mert", **overrides)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    (path / "preprocessor_config.json").write_text(json.dumps({**pre, "sampling_rate": sampling_rate}))
    with pytest.raises(ConfigError, match=needle) as info:
        load_mert(path)
    msg = str(info.value)
    assert msg.startswith(str(path / "preprocessor_config.json")) and "\n" not in msg


def test_options_validation():
    with pytest.raises(ConfigError, match="CUDA"):
        EncoderOptions(dtype="bfloat16")
    with pytest.raises(ConfigError, match="sdpa"):
        EncoderOptions(attn_implementation="flash")
    with pytest.raises(ConfigError, match="float32"):
        EncoderOptions(dtype="float64")
    with pytest.raises(ConfigError, match="hop_s"):
        WindowOptions(window_s=10, hop_s=12)
    with pytest.raises(ConfigError, match="out of range"):
        tiny().resolve_layers([7])


# ------------------------------------------------------------------------------------------ numerics


def test_normalization_matches_wav2vec2_feature_extractor():
    clips = [noise(5000, 1).numpy(), (3 * noise(3000, 2) + 1).numpy(), noise(4000, 3).numpy() * 0]
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    ref = fe(clips, sampling_rate=SR, padding=True, return_tensors="np")["input_values"]
    wave = torch.zeros(3, 5000)
    for i, c in enumerate(clips):
        wave[i, : len(c)] = torch.from_numpy(c)
    ours = normalize_clips(wave, torch.tensor([len(c) for c in clips]))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    assert ours[1, 3000:].abs().max() == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_plain_hubert_model(variant, attn):
    """An unpadded single clip runs exactly HubertModel.forward's modules on the same input: equal bit for bit.
    95m-shape is post-LN, 330m-shape and layer-norm are pre-LN ("stable"); 9319 samples leave 319 unused at the end,
    400 make one frame."""
    enc = tiny(variant, attn=attn)
    for n in (9000, 9319, 400):
        wave = noise(n)
        out = enc(wave[None])
        ref = reference_states(enc, wave)
        assert out.hidden_states.shape == (enc.num_layers, 1, enc.frames_for(n), enc.hidden_size)
        for i, r in enumerate(ref):
            torch.testing.assert_close(out.hidden_states[i, 0], r, atol=0, rtol=0, msg=f"{n} samples, state {i}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batch_equals_single(variant):
    enc = tiny(variant, seed=3)
    lengths = [12000, 5000, 12000, 401, 7777, 399]  # repeats, a one-frame clip, and one too short for any frame
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = noise(n, seed=i)
    wave[:, -1] = 5.0  # garbage beyond each clip's length must not matter
    wave[0, -1] = 0.0
    out = enc(wave, torch.tensor(lengths))
    for i, n in enumerate(lengths):
        t = enc.frames_for(n)
        assert int(out.frame_mask[i].sum()) == t and bool(out.frame_mask[i, :t].all())
        assert out.hidden_states[:, i, t:].abs().max() == 0 if t < out.hidden_states.shape[2] else True
        if t:
            alone = enc(wave[i : i + 1, :n]).hidden_states[:, 0]
            torch.testing.assert_close(out.hidden_states[:, i, :t], alone, atol=1e-5, rtol=0)


def test_naive_padding_would_be_wrong_for_group_norm():
    """Why the per-length conv front-end exists: HubertModel on a padded batch changes the short clip."""
    enc = tiny("95m-shape")
    lengths = torch.tensor([12000, 5000])
    wave = torch.zeros(2, 12000)
    wave[0], wave[1, :5000] = noise(12000), noise(5000, 1)
    x = normalize_clips(wave, lengths)
    mask = (torch.arange(12000)[None] < lengths[:, None]).long()
    naive = enc.model(x, attention_mask=mask).last_hidden_state[1, : enc.frames_for(5000)]
    ours = enc(wave, lengths).hidden_states[-1, 1, : enc.frames_for(5000)]
    assert (naive - ours).abs().max() > 1e-3


def test_hubert_seam_refuses_an_unexpected_layout():
    """MertEncoder drives HubertModel's modules: a changed layout is one clear error, at construction or first call."""
    import transformers

    from mu_llama.encoders import MertEncoder
    from mu_llama.errors import DependencyError

    enc = tiny("330m-shape")
    version = rf"transformers {transformers.__version__}: "
    model = HubertModel(enc.model.config)
    del model.feature_projection                                        # a module renamed upstream
    with pytest.raises(DependencyError, match=version + "HubertModel has no module feature_projection"):
        MertEncoder(enc.config, model)
    with pytest.raises(ConfigError, match="does not match its MertConfig"):
        MertEncoder(builtin_config("tiny"), enc.model)                  # post-LN config, pre-LN model

    wave = noise(4000)[None]
    handle = enc.model.feature_projection.register_forward_hook(lambda m, a, out: (out, out))  # Wav2Vec2-style tuple
    with pytest.raises(DependencyError, match=version + "HubertModel feature_projection output is tuple"):
        enc(wave)
    handle.remove()
    enc.model.config.layerdrop = 1.0
    enc.model.encoder.train()                                           # an encoder that skips layers
    with pytest.raises(DependencyError, match=r"ran its 3 layers \[0, 0, 0\] times"):
        enc(wave)
    enc.model.encoder.eval()
    enc.model.config.layerdrop = 0.0
    torch.testing.assert_close(enc(wave).hidden_states[:, 0], torch.stack(reference_states(enc, wave[0])), atol=0,
                               rtol=0)


def test_layer_selection_and_output_type():
    enc = tiny()
    full = enc(noise(6000)[None])
    part = enc(noise(6000)[None], layers=[0, -1])
    assert isinstance(part, EncoderOutput) and part.layers == (0, enc.num_layers - 1)
    torch.testing.assert_close(part.hidden_states, full.hidden_states[[0, -1]], atol=0, rtol=0)
    assert full.frames.tolist() == [enc.frames_for(6000)]


# ----------------------------------------------------------------------------------------- checkpoints

PRETRAIN_EXTRAS = {"label_embs_concat": torch.randn(7, 4), "final_proj.weight": torch.randn(4, 32),
                   "final_proj.bias": torch.randn(4), "masked_spec_embed": torch.rand(32)}


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
@pytest.mark.parametrize("variant", ["95m-shape", "330m-shape"])
def test_checkpoint_roundtrip_in_mert_layout(tmp_path, layout, variant):
    enc = tiny(variant, seed=5)
    save_mert(enc, tmp_path, layout=layout, extra=PRETRAIN_EXTRAS)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "mert_model" and cfg["feature_extractor_cqt"] is False and "deepnorm" in cfg
    loaded = load_mert(tmp_path)
    wave = noise(8000)
    torch.testing.assert_close(loaded(wave[None]).hidden_states, enc(wave[None]).hidden_states, atol=0, rtol=0)


def _raw_state(enc) -> dict[str, torch.Tensor]:
    from mu_llama.encoders.mert_checkpoint import to_mert_layout

    return to_mert_layout(enc.model.state_dict())


def test_checkpoint_with_wrapper_prefix_and_folded_weight_norm(tmp_path):
    from safetensors.torch import save_file

    enc = tiny(seed=6)
    save_mert(enc, tmp_path)
    state = _raw_state(enc)
    g, v = state.pop("encoder.pos_conv_embed.conv.weight_g"), state.pop("encoder.pos_conv_embed.conv.weight_v")
    state["encoder.pos_conv_embed.conv.weight"] = torch._weight_norm(v, g, 2)  # weight norm folded into one tensor
    state = {f"mert_model.{k}": t for k, t in state.items()} | {"label_embs_concat": torch.randn(3, 4)}
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_mert(tmp_path)
    torch.testing.assert_close(loaded(noise(6000)[None]).hidden_states, enc(noise(6000)[None]).hidden_states,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("encoder.layers.1.attention.q_proj.weight"), "missing key.*encoder.layers.1.attention.q_proj.weight"),
    (lambda s: s.__setitem__("decoder.head.weight", torch.zeros(2)), "unexpected key.*decoder.head.weight"),
    (lambda s: s.__setitem__("feature_projection.projection.bias", torch.zeros(5)), "shape mismatch"),
])
def test_checkpoint_key_errors(tmp_path, edit, needle):
    from safetensors.torch import save_file

    enc = tiny()
    save_mert(enc, tmp_path)
    state = _raw_state(enc)
    edit(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=needle):
        load_mert(tmp_path)


def test_checkpoint_file_errors(tmp_path):
    enc = tiny()
    save_mert(enc, tmp_path, layout="bin")
    torch.save({"weights": torch.zeros(2), "meta": Path("x")}, tmp_path / "pytorch_model.bin")  # needs full pickle
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_mert(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_mert(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_mert(tmp_path)
    with pytest.raises(CheckpointError, match="not a Hugging Face Hub id"):
        load_encoder(str(tmp_path / "does" / "not" / "exist"))


def test_hub_id_goes_through_huggingface_hub(tmp_path, monkeypatch):
    """The hub path runs the real huggingface_hub code; offline with an empty cache it must fail in one clear line."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(CheckpointError, match="m-a-p/MERT-v1-95M: could not fetch from the Hugging Face Hub"):
        load_encoder("m-a-p/MERT-v1-95M")


def test_load_encoder_random_specs(tmp_path):
    a, b = load_encoder("random:tiny", seed=1), load_encoder("random:tiny", seed=1)
    torch.testing.assert_close(a(noise(3000)[None]).hidden_states, b(noise(3000)[None]).hidden_states, atol=0, rtol=0)
    save_mert(tiny("330m-shape"), tmp_path)
    c = load_encoder(f"random:{tmp_path / 'config.json'}", seed=1)  # a config file's architecture, random weights
    assert c.config.do_stable_layer_norm and c.num_layers == 4
    with pytest.raises(ConfigError, match="tiny"):
        load_encoder("random:nope")


# ------------------------------------------------------------------------------------------- windowing


class LocalEncoder(AudioEncoder):
    """A mock whose frames depend only on samples within `context` frames: stitching must reproduce it exactly."""

    sample_rate, num_layers, hidden_size, frame_stride, receptive_field = SR, 1, 2, 320, 400

    def __init__(self, context: int = 0):
        super().__init__()
        self.context = context

    def forward(self, wave, lengths=None, *, layers=None):
        B, N = wave.shape
        lengths = torch.full((B,), N) if lengths is None else torch.as_tensor(lengths)
        frames = self.frames_for_lengths(lengths)
        T = int(frames.max())
        mask = torch.arange(T)[None] < frames[:, None]
        x = wave.double().unfold(1, 400, 320)[:, :T]  # (B, T, 400)
        f = torch.stack([x.mean(-1), x.pow(2).mean(-1)], -1) * mask[..., None]  # (B, T, 2)
        if self.context:
            k = 2 * self.context + 1
            f = torch.nn.functional.avg_pool1d(f.transpose(1, 2), k, 1, self.context).transpose(1, 2) * mask[..., None]
        return EncoderOutput(f[None].float(), mask, self.resolve_layers(layers))


def test_stitched_length_and_tiling_for_many_lengths():
    enc = LocalEncoder()
    opts = WindowOptions(window_s=40 / 75, hop_s=30 / 75)
    plan = WindowPlan.for_encoder(enc, opts)
    W, H, S = plan.window_samples, plan.hop_samples, plan.frame_stride
    edges = [0, 399, 400, W - 1, W, W + S - 1, W + S, W + H, W + H + S, 2 * W, 5 * W + 123]
    for n in sorted({e + d for e in edges for d in (-1, 0, 1) if e + d >= 0}):
        wave = noise(n).numpy() if n else np.zeros(0, np.float32)
        wins = list(encode_stream(enc, [wave], opts))
        assert len(wins) == plan.num_windows(n)
        assert sum(w.hidden_states.shape[1] for w in wins) == enc.frames_for(n)
        sizes = [w.hidden_states.shape[1] for w in wins]
        assert all(sizes)  # a window exists only if it adds frames
        assert [w.first_frame for w in wins] == [sum(sizes[:i]) for i in range(len(wins))]  # contiguous tiling


@pytest.mark.parametrize("hop_frames, exact", [(30, True), (39, False)])
def test_stitching_is_exact_when_half_overlap_covers_the_context(hop_frames, exact):
    enc = LocalEncoder(context=3)
    opts = WindowOptions(window_s=40 / 75, hop_s=hop_frames / 75)  # half overlap 5 (>= 3) or 0 (< 3) frames
    wave = noise(SR * 2 + 777)
    direct = enc(wave[None]).hidden_states[:, 0]
    stitched = encode_windows(enc, wave, opts).hidden_states
    assert stitched.shape == direct.shape
    assert torch.allclose(stitched, direct, atol=1e-6) == exact


def test_windowed_equals_direct_for_audio_shorter_than_a_window():
    enc = tiny("330m-shape")
    wave = noise(SR)  # 1 s < 1.5-s window
    out = encode_windows(enc, wave, WindowOptions(window_s=1.5, hop_s=1.0))
    torch.testing.assert_close(out.hidden_states, enc(wave[None]).hidden_states[:, 0], atol=0, rtol=0)
    assert out.pooled.shape == (1, enc.num_layers, enc.hidden_size) and out.bounds.tolist() == [[0, SR]]


def test_windows_of_a_real_encoder_match_encoding_each_window_alone():
    enc = tiny("95m-shape")
    opts = WindowOptions(window_s=1.0, hop_s=0.6)
    wave = noise(int(SR * 3.3))
    plan = WindowPlan.for_encoder(enc, opts)
    wins = list(encode_stream(enc, [wave], opts))
    assert len(wins) == plan.num_windows(len(wave)) > 2
    assert sum(w.hidden_states.shape[1] for w in wins) == enc.frames_for(len(wave))
    for w in wins:
        alone = enc(wave[None, w.start_sample : w.start_sample + w.num_samples]).hidden_states[:, 0]
        assert w.start_sample == w.frame_offset * enc.frame_stride and alone.shape[1] == w.num_frames
        torch.testing.assert_close(w.hidden_states, alone[:, w.keep_start : w.keep_start + w.hidden_states.shape[1]],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(w.pooled, alone.mean(dim=1), atol=1e-5, rtol=0)


def test_stream_blocks_and_batching_do_not_change_features():
    enc = tiny("95m-shape")
    wave = noise(int(SR * 2.9)).numpy()
    opts = WindowOptions(window_s=0.8, hop_s=0.5)
    one = encode_windows(enc, wave, opts)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(wave), 9, replace=False))
    blocks = np.split(wave, cuts)  # uneven blocks, some tiny
    streamed = list(encode_stream(enc, iter(blocks), opts))
    torch.testing.assert_close(torch.cat([w.hidden_states for w in streamed], 1), one.hidden_states, atol=0, rtol=0)
    batched = encode_windows(enc, wave, WindowOptions(window_s=0.8, hop_s=0.5, batch_size=3))
    torch.testing.assert_close(batched.hidden_states, one.hidden_states, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pooled, one.pooled, atol=1e-5, rtol=0)
    assert encode_windows(enc, np.zeros(399, np.float32), opts).hidden_states.shape[1] == 0


# ---------------------------------------------------------------------------------------------- embed CLI


def test_embed_cli(tmp_path, capsys):
    import soundfile as sf
    from safetensors import safe_open

    from mu_llama.audio import load_audio
    from mu_llama.cli.main import main

    sf.write(tmp_path / "a.wav", noise(int(SR * 2.5)).numpy(), SR)
    sf.write(tmp_path / "b.wav", noise(16000 * 1, seed=2).numpy(), 16000)  # resampled to 24 kHz on the way in
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "out"
    args = ["embed", str(tmp_path / "a.wav"), str(tmp_path / "bad.wav"), str(tmp_path / "b.wav"), "--out", str(out),
            "--model", "random:tiny", "--window", "1", "--hop", "0.75", "--layers", "0,-1", "--no-progress"]
    assert main(args) == 1  # one bad file
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [Path(x["path"]).name for x in lines] == ["a.wav", "bad.wav", "b.wav"]
    a, bad, b = lines
    assert bad["error"] and bad["output"] is None and a["error"] is None and b["error"] is None
    enc = load_encoder("random:tiny")
    assert a["frames"] == enc.frames_for(int(SR * 2.5)) and a["duration"] == 2.5 and a["windows"] == 3
    with safe_open(a["output"], "pt") as f:
        frames = f.get_tensor("hidden_states")
        assert f.metadata()["layers"] == "[0, 2]" and f.get_tensor("window_pooled").shape == (3, 2, 32)
    expected = encode_windows(enc, load_audio(tmp_path / "a.wav", SR), WindowOptions(1.0, 0.75), layers=[0, -1])
    torch.testing.assert_close(frames, expected.hidden_states, atol=1e-5, rtol=0)
    assert "bad.wav" in capsys.readouterr().err

    assert main(args[:1] + [str(tmp_path / "a.wav")] + args[4:] + ["--pool", "mean"]) == 0
    with safe_open(str(out / "a.safetensors"), "pt") as f:
        assert set(f.keys()) == {"mean", "window_pooled", "window_bounds"}
        torch.testing.assert_close(f.get_tensor("mean"), frames.mean(dim=1), atol=1e-5, rtol=0)


def test_embed_cli_choices_mirror_the_library():
    import mu_llama.cli.embed as cli
    import mu_llama.embed as lib
    from mu_llama import encoders

    from mu_llama.model import DEFAULT_MODEL

    assert (cli.DEFAULT_MODEL, cli.MANIFEST, cli.POOLS) == (lib.DEFAULT_MODEL, lib.MANIFEST, lib.POOLS)
    assert lib.DEFAULT_MODEL == DEFAULT_MODEL  # embed's default is the default model's encoder
    assert cli.DTYPES == tuple(encoders.DTYPES) and cli.ATTN_IMPLEMENTATIONS == encoders.ATTN_IMPLEMENTATIONS
    with pytest.raises(ConfigError, match="pool"):
        lib.EmbedOptions(pool="max")
    with pytest.raises(ConfigError, match="layers"):
        lib.parse_layers("1,x")
