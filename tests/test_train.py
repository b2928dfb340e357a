"""`mu-llama train` recipe on tiny random parts (random:tiny encoder + random:tiny-llama): one step lowers the loss,
stages freeze what they must, resume == uninterrupted, the feature cache equals recomputation and resumes, checkpoints
hold only trainable keys, YAML < flags. CPU, no downloads, a tiny corpus written in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from mu_llama.errors import ConfigError
from mu_llama.model import MuLlama
from mu_llama.recipes.features import FeatureCache, FeatureSpec, open_cache
from mu_llama.recipes.train import (
    ExampleStream,
    batch_loss_sum,
    build_model,
    collate,
    make_optimizer,
    named_parameters,
    read_clips,
    stage_parameters,
    train,
)
from mu_llama.recipes.train_config import TrainConfig, resolve_config

SR = 24000
TINY_MODEL = {"encoder": "random:tiny", "llm": "random:tiny-llama", "injection_layers": 2, "bridge_blocks": 1,
              "bridge_hidden": 32, "adapter_mode": "clip",
              "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.1, "targets": ["q_proj", "v_proj"], "mlp": False,
                       "bias_targets": ["q_proj"], "norm_tuning": True}}
WORDS = ["slow piano", "fast organ", "soft strings", "loud brass"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus folder as the builder lays it out: manifests/<split>.jsonl + audio files."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "manifests").mkdir()
    (root / "clips").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("validation", 3)):
        rows = []
        for i in range(n):
            cid = f"{split[0]}{i:03d}"
            w = WORDS[i % 4]
            t = np.arange(int((0.3 + 0.05 * i) * SR)) / SR
            wave = (0.3 * np.sin(2 * np.pi * (110 * (1 + i % 4)) * t) + 0.02 * rng.standard_normal(len(t)))
            sf.write(root / "clips" / f"{cid}.flac", wave.astype(np.float32), SR)
            rows.append({"id": cid, "split": split, "audio": f"clips/{cid}.flac", "facts": None,
                         "captions": [f"A {w} tune.", f"{w} music."],
                         "qa": [{"question": "Describe the audio", "answer": f"A {w} tune.", "kind": "description"},
                                {"question": "How fast?", "answer": w.split()[0], "kind": "tempo"}]})
        (root / "manifests" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def tiny_config(corpus, out, **kw) -> TrainConfig:
    base = dict(corpus=str(corpus), out=str(out), model=json.loads(json.dumps(TINY_MODEL)),
                feature_cache=str(corpus / "features"), stage1_steps=2, stage2_steps=2, batch_size=2, grad_accum=2,
                lr1=1e-2, lr2=1e-2, warmup=1, max_answer_tokens=24, checkpoint_every=1, val_examples=2,
                val_generate=0, gen_max_new_tokens=4, progress=False, shard_size=4, encode_batch_size=3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def setup(corpus):
    """(config, model, features) with the feature cache filled for every clip."""
    config = tiny_config(corpus, corpus / "runs" / "x")
    torch.manual_seed(0)
    model = build_model(config)
    clips = read_clips(corpus, "train") + read_clips(corpus, "validation")
    cache = open_cache(model, config.feature_dir)
    cache.build(model, [(c.id, c.audio) for c in clips], shard_size=4, batch_size=3, progress=False)
    return config, model, cache.load([c.id for c in clips])


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _step(model, config, features, stage: int) -> tuple[float, float]:
    """One optimizer step of `stage` on a fixed batch; (loss before, loss after)."""
    clips = read_clips(config.corpus, "train")
    batch = collate(model, ExampleStream(clips, 0, 0.5, 0.2).take(0, 4), features, config.max_answer_tokens)
    params = stage_parameters(model, stage)
    opt = make_optimizer(config, params)
    for g in opt.param_groups:
        g["lr"] = 1e-2
    model.eval()  # no dropout: before/after comparable
    before = batch_loss_sum(model, batch) / batch.tokens
    before.backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after = batch_loss_sum(model, batch) / batch.tokens
    return float(before), float(after)


# ------------------------------------------------------------------------------------------------ steps and stages
def test_stage1_step_reduces_loss_and_leaves_llm_frozen(setup):
    config, model, features = setup
    snap = _snapshot(model)
    before, after = _step(model, config, features, 1)
    assert after < before
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snap[n])}
    assert changed and all(n.startswith(("music_adapter.", "injection.")) for n in changed)
    assert any(n == "injection.gates" for n in changed)  # zero gates open first


def test_stage2_step_reduces_loss_and_leaves_adapter_frozen(setup):
    config, model, features = setup
    snap = _snapshot(model)
    before, after = _step(model, config, features, 2)
    assert after < before
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snap[n])}
    assert changed and not any(n.startswith(("music_adapter.", "injection.", "encoder.")) for n in changed)
    assert all(".lora_" in n or n.endswith((".bias",)) or "norm" in n for n in changed)
    assert not any(n.endswith(".weight") and ".lora_" not in n and "norm" not in n for n in changed)


def test_trainable_sets_per_stage(setup):
    _, model, _ = setup
    s1, s2 = set(stage_parameters(model, 1)), set(stage_parameters(model, 2))
    assert s1 == {n for n in named_parameters(model) if n.startswith(("music_adapter.", "injection."))}
    assert s2 and all(n.startswith("llm.") for n in s2) and not s1 & s2
    assert {n for n in s2 if ".lora_" not in n} == {n for n in s2 if n.endswith(".bias") or "norm" in n}


# ------------------------------------------------------------------------------------------------ resume
def test_resume_equals_uninterrupted(corpus, tmp_path):
    ref = train(tiny_config(corpus, tmp_path / "a"))
    out_b = tmp_path / "b"
    stop1 = train(tiny_config(corpus, out_b, stop_after=1))  # inside stage 1
    assert stop1.name == "step-000001" and not (out_b / "final").exists()
    train(tiny_config(corpus, out_b, stop_after=3))  # resumes, crosses into stage 2, stops inside it
    got = train(tiny_config(corpus, out_b))
    for name in ("adapter.safetensors", "adapter_model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(got / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    log = [json.loads(x) for x in (out_b / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r and "eval" not in r] == [1, 2, 3, 4]
    assert (tmp_path / "a" / "curves.png").is_file()
    with pytest.raises(ConfigError, match="lr1"):
        train(tiny_config(corpus, out_b, lr1=5e-3))  # same folder, other weights-relevant options


def test_checkpoint_holds_only_trainable_keys_and_loads(corpus, tmp_path):
    final = train(tiny_config(corpus, tmp_path / "r", stage1_steps=1, stage2_steps=1, val_generate=2))
    ckpt = tmp_path / "r" / "checkpoints" / "step-000002"
    model = MuLlama.from_pretrained(final)
    trainable = model.trainable_state()
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    assert set(adapter) == set(trainable)
    assert not any(k.endswith(("q_proj.weight", "embed_tokens.weight", "lm_head.weight")) for k in adapter)
    assert all(k.startswith(("music_adapter.", "injection.", "llm.")) for k in adapter)
    lora = load_file(str(ckpt / "adapter_model.safetensors"))
    assert lora and all("lora_" in k for k in lora)
    opt = load_file(str(ckpt / "optimizer.safetensors"))
    names = set(named_parameters(model))
    assert {k.split("/")[0] for k in opt} <= names
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["stage"] == 2 and "torch" in state["rng"]
    assert not list(ckpt.glob("*.pt")) and not list(ckpt.glob("*.bin"))
    # the final folder is a model folder with the trained values
    for k, v in load_file(str(final / "adapter.safetensors")).items():
        torch.testing.assert_close(trainable[k].float(), v)
    ev = json.loads((tmp_path / "r" / "evals" / "step-000002.json").read_text())
    assert ev["val_loss"] > 0 and "caption_bleu_4" in ev


# ------------------------------------------------------------------------------------------------ feature cache
def test_feature_cache_hit_equals_recompute(setup, corpus):
    from mu_llama.audio import load_audio

    config, model, features = setup
    cache = open_cache(model, config.feature_dir)
    clips = read_clips(corpus, "train")
    assert cache.build(model, [(c.id, c.audio) for c in clips], progress=False) == 0  # all hits
    for c in clips[:4]:
        fresh = model.encode_audio([load_audio(c.audio, SR)])
        torch.testing.assert_close(features[c.id].sums, fresh.sums, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(features[c.id].counts, fresh.counts)
    assert features[clips[0].id].sums.shape == (1, 1, model.encoder.num_layers, model.encoder.hidden_size)
    spec = FeatureSpec.for_model(model)
    other = FeatureSpec(**{**spec.__dict__, "mode": "time", "window_frames": 10, "seconds_per_window": 10 / 75})
    assert other.key != spec.key


def test_feature_cache_resumes_after_interruption(setup, corpus, tmp_path):
    from mu_llama.audio import load_audio

    _, model, features = setup
    clips = [(c.id, c.audio) for c in read_clips(corpus, "train")]
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return load_audio(path, SR)

    cache = FeatureCache(tmp_path, FeatureSpec.for_model(model))
    with pytest.raises(KeyboardInterrupt):
        cache.build(model, clips, batch_size=2, shard_size=4, load=flaky, progress=False)
    assert len(cache.cached_ids()) == 4  # the first shard survived
    assert cache.build(model, clips, batch_size=2, shard_size=4, progress=False) == len(clips) - 4
    got = cache.load()
    for cid, _ in clips:
        torch.testing.assert_close(got[cid].sums, features[cid].sums, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ config
def test_yaml_then_flags_override(tmp_path):
    from mu_llama.cli.main import build_parser
    from mu_llama.cli.train import resolve_from_args

    y = tmp_path / "c.yaml"
    y.write_text("lr1: 0.003\nstage1_steps: 7\nmodel:\n  injection_layers: 4\n  llm: random:tiny-llama\n")
    cfg = resolve_config(y)
    assert (cfg.lr1, cfg.stage1_steps, cfg.model["injection_layers"], cfg.model["bridge_blocks"]) == (0.003, 7, 4, 2)
    args = build_parser().parse_args(["train", "--config", str(y), "--stage1-steps", "9", "--set",
                                      "model.injection_layers=6", "--set", "model.lora.rank=4", "--llm", "x/y"])
    cfg = resolve_from_args(args)
    assert (cfg.lr1, cfg.stage1_steps, cfg.model["injection_layers"], cfg.model["lora"]["rank"]) == (0.003, 9, 6, 4)
    assert cfg.model["llm"] == "x/y" and cfg.model["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_config_validation():
    with pytest.raises(ConfigError, match="bf16, none|auto, none, bf16"):
        TrainConfig(amp="fp8")
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError, match="adapter_mode"):
        TrainConfig(model={**TINY_MODEL, "adapter_mode": "frames"})
    with pytest.raises(ConfigError, match="needs model.lora"):
        TrainConfig(model={**TINY_MODEL, "lora": None}, stage2_steps=5)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        from mu_llama.recipes.train_config import parse_assignment
        parse_assignment("lr1")
    c = TrainConfig(stage1_steps=10, stage2_steps=10, warmup=2, lr1=1.0, lr2=0.5, min_lr_ratio=0.0)
    assert c.lr_at(0) == 0.5 and c.lr_at(1) == 1.0 and c.lr_at(10) == 0.25 and c.lr_at(11) == 0.5
    assert c.stage_at(9) == 1 and c.stage_at(10) == 2 and c.lr_at(19) < c.lr_at(12)


# ------------------------------------------------------------------------------------------------ examples
def test_caption_target_states_every_caption_fact():
    from mu_llama.eval.facts_parse import parse_facts
    from mu_llama.recipes.train import caption_target

    facts = {"families": ["strings", "keyboard"], "key_tonic": "Eb", "mode": "minor", "meter": "6/8",
             "tempo_class": "fast", "texture": "polyphonic"}
    caps = ["A lively string piece.", "A lively piece for strings and piano, in a minor key, at a brisk pace, "
                                      "with six eighth notes to the bar and interweaving independent lines."]
    target = caption_target(caps, facts)
    p = parse_facts(target)
    assert target.startswith(caps[0]) or target.startswith(caps[1])
    assert ("strings" in p.families, p.get("mode"), p.get("meter"), p.get("tempo_class"), p.get("texture")) == \
        (True, "minor", "6/8", "fast", "polyphonic")
    assert caption_target(caps, None) in caps  # no fact sheet: an existing caption, unchanged


def test_example_stream_is_a_pure_function_of_position(corpus):
    clips = read_clips(corpus, "train")
    a, b = ExampleStream(clips, 3, 0.5, 0.2), ExampleStream(clips, 3, 0.5, 0.2)
    assert a.take(0, 25) == [b[p] for p in reversed(range(25))][::-1]
    first_epoch = {a[p].clip for p in range(len(clips))}
    assert first_epoch == {c.id for c in clips}  # each epoch visits every clip once
    kinds = {a[p].kind for p in range(200)}
    assert {"caption", "description", "tempo"} <= kinds


def test_qlora_stage2_trains_fp32_lora_on_a_4bit_base(setup):
    pytest.importorskip("bitsandbytes")
    config, _, features = setup
    model = build_model(TrainConfig(**{**config.to_dict(), "quantize": "4bit"}))
    assert type(model.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    params = stage_parameters(model, 2)
    assert params and all(p.dtype == torch.float32 for p in params.values())
    clips = read_clips(config.corpus, "train")
    batch = collate(model, ExampleStream(clips, 0, 0.5, 0.2).take(0, 2), features, config.max_answer_tokens)
    (batch_loss_sum(model, batch) / batch.tokens).backward()
    assert all(p.grad is not None for n, p in params.items() if "lora_A" in n or "lora_B" in n)


def test_init_from_starts_stage2_from_a_stage1_run(corpus, tmp_path):
    s1 = train(tiny_config(corpus, tmp_path / "s1", stage1_steps=2, stage2_steps=0))
    both = train(tiny_config(corpus, tmp_path / "s2", stage1_steps=0, stage2_steps=2, init_from=str(s1)))
    a, b = load_file(str(s1 / "adapter.safetensors")), load_file(str(both / "adapter.safetensors"))
    for k in a:
        if k.startswith(("music_adapter.", "injection.")):  # stage 2 leaves the stage-1 adapter as it was
            assert torch.equal(a[k], b[k])
    lora = load_file(str(both / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())


def test_sharded_predictions_equal_one_process(corpus, tmp_path):
    from mu_llama.recipes.train import predict_split

    run = train(tiny_config(corpus, tmp_path / "run", stage1_steps=1, stage2_steps=1))
    kw = dict(qa="facts", feature_cache=tmp_path / "feats", progress=False, max_new_tokens=4)
    whole = predict_split(run, corpus, "validation", tmp_path / "all.jsonl", **kw)
    parts = [predict_split(run, corpus, "validation", tmp_path / f"p{k}.jsonl", shard=(k, 2), **kw) for k in (0, 1)]
    rows = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    merged = sorted(rows(parts[0]) + rows(parts[1]), key=lambda r: r["id"])
    assert [r["id"] for r in rows(parts[0])] == ["v000", "v002"] and merged == rows(whole)
    with pytest.raises(ConfigError, match="shard"):
        predict_split(run, corpus, "validation", tmp_path / "x.jsonl", shard=(2, 2), **kw)


def test_export_and_predict_verbs_equal_the_deprecated_train_spellings(corpus, tmp_path, capsys):
    from mu_llama.cli.main import main

    run = str(train(tiny_config(corpus, tmp_path / "run", stage1_steps=1, stage2_steps=1)))
    common = ["--model-dir", run, "--corpus", str(corpus), "--feature-cache", str(tmp_path / "feats"), "--limit", "2",
              "--no-progress"]
    assert main(["predict", "--split", "validation", "--out", str(tmp_path / "new.jsonl"), *common]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["train", "--predict", "validation", "--pred-out", str(tmp_path / "old.jsonl"), *common]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("mu-llama train --predict is deprecated: use `mu-llama predict")
    assert len([line for line in err if "deprecated" in line]) == 1
    assert (tmp_path / "old.jsonl").read_text() == (tmp_path / "new.jsonl").read_text() != ""

    assert main(["export", run, "--to", str(tmp_path / "a")]) == 0
    assert main(["train", "--export", run, "--to", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err.startswith("mu-llama train --export is deprecated: use `mu-llama export")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names and names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert main(["train", "--export", run]) == 2                      # still refused without --to
