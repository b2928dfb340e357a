"""Encoder pretraining recipe: targets agree with the score's facts, training reduces loss, resume == uninterrupted,
and the exported encoder loads through mu_llama.encoders with the same hidden states.

Everything runs on a tiny corpus written here (sine-tone audio for hand-made MIDI performances) and the "tiny"
encoder architecture; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from mu_llama.corpus.perf import Note, Performance, Track, read_midi, write_midi
from mu_llama.encoders import load_encoder, load_mert
from mu_llama.errors import ConfigError
from mu_llama.facts import FAMILIES, FactSheet
from mu_llama.recipes.pretrain_encoder import (PretrainConfig, PretrainModel, arch_config, losses, make_batch,
                                               pretrain_encoder, span_mask)
from mu_llama.recipes.targets import (CLIP_HEADS, N_MELS, build_cache, clip_targets, frame_targets, log_mel,
                                      num_frames, onset_frame, scan_corpus)

SR = 24000


def performance(seed: int, seconds: float = 1.6, drums: bool = True) -> Performance:
    """Two pitched parts (melody + held bass) and optional drum hits, note times on a 10-ms grid."""
    rng = np.random.default_rng(seed)
    t, mel = 0.0, []
    while t < seconds - 0.3:
        d = float(rng.choice([0.15, 0.2, 0.3]))
        mel.append(Note(round(t, 2), round(t + d, 2), int(rng.integers(60, 80)), 80))
        t += d
    bass = [Note(0.0, round(seconds / 2, 2), 40 + seed % 5, 70), Note(round(seconds / 2, 2), seconds - 0.2, 43, 70)]
    tracks = [Track("melody", [0, 40, 73, 56][seed % 4], False, mel), Track("bass", 33, False, bass)]
    if drums:
        tracks.append(Track("drums", 0, True, [Note(round(x, 2), round(x + 0.1, 2), 36, 100)
                                               for x in np.arange(0.0, seconds - 0.3, 0.5)]))
    return Performance(tracks, seconds, 100.0 + 20 * (seed % 3), (3, 4) if seed % 2 else (4, 4))


def synth(perf: Performance) -> np.ndarray:
    """Sine tones for pitched notes, noise bursts for drums: enough structure for targets to be learnable."""
    n = int(round(perf.duration * SR))
    y = np.zeros(n, np.float32)
    rng = np.random.default_rng(0)
    for tr in perf.tracks:
        for nt in tr.notes:
            a, b = int(nt.start * SR), min(n, int(nt.end * SR))
            t = np.arange(b - a) / SR
            y[a:b] += (0.1 * rng.standard_normal(b - a) * np.exp(-30 * t) if tr.is_drum
                       else 0.15 * np.sin(2 * np.pi * 440 * 2 ** ((nt.pitch - 69) / 12) * t))
    return np.clip(y, -1, 1).astype(np.float32)


def facts_for(perf: Performance, seed: int) -> FactSheet:
    fams = list(dict.fromkeys(["keyboard", "strings", "woodwind", "brass"][seed % 4:seed % 4 + 1] + ["bass"]
                              + (["drums"] if any(t.is_drum for t in perf.tracks) else [])))
    return FactSheet(instruments=["x"], families=fams, key_tonic="C", mode=("major", "minor")[seed % 2],
                     meter=f"{perf.time_signature[0]}/{perf.time_signature[1]}", tempo_bpm=perf.tempo_bpm,
                     texture="homophonic", voices=2, register="middle", note_density=4.0, dynamics="medium",
                     composer="traditional", era="traditional", genre="folk song", style=("rock", "folk")[seed % 2],
                     drums=any(t.is_drum for t in perf.tracks), work_id=f"w{seed}")


def write_corpus(root: Path, splits: list[str]) -> Path:
    """A corpus folder in the builder's layout: clips/<id[:3]>/<id>.{flac,mid,json}."""
    for k, split in enumerate(splits):
        cid = f"r{k:05d}"
        d = root / "clips" / cid[:3]
        d.mkdir(parents=True, exist_ok=True)
        perf = performance(k, seconds=1.6 if k % 3 else 0.9, drums=k % 2 == 0)  # some clips shorter than a crop
        write_midi(perf, d / f"{cid}.mid")
        audio = synth(perf)
        sf.write(str(d / f"{cid}.flac"), audio, SR, format="FLAC", subtype="PCM_16")
        rec = {"id": cid, "split": split, "audio": f"clips/{cid[:3]}/{cid}.flac", "midi": f"clips/{cid[:3]}/{cid}.mid",
               "duration": len(audio) / SR, "facts": facts_for(perf, k).to_dict()}
        (d / f"{cid}.json").write_text(json.dumps(rec))
    return root


