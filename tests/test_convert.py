"""MU-LLaMA checkpoint import: logits parity with a faithful re-implementation of MU-LLaMA's forward.

A tiny random MU-LLaMA is built in the reference's key layout (tests/reference_mullama.py) with every trained
part nonzero, saved as MU-LLaMA ships it (Meta consolidated LLaMA + checkpoint.pth), converted, loaded with
MuLlama, and fed the same MERT hidden states and the same prompt ids. Negative checks show the parity test
would catch a converter that skips the rotary permutation (of the base weights, or only of LoRA B / biases).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import reference_mullama  # tests/ is on sys.path (pytest's rootdir-relative import of test modules)
import torch
from reference_mullama import ReferenceArgs, ReferenceMuLlama, build_random, format_prompt, save_reference

from mu_llama.convert import (
    META_TO_HF,
    LlamaShape,
    convert_meta_to_hf,
    convert_mullama,
    hf_to_meta_state,
    load_meta_state,
    meta_to_hf_state,
    permute_rotary,
    unpermute_rotary,
)
from mu_llama.convert import meta_llama as meta_mod
from mu_llama.convert import mullama as mullama_mod
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.prompts import encode_prompt, mullama_prompt

TOL = 1e-4  # fp32; measured ~5e-6 (see the report printed by test_parity_next_token_logits)
QUESTION = "Describe the Audio"  # MU-LLaMA inference.py's default question


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mu_llama.encoders import BUILTIN_CONFIGS, MertConfig, save_mert
    from mu_llama.encoders import build_random as build_mert

    from mu_llama.llm import byte_tokenizer

    root = tmp_path_factory.mktemp("mullama")
    args = ReferenceArgs()
    ref = build_random(args, seed=0)
    llama_dir, ckpt = save_reference(ref, root)
    byte_tokenizer().save_pretrained(root / "tokenizer")
    # a MERT-330M-shaped (25 hidden states) but tiny-width encoder, saved in MERT's hub layout
    save_mert(build_mert(MertConfig.from_dict({**BUILTIN_CONFIGS["tiny"], "num_hidden_layers": 24})), root / "mert")
    g = torch.Generator().manual_seed(1)
    # MERT hidden states (L, B, T, D): two clips, per-layer scales so the layer mix matters
    hs = torch.randn(args.enc_layers, 2, 7, args.enc_dim, generator=g) * torch.linspace(0.5, 2.0, 25)[:, None, None, None]
    return SimpleNamespace(root=root, args=args, ref=ref, llama=llama_dir, ckpt=ckpt, tok=root / "tokenizer",
                           mert=str(root / "mert"), hs=hs)


def _convert(world, name: str, **kwargs):
    from mu_llama.model import MuLlama

    out = world.root / name
    kwargs.setdefault("tokenizer", world.tok)
    report = convert_mullama(kwargs.pop("checkpoint", world.ckpt), kwargs.pop("llama", world.llama), world.mert,
                             out, **kwargs)
    return report, MuLlama.from_pretrained(out)


@pytest.fixture(scope="module")
def converted(world):
    return _convert(world, "out")


def _ids(model) -> torch.Tensor:
    ids = encode_prompt("mullama-compat", model.tokenizer, QUESTION)
    return torch.tensor([ids, ids])  # same prompt, two different clips


@torch.no_grad()
def _ours(model, hs, ids):
    mask = torch.ones(hs.shape[1], hs.shape[2], dtype=torch.bool)
    music = model.music_tokens(model.music_adapter.pool(hs, mask))
    return model(ids, attention_mask=torch.ones_like(ids), music=music).logits.float()


def test_prompt_is_mullamas(converted):
    _, model = converted
    assert mullama_prompt(QUESTION) == format_prompt(QUESTION)
    assert model.template == "mullama-compat"
    ids = encode_prompt("mullama-compat", model.tokenizer, QUESTION)
    assert ids[0] == model.tokenizer.bos_token_id and ids[-1] != model.tokenizer.eos_token_id


def test_parity_next_token_logits(world, converted):
    report, model = converted
    ids = _ids(model)
    ours = _ours(model, world.hs, ids)
    with torch.no_grad():
        theirs = world.ref(world.hs, ids)
        plain = world.ref(None, ids)
    next_diff = (ours[:, -1] - theirs[:, -1]).abs().max().item()
    all_diff = (ours - theirs).abs().max().item()
    print(f"\nparity: max |logit diff| next-token {next_diff:.2e}, all {ids.shape[1]} positions {all_diff:.2e}; "
          f"logit scale {theirs.abs().max().item():.2f}")
    assert next_diff < TOL and all_diff < TOL
    # the comparison is meaningful: the music changes the logits, and differently per clip
    assert (theirs - plain).abs().max() > 0.1
    assert (theirs[0, -1] - theirs[1, -1]).abs().max() > 0.1
    assert report.skipped == {mullama_mod.SKIP_GATE: world.args.n_layers - world.args.query_layer}


def test_config_reflects_mullama(world, converted):
    _, model = converted
    c = model.config
    assert (c.enc_layers, c.enc_dim, c.llm_dim, c.injection_layers) == (25, world.args.enc_dim, world.args.dim, 2)
    assert c.kv_through_lora is False and c.template == "mullama-compat" and c.max_audio_seconds == 60.0
    assert c.lora.rank == world.args.lora_rank and c.lora.alpha == c.lora.rank and c.lora.mlp
    assert set(c.lora.bias_targets) == {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert Path(c.llm).is_dir() and c.encoder == world.mert


def _greedy_reference(ref, hs, ids, steps: int, stop: set[int]) -> list[list[int]]:
    """The reference's greedy tokens per row, cut at the first stop token, after checking that every step's choice is
    clear (top-1 beats top-2 by far more than the converted model's logit error), so ties cannot decide the test."""
    theirs = ref.greedy(hs, ids, steps)  # (B, steps), whole sequence recomputed each step: no cache involved
    with torch.no_grad():
        logits = ref(hs, torch.cat([ids, theirs], 1))[:, ids.shape[1] - 1: -1]  # (B, steps, V): each step's logits
    top2 = logits.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 100 * TOL
    return [row[:next((i for i, t in enumerate(row) if t in stop), steps)] for row in theirs.tolist()]


def test_greedy_generation_matches_reference(world, converted):
    """The converted model generates exactly the reference's greedy tokens: one clip at a time and both clips in one
    batch (per-row music, the KV cache of generate vs the reference's full recomputation)."""
    from mu_llama.decoding import DecodingOptions

    _, model = converted
    steps = 8
    ids = _ids(model)  # (2, S): the same prompt for two different clips
    stop = set(model.stop_token_ids()) | {model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}
    expected = _greedy_reference(world.ref, world.hs, ids, steps, stop - {None})
    assert expected[0] != expected[1] and all(len(e) >= 2 for e in expected)  # the music steers the answer
    mask = torch.ones(2, world.hs.shape[2], dtype=torch.bool)
    music = model.music_tokens(model.music_adapter.pool(world.hs, mask))
    options = DecodingOptions(max_new_tokens=steps)
    assert model.generate(music, ids.tolist(), options) == expected
    for row in range(2):
        hs = world.hs[:, row:row + 1]
        one = model.music_tokens(model.music_adapter.pool(hs, mask[row:row + 1]))
        assert model.generate(one, [ids[row].tolist()], options) == [expected[row]]


@pytest.mark.parametrize("skip", ["all", "lora_and_bias"])
def test_parity_fails_without_rotary_permutation(world, converted, monkeypatch, skip):
    """Negative check: skipping the q/k row permutation (everywhere, or only for LoRA B / wq bias) breaks parity."""
    _, model = converted
    ids = _ids(model)
    with torch.no_grad():
        theirs = world.ref(world.hs, ids)
    monkeypatch.setattr(mullama_mod, "_rotary_rows", lambda t, n_heads: t)
    if skip == "all":
        monkeypatch.setattr(meta_mod, "permute_rotary", lambda t, n_heads: t)
    _, broken = _convert(world, f"out-unpermuted-{skip}")
    diff = (_ours(broken, world.hs, ids)[:, -1] - theirs[:, -1]).abs().max().item()
    assert diff > 100 * TOL, f"parity survived skipping the permutation ({skip}): {diff:.2e}"


def test_hf_layout_llama_and_full_state_checkpoint(world, converted, tmp_path):
    """--llama given in transformers layout is referenced in place; a checkpoint that also carries the frozen base
    weights (a full state dict) converts to the same tensors, with those weights reported as skipped."""
    from safetensors.torch import load_file

    report, _ = converted
    full = build_random(world.args, seed=0)
    _, ckpt = save_reference(full, tmp_path, full_state=True)
    rep2, _ = _convert(world, "out-hf", checkpoint=ckpt, llama=report.llm, tokenizer=None)
    assert rep2.llm == report.llm and not rep2.llm_converted
    # tok_embeddings + output + 7 projections per layer (norms are tuned: mapped, not skipped)
    assert rep2.skipped[mullama_mod.SKIP_BASE] == 2 + 7 * world.args.n_layers
    for fname in ("adapter.safetensors", "adapter_model.safetensors"):
        a, b = load_file(str(Path(report.out) / fname)), load_file(str(Path(rep2.out) / fname))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_pretrained_round_trip(converted, tmp_path):
    """The converter writes exactly what MuLlama.save_pretrained writes for the loaded model."""
    from safetensors.torch import load_file

    report, model = converted
    model.save_pretrained(tmp_path)
    for fname in ("adapter.safetensors", "adapter_model.safetensors"):
        a, b = load_file(str(Path(report.out) / fname)), load_file(str(tmp_path / fname))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), fname
    for fname in ("config.json", "adapter_config.json"):
        assert json.loads((Path(report.out) / fname).read_text()) == json.loads((tmp_path / fname).read_text())


