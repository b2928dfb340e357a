"""Decoding rules of the token LM as small processors over one step's (V,) guided log-probabilities.

`sample_tokens` (mu_llama.generate.sampling) builds the list once per piece and, for every token, passes the
log-probabilities through each processor in list order, draws, lets each processor see the drawn token (`after_draw`,
which may replace it), then advances the sequence state. The state every rule reads is `Grammar`: which header slot is
being drawn, bar and position, meter, tempo, key and mode so far.

    GrammarMask    only tokens that keep the sequence well formed
    DurationStop   no EOS before the requested duration; the bar line that would start a bar after it becomes EOS
    TextFacts      the prompt's stated facts limit their header slot (mu_llama.generate.prompt_facts)
    HeaderPlan     the header planner's Gaussian priors at TEMPO / DYN / REG / DENS, re-planned after each header token
    FixedMode      the mode the planner drew, alone at MODE
    ModePrior      valence -> major/minor log-odds at MODE ("set" replaces the model's odds, "prior" adds to them)
    TempoPrior     arousal -> a Gaussian prior around the cue rule's tempo at TEMPO
    KeyScale       pitches outside the header key masked, scale degrees weighted (strong beats, opening, cadence)
    Temperature    header and body temperatures
    TopK           only the k most likely tokens

Processors return new tensors (never edit `lp` in place) and draw no random numbers: the sampler's seeded generator
is the only source of randomness, so the same seed gives the same music.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mu_llama.facts import DENSITIES, REGISTERS
from mu_llama.generate.planner import HeaderPlanner
from mu_llama.generate.tokenizer import DYN_LEVELS, HEADER_KINDS, TICKS_PER_BEAT, Tokenizer, tempo_bins

NEG = float("-inf")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}   # minor: natural + raised 7th
THIRDS = {"major": 4, "minor": 3}     # the mode-defining degree
# Scale-degree weights: semitones above the tonic -> multiple of triad_bias added to the log-probability. A scale mask
# alone cannot make music sound minor (natural minor has its relative major's pitch set): which tones are stressed
# decides the heard mode. Both profiles favour the tonic triad and lean away from the tones that point at the relative
# key (major: the 6th; minor: the lowered 7th, the relative major's fifth, below the raised leading tone). In major the
# third is weighted below the fifth: stressing 3rd + 5th outlines the mediant triad (E-G-B in C), which reads as minor.
DEGREE_WEIGHTS = {"major": {0: 1.0, 4: 0.6, 7: 0.8, 9: -1.0},
                  "minor": {0: 1.0, 3: 1.0, 7: 0.5, 11: 0.5, 10: -1.0}}
DUPLE_METERS = ("2/4", "4/4", "2/2", "6/8", "12/8")   # a second strong beat at mid-bar


class Grammar:
    """The sequence so far, as the decoding rules read it, and which token may come next (well-formed sequences).

    `mask()` is the token grammar alone: a header in fixed order, then BAR / POS / VEL / PITCH / DUR in a valid order,
    POS moving forward within the bar, chord notes going up, EOS possible after a bar line or a note (DurationStop
    decides when)."""

    def __init__(self, tok: Tokenizer, duration_s: float):
        self.tok = tok
        self.duration_s = duration_s
        V = len(tok)
        kinds = tok.kind_of
        self.kind_mask = {k: torch.from_numpy(kinds == k) for k in set(kinds)}   # kind -> (V,) bool
        self.pos_val = torch.full((V,), -1, dtype=torch.long)                    # (V,) POS value, -1 elsewhere
        self.pitch_val = torch.full((V,), -1, dtype=torch.long)                  # (V,) MIDI pitch, -1 elsewhere
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

    @property
    def slot(self) -> str | None:
        """The header kind the next token fills; None in the body."""
        return HEADER_KINDS[self.n - 1] if 1 <= self.n <= len(HEADER_KINDS) else None

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
        """(V,) bool: tokens the grammar allows next."""
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
        if k in ("BAR", "DUR"):
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


class Processor:
    """One decoding rule. `__call__(lp (V,), state) -> (V,)` before the draw; `after_draw(token, state) -> token`
    after it, with `state` not yet advanced (so `state.slot` is the slot just drawn). The defaults change nothing."""

    def __call__(self, lp: torch.Tensor, state: Grammar) -> torch.Tensor:
        return lp

    def after_draw(self, token: int, state: Grammar) -> int:
        return token


class GrammarMask(Processor):
    """Tokens the grammar does not allow next get -inf."""

    def __call__(self, lp, state):
        return lp.masked_fill(~state.mask(), NEG)


class DurationStop(Processor):
    """The piece ends with the bar that reaches the requested duration: EOS is masked before it, and a bar line drawn
    once it is reached becomes EOS."""

    def __init__(self, tok: Tokenizer):
        self.eos, self.bar = tok.eos, tok.bar

    def __call__(self, lp, state):
        if state.target_reached():
            return lp
        lp = lp.clone()
        lp[self.eos] = NEG
        return lp

    def after_draw(self, token, state):
        return self.eos if token == self.bar and state.target_reached() else token


class TextFacts(Processor):
    """masks: header kind -> (V,) bool of the tokens the prompt's stated facts allow there (prompt_facts.masks_for)."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def __call__(self, lp, state):
        m = self.masks.get(state.slot)
        return lp if m is None else lp.masked_fill(~m, NEG)


