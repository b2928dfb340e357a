"""The rule-inverting header planner (mu_llama.generate.planner) and its wiring into sampling (vad_control)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mu_llama.emotion.targets import MusicCues, vad_from_cues
from mu_llama.emotion.vad import VAD
from mu_llama.errors import ConfigError
from mu_llama.generate import (
    Conditioning,
    GeneratorConfig,
    MusicTokenLM,
    PerformanceOptions,
)
from mu_llama.generate.planner import (
    HEARD_GAIN,
    MODE_CLARITY,
    PLAN_CUES,
    TEXTURE,
    HeaderPlanner,
    box_lsq,
)
from mu_llama.generate.sampling import SamplingOptions, sample_tokens
from mu_llama.generate.tokenizer import DYN_LEVELS, HEADER_KINDS


def _cues_of(plan: dict[str, float], mode: float, family: float, texture: float = TEXTURE) -> MusicCues:
    """Planned cue values -> the MusicCues that the rules would read (inverse of targets.cue_values)."""
    return MusicCues(major_share=(mode + 1) / 2, tempo_bpm=100 * 2 ** (0.9 * plan["tempo"]),
                     notes_per_second=4 * 2 ** (2 * plan["density"]), mean_velocity=78 + 32 * plan["velocity"],
                     mean_pitch=64 + 14 * plan["pitch"], texture=texture, family_power=family)


@pytest.mark.parametrize("axis_weights", [(1.0, 1.0, 1.0), (1.0, 1.0, 0.35)])
@pytest.mark.parametrize("seed", range(6))
def test_plan_reproduces_a_reachable_vad_through_the_rules(seed, axis_weights):
    """VAD made by the rules from cues inside the planner's ranges: the plan (tiny pull) gives it back exactly,
    whatever the axis weights (a reachable VAD has zero error on every axis)."""
    rng = np.random.default_rng(seed)
    mode = float(rng.choice([-1.0, 1.0]))
    p = HeaderPlanner((0.0, 0.0, 0.0), mode, velocity_shift=0.0, pull=1e-6, axis_weights=axis_weights)
    p.observe("PROG", str(int(rng.integers(0, 128))))
    lo, hi = p.bounds()
    truth = dict(zip(PLAN_CUES, rng.uniform(lo, hi)))
    want = vad_from_cues(_cues_of(truth, mode, p.family)).as_tuple()
    p.vad = np.array(want)
    plan = p.solve()
    got = vad_from_cues(_cues_of(plan, mode, p.family)).as_tuple()
    assert got == pytest.approx(want, abs=2e-3)
    assert np.allclose(p.predicted_vad(), want, atol=2e-3)
    assert all(lo[i] - 1e-9 <= plan[c] <= hi[i] + 1e-9 for i, c in enumerate(PLAN_CUES))


def test_box_lsq_matches_the_unconstrained_solution_inside_the_box_and_respects_bounds():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 4))
    H, b = A.T @ A + 0.01 * np.eye(4), rng.normal(size=6)
    free = np.linalg.solve(H, A.T @ b)
    assert np.allclose(box_lsq(H, A.T @ b, free - 10, free + 10), free, atol=1e-6)
    lo, hi = -0.1 * np.ones(4), 0.1 * np.ones(4)
    x = box_lsq(H, A.T @ b, lo, hi)
    assert np.all(x >= lo) and np.all(x <= hi)
    f = lambda z: 0.5 * z @ H @ z - (A.T @ b) @ z
    for _ in range(200):                         # no feasible point does better (convex: KKT point is the optimum)
        assert f(x) <= f(rng.uniform(lo, hi)) + 1e-9


@pytest.mark.parametrize("gains", [None, HEARD_GAIN])
@pytest.mark.parametrize("mode", [-1.0, 1.0])
def test_higher_arousal_plans_faster_and_louder(mode, gains):
    """Across the arousal levels (valence, dominance held): planned tempo never falls, the planned (rule) arousal
    rises, and the played velocity at arousal +0.8 is above that at -0.8 (between neighbours velocity may give a
    little back when a faster tempo already carries the arousal)."""
    levels = np.linspace(-0.8, 0.8, 5)
    for v, d in itertools.product(levels, levels):
        planners = [HeaderPlanner((v, a, d), mode, velocity_shift=40.0, gains=gains) for a in levels]
        plans = [p.solve() for p in planners]
        for lo, hi in itertools.pairwise(plans):
            assert hi["tempo"] >= lo["tempo"] - 1e-6
        arousal = [p.predicted_vad()[1] for p in planners]
        assert all(b >= a - 1e-6 for a, b in itertools.pairwise(arousal)) and arousal[-1] > arousal[0]
        assert plans[-1]["velocity"] > plans[0]["velocity"]


def test_plan_grades_valence_within_a_mode_and_replans_after_a_drawn_tempo():
    # binary mode: within major, valence +0.8 must still plan brighter (faster / higher) than +0.4
    hi = HeaderPlanner((0.8, 0.0, 0.0), 1.0).predicted_vad()[0]
    lo = HeaderPlanner((0.4, 0.0, 0.0), 1.0).predicted_vad()[0]
    assert hi > lo
    p = HeaderPlanner((0.0, 0.3, -0.2), 1.0, velocity_shift=40.0)
    v0 = p.solve()["velocity"]
    p.observe("TEMPO", "0")                     # 40 BPM drawn, slower than planned
    assert p.fixed["tempo"] < -1.0 and p.solve()["tempo"] == -1.0   # clipped as the rules clip it
    assert p.solve()["velocity"] > v0             # louder to make up the arousal the slow tempo lost


def test_mode_clarity_grades_valence_within_a_drawn_mode():
    """With clarity the mode cue is planned inside the drawn mode's measured range: a minor piece asked for valence 0
    is sounded milder (more degree stress, heard less minor) than one asked for -0.8; biases stay in the table."""
    bias = {v: HeaderPlanner((v, 0.0, 0.0), -1.0, clarity=True).triad_bias(3.0) for v in (-0.8, -0.4, 0.0)}
    assert bias[-0.8] <= bias[-0.4] < bias[0.0]
    minor = [b for b, _ in MODE_CLARITY["minor"]]
    assert bias[-0.8] == min(minor) and bias[0.0] == max(minor)
    major = [HeaderPlanner((v, 0.0, 0.0), 1.0, clarity=True).triad_bias(3.0) for v in (0.0, 0.4, 0.8)]
    assert major == sorted(major) and all(min(MODE_CLARITY["major"])[0] <= b <= max(MODE_CLARITY["major"])[0]
                                          for b in major)
    assert HeaderPlanner((0.8, 0.0, 0.0), 1.0).triad_bias(3.0) == 3.0           # clarity off: the option's own
    assert HeaderPlanner((0.8, 0.0, 0.0), 0.0, clarity=True).triad_bias(2.5) == 2.5  # no drawn mode: nothing to plan


def test_dyn_prior_accounts_for_the_performance_shift():
    """The written dynamic level is the played target minus the performance layer's arousal shift."""
    played = HeaderPlanner((0.0, 0.8, 0.0), 1.0, velocity_shift=40.0)
    written = HeaderPlanner((0.0, 0.8, 0.0), 1.0, velocity_shift=0.0)
    best_played = int(np.argmax(played.prior("DYN", 0.3)))
    best_written = int(np.argmax(written.prior("DYN", 0.3)))
    assert DYN_LEVELS[best_played] < DYN_LEVELS[best_written]
    assert played.prior("PROG", 0.3) is None and played.prior("DYN", 0.0) is None


