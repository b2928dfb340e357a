"""Facts a prompt states -> which header tokens the generator may choose.

The text conditioning (a MiniLM sentence embedding) steers the small token LM only loosely. For example, at header
temperature 1 a prompt that says "fast" got a fast TEMPO in 56% of pieces. Facts that the prompt states outright are
parsed with the captioning evaluation's own parser (mu_llama.eval.facts_parse), so that "for cello", "a slow lament"
and "in a minor key" mean the same here as when a caption is scored. Each stated fact then limits its header slot:

    instrument family  PROG   General MIDI programs of that family (mu_llama.facts.gm_family)
    tempo class        TEMPO  tempo bins in the class's range (slow < 80, moderate 80..119, fast >= 120 BPM)
    mode               MODE   MODE_major / MODE_minor
    key                KEY    the tonic, and MODE when the key names it ("F# minor")
    meter              TS     the time signature, when the vocabulary has it

Within the allowed set the model still chooses, for example which string instrument or which fast tempo. An
explicitly requested emotion (VAD) outranks the text's mode and tempo class. When a user shifts the valence of a
described clip, the shift is the request, so the sampler's VAD controls set MODE and TEMPO when a VAD is given (see
`masks_for(..., vad_given=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mu_llama.facts import PITCH_CLASSES, gm_family, tempo_class
from mu_llama.generate.tokenizer import Tokenizer, tempo_bins


@dataclass(frozen=True)
class PromptFacts:
    family: str | None = None
    tempo_class: str | None = None
    mode: str | None = None
    key_tonic: int | None = None      # pitch class 0..11 (C = 0)
    meter: str | None = None

    @classmethod
    def parse(cls, text: str) -> PromptFacts:
        from mu_llama.eval.facts_parse import parse_facts

        p = parse_facts(text or "")
        tonic, mode = None, p.mode
        if p.key:                                   # "F# minor"
            name, _, key_mode = p.key.partition(" ")
            tonic = PITCH_CLASSES.index(name) if name in PITCH_CLASSES else None
            mode = mode or (key_mode or None)
        return cls(p.get("family"), p.tempo_class, mode, tonic, p.meter)

    def is_empty(self) -> bool:
        return all(v is None for v in (self.family, self.tempo_class, self.mode, self.key_tonic, self.meter))


def masks_for(facts: PromptFacts, tok: Tokenizer, *, vad_given: bool = False) -> dict[str, torch.Tensor]:
    """Header kind -> (V,) bool mask of the tokens allowed at that slot (only kinds the facts constrain; a fact the
    vocabulary cannot express, e.g. a family with no GM program such as drums, constrains nothing)."""
    V = len(tok)
    out: dict[str, torch.Tensor] = {}

    def allow(kind: str, names: list[str]):
        ids = [tok.index[n] for n in names if n in tok.index]
        if ids:
            m = torch.zeros(V, dtype=torch.bool)
            m[ids] = True
            out[kind] = m

    if facts.family is not None:
        allow("PROG", [f"PROG_{p}" for p in range(128) if gm_family(p) == facts.family])
    if facts.tempo_class is not None and not vad_given:
        allow("TEMPO", [f"TEMPO_{i}" for i, bpm in enumerate(tempo_bins()) if tempo_class(float(bpm)) == facts.tempo_class])
    if facts.mode is not None and not vad_given:
        allow("MODE", [f"MODE_{facts.mode}"])
    if facts.key_tonic is not None:
        allow("KEY", [f"KEY_{facts.key_tonic}"])
    if facts.meter is not None:
        allow("TS", [f"TS_{facts.meter}"])
    return out


def header_agreement(facts: PromptFacts, header) -> dict[str, bool | None]:
    """Per stated fact: does the sampled header (tokenizer.Header) carry it? (None: the prompt states none)."""
    return {"family": None if facts.family is None else gm_family(header.program) == facts.family,
            "tempo_class": None if facts.tempo_class is None else tempo_class(header.bpm) == facts.tempo_class,
            "mode": None if facts.mode is None else header.mode == facts.mode}
