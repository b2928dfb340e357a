"""Each decoding processor alone (mu_llama.generate.processors), on a grammar state built from token names, and how
sampling.decoding_rules composes them. Their effect on whole pieces is pinned by tests/test_generate_reference.py."""

from __future__ import annotations

import math

import pytest
import torch

from mu_llama.generate.planner import HeaderPlanner
from mu_llama.generate.processors import (
    NEG,
    DurationStop,
    FixedMode,
    Grammar,
    GrammarMask,
    HeaderPlan,
    KeyScale,
    ModePrior,
    TempoPrior,
    Temperature,
    TextFacts,
    TopK,
)
from mu_llama.generate.prompt_facts import PromptFacts, masks_for
from mu_llama.generate.sampling import SamplingOptions, decoding_rules
from mu_llama.generate.tokenizer import HEADER_KINDS, tempo_bins, tempo_to_bin

HEADER = ["TS_4/4", "TEMPO_8", "PROG_0", "DYN_2", "REG_middle", "DENS_moderate", "MODE_minor", "KEY_9"]


def state(tok, names: list[str], duration: float = 60.0) -> Grammar:
    g = Grammar(tok, duration)
    g.advance(tok.bos)
    for t in names:
        g.advance(tok.index[t])
    return g


def lp_of(tok, seed: int = 0) -> torch.Tensor:
    """(V,) a random log-distribution."""
    return torch.log_softmax(torch.randn(len(tok), generator=torch.Generator().manual_seed(seed)), -1)


def allowed(lp: torch.Tensor, tok) -> set[str]:
    return {tok.vocab[i] for i in torch.isfinite(lp).nonzero().flatten().tolist()}


def test_state_slot_walks_the_header_then_is_none(tok):
    assert [state(tok, HEADER[:i]).slot for i in range(len(HEADER) + 2)] == list(HEADER_KINDS) + [None, None]


def test_grammar_mask_keeps_the_header_order_and_a_forward_moving_body(tok):
    lp, rule = lp_of(tok), GrammarMask()
    for i, kind in enumerate(HEADER_KINDS):
        out = rule(lp, state(tok, HEADER[:i]))
        assert {t.split("_")[0] for t in allowed(out, tok)} == {kind}
        assert torch.equal(out[torch.isfinite(out)], lp[torch.isfinite(out)])      # allowed values untouched
    assert allowed(rule(lp, state(tok, HEADER)), tok) == {"BAR"}
    after = allowed(rule(lp, state(tok, HEADER + ["BAR", "POS_4", "PITCH_60", "DUR_2"])), tok)
    assert "POS_4" not in after and "POS_5" in after and "POS_16" not in after       # 4/4: 16 sixteenths a bar
    assert "PITCH_60" not in after and "PITCH_61" in after and {"BAR", "EOS", "VEL_3"} <= after
    assert all(t.startswith("PITCH_") and int(t[6:]) > 64
               for t in allowed(rule(lp, state(tok, HEADER + ["BAR", "POS_0", "PITCH_64", "DUR_2", "VEL_3"])), tok))


def test_duration_stop_masks_eos_until_the_duration_and_ends_at_the_next_bar_line(tok):
    lp, rule = lp_of(tok), DurationStop(tok)
    bpm = float(tempo_bins()[8])
    one_bar = 4 * 60.0 / bpm
    early = state(tok, HEADER + ["BAR", "POS_0"], duration=1.5 * one_bar)
    out = rule(lp, early)
    assert out[tok.eos] == NEG and torch.equal(out[tok.eos + 1:], lp[tok.eos + 1:])
    assert rule.after_draw(tok.bar, early) == tok.bar
    late = state(tok, HEADER + ["BAR", "POS_0", "PITCH_60", "DUR_4", "BAR", "BAR"], duration=1.5 * one_bar)
    assert late.target_reached() and torch.equal(rule(lp, late), lp)
    assert rule.after_draw(tok.bar, late) == tok.eos
    assert rule.after_draw(tok.index["POS_0"], late) == tok.index["POS_0"]


def test_text_facts_limit_only_their_own_slot(tok):
    rule = TextFacts(masks_for(PromptFacts.parse("A fast tune for trumpet in a minor key."), tok))
    lp = lp_of(tok)
    assert allowed(rule(lp, state(tok, HEADER[:6])), tok) == {"MODE_minor"}
    assert torch.equal(rule(lp, state(tok, HEADER[:3])), lp)                         # DYN: not stated
    assert torch.equal(rule(lp, state(tok, HEADER + ["BAR"])), lp)                   # body


