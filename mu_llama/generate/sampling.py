"""Sampling from the token LM: KV cache, classifier-free guidance, decoding rules as processors, a sliding window.

Prefill the conditioning prefix + BOS, then one token at a time:
  1. logits of the conditional path (and, when guidance_scale != 1, of the unconditional path in the same batch),
  2. guidance in log-probability space: log p_u + s * (log p_c - log p_u)   (s = 1 is exactly the conditional path),
  3. the decoding rules, each a small processor over the (V,) log-probabilities (mu_llama.generate.processors:
     grammar, duration stop, prompt facts, header planner, mode and tempo priors, key/scale stress, temperature, top-k),
  4. a draw from a seeded torch.Generator (same seed -> same music).
When the window is full it restarts from BOS + header + the last half of the body from a BAR, which is how training
crops look, so long pieces keep going with their header (tempo, mode, ...) in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mu_llama.emotion.targets import WEIGHTS
from mu_llama.errors import ConfigError, choice_error
from mu_llama.generate.model import MusicTokenLM
from mu_llama.generate.planner import HEARD_GAIN, HeaderPlanner, residual_p_major
from mu_llama.generate.processors import (
    DurationStop,
    FixedMode,
    Grammar,
    GrammarMask,
    HeaderPlan,
    KeyScale,
    ModePrior,
    Processor,
    TempoPrior,
    Temperature,
    TextFacts,
    TopK,
)
from mu_llama.generate.prompt_facts import PromptFacts, masks_for
from mu_llama.generate.tokenizer import HEADER_KINDS, Tokenizer, tempo_bins

KEY_CONSTRAINTS = ("scale", "none")
MODE_CONTROLS = ("set", "prior")
TEXT_FACTS = ("constrain", "none")
VAD_CONTROLS = ("plan", "priors")
MODE_DRAWS = ("valence", "residual", "reach")
# |valence| one mode alone reaches: the mode's rule weight minus the most tempo and pitch can add the other way
# (mu_llama.emotion.targets.WEIGHTS: 0.65 - 0.2 - 0.15 = 0.3)
REACH_GAP = WEIGHTS["valence"]["mode"] - WEIGHTS["valence"]["tempo"] - WEIGHTS["valence"]["pitch"]


@dataclass(frozen=True)
class SamplingOptions:
    """How sample_tokens decodes. Why each default is what it is, with the measurements behind it:
    docs/generate/README.md, "Decoding options".

    guidance_scale: classifier-free guidance (1 = the conditional path alone). temperature / header_temperature: of
    the body / of the header's control tokens. top_k: 0 = off. seed: of the one generator every draw uses.
    max_tokens: token budget (then EOS).
    key_constraint: "scale" = pitches in the header's key, scale degrees weighted by triad_bias (x strong_beat_factor
    on strong beats; 0 also drops the tonic-triad opening and cadence); "none" = any pitch.
    vad_control (when a VAD is given): "plan" = the header planner inverts the cue rules for all three axes;
    "priors" = one axis per slot (mode_control at MODE, a tempo prior for arousal at TEMPO).
    mode_control: "set" = P(major) drawn or set from valence, the model's odds dropped; "prior" = mode_prior x
    valence added to them. mode_prior: strength (0 = the model's own mode).
    mode_draw (plan with "set"): "reach" = the mode the rules need for the valence, linear odds inside +-REACH_GAP;
    "valence" = sigmoid(mode_prior x valence); "residual" = for the valence left after tempo and register
    (planner.residual_p_major; residual_slope 0 = linear, > 0 = a sigmoid of that slope).
    tempo_prior_bins: width in tempo bins of the tempo prior (0 = the model's own tempo). plan_width: width of the
    planner's DYN / REG / DENS priors, in cue units. plan_pull: pull toward neutral cues (makes the plan unique).
    plan_heard: plan on the cues as heard (planner.HEARD_GAIN), not as written. plan_clarity: also plan how clearly
    the body sounds the drawn mode (sets triad_bias). plan_axis_weights: (valence, arousal, dominance) weights of
    the planner's squared rule errors.
    text_facts: "constrain" = facts the prompt states limit their header slot (prompt_facts); "none" = the text
    steers through its embedding only.
    """

    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_tokens: int = 4096
    key_constraint: str = "scale"
    triad_bias: float = 3.0
    strong_beat_factor: float = 2.0
    header_temperature: float = 1.0
    mode_control: str = "set"
    mode_prior: float = 6.0
    tempo_prior_bins: float = 1.0
    vad_control: str = "plan"
    plan_width: float = 0.3
    plan_pull: float = 0.02
    plan_heard: bool = True
    plan_clarity: bool = True
    plan_axis_weights: tuple[float, float, float] = (1.0, 1.0, 0.35)
    mode_draw: str = "reach"
    residual_slope: float = 0.0
    text_facts: str = "constrain"

    def __post_init__(self):
        for name, value in vars(self).items():  # NaN passes every < / > check below: refuse it first
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.text_facts not in TEXT_FACTS:
            raise choice_error("text_facts", self.text_facts, TEXT_FACTS)
        if self.key_constraint not in KEY_CONSTRAINTS:
            raise choice_error("key_constraint", self.key_constraint, KEY_CONSTRAINTS)
        if self.mode_control not in MODE_CONTROLS:
            raise choice_error("mode_control", self.mode_control, MODE_CONTROLS)
        if self.vad_control not in VAD_CONTROLS:
            raise choice_error("vad_control", self.vad_control, VAD_CONTROLS)
        if self.mode_draw not in MODE_DRAWS:
            raise choice_error("mode_draw", self.mode_draw, MODE_DRAWS)
        if self.residual_slope < 0:
            raise ConfigError(f"residual_slope must be >= 0, got {self.residual_slope}")
        if len(self.plan_axis_weights) != 3 or min(self.plan_axis_weights) < 0 or max(self.plan_axis_weights) <= 0:
            raise ConfigError(f"plan_axis_weights must be 3 weights >= 0, not all 0, got {self.plan_axis_weights}")
        if self.plan_width < 0 or self.plan_pull <= 0:
            raise ConfigError(f"plan_width must be >= 0 and plan_pull > 0, got {self.plan_width}, {self.plan_pull}")
        if self.guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.header_temperature <= 0 or self.strong_beat_factor < 0 or self.mode_prior < 0 \
                or self.tempo_prior_bins < 0:
            raise ConfigError("header_temperature must be > 0; strong_beat_factor, mode_prior and tempo_prior_bins "
                              ">= 0")
        if self.top_k < 0 or self.max_tokens < 16:
            raise ConfigError("top_k must be >= 0 and max_tokens >= 16")


def guided_logprobs(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """log p_u + s (log p_c - log p_u); with no unconditional path (scale 1) just log p_c."""
    lc = torch.log_softmax(cond.float(), dim=-1)
    if uncond is None:
        return lc
    lu = torch.log_softmax(uncond.float(), dim=-1)
    return lu + scale * (lc - lu)


def major_odds(opts: SamplingOptions, vad: tuple[float, float, float], velocity_shift: float,
               gains: dict[str, float] | None) -> float:
    """P(major) of the planner's first draw for the requested VAD (SamplingOptions.mode_draw)."""
    valence = float(vad[0])
    if opts.mode_draw == "reach":
        return min(1.0, max(0.0, 0.5 + valence / (2 * REACH_GAP)))
    if opts.mode_draw == "residual" and opts.mode_prior and opts.mode_control == "set":
        return residual_p_major(vad, velocity_shift, opts.plan_pull, gains, tuple(opts.plan_axis_weights),
                                slope=opts.residual_slope)
    return 1.0 / (1.0 + math.exp(-opts.mode_prior * valence))


def plan_header(opts: SamplingOptions, vad: tuple[float, float, float], velocity_shift: float,
                gen: torch.Generator) -> tuple[HeaderPlanner, str | None]:
    """The header planner for a requested VAD, and the mode drawn first from `gen` (mode_control "set"; None when the
    model decides at MODE, planned then on the expected mode cue)."""
    gains = HEARD_GAIN if opts.plan_heard else None
    p_major = major_odds(opts, vad, velocity_shift, gains)
    drawn = None
    if opts.mode_prior and opts.mode_control == "set":   # mode first: every other cue is planned around it
        drawn = "major" if float(torch.rand((), generator=gen)) < p_major else "minor"
        m = 1.0 if drawn == "major" else -1.0
    else:
        m = 2.0 * p_major - 1.0 if opts.mode_prior else 0.0
    planner = HeaderPlanner(vad, m, velocity_shift, pull=opts.plan_pull, gains=gains,
                            clarity=opts.plan_clarity and drawn is not None, axis_weights=tuple(opts.plan_axis_weights))
    return planner, drawn


def decoding_rules(tok: Tokenizer, opts: SamplingOptions, gen: torch.Generator,
                   control_vad: tuple[float, float, float] | None = None, velocity_shift: float = 0.0,
                   text: str | None = None) -> list[Processor]:
    """The processors for one piece, in the order they apply (mu_llama.generate.processors). With the planner, its
    mode draw is the first number taken from `gen`."""
    rules: list[Processor] = [GrammarMask(), DurationStop(tok)]
    if text and opts.text_facts == "constrain":
        if masks := masks_for(PromptFacts.parse(text), tok, vad_given=control_vad is not None):
            rules.append(TextFacts(masks))
    planner, drawn = None, None
    if control_vad is not None and opts.vad_control == "plan":
        planner, drawn = plan_header(opts, control_vad, velocity_shift, gen)
        step = float(np.log2(tempo_bins()[1] / tempo_bins()[0]))   # tempo cue = log2(bpm / 100) / 0.9
        rules.append(HeaderPlan(tok, planner, {"TEMPO": step * opts.tempo_prior_bins / 0.9, "DYN": opts.plan_width,
                                               "REG": opts.plan_width, "DENS": opts.plan_width}))
    if drawn is not None:
        rules.append(FixedMode(tok, drawn))
    elif control_vad is not None and opts.mode_prior:
        rules.append(ModePrior(tok, opts.mode_prior * float(control_vad[0]), replace=opts.mode_control == "set"))
    if control_vad is not None and opts.vad_control == "priors" and opts.tempo_prior_bins:
        rules.append(TempoPrior(tok, float(control_vad[1]), opts.tempo_prior_bins))
    if opts.key_constraint == "scale":
        rules.append(KeyScale(opts.triad_bias, opts.strong_beat_factor, planner))
    rules.append(Temperature(opts.header_temperature, opts.temperature))
    if opts.top_k:
        rules.append(TopK(opts.top_k))
    return rules


@torch.no_grad()
def sample_tokens(model: MusicTokenLM, tok: Tokenizer, prefix_cond: torch.Tensor, prefix_uncond: torch.Tensor | None,
                  duration_s: float, opts: SamplingOptions, control_vad: tuple[float, float, float] | None = None,
                  velocity_shift: float = 0.0, text: str | None = None) -> list[int]:
    """Sample one sequence. prefix_* (1, P, D); control_vad: the requested VAD (for the header controls), None = none;
    text: the prompt, whose stated facts limit the header (opts.text_facts);
    velocity_shift: MIDI velocity per unit arousal that the performance layer will add after sampling (the planner
    plans played loudness). Returns ids from BOS to EOS."""
    model.eval()
    use_u = prefix_uncond is not None and opts.guidance_scale != 1.0
    prefix = torch.cat([prefix_cond, prefix_uncond], 0) if use_u else prefix_cond
    Bp = prefix.shape[0]
    gen = torch.Generator().manual_seed(int(opts.seed))
    rules = decoding_rules(tok, opts, gen, control_vad, velocity_shift, text)
    state = Grammar(tok, duration_s)
    ids = [tok.bos]
    state.advance(tok.bos)
    W = model.config.max_len

    def prefill(window: list[int]):
        caches = [dict() for _ in model.blocks]
        x = torch.tensor([window] * Bp)
        return caches, model(x, prefix, caches, start=0)[:, -1], len(window)

    caches, logits, cur = prefill(ids)
    body_start = None                                  # index in ids of the first BAR
    while len(ids) < opts.max_tokens:
        lp = guided_logprobs(logits[0], logits[1] if use_u else None, opts.guidance_scale)
        for rule in rules:
            lp = rule(lp, state)
        nxt = int(torch.multinomial(torch.softmax(lp, -1), 1, generator=gen))
        for rule in rules:
            nxt = rule.after_draw(nxt, state)
        ids.append(nxt)
        state.advance(nxt)
        if nxt == tok.eos:
            break
        if nxt == tok.bar and body_start is None:
            body_start = len(ids) - 1
        if cur >= W:                                    # slide: header + last half of the body from a BAR
            header = ids[: 1 + len(HEADER_KINDS)]
            tail_from = len(ids) - W // 2
            bars = [i for i in range(max(tail_from, body_start or 0), len(ids)) if ids[i] == tok.bar]
            start = bars[0] if bars else len(ids) - 1
            caches, logits, cur = prefill(header + ids[start:])
        else:
            logits = model(torch.tensor([[nxt]] * Bp), None, caches, start=cur)[:, -1]
            cur += 1
    if ids[-1] != tok.eos:
        ids.append(tok.eos)
    return ids
