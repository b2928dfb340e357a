"""Emotion-control decoding and performance: degree profile / cadence masks, the mode prior, header temperature, the
arousal performance rules, and the text-adherence fact scorer (no understanding model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mu_llama.emotion.vad import VAD
from mu_llama.errors import ConfigError
from mu_llama.generate import (
    Conditioning,
)
from mu_llama.generate.performance import PerformanceOptions, perform
from mu_llama.generate.processors import DEGREE_WEIGHTS, SCALES, Grammar, KeyScale
from mu_llama.generate.sampling import SamplingOptions
from mu_llama.generate.symbolic import Note, Piece


def _grammar_at(tok, names: list[str], duration: float = 60.0) -> Grammar:
    g = Grammar(tok, duration)
    g.n = 1
    for t in names:
        g.advance(tok.index[t])
    return g


HEADER = ["TS_4/4", "TEMPO_8", "PROG_0", "DYN_2", "REG_middle", "DENS_moderate"]


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_pitch_bias_masks_out_of_scale_and_weights_degrees(tok, mode):
    g = _grammar_at(tok, HEADER + [f"MODE_{mode}", "KEY_2", "BAR", "POS_0", "VEL_8", "PITCH_60", "DUR_4", "POS_2"])
    bias = KeyScale(1.5, 2.0).bias(g)                              # weak beat (pos 2): plain degree weights
    for p in range(48, 72):
        b = float(bias[tok.index[f"PITCH_{p}"]])
        deg = (p - 2) % 12
        if deg not in SCALES[mode]:
            assert b == float("-inf")
        else:
            assert b == pytest.approx(1.5 * DEGREE_WEIGHTS[mode].get(deg, 0.0))
    if mode == "minor":                                              # harmonic-minor leading tone favoured over b7
        assert float(bias[tok.index["PITCH_61"]]) > 0 > float(bias[tok.index["PITCH_60"]])


def test_first_onset_and_final_downbeat_allow_only_the_tonic_triad(tok):
    g = _grammar_at(tok, HEADER + ["MODE_minor", "KEY_9", "BAR", "POS_0"])
    bias = KeyScale(1.5, 2.0).bias(g)
    ok = {p for p in range(21, 109) if torch.isfinite(bias[tok.index[f"PITCH_{p}"]])}
    assert ok and {p % 12 for p in ok} == {9, 0, 4}                  # A C E
    g2 = _grammar_at(tok, HEADER + ["MODE_minor", "KEY_9", "BAR", "POS_0"])
    assert {p for p in range(21, 109) if torch.isfinite(KeyScale(1.5, 0.0).bias(g2)[tok.index[f"PITCH_{p}"]])} != ok


def test_mode_prior_makes_the_header_mode_follow_valence(gen, tok):
    for v, mode in ((0.9, "major"), (-0.9, "minor")):
        for seed in range(3):
            out = gen.generate(Conditioning("x", VAD(v, 0.0, 0.0)), 2.0, SamplingOptions(seed=seed, mode_prior=50.0))
            assert tok.parse_header(out.tokens).mode == mode


def test_mode_prior_zero_is_the_model_and_valence_zero_is_neutral_for_the_additive_prior(gen):
    c = Conditioning("x", VAD(0.0, 0.3, 0.3))
    a = gen.generate(c, 2.0, SamplingOptions(seed=4, mode_prior=0.0)).tokens
    assert a == gen.generate(c, 2.0, SamplingOptions(seed=4, mode_prior=9.0, mode_control="prior")).tokens
    for mc in ("set", "prior"):                                      # no VAD: the model alone
        assert gen.generate(Conditioning("x"), 2.0, SamplingOptions(seed=4, mode_control=mc)).tokens == \
            gen.generate(Conditioning("x"), 2.0, SamplingOptions(seed=4, mode_prior=0.0)).tokens
    for bad in ({"mode_prior": -1}, {"header_temperature": 0}, {"strong_beat_factor": -0.5}, {"mode_control": "x"}):
        with pytest.raises(ConfigError):
            SamplingOptions(**bad)


def test_mode_control_set_draws_major_with_probability_sigmoid_of_valence(gen, tok, monkeypatch):
    """(vad_control "priors") 'set' replaces the model's major/minor odds by mode_prior * valence: the header's MODE
    draw sees exactly P(major) = sigmoid(mode_prior * valence), whatever the model prefers."""
    import mu_llama.generate.sampling as sampling

    seen = []
    real = torch.multinomial

    def spy(p, n, generator=None):
        if torch.isfinite(p).all() and (p > 0).sum() == 2:
            seen.append(p.clone())
        return real(p, n, generator=generator)

    monkeypatch.setattr(sampling.torch, "multinomial", spy)
    for v in (-0.4, 0.0, 0.4):
        seen.clear()
        opts = SamplingOptions(seed=1, mode_prior=6.0, vad_control="priors")
        gen.generate(Conditioning("x", VAD(v, 0.5, -0.5)), 1.0, opts)
        mode_draws = [p for p in seen if p[tok.index["MODE_major"]] + p[tok.index["MODE_minor"]] > 0.999]
        assert mode_draws, "no MODE draw seen"
        assert float(mode_draws[0][tok.index["MODE_major"]]) == pytest.approx(1 / (1 + np.exp(-6.0 * v)), abs=1e-5)


def test_header_temperature_one_is_the_plain_sampler(gen):
    c = Conditioning("x", VAD(0.2, 0.1, 0.0))
    a = gen.generate(c, 2.0, SamplingOptions(seed=5)).tokens
    assert a == gen.generate(c, 2.0, SamplingOptions(seed=5, header_temperature=1.0)).tokens


def _piece():
    notes = [Note(i * 0.5, 0.5, 60 + (i % 5), 60 + 10 * (i % 3)) for i in range(16)]
    return Piece(notes, bpm=100, program=0, key_tonic=0, mode="major")


def test_performance_strength_zero_or_no_vad_is_identity_and_arousal_is_monotone():
    p = _piece()
    assert perform(p, 0.7, PerformanceOptions(strength=0.0)).notes == p.notes
    assert perform(p, None).notes == p.notes
    lo, mid, hi = (perform(p, a) for a in (-0.8, 0.0, 0.8))
    assert mid.notes == p.notes
    mv = lambda q: sum(n.velocity for n in q.notes) / len(q.notes)
    md = lambda q: sum(n.duration for n in q.notes) / len(q.notes)
    spread = lambda q: max(n.velocity for n in q.notes) - min(n.velocity for n in q.notes)
    assert mv(lo) < mv(mid) < mv(hi) and md(lo) > md(mid) > md(hi) and spread(lo) < spread(hi)
    assert [(n.onset, n.pitch) for n in hi.notes] == [(n.onset, n.pitch) for n in p.notes]   # same score
    with pytest.raises(ConfigError):
        PerformanceOptions(strength=3.0)


def test_generate_applies_performance_only_with_a_vad(gen):
    # vad_control "priors": the score does not depend on the performance layer ("plan" writes the dynamic level
    # for the played loudness, so its scores differ by design; see tests/test_planner.py)
    c = Conditioning("x", VAD(0.0, 0.8, 0.0))
    played = gen.generate(c, 3.0, SamplingOptions(seed=6, vad_control="priors"))
    raw = gen.generate(c, 3.0, SamplingOptions(seed=6, vad_control="priors"), performance=None)
    assert played.tokens == raw.tokens
    assert [n.pitch for n in played.piece.notes] == [n.pitch for n in raw.piece.notes]
    if raw.piece.notes:
        assert sum(n.velocity for n in played.piece.notes) > sum(n.velocity for n in raw.piece.notes)


def test_fact_agreement_scores_family_tempo_and_mode():
    from mu_llama.recipes.evaluate_generator import ADHERENCE_PROMPTS, fact_agreement

    assert all(all(v in (True, None) for v in fact_agreement(p, p).values()) for p in ADHERENCE_PROMPTS)
    got = fact_agreement("A slow, sad piano piece in a minor key.", "A fast organ piece in a minor key.")
    assert got == {"family": False, "tempo_class": False, "mode": True}
    assert fact_agreement("hello", "A fast piano piece.") == {"family": None, "tempo_class": None, "mode": None}


def test_tempo_prior_puts_the_header_tempo_at_the_rules_tempo_for_the_requested_arousal(gen, tok):
    """vad_control "priors": the tempo prior follows arousal alone (the planner's tempo is tested in test_planner)."""
    from mu_llama.generate.tokenizer import tempo_to_bin

    for a in (-0.8, 0.0, 0.8):
        want = tempo_to_bin(100.0 * 2 ** (0.9 * a))
        for seed in range(3):
            opts = SamplingOptions(seed=seed, tempo_prior_bins=0.05, vad_control="priors")
            out = gen.generate(Conditioning("x", VAD(0.0, a, -0.5)), 1.0, opts)
            assert tok.parse_header(out.tokens).tempo_bin == want
    c = Conditioning("x")                                            # no VAD: no prior, the model's own tempo
    assert gen.generate(c, 1.0, SamplingOptions(seed=2, tempo_prior_bins=0.05)).tokens == \
        gen.generate(c, 1.0, SamplingOptions(seed=2, tempo_prior_bins=0.0)).tokens
    with pytest.raises(ConfigError, match="tempo_prior_bins"):
        SamplingOptions(tempo_prior_bins=-1.0)


def test_grid_draws_pool_into_one_control_report(gen, tmp_path):
    from mu_llama.cli.main import main
    from mu_llama.recipes.evaluate_generator import control_metrics, emotion_grid

    draws = []
    for k in (0, 100):
        rows = emotion_grid(gen, 2, 1.0, seed_offset=k, progress=False)
        (tmp_path / f"d{k}").mkdir()
        (tmp_path / f"d{k}" / "grid_rows.json").write_text(json.dumps(rows))
        draws.append(rows)
    assert main(["eval-generator", "--pool", str(tmp_path / "d0"), str(tmp_path / "d100"),
                 "--out", str(tmp_path / "pooled")]) == 0
    pooled = json.loads((tmp_path / "pooled" / "control.json").read_text())
    assert pooled == json.loads(json.dumps(control_metrics(draws[0] + draws[1])))
    assert pooled["n"] == 16 and (tmp_path / "pooled" / "control_vad_scatter.png").stat().st_size > 0