class HeaderPlan(Processor):
    """The planner's log-prob prior over a slot's classes (width per slot, in cue units; 0 = the model's own choice),
    and each drawn header token fixed in the plan (HeaderPlanner.observe) so the rest is re-planned around it."""

    def __init__(self, tok: Tokenizer, planner: HeaderPlanner, widths: dict[str, float]):
        self.tok = tok
        self.planner = planner
        self.widths = widths
        self.slot_ids = {"TEMPO": torch.tensor([tok.index[f"TEMPO_{i}"] for i in range(len(tempo_bins()))]),
                         "DYN": torch.tensor([tok.index[f"DYN_{i}"] for i in range(len(DYN_LEVELS))]),
                         "REG": torch.tensor([tok.index[f"REG_{r}"] for r in REGISTERS]),
                         "DENS": torch.tensor([tok.index[f"DENS_{d}"] for d in DENSITIES])}

    def __call__(self, lp, state):
        slot = state.slot
        if slot in self.slot_ids and (prior := self.planner.prior(slot, self.widths[slot])) is not None:
            lp = lp.index_add(0, self.slot_ids[slot], torch.from_numpy(prior).to(lp.dtype))
        return lp

    def after_draw(self, token, state):
        if state.slot is not None:
            kind, _, val = self.tok.vocab[token].partition("_")
            self.planner.observe(kind, val)
        return token


class FixedMode(Processor):
    """At MODE only `mode` (the mode the planner drew and planned every other cue around)."""

    def __init__(self, tok: Tokenizer, mode: str):
        self.index = tok.index[f"MODE_{mode}"]

    def __call__(self, lp, state):
        if state.slot != "MODE":
            return lp
        out = torch.full_like(lp, NEG)
        out[self.index] = 0.0
        return out


class ModePrior(Processor):
    """push = mode_prior x valence. replace (mode_control "set"): log-odds(major : minor) := push and nothing else, so
    P(major) = sigmoid(push) whatever the model prefers; otherwise ("prior") +push / -push is added to major / minor."""

    def __init__(self, tok: Tokenizer, push: float, replace: bool):
        self.push = float(push)
        self.replace = replace
        self.sign = torch.zeros(len(tok))                  # (V,) +1 major, -1 minor, 0 elsewhere
        self.sign[tok.index["MODE_major"]], self.sign[tok.index["MODE_minor"]] = 1.0, -1.0

    def __call__(self, lp, state):
        if state.slot != "MODE":
            return lp
        if not self.replace:
            return lp + self.sign * self.push
        major, minor = torch.nn.functional.logsigmoid(torch.tensor([self.push, -self.push]))
        out = torch.full_like(lp, NEG)
        out[self.sign > 0], out[self.sign < 0] = major, minor
        return out