# ------------------------------------------------------------------------------------------- wiring into sampling

@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    m = MusicTokenLM(GeneratorConfig(vocab_size=len(tok), d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=48,
                                     text_dim=16)).eval()
    text = torch.randn(1, 16, generator=torch.Generator().manual_seed(1))
    return m, text


# Token ids sampled by the sampler before the planner existed (same tiny model, prefixes and options): "priors" must
# reproduce them exactly.
REFERENCE_CASES = [((0.6, -0.4, 0.5), {"seed": 3}), ((-0.5, 0.7, -0.6), {"seed": 4, "mode_control": "prior"}),
                   ((0.0, 0.0, 0.9), {"seed": 5, "tempo_prior_bins": 0.5, "guidance_scale": 1.0}),
                   (None, {"seed": 6})]
REFERENCE_IDS = [
    [1, 10, 18, 66, 159, 163, 165, 167, 174, 3, 183, 297, 327, 309, 334, 316, 337, 186, 219, 289, 323, 297, 332, 301,
     323, 227, 309, 319, 223, 313, 328, 213, 316, 320, 194, 284, 319, 285, 318, 309, 327, 316, 322, 198, 304, 329, 309,
     327, 314, 333, 316, 322, 3, 187, 304, 324, 309, 339, 316, 337, 2],
    [1, 8, 24, 62, 158, 163, 164, 168, 170, 3, 3, 183, 236, 319, 222, 272, 329, 281, 332, 288, 328, 296, 334, 219, 308,
     320, 216, 312, 318, 226, 316, 324, 185, 296, 318, 312, 328, 316, 319, 186, 292, 337, 305, 322, 308, 317, 312, 319,
     225, 316, 332, 3, 3, 3, 182, 236, 321, 269, 332, 305, 337, 219, 308, 330, 312, 318, 214, 316, 332, 185, 244, 334,
     269, 326, 305, 340, 186, 248, 323, 305, 334, 226, 308, 330, 219, 316, 336, 2],
    [1, 4, 20, 42, 156, 163, 166, 167, 169, 3, 3, 188, 299, 325, 304, 328, 217, 311, 329, 225, 316, 339, 3, 2],
    [1, 6, 23, 44, 160, 161, 166, 168, 177, 3, 181, 300, 338, 303, 317, 312, 324, 315, 335, 185, 308, 331, 312, 331,
     223, 315, 326, 214, 316, 321, 193, 240, 324, 260, 326, 311, 326, 195, 267, 322, 307, 327, 196, 288, 317, 300, 335,
     315, 334, 213, 316, 328, 3, 3, 185, 312, 340, 218, 315, 330, 214, 316, 338, 2],
]