def test_pretrain_stage_checkpoint(world, tmp_path):
    """A pretrain-stage checkpoint (adapter, prefix, gates only) converts without LoRA and still matches."""
    args = ReferenceArgs(w_bias=False, w_lora=False)
    ref = build_random(args, seed=3)
    llama_dir, ckpt = save_reference(ref, tmp_path, phase="pretrain", early_gates="random")
    report, model = _convert(world, "out-pretrain", checkpoint=ckpt, llama=llama_dir)
    assert model.config.lora is None and not (Path(report.out) / "adapter_model.safetensors").exists()
    ids = _ids(model)
    with torch.no_grad():
        theirs = ref(world.hs, ids)
    assert (_ours(model, world.hs, ids) - theirs).abs().max().item() < TOL


def test_legacy_bridge_checkpoint_is_flagged(world, tmp_path):
    """legacy_bridge (LayerNorm + biased bridge) maps onto bridge_norm="layer"; the eps gap is reported."""
    ref = build_random(ReferenceArgs(legacy_bridge=True), seed=4)
    llama_dir, ckpt = save_reference(ref, tmp_path)
    with pytest.warns(UserWarning, match="legacy_bridge"):
        report, model = _convert(world, "out-legacy", checkpoint=ckpt, llama=llama_dir)
    assert model.config.bridge_norm == "layer" and model.config.bridge_bias and report.notes
    ids = _ids(model)
    with torch.no_grad():
        assert (_ours(model, world.hs, ids) - ref(world.hs, ids)).abs().max().item() < 1e-2  # eps 1e-5 vs 1e-6