def tiny_config(corpus: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(corpus=str(corpus), out=str(out), arch="tiny", steps=6, batch_size=2, crop_seconds=1.0, warmup=2,
                lr=2e-3, clusters=4, kmeans_frames=400, kmeans_iters=5, checkpoint_every=3, val_clips=4,
                val_crop_seconds=1.0, progress=False)
    return PretrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), ["train"] * 6 + ["validation"] * 2 + ["test"])


# ------------------------------------------------------------------------------------------------ targets


def test_targets_from_midi_agree_with_the_facts_the_builder_measures(tmp_path):
    from mu_llama.corpus.analyze import SourceMeta, fact_sheet

    perf = performance(3, seconds=2.0, drums=True)
    facts = fact_sheet(perf, SourceMeta("traditional", "traditional", "folk song", "w3", "essen"), style="rock")
    write_midi(perf, tmp_path / "c.mid")
    back = read_midi(tmp_path / "c.mid", perf.duration)
    T = num_frames(int(perf.duration * SR))
    chroma, onsets = frame_targets(back, T)
    pitched = [n for t in perf.pitched for n in t.notes]
    # every sounding pitch class, and only those, appears; each note is on at the frame after its onset frame
    assert set(np.flatnonzero(chroma.any(0))) == {n.pitch % 12 for n in pitched}

    def frame_of(n):  # nearest frame centre, clamped to the grid (a note at 0 s is nearer to the absent frame -1)
        return min(max(onset_frame(n.start), 0), T - 1)

    for n in pitched:
        assert chroma[frame_of(n) + 1, n.pitch % 12] == 1
    assert set(np.flatnonzero(onsets[:, 0])) == {frame_of(n) for n in pitched}
    assert set(np.flatnonzero(onsets[:, 1])) == {frame_of(n) for t in perf.tracks if t.is_drum for n in t.notes}
    assert bool(onsets[:, 1].any()) == facts.drums
    # a held note lights its pitch class for its whole duration (75 frames per second, +-1 frame)
    held = perf.tracks[1].notes[0]
    lo = onset_frame(held.start) + 1
    assert chroma[lo: lo + round((held.end - held.start) * 75) - 1, held.pitch % 12].all()
    # the MIDI round trip (tick quantisation) moves at most one frame per note boundary
    direct, _ = frame_targets(perf, T)
    assert int((direct != chroma).sum()) <= 2 * len(pitched)
    # clip targets decode back to the fact sheet
    single, fams = clip_targets(facts)
    decoded = dict(zip(CLIP_HEADS, (v[i] for v, i in zip(CLIP_HEADS.values(), single))))
    assert decoded["mode"] == facts.mode and decoded["meter"] == facts.meter == "3/4"
    assert decoded["tempo_class"] == facts.tempo_class and decoded["texture"] == facts.texture
    assert decoded["style"] == "rock" and decoded["drums"] == "yes" and decoded["key_tonic"] == facts.key_tonic
    assert [FAMILIES[i] for i in np.flatnonzero(fams)] == sorted(facts.families, key=FAMILIES.index)