def test_header_plan_adds_the_planners_prior_at_planned_slots_and_observes_each_header_token(tok):
    planner = HeaderPlanner((0.5, 0.8, -0.3), 1.0, 40.0, gains=None)
    rule = HeaderPlan(tok, planner, {"TEMPO": 0.2, "DYN": 0.3, "REG": 0.3, "DENS": 0.3})
    lp = lp_of(tok)
    at_tempo = state(tok, HEADER[:1])
    out = rule(lp, at_tempo)
    ids = [tok.index[f"TEMPO_{i}"] for i in range(len(tempo_bins()))]
    torch.testing.assert_close(out[ids] - lp[ids], torch.from_numpy(planner.prior("TEMPO", 0.2)).float())
    rest = torch.ones(len(tok), dtype=torch.bool)
    rest[ids] = False
    assert torch.equal(out[rest], lp[rest])
    assert torch.equal(rule(lp, state(tok, HEADER[:2])), lp)                         # PROG: not planned
    assert rule.after_draw(tok.index["TEMPO_3"], at_tempo) == tok.index["TEMPO_3"]
    assert planner.fixed["tempo"] == pytest.approx(math.log2(tempo_bins()[3] / 100.0) / 0.9)
    rule.after_draw(tok.bar, state(tok, HEADER))                                      # body tokens: not observed
    assert set(planner.fixed) == {"tempo"}


def test_fixed_mode_leaves_only_the_drawn_mode(tok):
    lp = lp_of(tok)
    assert allowed(FixedMode(tok, "minor")(lp, state(tok, HEADER[:6])), tok) == {"MODE_minor"}
    assert torch.equal(FixedMode(tok, "minor")(lp, state(tok, HEADER[:5])), lp)


@pytest.mark.parametrize("push", [-2.4, 0.0, 1.3])
def test_mode_prior_sets_or_shifts_the_major_minor_log_odds(tok, push):
    at_mode = state(tok, HEADER[:6])
    lp = GrammarMask()(lp_of(tok), at_mode)
    major, minor = tok.index["MODE_major"], tok.index["MODE_minor"]
    p = torch.softmax(ModePrior(tok, push, replace=True)(lp, at_mode), -1)
    assert float(p[major]) == pytest.approx(1 / (1 + math.exp(-push)), abs=1e-6)
    assert float(p[major] + p[minor]) == pytest.approx(1.0, abs=1e-6)
    shifted = ModePrior(tok, push, replace=False)(lp, at_mode)
    assert float((shifted[major] - shifted[minor]) - (lp[major] - lp[minor])) == pytest.approx(2 * push, abs=1e-5)
    assert torch.equal(ModePrior(tok, push, replace=True)(lp, state(tok, HEADER[:5])), lp)


@pytest.mark.parametrize("arousal", [-0.8, 0.0, 0.8])
def test_tempo_prior_peaks_at_the_rules_tempo_for_the_arousal(tok, arousal):
    rule = TempoPrior(tok, arousal, 1.0)
    flat = torch.zeros(len(tok))
    out = rule(flat, state(tok, HEADER[:1]))
    ids = [tok.index[f"TEMPO_{i}"] for i in range(len(tempo_bins()))]
    assert int(torch.argmax(out[ids])) == tempo_to_bin(100.0 * 2 ** (0.9 * arousal))
    assert float(out[ids].max()) > -0.5 and int((out != 0).sum()) <= len(ids)
    assert torch.equal(rule(flat, state(tok, HEADER[:2])), flat)


