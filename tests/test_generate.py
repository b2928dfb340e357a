"""Generator: tokenizer round trip, conditioning paths (empty text, guidance 1), determinism, checkpoints, resumable
training, the MusicGen VAD conditioner on a tiny random config, and the CLI verb."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mu_llama.emotion.vad import VAD
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.generate import (
    Conditioning,
    GeneratorConfig,
    HashTextEmbedder,
    SamplingOptions,
    load_generator,
    save_generator,
)
from mu_llama.generate.sampling import guided_logprobs, sample_tokens
from mu_llama.generate.symbolic import (
    Note,
    Piece,
    estimate_key,
    midi_to_piece,
    monophonic_per_pitch,
    piece_to_midi,
)
from mu_llama.generate.tokenizer import DURATIONS, tempo_bins


def _key(n):
    return (round(n.onset, 4), n.pitch, round(n.duration, 4), n.velocity)


# --------------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_midi_tokens_midi_preserves_notes(tok, tmp_path):
    rng = random.Random(0)
    notes = monophonic_per_pitch([Note(rng.randrange(0, 96) / 4, rng.choice(DURATIONS[:12]) / 4, rng.randrange(36, 96),
                                       8 * rng.randrange(2, 15) + 4) for _ in range(80)])
    bpm = float(tempo_bins()[9])                     # a bin centre, so seconds survive too
    src = Piece(notes, bpm=bpm, meter="3/4", program=40)
    path = tmp_path / "in.mid"
    piece_to_midi(src).write(str(path))
    ids = tok.encode(midi_to_piece(path))
    back = tok.decode(ids)
    out = tmp_path / "out.mid"
    piece_to_midi(back).write(str(out))
    again = midi_to_piece(out)
    assert sorted(map(_key, again.notes)) == sorted(map(_key, notes))
    assert (again.meter, again.program) == ("3/4", 40) and abs(again.bpm - bpm) < 1e-3
    assert tok.encode(again) == ids                   # tokens are a fixed point


def test_header_tokens_are_the_measured_controls(tok):
    a_minor = [57, 59, 60, 62, 64, 65, 68, 69, 57, 60, 64, 69, 64, 60, 57]
    p = Piece([Note(i * 0.5, 0.5, m, 100) for i, m in enumerate(a_minor)], bpm=170, meter="4/4", program=56)
    h = tok.header_of(p)
    assert (h.mode, h.key_tonic, h.program, h.dyn) == ("minor", 9, 56, 4)
    assert estimate_key(p.notes)[:2] == (9, "minor")
    assert abs(h.bpm - 170) / 170 < 0.07
    with pytest.raises(ConfigError, match="meter"):
        tok.header_of(Piece(p.notes, meter="5/4"))


# ------------------------------------------------------------------------------------------------ conditioning


def test_conditioning_is_validated():
    with pytest.raises(ConfigError):
        Conditioning(text=3)
    with pytest.raises(ConfigError):
        Conditioning(vad=(0.1, 0.2, 0.3))
    assert Conditioning("  ").unconditional and not Conditioning(vad=VAD(0, 0, 0)).unconditional


def test_empty_text_takes_the_unconditional_path(gen):
    pc, pu = gen.prefixes(Conditioning(""))
    assert torch.equal(pc, pu)
    a = gen.generate(Conditioning(""), 3.0, SamplingOptions(seed=4))
    b = gen.generate(Conditioning(None, None), 3.0, SamplingOptions(seed=4))
    assert a.tokens == b.tokens
    pc_vad, _ = gen.prefixes(Conditioning("", VAD(0.5, 0, 0)))
    n_text = gen.model.config.n_text_tokens
    assert torch.equal(pc_vad[:, :n_text], pu[:, :n_text]) and not torch.equal(pc_vad, pu)


def test_guidance_scale_one_is_the_conditional_path(gen):
    c, u = torch.randn(50), torch.randn(50)
    torch.testing.assert_close(guided_logprobs(c, u, 1.0), torch.log_softmax(c, -1), atol=1e-6, rtol=0)
    cond = Conditioning("a calm piece", VAD(0.3, -0.5, 0.1))
    pc, pu = gen.prefixes(cond)
    opts = SamplingOptions(seed=7, guidance_scale=1.0)
    with_u = sample_tokens(gen.model, gen.tok, pc, pu, 4.0, opts)          # scale 1: the unconditional path is unused
    cond_only = sample_tokens(gen.model, gen.tok, pc, None, 4.0, opts)
    assert with_u == cond_only
    assert not torch.allclose(guided_logprobs(c, u, 3.0), torch.log_softmax(c, -1))


def test_seeded_generation_is_reproducible_and_seeds_differ(gen):
    cond = Conditioning("a lively dance", VAD(0.6, 0.7, 0.2))
    a = gen.generate(cond, 4.0, SamplingOptions(seed=1))
    b = gen.generate(cond, 4.0, SamplingOptions(seed=1))
    c = gen.generate(cond, 4.0, SamplingOptions(seed=2))
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_key_constraint_keeps_notes_in_the_header_key(gen, tok):
    from mu_llama.generate.processors import SCALES

    for seed in range(3):
        out = gen.generate(Conditioning("x"), 4.0, SamplingOptions(seed=seed))
        h = tok.parse_header(out.tokens)
        pcs = {(n.pitch - h.key_tonic) % 12 for n in out.piece.notes}
        assert pcs <= set(SCALES[h.mode]), (h, pcs)
    with pytest.raises(ConfigError, match="key_constraint"):
        SamplingOptions(key_constraint="chromatic")


def test_generated_sequences_are_well_formed_and_last_the_duration(gen, tok):
    out = gen.generate(Conditioning("x"), 6.0, SamplingOptions(seed=3, max_tokens=2000))
    ids = out.tokens
    assert ids[0] == tok.bos and ids[-1] == tok.eos
    assert [tok.vocab[i].split("_")[0] for i in ids[1:9]] == ["TS", "TEMPO", "PROG", "DYN", "REG", "DENS", "MODE", "KEY"]
    full = tok.decode(ids)                                # before cutting to the duration
    assert full.seconds >= 6.0 - 1e-6 or tok.beats_elapsed(ids, full.meter) * 60 / full.bpm >= 6.0 - 1e-6
    assert all(n.onset * 60 / out.piece.bpm < 6.0 for n in out.piece.notes)
    with pytest.raises(ConfigError):
        gen.generate(Conditioning("x"), 0.0)


def test_bad_sampling_options_are_rejected():
    for kw in ({"temperature": 0}, {"guidance_scale": -1}, {"top_k": -1}):
        with pytest.raises(ConfigError):
            SamplingOptions(**kw)


# ------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_mismatch(gen, tmp_path):
    save_generator(gen.model, tmp_path / "g")
    m2 = load_generator(tmp_path / "g")
    x = torch.randint(0, gen.model.config.vocab_size, (2, 10))
    pre = gen.model.prefix(None, torch.zeros(2, 3))
    torch.testing.assert_close(m2(x, m2.prefix(None, torch.zeros(2, 3))), gen.model(x, pre))
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    cfg["n_layers"] = 3
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        load_generator(tmp_path / "g")
    with pytest.raises(CheckpointError, match="not a generator checkpoint"):
        load_generator(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="divisible"):
        GeneratorConfig(d_model=30, n_heads=4)


def _tiny_dataset(tmp_path, tok, n=12):
    rng = random.Random(0)
    d = tmp_path / "data"
    d.mkdir()
    for split, count in (("train", n), ("heldout", 3)):
        with open(d / f"{split}.jsonl", "w") as f:
            for i in range(count):
                notes = [Note(j * 0.5, 0.5, 60 + rng.randrange(-7, 8), 80) for j in range(24)]
                p = Piece(notes, bpm=rng.choice([70, 120, 160]), program=0)
                f.write(json.dumps({"work_id": f"w{i}", "excerpt": 0, "tokens": tok.encode(p),
                                    "caption": f"caption {i % 4}",
                                    "vad": {"valence": 0.1, "arousal": -0.2, "dominance": 0.3}}) + "\n")
    return d


def test_training_resume_equals_uninterrupted(tmp_path, tok):
    from mu_llama.recipes.train_generator import GeneratorTrainConfig as TrainConfig
    from mu_llama.recipes.train_generator import train_generator as train

    d = _tiny_dataset(tmp_path, tok)
    common = dict(data=str(d), batch_size=4, seq_len=40, warmup=1, ckpt_every=2, eval_every=100,
                  model={"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "max_len": 40})
    emb = HashTextEmbedder()
    full = train(TrainConfig(out=str(tmp_path / "a"), steps=4, **common), embedder=emb, progress=False)
    train(TrainConfig(out=str(tmp_path / "b"), steps=4, stop_after=3, **common), embedder=emb, progress=False)
    resumed = train(TrainConfig(out=str(tmp_path / "b"), steps=4, **common), embedder=emb, progress=False)
    for (k, v), (_, w) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)


# --------------------------------------------------------------------------------------- MusicGen VAD conditioner


@pytest.fixture(scope="module")
def musicgen():
    pytest.importorskip("transformers")
    from mu_llama.generate.musicgen import tiny_musicgen

    return tiny_musicgen()


def test_musicgen_zero_init_vad_prefix_leaves_outputs_unchanged(musicgen):
    from mu_llama.generate.musicgen import attach_vad_conditioner, forward_with_vad

    m = musicgen
    ids, am = torch.randint(0, 100, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    dec = torch.randint(0, 32, (4, 3))
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=am, decoder_input_ids=dec).logits
        cond = attach_vad_conditioner(m)
        vads = [VAD(0.9, -0.5, 0.2), VAD(-1, 1, -1)]
        out = forward_with_vad(m, vads, input_ids=ids, attention_mask=am, decoder_input_ids=dec).logits
        assert torch.equal(out, ref)                                   # zero gates: exactly the base model
        cond.gates.fill_(1.0)
        moved = forward_with_vad(m, vads, input_ids=ids, attention_mask=am, decoder_input_ids=dec).logits
        other = forward_with_vad(m, [VAD(0, 0, 0)] * 2, input_ids=ids, attention_mask=am, decoder_input_ids=dec).logits
        cond.gates.zero_()
    assert not torch.equal(moved, ref) and not torch.equal(moved, other)
    with pytest.raises(ConfigError):
        attach_vad_conditioner(m)


def _musicgen_logits(m, vad=None, **kw) -> torch.Tensor:
    """Greedy generation of a tiny MusicGen (VAD prefix bound if it has a conditioner) -> logits (steps, B*K, V)."""
    from mu_llama.generate.musicgen import generate_with_vad

    ids = torch.randint(1, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    am = torch.ones_like(ids)
    am[1, 3:] = 0                                                     # padded text: the cross-attention mask matters
    kw = dict(input_ids=ids, attention_mask=am, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
              output_logits=True, **kw)
    with torch.no_grad():
        out = generate_with_vad(m, vad, **kw) if hasattr(m, "vad_conditioner") else m.generate(**kw)
    return torch.stack(out.logits)


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_musicgen_vad_hook_keeps_the_kv_cache_and_zero_gates_keep_the_base_model(guidance):
    """The hook never touches the attention's arguments, so the decoder's KV cache (an argument renamed across
    transformers versions) reaches MusicGen intact: generation with cache equals generation without, gates open or
    shut; with zero gates the logits are exactly the unconditioned model's."""
    from mu_llama.generate.musicgen import attach_vad_conditioner, tiny_musicgen

    m = tiny_musicgen()
    vads = [VAD(0.9, -0.5, 0.2), VAD(-1, 1, -1)]
    base = {c: _musicgen_logits(m, guidance_scale=guidance, use_cache=c) for c in (True, False)}
    torch.testing.assert_close(base[True], base[False], atol=1e-5, rtol=0)
    keys = set(m.state_dict())
    cond = attach_vad_conditioner(m)
    assert set(m.state_dict()) - keys == {f"vad_conditioner.{k}" for k in cond.state_dict()}   # nothing replaced
    for c in (True, False):
        assert torch.equal(_musicgen_logits(m, vads, guidance_scale=guidance, use_cache=c), base[c])
    with torch.no_grad():
        cond.gates.fill_(1.0)
    cached = _musicgen_logits(m, vads, guidance_scale=guidance, use_cache=True)
    torch.testing.assert_close(cached, _musicgen_logits(m, vads, guidance_scale=guidance, use_cache=False),
                               atol=1e-5, rtol=0)
    assert (cached - base[True]).abs().max() > 1e-4                   # the gates do move the output ...
    other = _musicgen_logits(m, [VAD(0, 0, 0)] * 2, guidance_scale=guidance, use_cache=True)
    assert (cached - other).abs().max() > 1e-4                        # ... and the VAD decides how