def test_log_mel_is_on_the_encoder_frame_grid():
    t = np.arange(SR) / SR
    low, high = log_mel(np.sin(2 * np.pi * 220 * t).astype(np.float32)), log_mel(np.sin(2 * np.pi * 3520 * t).astype(np.float32))
    assert low.shape == (num_frames(SR), N_MELS) == (74, N_MELS)
    assert high[10:60].mean(0).argmax() > low[10:60].mean(0).argmax() + 10
    # silence before a tone stays at the floor until the window reaches the tone
    x = np.zeros(SR, np.float32)
    x[SR // 2:] = np.sin(2 * np.pi * 440 * t[SR // 2:])
    m = log_mel(x)
    assert m[:30].max() < -11 and m[45:].max() > 0


def test_snapshot_never_includes_the_test_split(corpus, tmp_path):
    recs = scan_corpus(corpus)
    assert {r.split for r in recs} == {"train", "validation"} and len(recs) == 8
    cache = build_cache(recs, tmp_path / "cache")
    assert cache.ids == [r.clip_id for r in recs]
    assert int(cache.frames.sum()) == len(cache.chroma) == len(cache.mel)
    assert build_cache(recs, tmp_path / "cache").ids == cache.ids  # reused, not rebuilt


def test_span_mask_and_config_validation():
    m = span_mask(np.random.default_rng(0), 100, 0.05, 8)
    assert m.dtype == bool and 0 < m.sum() <= 100
    assert span_mask(np.random.default_rng(1), 10, 0.0, 4).sum() == 4  # at least one span
    with pytest.raises(ConfigError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ConfigError, match="valid choices"):
        PretrainConfig(arch="nope")
    with pytest.raises(ConfigError, match="loss weight"):
        PretrainConfig(loss_weights={"clusterz": 1.0})


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_one_training_step_reduces_loss_on_a_fixed_batch(corpus, tmp_path, amp):
    cfg = tiny_config(corpus, tmp_path, dropout=0.0, lr=1e-3)
    cache = build_cache(scan_corpus(corpus), tmp_path / "cache")
    T = 75
    stats = {"mean": cache.mel[:].astype(np.float32).mean(0), "std": np.ones(N_MELS, np.float32),
             "labels": np.arange(len(cache.mel)) % 4}
    masks = np.stack([span_mask(np.random.default_rng(i), T, 0.1, 5) for i in range(4)])
    batch = make_batch(cache, np.arange(4), [0, 3, 0, 1], T, stats, masks)
    torch.manual_seed(0)
    model = PretrainModel(arch_config("tiny"), dropout=0.0, clusters=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        before, parts = losses(model, batch, cfg)
    assert set(parts) == {"cluster", "mel", "chroma", "onset", "clip"}
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        after, _ = losses(model, batch, cfg)
    assert float(after) < float(before.detach())


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    (ckpt,) = sorted((run / "checkpoints").glob("step_000006"))
    return {**load_file(str(ckpt / "model.safetensors")),
            **{f"opt.{k}": v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()}}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    full = tiny_config(corpus, base / "full", export=str(base / "export32"), export_dtype="float32")
    pretrain_encoder(full)
    # the same run, interrupted after step 4 (not a checkpoint multiple), then resumed in a new call
    split = tiny_config(corpus, base / "split", stop_after=4, export=str(base / "early"), export_dtype="float32")
    pretrain_encoder(split)
    assert not (base / "split" / "checkpoints" / "step_000006").exists()
    pretrain_encoder(tiny_config(corpus, base / "split"))
    return base, full


def test_resume_equals_uninterrupted(runs):
    base, _ = runs
    a, b = _final_state(base / "full"), _final_state(base / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = json.loads((base / "full" / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    hb = json.loads((base / "split" / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert [h["loss"] for h in ha["history"]] == [h["loss"] for h in hb["history"]]
    assert ha["evals"] == hb["evals"]
    assert (base / "full" / "loss_curve.png").stat().st_size > 0


def test_stopping_early_exports_the_best_so_far(runs):
    base, _ = runs
    info = json.loads((base / "early" / "training.json").read_text())
    assert info["best"]["step"] == 3  # the only validation before step 4
    early = load_file(str(base / "early" / "model.safetensors"))
    final = load_file(str(base / "export32" / "model.safetensors"))  # the uninterrupted run's export (step 6 best)
    assert early.keys() == final.keys() and all(v.dtype == torch.float32 for v in early.values())


def test_cli_flags_cover_the_config():
    import argparse

    from mu_llama.cli import pretrain_encoder as verb

    sub = argparse.ArgumentParser().add_subparsers()
    p = verb.add_parser(sub)
    args = p.parse_args(["--steps", "7", "--distill", "--stop-after", "3", "--amp", "bf16"])
    assert (args.steps, args.distill, args.stop_after, args.amp, args.lr) == (7, True, 3, "bf16", 5e-4)


def test_resume_refuses_other_settings(runs, corpus):
    base, _ = runs
    with pytest.raises(ConfigError, match="lr"):
        pretrain_encoder(tiny_config(corpus, base / "full", lr=1e-2))


def test_exported_encoder_loads_through_load_mert_with_identical_hidden_states(runs, tmp_path):
    from mu_llama.recipes.pretrain_encoder import export_encoder

    base, cfg = runs
    wave = torch.from_numpy(synth(performance(7, seconds=1.2)))[None]
    # the training-side model with the exported (best) weights
    model = PretrainModel(arch_config("tiny"), dropout=cfg.dropout, clusters=4).eval()
    model.hubert.load_state_dict(load_mert(base / "full" / "best").model.state_dict())
    with torch.no_grad():
        ref = model.encode(wave)
    for enc in (load_mert(base / "export32"), load_encoder(str(base / "export32"))):
        out = enc(wave)
        assert out.hidden_states.shape == ref.shape == (3, 1, num_frames(wave.shape[1]), 32)
        torch.testing.assert_close(out.hidden_states, ref, rtol=0, atol=1e-6)
    # float16 export: same as the training model with its weights rounded to float16
    export_encoder(model, tmp_path / "enc16", "float16")
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "enc16" / "model.safetensors")).values())
    model.hubert.half().float()
    with torch.no_grad():
        ref16 = model.encode(wave)
    torch.testing.assert_close(load_mert(tmp_path / "enc16")(wave).hidden_states, ref16, rtol=0, atol=1e-6)
    info = json.loads((base / "export32" / "training.json").read_text())
    assert info["train_clips"] == 6 and info["validation_clips"] == 2


# ------------------------------------------------------------------------------------------------ probe and teacher


def test_linear_probe_fits_separable_data_and_scores_encoders(corpus, tmp_path):
    from mu_llama.encoders import build_random
    from mu_llama.recipes.probe import _fit_softmax, linear_probe, majority_baseline

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 5, generator=g, dtype=torch.float64) + 4.0 * torch.nn.functional.one_hot(y, 5).double()
    assert bool((_fit_softmax(x, y, 3, 1e-4)(x).argmax(1) == y).all())
    cache = build_cache(scan_corpus(corpus), tmp_path / "cache")
    train, val = cache.indices("train"), cache.indices("validation")
    scores = linear_probe(build_random("tiny"), cache, train, val, seconds=1.0)
    assert set(scores) == set(CLIP_HEADS) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert set(majority_baseline(cache, train, val)) == set(CLIP_HEADS)


musicnn_installed = pytest.mark.skipif(__import__("importlib.util").util.find_spec("musicnn") is None,
                                       reason="musicnn (pip install --no-deps musicnn) not installed")
EXAMPLES = Path(__file__).resolve().parents[1] / "mu_llama" / "assets" / "examples"


@musicnn_installed
def test_musicnn_checkpoint_reads_without_tensorflow_and_tags_real_recordings():
    from mu_llama.audio import load_audio
    from mu_llama.recipes.musicnn import MTT_TAGS, clip_tags, find_checkpoint, load_musicnn, read_tf_checkpoint

    tensors = read_tf_checkpoint(find_checkpoint())
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204) and tensors["dense_1/kernel"].shape == (200, 50)
    model = load_musicnn()
    for name, tag in (("essen_tanhuser_flute.mp3", "flute"), ("mozart_k545_piano.flac", "piano")):
        if not (EXAMPLES / name).is_file():
            pytest.skip(f"example {name} missing")
        probs = clip_tags(model, load_audio(EXAMPLES / name, SR))
        assert probs.shape == (50,) and MTT_TAGS[int(probs.argmax())] == tag
