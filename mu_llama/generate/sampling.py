"""Sampling from the token LM: KV cache, classifier-free guidance, a token grammar, and a sliding window.

The loop is short on purpose: prefill the conditioning prefix + BOS, then one token at a time. Each step
  1. logits of the conditional path (and, when guidance_scale != 1, of the unconditional path in the same batch),
  2. guidance in log-probability space: log p_u + s * (log p_c - log p_u)   (s = 1 is exactly the conditional path),
  3. the grammar mask (header in order, then BAR / POS / VEL / PITCH / DUR in a valid order, POS moving forward
     within the bar's length, EOS only after the requested duration),
  4. temperature and top-k, then a draw from a seeded torch.Generator (same seed -> same music).
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
from mu_llama.generate.prompt_facts import PromptFacts, masks_for
from mu_llama.generate.tokenizer import (
    DENSITIES,
    DYN_LEVELS,
    HEADER_KINDS,
    REGISTERS,
    TICKS_PER_BEAT,
    Tokenizer,
    tempo_bins,
)

NEG = float("-inf")
KEY_CONSTRAINTS = ("scale", "none")
MODE_CONTROLS = ("set", "prior")
TEXT_FACTS = ("constrain", "none")
# Valence the rules reach without the mode cue: tempo 0.2 + pitch 0.15 (mu_llama.emotion.targets.WEIGHTS) subtracted
# from the mode's 0.65: one mode alone reaches |valence| >= REACH_GAP
REACH_GAP = WEIGHTS["valence"]["mode"] - WEIGHTS["valence"]["tempo"] - WEIGHTS["valence"]["pitch"]   # 0.3
VAD_CONTROLS = ("plan", "priors")
MODE_DRAWS = ("valence", "residual", "reach")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}   # minor: natural + raised 7th
THIRDS = {"major": 4, "minor": 3}     # the mode-defining degree
# Scale-degree weights (semitones above the tonic -> multiple of `triad_bias`, added to the log-probability).
# Masking to the scale alone cannot make music sound minor: natural minor has its relative major's pitch set, so what
# decides the heard mode is which tones are stressed. Both profiles stress the tonic triad (tonic, the mode-defining
# third, the fifth) and lean away from the tones that would point at the *relative* key:
#   major: the 6th (tonic of the relative minor) is discouraged;
#   minor: the raised 7th (leading tone, harmonic minor) is favoured over the lowered 7th (which is the fifth of the
#          relative major). The relative major's tonic is the minor third itself, so it is not penalised.
# In major the third is weighted below the fifth: stressing 3rd + 5th (E, G in C) outlines the mediant triad E-G-B,
# which reads as E minor. Checked on note-level major share (no estimator), 64 12-s pieces at valence +-0.8:
# header-major pieces 0.86 -> 1.00 major, header-minor pieces 0.08 -> 0.07.
DUPLE_METERS = ("2/4", "4/4", "2/2", "6/8", "12/8")   # a second strong beat at mid-bar
DEGREE_WEIGHTS = {"major": {0: 1.0, 4: 0.6, 7: 0.8, 9: -1.0},
                  "minor": {0: 1.0, 3: 1.0, 7: 0.5, 11: 0.5, 10: -1.0}}


@dataclass(frozen=True)
class SamplingOptions:
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0                 # 0 = no top-k
    seed: int = 0
    max_tokens: int = 4096
    # Key-consistent decoding: once the header has fixed KEY and MODE, PITCH tokens outside that key's scale
    # (natural minor plus the raised 7th for minor) are masked and the mode-defining third gets `triad_bias` added
    # to its log-probability (the small LM favours open fifths, which leave the mode ambiguous). The LM learns
    # header -> key poorly at this size; this keeps its notes in the key and mode its header chose.
    key_constraint: str = "scale"   # "scale" | "none"
    triad_bias: float = 3.0
    # Metric emphasis: on strong beats (bar downbeat, and mid-bar in duple meters) the positive degree weights are
    # multiplied by this; the first onset of the piece and the downbeat of the final bar allow only tonic-triad tones
    # (an opening and a cadence on the tonic chord are what fixes a key for a listener).
    strong_beat_factor: float = 2.0
    # Control tokens (the header: tempo, dynamics, mode, ...) are sampled at this temperature (body at `temperature`):
    # a sharper draw of the controls makes the requested conditioning decide them more reliably.
    header_temperature: float = 1.0
    # Mode control at the MODE header slot when a VAD is given. Valence <- mode is the first cue rule
    # (mu_llama.emotion.targets), and the 1M-parameter LM follows it loosely: earlier header tokens override it (minor
    # for valence +0.8 once it has chosen a low register), and at valence 0 it writes minor every time.
    #   "set"   (default): P(major) = sigmoid(mode_prior * valence), the model's own preference dropped: valence 0 is
    #           an even draw, +-0.4 gives 92% / 8% major, +-0.8 99% / 1%.
    #   "prior": add +-mode_prior * valence to the guided log-probabilities of major / minor (the model keeps its own
    #           bias: at valence 0 the prior is 0).
    # mode_prior 0 = the model's own choice in both.
    mode_control: str = "set"
    mode_prior: float = 6.0
    # Tempo prior at the TEMPO header slot when a VAD is given: arousal <- tempo is the first arousal cue rule, whose
    # tempo cue is log2(bpm / 100) / 0.9 (mu_llama.emotion.targets.cue_values). The bins' log-probabilities get
    # -0.5 * (distance to that rule's tempo for the requested arousal, 100 * 2 ** (0.9 * arousal) BPM, in bins /
    # tempo_prior_bins) ** 2 added: a Gaussian of width tempo_prior_bins bins (1 bin = 0.16 octave). Without it the
    # LM lets dominance move tempo (median 156 BPM at dominance -0.8 vs 63 at +0.8), which the rules do not.
    # 0 = the model's own tempo.
    tempo_prior_bins: float = 1.0
    # How the requested VAD steers the header (mu_llama.generate.planner):
    #   "plan" (default): invert the cue rules for all three axes at once (valence <- mode, tempo, pitch; arousal
    #             <- tempo, velocity, density; dominance <- velocity, pitch, texture, family): the mode is drawn first
    #             (with mode_control "set"), then the planned tempo / played velocity / density / pitch become
    #             Gaussian priors at TEMPO (width tempo_prior_bins bins), DYN, REG and DENS (width plan_width, in cue
    #             units), re-planned after each header token is drawn. Emotion grid (python -m
    #             mu_llama.generate.evaluate, 5x5x5, 12 s), Spearman valence / arousal / dominance pooled over the draws
    #             not used for design (seed offsets 0, 2000, 3000): 0.70 / 0.74 / 0.82 with "plan" (0.69 / 0.73 /
    #             0.82 with the "valence" mode draw), 0.62 / 0.64 / 0.87 with "priors" (design values were chosen on
    #             offset 1000).
    #   "priors": one axis per slot: the mode control above and the tempo prior for arousal only.
    # plan_pull: pull toward neutral cues (makes the solution unique).
    # plan_heard: plan with the rules applied to the cues as the audio carries them (planner.HEARD_GAIN: tempo is
    #             heard compressed to about 0.4 of its octaves); False = the rules on the score's cues.
    # plan_clarity: with a drawn mode, also plan how clearly the body sounds it (planner.MODE_CLARITY) and set the
    #             body's triad_bias from that (replacing `triad_bias`): a minor piece drawn at valence 0 is sounded as
    #             a milder minor than one asked for at -0.8.
    # plan_axis_weights: weight of each axis' squared rule error (valence, arousal, dominance). Dominance below 1:
    #             loudness is its main cue and also an arousal cue, so the plan lets dominance give some way rather
    #             than make pieces asked for calm but powerful read aroused (0.35 and 0.1 measured alike).
    vad_control: str = "plan"
    plan_width: float = 0.3
    plan_pull: float = 0.02
    plan_heard: bool = True
    plan_clarity: bool = True
    plan_axis_weights: tuple[float, float, float] = (1.0, 1.0, 0.35)
    # How the planner draws the mode first (vad_control "plan", mode_control "set"):
    #   "reach" (default, below); "valence": P(major) = sigmoid(mode_prior x valence) (session 3's draw).
    #   "residual": the mode carries only the valence LEFT after the planned tempo and pitch terms as heard
    #             (planner.residual_p_major): fast, high-register plans read brighter, so they are drawn minor more
    #             often, and the draw is graded so that the expected heard valence over the draw meets the request
    #             where reachable (sigmoid(6 valence) makes +0.4 and +0.8 read alike). residual_slope: 0 = the linear
    #             (clipped) mapping; > 0 = a sigmoid of the same residual with that slope.
    #             Held out (offsets 0 / 2000 / 3000, slope 3, chosen on 1000) valence 0.70 / 0.71 / 0.66 vs
    #             0.66 / 0.70 / 0.70 for "valence": within noise. The heard gains credit tempo with ~0.08 of valence
    #             while fast tempo adds ~0.25 within major, so it corrects the tempo leak only partly.
    #   "reach": the mode the rules need to reach the request. Major reaches valence >= 0.65 - 0.35 = 0.3 at best
    #             (mode weight 0.65; tempo + pitch 0.35 at most) and minor <= -0.3, so |valence| >= 0.3 is reachable
    #             only in one mode and a piece drawn in the other cannot meet it; inside (-0.3, 0.3) the odds are
    #             linear so that the expected valence over the draw meets the request:
    #             P(major) = clip(0.5 + valence / 0.6, 0, 1) (REACH_GAP = 0.3). With sigmoid(6 valence) 8% of the
    #             pieces asked for +-0.4 came out in the mode that cannot reach it. Nothing in it was fitted; grid valence
    #             / arousal / dominance on offsets 0 / 1000 / 2000 / 3000: 0.69 / 0.72 / 0.72 / 0.71, 0.68 / 0.80 / 0.75
    #             / 0.77, 0.84 / 0.83 / 0.82 / 0.81 ("valence": 0.66 / 0.64 / 0.70 / 0.70, 0.68 / 0.79 / 0.75 / 0.77).
    mode_draw: str = "reach"
    residual_slope: float = 0.0
    # Facts the prompt states outright (instrument family, tempo class, mode, key, meter) limit their header slot to
    # the matching tokens (mu_llama.generate.prompt_facts); a requested VAD outranks the text's mode and tempo class.
    # "none": the text steers only through its embedding.
    text_facts: str = "constrain"

    def __post_init__(self):
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


class Grammar:
    """Which token may come next, given the sequence so far (well-formed sequences only)."""

    def __init__(self, tok: Tokenizer, duration_s: float):
        self.tok = tok
        self.duration_s = duration_s
        V = len(tok)
        kinds = tok.kind_of
        self.kind_mask = {k: torch.from_numpy(kinds == k) for k in set(kinds)}
        self.pos_val = torch.full((V,), -1, dtype=torch.long)
        self.pitch_val = torch.full((V,), -1, dtype=torch.long)
        for i, t in enumerate(tok.vocab):
            if t.startswith("POS_"):
                self.pos_val[i] = int(t[4:])
            elif t.startswith("PITCH_"):
                self.pitch_val[i] = int(t[6:])
        self.n = 0                 # tokens so far (incl. BOS)
        self.last_kind = "BOS"
        self.bar = -1
        self.pos = -1
        self.last_pitch = -1
        self.bar_ticks = 16
        self.bpm = 120.0
        self.mode: str | None = None
        self.key: int | None = None
        self.meter = "4/4"
        self.n_onsets = 0          # POS tokens so far (onsets)

    def pitch_bias(self, triad_bias: float, strong_beat_factor: float = 1.0) -> torch.Tensor | None:
        """(V,) additive log-prob bias for PITCH tokens in the header's key (None before KEY is known).

        Out-of-scale pitches get -inf; scale degrees get DEGREE_WEIGHTS x triad_bias (positive weights x
        strong_beat_factor on strong beats); at the first onset and the final bar's downbeat only the tonic triad."""
        if self.key is None or self.mode is None:
            return None
        pc = (self.pitch_val - self.key) % 12
        is_pitch = self.pitch_val >= 0
        in_scale = torch.zeros_like(is_pitch)
        for d in SCALES[self.mode]:
            in_scale |= pc == d
        bias = torch.zeros(len(self.pitch_val))
        bias[is_pitch & ~in_scale] = NEG
        strong = self.strong_beat()
        for degree, w in DEGREE_WEIGHTS[self.mode].items():
            bias[is_pitch & (pc == degree)] = w * triad_bias * (strong_beat_factor if strong and w > 0 else 1.0)
        if strong_beat_factor > 0 and strong and (self.n_onsets <= 1 or self.final_bar()):
            triad = (pc == 0) | (pc == THIRDS[self.mode]) | (pc == 7)
            bias[is_pitch & ~triad] = NEG
        return bias

    def strong_beat(self) -> bool:
        """Current onset on the downbeat, or mid-bar in a bar of an even number of beats (4/4, 2/2, 6/8, 12/8)."""
        return self.pos == 0 or (self.meter in DUPLE_METERS and self.pos == self.bar_ticks // 2)

    def final_bar(self) -> bool:
        """Completing the current bar reaches the requested duration."""
        return (self.bar + 1) * self.bar_ticks / TICKS_PER_BEAT * 60.0 / self.bpm >= self.duration_s

    def done_beats(self) -> float:
        """Beats covered by the completed bars."""
        return max(self.bar, 0) * self.bar_ticks / TICKS_PER_BEAT

    def target_reached(self) -> bool:
        return self.done_beats() * 60.0 / self.bpm >= self.duration_s

    def mask(self) -> torch.Tensor:
        """(V,) bool: allowed next tokens."""
        km = self.kind_mask
        if self.n <= len(HEADER_KINDS):                    # BOS + header in fixed order
            return km[HEADER_KINDS[self.n - 1]].clone()
        k = self.last_kind
        if k == "KEY":
            m = km["BAR"].clone()
        elif k == "BAR":
            m = km["BAR"] | (km["POS"] & (self.pos_val < self.bar_ticks))
        elif k == "POS":
            m = km["VEL"] | km["PITCH"]
        elif k == "VEL":
            m = km["PITCH"] & (self.pitch_val > self.last_pitch)
        elif k == "PITCH":
            m = km["DUR"].clone()
        else:                                              # after DUR
            higher = km["PITCH"] & (self.pitch_val > self.last_pitch)     # chord notes go up, as encoded
            m = km["BAR"] | (km["POS"] & (self.pos_val > self.pos) & (self.pos_val < self.bar_ticks)) | higher
            if bool(higher.any()):
                m = m | km["VEL"]
        if k != "KEY" and self.target_reached() and k in ("BAR", "DUR"):
            m = m | km["EOS"]
        return m

    def advance(self, token: int):
        t = self.tok.vocab[token]
        kind, _, val = t.partition("_")
        self.n += 1
        self.last_kind = kind
        if kind == "TS":
            num, den = (int(x) for x in val.split("/"))
            self.bar_ticks = num * 4 * TICKS_PER_BEAT // den
            self.meter = val
        elif kind == "TEMPO":
            self.bpm = float(tempo_bins()[int(val)])
        elif kind == "MODE":
            self.mode = val
        elif kind == "KEY":
            self.key = int(val)
        elif kind == "BAR":
            self.bar += 1
            self.pos = -1
            self.last_pitch = -1
        elif kind == "POS":
            self.pos = int(val)
            self.last_pitch = -1
            self.n_onsets += 1
        elif kind == "PITCH":
            self.last_pitch = int(val)


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
    gram = Grammar(tok, duration_s)
    ids = [tok.bos]
    gram.n = 1
    W = model.config.max_len

    def prefill(window: list[int]):
        caches = [dict() for _ in model.blocks]
        x = torch.tensor([window] * Bp)
        return caches, model(x, prefix, caches, start=0)[:, -1], len(window)

    caches, logits, cur = prefill(ids)
    mode_bias = torch.zeros(len(tok))                 # +1 major, -1 minor (times mode_prior * valence)
    mode_bias[tok.index["MODE_major"]], mode_bias[tok.index["MODE_minor"]] = 1.0, -1.0
    tempo_ids = torch.tensor([tok.index[f"TEMPO_{i}"] for i in range(len(tempo_bins()))])
    tempo_bias = None                                  # (N_TEMPO,) Gaussian prior around the rule's tempo for arousal
    planner, drawn_mode = None, None
    if control_vad is not None and opts.vad_control == "plan":
        gains = HEARD_GAIN if opts.plan_heard else None
        p_major = major_odds(opts, control_vad, velocity_shift, gains)
        if opts.mode_prior and opts.mode_control == "set":   # mode first: every other cue is planned around it
            drawn_mode = "major" if float(torch.rand((), generator=gen)) < p_major else "minor"
            m = 1.0 if drawn_mode == "major" else -1.0
        else:                                          # the model (with the mode prior) decides at MODE: plan on E[m]
            m = 2.0 * p_major - 1.0 if opts.mode_prior else 0.0
        planner = HeaderPlanner(control_vad, m, velocity_shift, pull=opts.plan_pull, gains=gains,
                                clarity=opts.plan_clarity and drawn_mode is not None,
                                axis_weights=tuple(opts.plan_axis_weights))
        step = float(np.log2(tempo_bins()[1] / tempo_bins()[0]))
        widths = {"TEMPO": step * opts.tempo_prior_bins / 0.9, "DYN": opts.plan_width, "REG": opts.plan_width,
                  "DENS": opts.plan_width}                     # in cue units (tempo: bins of 1/0.9 octave per cue)
        slot_ids = {"TEMPO": tempo_ids, "DYN": torch.tensor([tok.index[f"DYN_{i}"] for i in range(len(DYN_LEVELS))]),
                    "REG": torch.tensor([tok.index[f"REG_{r}"] for r in REGISTERS]),
                    "DENS": torch.tensor([tok.index[f"DENS_{d}"] for d in DENSITIES])}
    elif control_vad is not None and opts.tempo_prior_bins:
        log_bins = torch.tensor(np.log2(tempo_bins()))
        target = math.log2(100.0) + 0.9 * float(control_vad[1])
        step = float(log_bins[1] - log_bins[0])
        tempo_bias = -0.5 * ((log_bins - target) / (step * opts.tempo_prior_bins)) ** 2
    fact_masks = {}                                    # header kind -> (V,) allowed by the prompt's stated facts
    if text and opts.text_facts == "constrain":
        fact_masks = masks_for(PromptFacts.parse(text), tok, vad_given=control_vad is not None)
    triad_bias = opts.triad_bias                       # the planner may re-set it once the header is drawn
    body_start = None                                  # index in ids of the first BAR
    while len(ids) < opts.max_tokens:
        lp = guided_logprobs(logits[0], logits[1] if use_u else None, opts.guidance_scale)
        m = gram.mask()
        if not gram.target_reached():
            m = m & ~gram.kind_mask["EOS"]
        lp = lp.masked_fill(~m, NEG)
        slot = HEADER_KINDS[gram.n - 1] if gram.n <= len(HEADER_KINDS) else None
        if slot in fact_masks:
            lp = lp.masked_fill(~fact_masks[slot], NEG)
        if planner is not None and slot in slot_ids and (prior := planner.prior(slot, widths[slot])) is not None:
            lp = lp.index_add(0, slot_ids[slot], torch.from_numpy(prior).to(lp.dtype))
        if drawn_mode is not None and slot == "MODE":
            lp = torch.full_like(lp, NEG)                # the mode the planner drew (and planned around)
            lp[tok.index[f"MODE_{drawn_mode}"]] = 0.0
        elif control_vad is not None and opts.mode_prior and slot == "MODE":
            push = opts.mode_prior * float(control_vad[0])
            if opts.mode_control == "set":          # log-odds(major : minor) := push, nothing else allowed
                major, minor = torch.nn.functional.logsigmoid(torch.tensor([push, -push]))
                lp = torch.full_like(lp, NEG)
                lp[mode_bias > 0], lp[mode_bias < 0] = major, minor
            else:
                lp = lp + mode_bias * push
        if tempo_bias is not None and gram.n == 1 + HEADER_KINDS.index("TEMPO"):
            lp = lp.index_add(0, tempo_ids, tempo_bias.to(lp.dtype))
        if opts.key_constraint == "scale" and gram.last_kind in ("POS", "VEL", "DUR"):
            if (bias := gram.pitch_bias(triad_bias, opts.strong_beat_factor)) is not None:
                biased = lp + bias
                if torch.isfinite(biased).any():      # e.g. after VEL only higher pitches are legal: maybe none in key
                    lp = biased
        lp = lp / (opts.header_temperature if gram.n <= len(HEADER_KINDS) else opts.temperature)
        if opts.top_k:
            kth = torch.topk(lp, min(opts.top_k, int(m.sum()))).values[-1]
            lp = lp.masked_fill(lp < kth, NEG)
        nxt = int(torch.multinomial(torch.softmax(lp, -1), 1, generator=gen))
        if nxt == tok.bar and gram.target_reached():   # finished the bar that reaches the duration
            nxt = tok.eos
        ids.append(nxt)
        if planner is not None and slot is not None:     # re-plan the remaining header around what was drawn
            kind, _, val = tok.vocab[nxt].partition("_")
            planner.observe(kind, val)
            if slot == HEADER_KINDS[-1]:                 # header complete: how clearly to sound the mode
                triad_bias = planner.triad_bias(opts.triad_bias)
        gram.advance(nxt)
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


def header_distribution(model: MusicTokenLM, tok: Tokenizer, prefix: torch.Tensor) -> dict[str, np.ndarray]:
    """Greedy walk of the header with the model's distribution at each header slot (for inspection/plots)."""
    out = {}
    ids = [tok.bos]
    with torch.no_grad():
        for kind in HEADER_KINDS:
            logits = model(torch.tensor([ids]), prefix)[0, -1]
            allowed = np.flatnonzero(tok.kind_of == kind)
            p = torch.softmax(logits[allowed], -1).numpy()
            out[kind] = p
            ids.append(int(allowed[int(np.argmax(p))]))
    return out