class TempoPrior(Processor):
    """At TEMPO, -0.5 (distance in bins / width_bins)^2 to the arousal rule's tempo 100 x 2^(0.9 arousal) BPM."""

    def __init__(self, tok: Tokenizer, arousal: float, width_bins: float):
        self.ids = torch.tensor([tok.index[f"TEMPO_{i}"] for i in range(len(tempo_bins()))])
        log_bins = torch.tensor(np.log2(tempo_bins()))                # (N_TEMPO,) float64
        target = math.log2(100.0) + 0.9 * float(arousal)
        step = float(log_bins[1] - log_bins[0])
        self.bias = -0.5 * ((log_bins - target) / (step * width_bins)) ** 2

    def __call__(self, lp, state):
        if state.slot != "TEMPO":
            return lp
        return lp.index_add(0, self.ids, self.bias.to(lp.dtype))


class KeyScale(Processor):
    """Once the header has fixed KEY and MODE, on each step that may draw a pitch: out-of-scale pitches get -inf and
    scale degrees DEGREE_WEIGHTS x triad_bias (positive weights x strong_beat_factor on strong beats); the first
    onset and the final bar's downbeat allow only the tonic triad (an opening and a cadence on the tonic chord fix
    the key for a listener). Where no legal pitch is in the key (after VEL only higher pitches are legal) the step
    is left alone. With a planner, triad_bias is the one it plans for the drawn mode's clarity once the header is
    drawn (HeaderPlanner.triad_bias)."""

    def __init__(self, triad_bias: float, strong_beat_factor: float, planner: HeaderPlanner | None = None):
        self.triad_bias = triad_bias
        self.strong_beat_factor = strong_beat_factor
        self.planner = planner

    def bias(self, state: Grammar) -> torch.Tensor | None:
        """(V,) additive log-prob bias for PITCH tokens in the header's key (None before KEY is known)."""
        if state.key is None or state.mode is None:
            return None
        pc = (state.pitch_val - state.key) % 12
        is_pitch = state.pitch_val >= 0
        in_scale = torch.zeros_like(is_pitch)
        for d in SCALES[state.mode]:
            in_scale |= pc == d
        bias = torch.zeros(len(state.pitch_val))
        bias[is_pitch & ~in_scale] = NEG
        strong = state.strong_beat()
        for degree, w in DEGREE_WEIGHTS[state.mode].items():
            stress = self.strong_beat_factor if strong and w > 0 else 1.0
            bias[is_pitch & (pc == degree)] = w * self.triad_bias * stress
        if self.strong_beat_factor > 0 and strong and (state.n_onsets <= 1 or state.final_bar()):
            triad = (pc == 0) | (pc == THIRDS[state.mode]) | (pc == 7)
            bias[is_pitch & ~triad] = NEG
        return bias

    def __call__(self, lp, state):
        if state.last_kind not in ("POS", "VEL", "DUR") or (bias := self.bias(state)) is None:
            return lp
        biased = lp + bias
        return biased if torch.isfinite(biased).any() else lp

    def after_draw(self, token, state):
        if self.planner is not None and state.slot == HEADER_KINDS[-1]:   # header complete: how clearly to sound
            self.triad_bias = self.planner.triad_bias(self.triad_bias)    # its mode
        return token


class Temperature(Processor):
    """lp / header temperature while the header is drawn, lp / body temperature after."""

    def __init__(self, header: float, body: float):
        self.header, self.body = header, body

    def __call__(self, lp, state):
        return lp / (self.header if state.slot is not None else self.body)


class TopK(Processor):
    """Only the k most likely tokens (ties at the k-th value kept); fewer when fewer are possible."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, lp, state):
        kth = torch.topk(lp, min(self.k, int(torch.isfinite(lp).sum()))).values[-1]
        return lp.masked_fill(lp < kth, NEG)