def test_real_size_layout_maps_on_meta_device():
    """The full-size key layout (LLaMA-2-7B + MERT-330M, MU-LLaMA's hard-coded sizes) maps completely: shapes only."""
    from mu_llama.convert import infer_config, map_checkpoint

    args = ReferenceArgs(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, multiple_of=256, lora_rank=16,
                         enc_layers=25, enc_dim=1024, query_layer=20, max_seq_len=8)
    with torch.device("meta"):
        state = {k: v for k, v in ReferenceMuLlama(args).state_dict().items()
                 if not reference_mullama.is_base_key(k) or k.endswith("norm.weight")}
    shape = LlamaShape(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, multiple_of=256)
    mapped = map_checkpoint(state, shape)
    cfg = infer_config(mapped, encoder="m-a-p/MERT-v1-330M", llm="llama-2-7b", shape=shape)
    assert (cfg.enc_layers, cfg.enc_dim, cfg.llm_dim, cfg.bridge_hidden, cfg.injection_layers) == (25, 1024, 4096,
                                                                                                   16384, 20)
    assert cfg.lora.rank == 16 and shape.ffn_dim == 11008
    assert mapped.adapter["injection.gates"].shape == (20, 32) and mapped.skipped == {mullama_mod.SKIP_GATE: 12}
    bridge = sum(v.numel() for k, v in mapped.adapter.items() if k.startswith("music_adapter."))
    assert 600e6 < bridge < 610e6  # the ~604M-parameter adapter