def test_key_scale_acts_only_where_a_pitch_may_follow_and_never_leaves_no_choice(tok):
    rule = KeyScale(3.0, 2.0)
    lp = lp_of(tok)
    assert torch.equal(rule(lp, state(tok, HEADER[:7])), lp)                          # header: no key yet
    assert torch.equal(rule(lp, state(tok, HEADER + ["BAR"])), lp)                    # after BAR: no pitch next
    out = rule(lp, state(tok, HEADER + ["BAR", "POS_0"]))                             # first onset: A C E only
    assert {int(t[6:]) % 12 for t in allowed(out, tok) if t.startswith("PITCH_")} == {9, 0, 4}
    top = state(tok, HEADER[:-1] + ["KEY_3", "BAR", "POS_0", "PITCH_60", "DUR_2", "POS_2", "PITCH_107", "DUR_2",
                                     "VEL_3"])
    masked = GrammarMask()(lp, top)                                   # a louder chord note above 107: only C 108,
    assert allowed(masked, tok) == {"PITCH_108"}                      # which is not in Eb minor
    assert torch.equal(rule(masked, top), masked)                     # left alone, not emptied


def test_key_scale_takes_the_planned_clarity_once_the_header_is_drawn(tok):
    planner = HeaderPlanner((0.0, 0.0, 0.0), -1.0, clarity=True)
    rule = KeyScale(3.0, 2.0, planner)
    rule.after_draw(tok.index["MODE_minor"], state(tok, HEADER[:6]))
    assert rule.triad_bias == 3.0
    rule.after_draw(tok.index["KEY_9"], state(tok, HEADER[:7]))
    assert rule.triad_bias == pytest.approx(planner.triad_bias(3.0)) and rule.triad_bias != 3.0


def test_temperature_divides_header_and_body_by_their_own(tok):
    lp, rule = lp_of(tok), Temperature(0.5, 2.0)
    assert torch.equal(rule(lp, state(tok, HEADER[:3])), lp / 0.5)
    assert torch.equal(rule(lp, state(tok, HEADER)), lp / 2.0)


def test_top_k_keeps_the_k_most_likely(tok):
    lp = lp_of(tok)
    out = TopK(5)(lp, state(tok, HEADER))
    assert set(torch.isfinite(out).nonzero().flatten().tolist()) == set(torch.topk(lp, 5).indices.tolist())
    assert torch.equal(out[torch.isfinite(out)], lp[torch.isfinite(out)])
    few = GrammarMask()(lp, state(tok, HEADER[:6]))                                   # MODE: two tokens possible
    assert torch.equal(TopK(5)(few, state(tok, HEADER[:6])), few)


def _names(rules) -> list[str]:
    return [type(r).__name__ for r in rules]


def test_decoding_rules_compose_the_options(tok):
    gen = lambda: torch.Generator().manual_seed(0)
    assert _names(decoding_rules(tok, SamplingOptions(), gen())) == \
        ["GrammarMask", "DurationStop", "KeyScale", "Temperature"]
    assert _names(decoding_rules(tok, SamplingOptions(top_k=4, key_constraint="none"), gen(), text="some music")) == \
        ["GrammarMask", "DurationStop", "Temperature", "TopK"]
    vad = (0.5, 0.2, 0.0)
    assert _names(decoding_rules(tok, SamplingOptions(), gen(), vad, 40.0, "A slow lament for cello.")) == \
        ["GrammarMask", "DurationStop", "TextFacts", "HeaderPlan", "FixedMode", "KeyScale", "Temperature"]
    assert _names(decoding_rules(tok, SamplingOptions(mode_control="prior"), gen(), vad)) == \
        ["GrammarMask", "DurationStop", "HeaderPlan", "ModePrior", "KeyScale", "Temperature"]
    assert _names(decoding_rules(tok, SamplingOptions(vad_control="priors"), gen(), vad)) == \
        ["GrammarMask", "DurationStop", "ModePrior", "TempoPrior", "KeyScale", "Temperature"]
    assert _names(decoding_rules(tok, SamplingOptions(vad_control="priors", mode_prior=0, tempo_prior_bins=0),
                                 gen(), vad)) == ["GrammarMask", "DurationStop", "KeyScale", "Temperature"]


def test_the_planners_mode_draw_is_the_first_number_of_the_seeded_generator(tok):
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        rules = decoding_rules(tok, SamplingOptions(mode_draw="reach"), g, (0.1, 0.0, 0.0))
        fresh = torch.Generator().manual_seed(seed)
        u = float(torch.rand((), generator=fresh))
        drawn = next(r for r in rules if isinstance(r, FixedMode))
        assert tok.vocab[drawn.index] == ("MODE_major" if u < 0.5 + 0.1 / 0.6 else "MODE_minor")
        assert float(torch.rand((), generator=g)) == float(torch.rand((), generator=fresh))   # one number taken