def _sample(tiny, tok, vad, velocity_shift=0.0, **kw):
    m, text = tiny
    pc = m.prefix(text, None if vad is None else torch.tensor([vad]))
    return sample_tokens(m, tok, pc, m.prefix(None, None, batch=1), 2.0, SamplingOptions(max_tokens=120, **kw),
                         control_vad=vad, velocity_shift=velocity_shift)


@pytest.mark.parametrize("case", range(len(REFERENCE_CASES)))
def test_priors_mode_samples_exactly_as_before_the_planner(tiny, tok, case):
    vad, kw = REFERENCE_CASES[case]
    assert _sample(tiny, tok, vad, velocity_shift=40.0, vad_control="priors", **kw) == REFERENCE_IDS[case]
    if vad is None:                     # no VAD: nothing to plan, both controls are the plain sampler
        assert _sample(tiny, tok, vad, vad_control="plan", **kw) == REFERENCE_IDS[case]


def test_plan_is_seeded_and_steers_the_header(tiny, tok):
    vad = (0.5, 0.6, -0.4)
    a = _sample(tiny, tok, vad, 40.0, seed=11, vad_control="plan")
    assert a == _sample(tiny, tok, vad, 40.0, seed=11, vad_control="plan")
    assert any(_sample(tiny, tok, vad, 40.0, seed=s, vad_control="plan") != a for s in range(12, 16))
    # sharp priors: the header takes the planned classes (a random tiny LM alone would not)
    for v, arousal in ((0.9, 0.8), (-0.9, -0.8)):
        for s in range(3):
            ids = _sample(tiny, tok, (v, arousal, 0.0), 40.0, seed=s, vad_control="plan", mode_prior=50.0,
                          tempo_prior_bins=0.05, plan_width=0.01)
            h = tok.parse_header(ids)
            assert h.mode == ("major" if v > 0 else "minor")
            assert (h.bpm > 100) == (arousal > 0)
            assert len(ids) > len(HEADER_KINDS)


