"""`mu-llama embed --model`: the same model names every other verb takes (the default model's encoder by default),
encoder specs (MERT directories, hub ids), and random weights only by explicit name.

Runs on CPU: the committed mu-llama-mini encoder (no LLM is loaded) and tiny random MERTs built in code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from mu_llama.cli.main import main
from mu_llama.embed import DEFAULT_MODEL, EmbedOptions, EncoderChoice, resolve_encoder
from mu_llama.encoders import (
    DescriptorEncoder,
    MertConfig,
    WindowOptions,
    build_random,
    builtin_config,
    encode_windows,
    load_mert,
    save_mert,
)
from mu_llama.errors import ConfigError
from mu_llama.model import CONFIG_FILE, FORMAT, FORMAT_VERSION, MODELS, MuLlamaConfig, models_dir, read_config

SR = 24000
MINI = models_dir() / "mu-llama-mini"
WINDOW = ["--window", "1", "--hop", "0.75", "--no-progress"]


def _wave(seconds: float = 1.6, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * g.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    sf.write(path, _wave(), SR)
    return path


def _read(path: Path) -> tuple[torch.Tensor, dict]:
    with safe_open(str(path), "pt") as f:
        return f.get_tensor("hidden_states"), f.metadata()


def _save_model_dir(directory: Path, encoder: str, **overrides) -> Path:
    """A save_pretrained-style directory holding only config.json (embed reads nothing else)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = MuLlamaConfig(encoder=encoder, llm="unused-by-embed", **overrides)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    (directory / CONFIG_FILE).write_text(json.dumps(body))
    return directory


def test_default_is_the_default_models_trained_encoder(wav, tmp_path, capsys):
    """No --model: the features of mu-llama-mini's committed encoder as the model runs it (descriptor layer last),
    not a random encoder."""
    from mu_llama.model import DEFAULT_MODEL as MODEL_DEFAULT

    assert DEFAULT_MODEL == EmbedOptions().model == MODEL_DEFAULT == "mu-llama-mini"
    assert main(["embed", str(wav), "--out", str(tmp_path / "out"), *WINDOW]) == 0
    assert "random weights" not in capsys.readouterr().err
    frames, meta = _read(tmp_path / "out" / "a.safetensors")
    cfg = read_config(MINI)  # what MuLlama.from_pretrained(MINI) builds: MINI/<encoder>, wrapped when descriptors
    assert cfg.descriptors and cfg.encoder == "encoder"
    expected_encoder = DescriptorEncoder(load_mert(MINI / cfg.encoder))
    expected = encode_windows(expected_encoder, sf.read(wav, dtype="float32")[0], WindowOptions(1.0, 0.75))
    assert frames.shape == expected.hidden_states.shape == (cfg.enc_layers + 1, expected_encoder.frames_for(
        int(SR * 1.6)), cfg.enc_dim)
    torch.testing.assert_close(frames, expected.hidden_states, atol=1e-5, rtol=0)
    assert meta["model"] == "mu-llama-mini"
    assert meta["encoder"] == f"{MINI / 'encoder'}+descriptors"