def test_musicgen_vad_hook_fails_loudly_on_a_changed_attention():
    import copy

    import transformers

    from mu_llama.errors import DependencyError
    from mu_llama.generate.musicgen import GatedVADCrossAttention, attach_vad_conditioner, tiny_musicgen

    version = rf"transformers {transformers.__version__}: "
    m = tiny_musicgen()
    del m.decoder.model.decoder.layers[1].encoder_attn.k_proj         # a projection renamed upstream
    with pytest.raises(DependencyError, match=version + "decoder layer 1 has no encoder_attn with q_proj, k_proj"):
        attach_vad_conditioner(m)

    m = tiny_musicgen()
    cond = attach_vad_conditioner(m)
    attn = m.decoder.model.decoder.layers[0].encoder_attn
    hook, q = GatedVADCrossAttention(cond, 0), torch.zeros(2, 3, 32)
    with cond.bind(None, 2):
        with pytest.raises(DependencyError, match=r"without the query states .* keyword arguments \['cache'\]"):
            hook(attn, (), {"cache": None}, (q, None))                 # query states passed under a new name
        with pytest.raises(DependencyError, match=r"returned Tensor, not a tuple"):
            hook(attn, (q,), {}, q)                                    # a bare tensor instead of (output, weights)
        assert hook(attn, (q,), {}, (q, None))[0].shape == q.shape

    twin = copy.deepcopy(m)                                            # the hooks follow the copy's conditioner
    with torch.no_grad():
        twin.vad_conditioner.gates.fill_(1.0)
    assert (_musicgen_logits(twin, VAD(0.5, 0.5, 0.5)) - _musicgen_logits(m, VAD(0.5, 0.5, 0.5))).abs().max() > 1e-4