# --- failures: every key accounted for -----------------------------------------------------------------------
def _edit_checkpoint(world, tmp_path, edit) -> Path:
    from mu_llama.convert.io import load_pth

    raw = load_pth(world.ckpt)  # the same safe loader (weights_only=True + argparse.Namespace) the converter uses
    edit(raw["model"])
    path = tmp_path / "edited.pth"
    torch.save(raw, path)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.__setitem__("llama.layers.0.attention.new_gate", torch.ones(1)), "unknown key"),
    (lambda s: s.pop("mu_mert_f2_2.weight"), "mu_mert_f2_2.weight"),
    (lambda s: s.pop("llama.layers.1.attention.lora_wk_l2.weight"), "llama.layers.1.attention.lora_wk_l2.weight"),
    (lambda s: s.pop("llama.layers.3.attention.gate"), "llama.layers.3.attention.gate"),
    (lambda s: s.pop("llama.layers.2.feed_forward.w3.bias"), "llama.layers.2.feed_forward.w3.bias"),
    # wrong shapes: one line naming the key, the expected and the actual shape (no torch.stack / view traceback)
    (lambda s: s.__setitem__("llama.layers.3.attention.gate", torch.ones(1, 3, 1, 1)),
     "llama.layers.3.attention.gate has shape (1, 3, 1, 1), expected (1, 4, 1, 1)"),
    (lambda s: s.__setitem__("llama.layers.0.attention.gate", torch.ones(1, 8, 1, 1)),  # a skipped (early) gate too
     "llama.layers.0.attention.gate has shape (1, 8, 1, 1), expected (1, 4, 1, 1)"),
    (lambda s: s.__setitem__("llama.layers.1.attention.lora_wq_l2.weight", torch.ones(63, 4)),
     "llama.layers.1.attention.lora_wq_l2.weight has shape (63, 4), expected 64 rows"),
    (lambda s: s.__setitem__("prefix_query.weight", torch.ones(128)), "prefix_query.weight has shape (128,)"),
    (lambda s: s.__setitem__("mu_mert_agg.weight", torch.ones(25)), "mu_mert_agg.weight has shape (25,)"),
])
def test_unknown_or_missing_keys_fail_loudly(world, tmp_path, edit, message):
    path = _edit_checkpoint(world, tmp_path, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        convert_mullama(path, world.llama, world.mert, tmp_path / "out", tokenizer=world.tok)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)  # names the checkpoint, one line
    assert not (tmp_path / "out").exists()  # nothing written, no LLaMA conversion started