def test_model_names_and_directories_are_accepted(wav, tmp_path, capsys):
    """--model takes what caption / ask / label take: registry names and save_pretrained directories."""
    assert main(["embed", str(wav), "--out", str(tmp_path / "named"), "--model", "mu-llama-mini", *WINDOW]) == 0
    assert main(["embed", str(wav), "--out", str(tmp_path / "dir"), "--model", str(MINI), *WINDOW]) == 0
    named, _ = _read(tmp_path / "named" / "a.safetensors")
    by_dir, meta = _read(tmp_path / "dir" / "a.safetensors")
    torch.testing.assert_close(named, by_dir, atol=0, rtol=0)
    assert meta["model"] == str(MINI)
    # a model directory whose encoder is a MERT folder elsewhere, without descriptors, with a relative bundled path
    mert = save_mert(build_random("tiny", seed=7), tmp_path / "model" / "enc")
    model_dir = _save_model_dir(tmp_path / "model", "enc", descriptors=False)
    assert resolve_encoder(model_dir) == EncoderChoice(str(mert), 0, False, str(model_dir))
    assert main(["embed", str(wav), "--out", str(tmp_path / "m"), "--model", str(model_dir), *WINDOW]) == 0
    frames, _ = _read(tmp_path / "m" / "a.safetensors")
    expected = encode_windows(load_mert(mert), sf.read(wav, dtype="float32")[0], WindowOptions(1.0, 0.75))
    torch.testing.assert_close(frames, expected.hidden_states, atol=1e-5, rtol=0)
    # an untrained registry model: its (random) encoder with the model's seed, and a warning saying so
    assert main(["embed", str(wav), "--out", str(tmp_path / "u"), "--model", "untrained:smollm2", *WINDOW]) == 0
    err = capsys.readouterr().err
    assert "random weights" in err and "untrained:smollm2" in err


def test_encoder_specs_are_still_accepted(wav, tmp_path, capsys):
    """A MERT directory and hub ids name encoders; random weights only by the explicit random:NAME, with a warning."""
    mert = save_mert(build_random("tiny", seed=3), tmp_path / "mert")
    assert resolve_encoder(mert) == EncoderChoice(str(mert), 0, False, None)
    assert resolve_encoder("m-a-p/MERT-v1-95M") == EncoderChoice("m-a-p/MERT-v1-95M", 0, False, None)
    assert resolve_encoder("random:tiny", seed=5) == EncoderChoice("random:tiny", 5, False, None)
    assert resolve_encoder("untrained:mert330m-llama2-7b").spec == "m-a-p/MERT-v1-330M"
    for name, entry in MODELS.items():  # every registry name resolves, and only to a random encoder when built so
        choice = resolve_encoder(name)
        assert choice.model == name and choice.random == (entry.config is not None
                                                          and entry.config.encoder.startswith("random:"))
    assert main(["embed", str(wav), "--out", str(tmp_path / "m"), "--model", str(mert), *WINDOW]) == 0
    assert "random weights" not in capsys.readouterr().err
    assert main(["embed", str(wav), "--out", str(tmp_path / "r"), "--model", "random:tiny", *WINDOW]) == 0
    assert "encoder random:tiny has random weights" in capsys.readouterr().err


def test_bad_model_is_one_line_exit_2_and_writes_nothing(wav, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["embed", str(wav), "--out", str(out), "--model", "no-such-model", *WINDOW]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-model" in err
    for choice in ("mu-llama-mini", "untrained:smollm2", "random:tiny", "MERT directory"):
        assert choice in err
    (tmp_path / "empty").mkdir()  # an existing folder that is neither a model nor a MERT
    assert main(["embed", str(wav), "--out", str(out), "--model", str(tmp_path / "empty"), *WINDOW]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "empty" / "config.json") in err and "missing" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="valid choices"):
        resolve_encoder("mu-llama-maxi")


def test_hubert_native_mert_directory_is_24khz(wav, tmp_path):
    """MERT saved by transformers as HubertModel + Wav2Vec2FeatureExtractor (no sample_rate in config.json)."""
    from transformers import Wav2Vec2FeatureExtractor

    enc = build_random(MertConfig.from_dict({**builtin_config("tiny").to_mert_dict(), "num_hidden_layers": 1}))
    enc.model.save_pretrained(tmp_path / "hf")
    Wav2Vec2FeatureExtractor(sampling_rate=SR).save_pretrained(tmp_path / "hf")
    assert "sample_rate" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    assert main(["embed", str(wav), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "hf"), *WINDOW]) == 0
    _, meta = _read(tmp_path / "out" / "a.safetensors")
    assert meta["sample_rate"] == "24000" and meta["frames"] == str(enc.frames_for(int(SR * 1.6)))
