"""Fact fusion: the audio fact tagger (mu_llama.tagger) weighs in on which family / tempo / mode word a caption uses.

Shallow fusion, mass-preserving. At every decoding step, for each fact (family, tempo class, mode) the tokens that
spell one of its class words (FACT_WORDS) whole are grouped by class. With m_c the LM's probability mass on class c's
tokens and p_c the tagger's probability of class c for this row's audio, the mass is redistributed as

    q_c  ∝  m_c * p_c ** weight,      sum_c q_c = sum_c m_c

and each token of class c is scaled by q_c / m_c. So the LM still decides *whether* a fact word comes next (the total
mass on the fact's words is unchanged, and a class the LM gives no mass stays out), and the product of the two experts
decides *which* one. weight 0 is plain decoding (tested); larger weights trust the tagger more. The family is steered
only until the answer names one, and no fact right after one of its own words (FactFusion explains why).

Word lists: the class words (or phrases: "string quartet") of mu_llama.eval.facts_parse that the captioners use;
tests/test_fusion.py checks that each reads as its class to the parser. Only words the tokenizer keeps whole are
steered (of a phrase, its first word: " string" of "string quartet"), and a token claimed by two classes of one fact
is left out.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import LogitsProcessor

FACT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "family": {
        "keyboard": ("piano", "pianos", "pianist", "harpsichord", "keyboard", "clavinet", "clavichord"),
        "mallet percussion": ("celesta", "glockenspiel", "vibraphone", "marimba", "xylophone", "dulcimer"),
        "organ": ("organ", "organs", "accordion", "harmonica", "harmonium"),
        "guitar": ("guitar", "guitars", "guitarist"),
        "bass": ("bass", "bassist"),
        "strings": ("violin", "violins", "viola", "violas", "cello", "cellos", "harp", "strings", "string quartet",
                    "fiddle", "contrabass", "pizzicato"),
        "voice": ("choir", "choral", "chorus", "vocals", "vocal", "singers", "singer", "soprano"),
        "brass": ("trumpet", "trumpets", "trombone", "trombones", "tuba", "horn", "horns", "brass", "cornet",
                  "flugelhorn"),
        "woodwind": ("flute", "flutes", "oboe", "oboes", "clarinet", "clarinets", "bassoon", "bassoons", "saxophone",
                     "sax", "recorder", "piccolo", "woodwind", "woodwinds"),
        "synth": ("synth", "synthesizer"),
        "drums": ("drums", "drum", "percussion"),
        "other": ("banjo", "sitar", "shamisen", "koto", "kalimba", "bagpipe", "bagpipes"),
    },
    "tempo_class": {
        "slow": ("slow", "slowly", "leisurely", "unhurried", "adagio", "largo", "lento"),
        "moderate": ("moderate", "moderato", "andante", "allegretto"),
        "fast": ("fast", "quick", "brisk", "lively", "rapid", "allegro", "presto", "upbeat"),
    },
    "mode": {"major": ("major",), "minor": ("minor",)},
}


def word_starts(tokenizer, word: str) -> set[int]:
    """Ids of the tokens that spell the first word of `word` whole: after a space (lower-case or capitalised) or
    capitalised at the start of a text. A word the tokenizer splits is left out: its first piece (" clar", " t")
    starts unrelated words too, and biasing it would bend them."""
    first = word.split()[0]
    ids = set()
    for text in (" " + first, " " + first.capitalize(), first.capitalize()):
        toks = tokenizer.encode(text, add_special_tokens=False)
        if len(toks) == 1 and tokenizer.decode(toks) == text:
            ids.add(toks[0])
    return ids


def fact_token_classes(tokenizer, facts=tuple(FACT_WORDS)) -> dict[str, dict[str, list[int]]]:
    """{fact: {class: sorted token ids}}; a token claimed by two classes of one fact is dropped from both."""
    out = {}
    for fact in facts:
        by_class = {c: set().union(*(word_starts(tokenizer, w) for w in words))
                    for c, words in FACT_WORDS[fact].items()}
        shared = {t for c, ids in by_class.items() for t in ids
                  if any(t in other for c2, other in by_class.items() if c2 != c)}
        out[fact] = {c: sorted(ids - shared) for c, ids in by_class.items() if ids - shared}
    return out


ONCE = ("family",)   # facts steered only until the answer first names one of their classes


class FactFusion(LogitsProcessor):
    """A transformers logits processor: __call__(input_ids (B, T), scores (B, V)) -> scores (B, V).

    probs[fact]: (B, len(classes)) tagger probabilities, columns in `classes[fact]` order (TAG_FACTS order).
    Where a fact's words are not steered (the row's scores pass through for that fact):
    - right after one of the fact's own words: inside a name such as "synth bass" or "string quartet", whose second
      word belongs to another class (steering it turned "synth bass" into "synth synth");
    - for the family, once the answer has named one: the tagger knows the *primary* family, which an answer names
      first; the rest of an instrument list is the LLM's.
    The generated part of input_ids starts at `prompt_len`, which model.generate sets per call (for_prompt)."""

    def __init__(self, token_classes: dict[str, dict[str, list[int]]], probs: dict[str, np.ndarray],
                 classes: dict[str, tuple[str, ...]], weight: float = 1.0, floor: float = 1e-4):
        self.weight = float(weight)
        self.prompt_len = 0
        self.groups = []    # (fact, class token ids (K,) long, class of each token (K,) long, log p (B, C))
        for fact, by_class in token_classes.items():
            if fact not in probs:
                continue
            names = [c for c in classes[fact] if c in by_class]
            if not names:
                continue
            ids = [t for c in names for t in by_class[c]]
            which = [j for j, c in enumerate(names) for _ in by_class[c]]
            cols = [classes[fact].index(c) for c in names]
            logp = np.log(np.maximum(np.asarray(probs[fact], np.float64)[:, cols], floor))
            self.groups.append((fact, torch.tensor(ids, dtype=torch.long), torch.tensor(which, dtype=torch.long),
                                torch.from_numpy(logp).float()))

    def for_prompt(self, prompt_len: int) -> FactFusion:
        """A copy that knows where the generated tokens start (the prompts' padded width)."""
        out = copy.copy(self)
        out.prompt_len = int(prompt_len)
        return out

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.weight == 0:
            return scores
        logp = torch.log_softmax(scores.float(), -1)                                  # (B, V)
        out = scores.clone()
        generated = input_ids[:, self.prompt_len:]                                     # (B, t)
        for fact, ids, which, tag in self.groups:
            ids, which = ids.to(scores.device), which.to(scores.device)
            tok = logp[:, ids]                                                         # (B, K)
            # m_c: log LM mass per class (B, C); -inf where the LM gives a class nothing
            m = torch.stack([torch.logsumexp(tok[:, which == c], 1) for c in range(tag.shape[1])], 1)
            fused = m + self.weight * tag.to(scores.device)                            # log q~_c
            total = torch.logsumexp(m, 1, keepdim=True)                                # log sum_c m_c
            q = fused - torch.logsumexp(fused, 1, keepdim=True) + total                # log q_c
            shift = torch.where(torch.isfinite(m), q - m, torch.zeros_like(m))         # (B, C)
            free = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)    # rows left to the LM
            if generated.shape[1]:
                free |= torch.isin(generated[:, -1], ids)
                if fact in ONCE:
                    free |= torch.isin(generated, ids).any(1)
            shift = shift.masked_fill(free[:, None], 0.0)
            out[:, ids] = (scores[:, ids].float() + shift[:, which]).to(scores.dtype)
        return out