def test_encoder_mismatch_and_unsafe_pickle(world, tmp_path):
    with pytest.raises(CheckpointError, match="25 hidden states"):
        convert_mullama(world.ckpt, world.llama, "random:tiny", tmp_path / "out", tokenizer=world.tok)
    torch.save({"model": {"x": torch.ones(1)}, "obj": SimpleNamespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_mullama(tmp_path / "evil.pth", world.llama, world.mert, tmp_path / "out2", tokenizer=world.tok)


# --- the MERT is loaded and checked before anything is written --------------------------------------------------
def _hubert_native(path: Path, *, layers: int = 24, sampling_rate: int | None = 24000) -> Path:
    """A MERT saved by transformers itself (HubertModel.save_pretrained: model_type "hubert", no sample_rate) and,
    unless sampling_rate is None, its Wav2Vec2FeatureExtractor preprocessor_config.json."""
    from transformers import Wav2Vec2FeatureExtractor

    from mu_llama.encoders import BUILTIN_CONFIGS, MertConfig
    from mu_llama.encoders import build_random as build_mert

    build_mert(MertConfig.from_dict({**BUILTIN_CONFIGS["tiny"], "num_hidden_layers": layers})).model.save_pretrained(path)
    if sampling_rate is not None:
        Wav2Vec2FeatureExtractor(sampling_rate=sampling_rate).save_pretrained(path)
    return path


def _broken_weights(path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(path.parent / "mert", path)
    state = load_file(str(path / "model.safetensors"))
    del state["encoder.layers.3.attention.k_proj.weight"]
    save_file(state, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda root: Path("/nonexistent"), "/nonexistent: no such directory"),
    (lambda root: root / "empty", "config.json: missing"),
    (lambda root: _hubert_native(root / "small", layers=2), "has 3 of 32"),
    (lambda root: _hubert_native(root / "hubert16k", sampling_rate=None), "runs at 16000 Hz"),
    (lambda root: _hubert_native(root / "hubert8k", sampling_rate=8000), "runs at 8000 Hz"),
    (_broken_weights, "missing key(s): encoder.layers.3.attention.k_proj.weight"),
])
def test_bad_mert_fails_before_anything_is_written(world, tmp_path, capsys, make, message):
    from mu_llama.cli.main import main

    (tmp_path / "empty").mkdir()
    mert = make(tmp_path) if make is not _broken_weights else make(world.root / f"broken-{tmp_path.name}")
    out = tmp_path / "out"
    with pytest.raises((CheckpointError, ConfigError), match=re.escape(message)):
        convert_mullama(world.ckpt, world.llama, str(mert), out, tokenizer=world.tok)
    argv = ["convert", "mullama", "--checkpoint", str(world.ckpt), "--llama", str(world.llama), "--mert", str(mert),
            "--out", str(out), "--tokenizer", str(world.tok), "--no-progress"]
    capsys.readouterr()  # drop what building the fixture printed (transformers' save progress)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()  # neither the model nor the LLaMA conversion was started


def test_hf_native_24khz_mert_is_accepted_and_recorded(world, tmp_path):
    """An HF-native MERT directory (sample rate only in preprocessor_config.json) converts; its path is recorded."""
    mert = _hubert_native(tmp_path / "hf-mert")
    out = tmp_path / "out"
    report = convert_mullama(world.ckpt, world.llama, str(mert), out, tokenizer=world.tok)
    assert report.config["encoder"] == str(mert.resolve()) and report.config["sample_rate"] == 24000


def test_force_replaces_everything_the_converter_wrote(world, tmp_path):
    """--force with another MU-LLaMA: OUT/llm, config and adapter files all come from the new one; stale model files
    (a LoRA file the new model lacks, a fact tagger) go; the user's own files stay. Without --force: refused."""
    from safetensors.torch import load_file

    from mu_llama.convert.meta_llama import MARKER, is_conversion_of
    from mu_llama.model import MuLlama

    out = tmp_path / "out"
    convert_mullama(world.ckpt, world.llama, world.mert, out, tokenizer=world.tok)  # LLaMA A, with LoRA
    (out / "notes.txt").write_text("mine")
    (out / "fact_tagger.json").write_text("{}")  # as a save_pretrained model with a tagger would have
    marker_a = (out / "llm" / MARKER).read_text()
    # a different LLaMA (B), pretrain stage: no LoRA
    args_b = ReferenceArgs(w_bias=False, w_lora=False)
    ref_b = build_random(args_b, seed=9)
    llama_b, ckpt_b = save_reference(ref_b, tmp_path / "b", phase="pretrain")
    with pytest.raises(CheckpointError, match="already holds a model"):
        convert_mullama(ckpt_b, llama_b, world.mert, out, tokenizer=world.tok)
    assert (out / "llm" / MARKER).read_text() == marker_a  # the refusal touched nothing
    convert_mullama(ckpt_b, llama_b, world.mert, out, tokenizer=world.tok, overwrite=True)
    assert is_conversion_of(out / "llm", llama_b, tokenizer=world.tok)  # B's weights, not A's
    assert not (out / "adapter_model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert not (out / "fact_tagger.json").exists() and (out / "notes.txt").read_text() == "mine"
    model = MuLlama.from_pretrained(out)
    assert model.config.lora is None
    ids = _ids(model)
    with torch.no_grad():
        assert (_ours(model, world.hs, ids) - ref_b(world.hs, ids)).abs().max().item() < TOL
    # --force again with A in transformers layout elsewhere: the stale OUT/llm (B's conversion) goes
    hf_a = tmp_path / "hf-a"
    convert_meta_to_hf(world.llama, hf_a, tokenizer=world.tok)
    convert_mullama(world.ckpt, hf_a, world.mert, out, overwrite=True)
    assert not (out / "llm").exists() and json.loads((out / "config.json").read_text())["config"]["llm"] == str(
        hf_a.resolve())
    assert load_file(str(out / "adapter_model.safetensors"))  # A's LoRA is back
    # an HF LLaMA that lives in OUT/llm is an input, never removed; a foreign OUT/llm is never removed either
    convert_mullama(world.ckpt, world.llama, world.mert, out, tokenizer=world.tok, overwrite=True)
    convert_mullama(world.ckpt, out / "llm", world.mert, out, overwrite=True)
    assert (out / "llm" / "config.json").is_file()
    foreign = tmp_path / "foreign"
    (foreign / "llm").mkdir(parents=True)
    (foreign / "llm" / "mine.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a LLaMA converted by mu-llama"):
        convert_mullama(world.ckpt, world.llama, world.mert, foreign, tokenizer=world.tok, overwrite=True)
    assert (foreign / "llm" / "mine.txt").read_text() == "mine" and not (foreign / "config.json").exists()


# --- Meta <-> HF ------------------------------------------------------------------------------------------------
def test_rotary_permutation_inverse_and_hf_equivalence():
    """Meta's complex rotary on wq == transformers' rotate_half on permute_rotary(wq), up to the same row order."""
    from reference_mullama import apply_rotary_emb, precompute_freqs_cis
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    n_heads, d, s = 3, 8, 5
    w = torch.randn(n_heads * d, 7)
    assert torch.equal(unpermute_rotary(permute_rotary(w, n_heads), n_heads), w)
    x = torch.randn(1, s, 7)
    q_meta = (x @ w.T).view(1, s, n_heads, d)
    rot_meta, _ = apply_rotary_emb(q_meta, q_meta, precompute_freqs_cis(d, s))  # (1, S, nH, d), Meta row order
    q_hf = (x @ permute_rotary(w, n_heads).T).view(1, s, n_heads, d).transpose(1, 2)
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2).float() / d))
    emb = torch.cat([torch.outer(torch.arange(s).float(), inv)] * 2, -1)
    rot_hf, _ = apply_rotary_pos_emb(q_hf, q_hf, emb.cos()[None], emb.sin()[None])  # (1, nH, S, d), HF order
    rot_meta_in_hf_order = permute_rotary(rot_meta.reshape(s, n_heads * d).T, n_heads).T
    assert torch.allclose(rot_hf.transpose(1, 2).reshape(s, n_heads * d), rot_meta_in_hf_order, atol=1e-5)