def test_generate_passes_the_performance_shift_to_the_planner(gen, monkeypatch):
    from mu_llama.generate import sampling

    shifts = []
    real = sampling.HeaderPlanner

    def spy(vad, mode, velocity_shift, **kw):
        shifts.append(velocity_shift)
        return real(vad, mode, velocity_shift, **kw)

    monkeypatch.setattr(sampling, "HeaderPlanner", spy)
    c = Conditioning("x", VAD(0.0, 0.8, 0.0))
    gen.generate(c, 1.0, SamplingOptions(seed=2))
    gen.generate(c, 1.0, SamplingOptions(seed=2), performance=None)
    gen.generate(c, 1.0, SamplingOptions(seed=2), performance=PerformanceOptions(strength=0.5))
    assert shifts == [40.0, 0.0, 20.0]         # strength x velocity_per_arousal of the layer actually applied


def test_vad_control_option_validates():
    assert SamplingOptions(vad_control="priors").vad_control == "priors"
    with pytest.raises(ConfigError, match="vad_control"):
        SamplingOptions(vad_control="rules")
    for bad in ({"plan_width": -0.1}, {"plan_pull": 0.0}):
        with pytest.raises(ConfigError):
            SamplingOptions(**bad)


def test_mode_draw_option_validates():
    assert SamplingOptions(mode_draw="residual").mode_draw == "residual"
    with pytest.raises(ConfigError, match="mode_draw"):
        SamplingOptions(mode_draw="sigmoid")
    with pytest.raises(ConfigError):
        SamplingOptions(residual_slope=-1.0)


@pytest.mark.parametrize("slope", [0.0, 3.0])
def test_residual_mode_draw_is_monotone_in_valence_and_meets_the_request_in_expectation(slope):
    from mu_llama.generate.planner import MODE_HEARD, residual_p_major, residual_valence

    grid = np.linspace(-1.0, 1.0, 21)
    for a, d in itertools.product((-0.8, 0.0, 0.8), (-0.8, 0.8)):
        p = [residual_p_major((v, a, d), 40.0, gains=HEARD_GAIN, axis_weights=(1.0, 1.0, 0.35), slope=slope)
             for v in grid]
        assert np.all(np.diff(p) >= -1e-9) and p[-1] - p[0] > 0.9
        if slope:
            continue
        for v, pm in zip(grid, p):      # linear mapping, inside the clip: expected heard valence == request
            if 0.02 < pm < 0.98:
                lo, hi = MODE_HEARD
                cue = pm * hi + (1 - pm) * lo
                r = residual_valence((v, a, d), cue, 40.0, gains=HEARD_GAIN, axis_weights=(1.0, 1.0, 0.35))
                assert 0.65 * cue == pytest.approx(r, abs=1e-6)


@pytest.mark.parametrize("mode_draw", ["valence", "residual", "reach"])
def test_mode_draw_uses_the_seeded_first_draw(tiny, tok, mode_draw):
    """The mode is the first draw of the seeded generator against P(major): sigmoid(mode_prior x valence) for
    "valence" (the draw before the option existed), planner.residual_p_major for "residual", and for "reach" the
    mode the rules need (|valence| >= 0.3: one mode only; linear odds inside)."""
    import math

    from mu_llama.generate.planner import residual_p_major

    for s, vad in enumerate(itertools.product((-0.4, 0.0, 0.4), (-0.8, 0.8), (0.0,))):
        u = float(torch.rand((), generator=torch.Generator().manual_seed(s)))
        if mode_draw == "valence":
            p = 1.0 / (1.0 + math.exp(-6.0 * vad[0]))
        elif mode_draw == "reach":
            p = {-0.4: 0.0, 0.0: 0.5, 0.4: 1.0}[vad[0]]
        else:
            p = residual_p_major(vad, 40.0, gains=HEARD_GAIN, axis_weights=(1.0, 1.0, 0.35))
        ids = _sample(tiny, tok, vad, 40.0, seed=s, mode_draw=mode_draw)
        assert tok.parse_header(ids).mode == ("major" if u < p else "minor")
    if mode_draw == SamplingOptions().mode_draw:      # the default options sample exactly these tokens
        assert _sample(tiny, tok, (0.3, 0.2, 0.1), 40.0, seed=9) == _sample(tiny, tok, (0.3, 0.2, 0.1), 40.0, seed=9,
                                                                             mode_draw=mode_draw)
