"""The bundled generator's token ids for fixed seeds, prompts, VAD values and decoding options, compared with
tests/fixtures/generate_reference_tokens.json: a refactor of the decoding loop must reproduce them exactly.

Text goes through the hashing stand-in embedder (no MiniLM needed), so the ids depend only on the bundled weights and
the decoding code. The cases cover every decoding rule: grammar and duration stop, the header planner and its mode
draws, the one-axis priors, the prompt's stated facts, the key/scale stress, temperatures, top-k, guidance 1, the
token budget and the sliding window (a 30-s piece is longer than the model's 256-token window).

A change that is meant to move them regenerates the file with
`MU_LLAMA_UPDATE_GOLDEN=1 python -m pytest tests/test_generate_reference.py` and says why in its commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mu_llama.emotion.vad import VAD
from mu_llama.generate import Conditioning, EmbeddedGenerator, HashTextEmbedder, SamplingOptions

FIXTURE = Path(__file__).parent / "fixtures" / "generate_reference_tokens.json"
TRUMPET = "A fast tune for trumpet in a minor key."
CALM = "a calm piece for piano"

# name -> (text, vad, duration s, SamplingOptions kwargs, generate kwargs)
CASES: dict[str, tuple] = {
    "plan_default": (CALM, (0.5, -0.6, -0.3), 4.0, {"seed": 1}, {}),
    "plan_negative": ("a dark, heavy march", (-0.7, 0.6, 0.6), 4.0, {"seed": 2}, {}),
    "text_facts": (TRUMPET, None, 4.0, {"seed": 3}, {}),
    "text_facts_none": (TRUMPET, None, 4.0, {"seed": 3, "text_facts": "none"}, {}),
    "text_facts_with_vad": ("A slow lament for cello in a minor key.", (0.6, 0.2, 0.0), 4.0, {"seed": 4}, {}),
    "key_meter_facts": ("A chorale in F# minor, in 3/4.", None, 4.0, {"seed": 5}, {}),
    "mode_draw_valence": (CALM, (0.2, 0.3, -0.2), 4.0, {"seed": 6, "mode_draw": "valence"}, {}),
    "mode_draw_residual": (CALM, (-0.1, 0.5, 0.3), 4.0, {"seed": 7, "mode_draw": "residual", "residual_slope": 3.0},
                           {}),
    "plan_mode_prior_control": (CALM, (0.4, -0.2, 0.1), 4.0, {"seed": 8, "mode_control": "prior"}, {}),
    "plan_plain_rules": (CALM, (0.3, 0.7, -0.5), 6.0,
                         {"seed": 9, "plan_heard": False, "plan_clarity": False, "plan_width": 0.6}, {}),
    "priors_set": (CALM, (-0.5, 0.7, -0.6), 4.0, {"seed": 10, "vad_control": "priors"}, {}),
    "priors_prior": (CALM, (0.6, -0.4, 0.5), 4.0, {"seed": 11, "vad_control": "priors", "mode_control": "prior",
                                                    "tempo_prior_bins": 0.5}, {}),
    "vad_only_free_key": (None, (0.8, 0.8, 0.8), 4.0, {"seed": 12, "key_constraint": "none"}, {}),
    "temperatures_top_k": ("a lively jig", (0.1, 0.4, 0.0), 6.0,
                           {"seed": 13, "temperature": 0.8, "header_temperature": 0.6, "top_k": 12,
                            "strong_beat_factor": 0.0, "triad_bias": 1.5}, {}),
    "unconditional": (None, None, 4.0, {"seed": 14}, {}),
    "guidance_one": (CALM, (0.0, 0.0, 0.0), 4.0, {"seed": 15, "guidance_scale": 1.0}, {}),
    "no_performance": (CALM, (0.0, 0.8, 0.0), 4.0, {"seed": 16}, {"performance": None}),
    "token_budget": (CALM, (0.5, 0.5, 0.5), 30.0, {"seed": 17, "max_tokens": 100}, {}),
    "long_window": ("a slow folk song for violin", (-0.3, -0.5, 0.2), 24.0, {"seed": 18}, {}),
}


@pytest.fixture(scope="module")
def bundled():
    return EmbeddedGenerator.load(text_embedder=HashTextEmbedder())


def sample(gen: EmbeddedGenerator, name: str) -> list[int]:
    text, vad, duration, opts, kw = CASES[name]
    cond = Conditioning(text, None if vad is None else VAD(*vad))
    return gen.generate(cond, duration, SamplingOptions(**opts), **kw).tokens


def test_reference_token_ids(bundled):
    got = {name: sample(bundled, name) for name in CASES}
    if os.environ.get("MU_LLAMA_UPDATE_GOLDEN") == "1":
        FIXTURE.write_text(json.dumps(got, separators=(",", ":")).replace("],", "],\n") + "\n")
    want = json.loads(FIXTURE.read_text())
    assert set(want) == set(CASES)
    assert len(want["long_window"]) > bundled.model.config.max_len      # the window slid at least once
    assert len(want["token_budget"]) == 101                              # max_tokens, then EOS
    for name in CASES:
        assert got[name] == want[name], name