def test_meta_hf_state_round_trip_and_plain_llama_parity(world, tmp_path):
    """Meta -> HF -> Meta is the identity, and the converted LlamaForCausalLM matches the reference LLaMA."""
    from transformers import LlamaForCausalLM

    args = ReferenceArgs(w_bias=False, w_lora=False)
    ref = build_random(args, seed=5)
    llama_dir, _ = save_reference(ref, tmp_path, phase="pretrain")
    shape = LlamaShape.from_params(llama_dir / "7B" / "params.json")
    meta = load_meta_state(llama_dir / "7B")
    back = hf_to_meta_state(meta_to_hf_state(meta, shape), shape)
    assert set(back) == set(meta) - {"rope.freqs"} and all(torch.equal(back[k], meta[k]) for k in back)
    assert len(META_TO_HF) == 12
    out = convert_meta_to_hf(llama_dir, tmp_path / "hf", tokenizer=world.tok)
    assert convert_meta_to_hf(llama_dir, tmp_path / "hf", tokenizer=world.tok) == out  # reused, not redone
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        assert (hf(ids).logits - ref(None, ids)).abs().max() < TOL


def test_meta_conversion_refuses_foreign_out_dir_and_unknown_keys(world, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a conversion"):
        convert_meta_to_hf(world.llama, tmp_path / "busy", tokenizer=world.tok)
    meta = {"layers.0.attention.wq.weight": torch.zeros(4, 4), "layers.0.attention.extra": torch.zeros(1)}
    shape = LlamaShape(dim=4, n_layers=1, n_heads=1, n_kv_heads=1)
    with pytest.raises(CheckpointError, match=r"unknown key\(s\): layers\.0\.attention\.extra"):
        meta_to_hf_state(meta, shape)


def test_sentencepiece_tokenizer_matches_mullama_encoding(tmp_path):
    """tokenizer.model -> transformers tokenizer: the MU-LLaMA prompt encodes as sentencepiece does (bos=True)."""
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([format_prompt("Describe the Audio"), "The music is a calm piano piece.",
                                 "A fast rock song with drums and electric guitar."] * 30))
    # LLaMA's settings: BPE with byte fallback, no normalisation, whitespace kept, dummy prefix
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=300,
                                   model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, add_dummy_prefix=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    out = tmp_path / "hf"
    out.mkdir()
    tok = meta_mod.write_tokenizer(tmp_path / "tokenizer.model", out)
    for q in ("Describe the Audio", "What instruments are playing?  Two spaces\tand a tab."):
        expected = [sp.bos_id()] + sp.encode(format_prompt(q))
        assert encode_prompt("mullama-compat", tok, q) == expected


def test_cli_convert_mullama(world, tmp_path, capsys):
    from mu_llama.cli.main import main

    out = tmp_path / "cli"
    argv = ["convert", "mullama", "--checkpoint", str(world.ckpt), "--llama", str(world.llama), "--mert", world.mert,
            "--out", str(out), "--tokenizer", str(world.tok), "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["llm_converted"] and (out / "config.json").is_file() and (out / "llm" / "config.json").is_file()
    assert main(argv) == 2  # refuses to overwrite without --force
    assert "already holds a model" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0
    shutil.rmtree(out)