def test_musicgen_lora_step_trains_only_lora_and_conditioner(musicgen):
    from mu_llama.generate.musicgen import (
        LoraRecipe,
        add_lora,
        generate_with_vad,
        lora_step,
        trainable_state_dict,
    )

    m = musicgen
    ids, am = torch.randint(0, 100, (1, 5)), torch.ones(1, 5, dtype=torch.long)
    g = generate_with_vad(m, VAD(0.5, 0, 0), input_ids=ids, attention_mask=am, max_new_tokens=4, do_sample=False,
                          guidance_scale=3.0)                        # CFG doubles the batch: null prefix for the half
    assert g.ndim == 3

    class Proc:                                                      # a stand-in tokenizer: words -> ids
        def __call__(self, text, padding, return_tensors):
            rows = [[(sum(map(ord, w)) % 97) + 1 for w in t.split()][:6] for t in text]
            x = torch.tensor([r + [0] * (6 - len(r)) for r in rows])
            return {"input_ids": x, "attention_mask": (x > 0).long()}

    recipe = LoraRecipe(rank=2, batch_size=2, p_drop_text=0.0, p_drop_vad=0.0)
    add_lora(m, recipe)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    rng = np.random.default_rng(0)
    rows = [{"caption": "calm piano", "vad": VAD(0.5, -0.5, 0), "audio": rng.standard_normal(8000) * 0.1},
            {"caption": "loud brass", "vad": VAD(0.2, 0.8, 0.8), "audio": rng.standard_normal(8000) * 0.1}]
    loss = lora_step(m, Proc(), rows, recipe, opt, torch.Generator().manual_seed(0))
    assert np.isfinite(loss)
    changed = [k for k, v in m.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all("lora_" in k or k.startswith("vad_conditioner.") for k in changed)
    assert set(trainable_state_dict(m)) >= set(changed)


# --------------------------------------------------------------------------------------------------------- CLI


def test_cli_generate_writes_wav_and_midi_reproducibly(tmp_path, gen, monkeypatch, capsys):
    import soundfile as sf

    from mu_llama.cli.main import main
    from mu_llama.generate import api

    ck = tmp_path / "ck"
    save_generator(gen.model, ck)
    monkeypatch.setattr(api.EmbeddedGenerator, "embedder", property(lambda self: HashTextEmbedder()))
    args = ["generate", "--text", "a sad song", "--valence", "-0.5", "--duration", "3", "--checkpoint", str(ck),
            "--seed", "5", "--json"]
    assert main(args + ["--out", str(tmp_path / "a.wav")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.wav")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["vad"]["valence"] == -0.5 and info["vad"]["arousal"] == 0.0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    wav, sr = sf.read(tmp_path / "a.wav")
    assert abs(len(wav) / sr - 3.0) < 0.01
    assert main(["generate", "--valence", "2", "--out", str(tmp_path / "c.wav"), "--checkpoint", str(ck)]) == 2
    assert "valence" in capsys.readouterr().err
    assert main(args + ["--vad-control", "rules", "--out", str(tmp_path / "d.wav")]) == 2   # validated: the choices
    assert "vad_control" in capsys.readouterr().err
    assert main(args + ["--vad-control", "priors", "--out", str(tmp_path / "e.wav")]) == 0
    for flag, bad in (("--mode-draw", "coin"), ("--text-facts", "ignore")):
        assert main(args + [flag, bad, "--out", str(tmp_path / "f.wav")]) == 2
        assert flag[2:].replace("-", "_") in capsys.readouterr().err
    assert main(args + ["--mode-draw", "valence", "--text-facts", "none", "--out", str(tmp_path / "g.wav")]) == 0


def test_cli_from_audio_shifts_the_estimated_vad_and_no_performance_plays_the_score(tmp_path, gen, monkeypatch, capsys):
    import mido

    from mu_llama.cli.main import main
    from mu_llama.emotion.audio import vad_from_audio
    from mu_llama.generate import api

    ck = tmp_path / "ck"
    save_generator(gen.model, ck)
    monkeypatch.setattr(api.EmbeddedGenerator, "embedder", property(lambda self: HashTextEmbedder()))
    clip = min((Path(__file__).parents[1] / "mu_llama" / "assets" / "examples").glob("*.flac"))
    # vad control "priors": the score does not depend on the performance layer ("plan" writes the dynamic level for
    # the played loudness, so with it the two scores may differ by design)
    base = ["generate", "--from-audio", str(clip), "--caption-model", "none", "--shift-valence", "0.3",
            "--duration", "2", "--checkpoint", str(ck), "--json", "--vad-control", "priors"]
    assert main(base + ["--out", str(tmp_path / "p.wav")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    est = vad_from_audio(clip)
    assert info["vad"]["valence"] == pytest.approx(max(-1.0, min(1.0, est.valence + 0.3)), abs=1e-3)  # JSON rounds to 4 places
    assert info["vad"]["arousal"] == pytest.approx(est.arousal, abs=1e-3)
    assert main(base + ["--no-performance", "--out", str(tmp_path / "s.wav")]) == 0
    vel = lambda p: [m.velocity for m in mido.MidiFile(p).merged_track if m.type == "note_on" and m.velocity]
    assert len(vel(tmp_path / "p.mid")) == len(vel(tmp_path / "s.mid"))  # same score, seeded
    assert vel(tmp_path / "p.mid") != vel(tmp_path / "s.mid")  # the performance layer changes the dynamics only


def test_cli_generate_refuses_bad_numbers_and_outputs_before_any_work(tmp_path, monkeypatch, capsys):
    """NaN shifts once became -1.0, NaN temperature / guidance and a 2**70 seed crashed, 1e-9 s wrote an empty WAV,
    and a bad --out failed only after the music was made. Each is now one line, exit 2, before the generator loads."""
    from mu_llama.cli.main import main
    from mu_llama.generate import api

    def never(*a, **k):
        raise AssertionError("the generator was loaded before the input was checked")

    monkeypatch.setattr(api.EmbeddedGenerator, "load", classmethod(never))
    monkeypatch.setattr(api, "vad_and_caption_from_audio", never)
    ok = str(tmp_path / "x.wav")
    (tmp_path / "adir.wav").mkdir()
    cases = [
        (["--from-audio", "a.wav", "--shift-valence", "nan", "--out", ok], "shift of valence"),
        (["--temperature", "nan", "--out", ok], "temperature"),
        (["--guidance-scale", "inf", "--out", ok], "guidance_scale"),
        (["--seed", str(2**70), "--out", ok], "seed"),
        (["--duration", "1e-9", "--out", ok], "cannot hold a note"),
        (["--duration", "nan", "--out", ok], "duration"),
        (["--out", str(tmp_path / "x.txt")], "unknown audio suffix"),
        (["--out", str(tmp_path / "adir.wav")], "is a directory"),
        (["--valence", "nan", "--out", ok], "valence"),
    ]
    for extra, words in cases:
        assert main(["generate", "--text", "a song", *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert words in err and "Traceback" not in err and len(err.splitlines()) == 1, (extra, err)
