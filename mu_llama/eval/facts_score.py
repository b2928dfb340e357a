"""Score parsed facts against the clip's FactSheet: per fact correct / wrong / missing, confusion matrices,
and precision/recall over instrument families.

Which facts a text is judged on:
- every clip: family (primary), mode, key, meter, tempo_class, texture;
- arrangements only (sheet.style != "classical", or drums, or a bass type): style, drums, bass_type.

family: "correct" when the sheet's most prominent family (families[0]) is among the families the text asserts,
"wrong" when the text asserts families but not that one, "missing" when it names none. Separately, precision and
recall of the asserted family set against the sheet's family set (micro-averaged over items).

Captions and answers differ on silence: a caption that never states a fact has it "missing", and caption accuracy
is reported both over all clips (strict) and over the clips where the caption stated the fact. A QA answer that
does not state the asked fact is wrong: QA accuracy is correct / asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mu_llama.eval.facts_parse import ParsedFacts, parse_yes_no
from mu_llama.facts import (
    BASS_TYPES,
    FAMILIES,
    METERS,
    MODES,
    PITCH_CLASSES,
    STYLES,
    TEMPO_CLASSES,
    TEXTURES,
    FactSheet,
)

CAPTION_FACTS = ("family", "mode", "key", "meter", "tempo_class", "texture")
ARRANGEMENT_FACTS = ("style", "drums", "bass_type")
ALL_FACTS = CAPTION_FACTS + ARRANGEMENT_FACTS
MISSING = "(missing)"
LABELS: dict[str, tuple[str, ...]] = {
    "family": FAMILIES, "mode": MODES, "key": tuple(f"{t} {m}" for m in MODES for t in PITCH_CLASSES),
    "meter": METERS, "tempo_class": TEMPO_CLASSES, "texture": TEXTURES, "style": STYLES, "drums": ("yes", "no"),
    "bass_type": BASS_TYPES,
}

# QA "kind" -> the fact the question asks about. Kinds not listed are scored by text metrics only.
QA_KIND_TO_FACT: dict[str, str] = {
    "family": "family", "families": "family", "instrument": "family", "instruments": "family",
    "instrumentation": "family", "mode": "mode", "tonality": "mode", "key": "key", "meter": "meter",
    "time_signature": "meter", "time signature": "meter", "tempo": "tempo_class", "tempo_class": "tempo_class",
    "speed": "tempo_class", "texture": "texture", "style": "style", "drums": "drums", "percussion": "drums",
    "bass": "bass_type", "bass_type": "bass_type",
}


def is_arrangement(sheet: FactSheet) -> bool:
    return sheet.style != "classical" or sheet.drums or sheet.bass_type != "none"


def facts_for(sheet: FactSheet) -> tuple[str, ...]:
    return ALL_FACTS if is_arrangement(sheet) else CAPTION_FACTS


def truth(sheet: FactSheet, fact: str) -> str:
    if fact == "family":
        return sheet.families[0]
    if fact == "key":
        return sheet.key
    if fact == "drums":
        return "yes" if sheet.drums else "no"
    if fact == "tempo_class":
        return sheet.tempo_class
    return str(getattr(sheet, fact))


def predicted(parsed: ParsedFacts, fact: str, sheet: FactSheet) -> str | None:
    """The text's value for `fact` (None when it states none). For family: the sheet's primary family when the
    text asserts it, else the first family it names."""
    if fact == "family":
        if not parsed.families:
            return None
        return sheet.families[0] if sheet.families[0] in parsed.families else parsed.families[0]
    if fact == "drums":
        return None if parsed.drums is None else ("yes" if parsed.drums else "no")
    return parsed.get(fact)


@dataclass(frozen=True)
class Judgement:
    fact: str
    true: str
    pred: str | None
    status: str          # "correct" | "wrong" | "missing"

    def to_dict(self) -> dict:
        return {"true": self.true, "pred": self.pred, "status": self.status}


def judge(parsed: ParsedFacts, sheet: FactSheet, facts: tuple[str, ...] | None = None) -> dict[str, Judgement]:
    out = {}
    for fact in facts or facts_for(sheet):
        t, p = truth(sheet, fact), predicted(parsed, fact, sheet)
        status = "missing" if p is None else "correct" if p == t else "wrong"
        out[fact] = Judgement(fact, t, p, status)
    return out


def judge_answer(parsed: ParsedFacts, answer: str, fact: str, sheet: FactSheet) -> Judgement:
    """One QA answer about `fact`. A leading yes/no answers a drums question when the answer names no drums."""
    if fact == "drums" and parsed.drums is None:
        yn = parse_yes_no(answer)
        if yn is not None:
            parsed = ParsedFacts(families=parsed.families, drums=yn)
    return judge(parsed, sheet, (fact,))[fact]


@dataclass
class FactTally:
    """Accumulates judgements; `qa=True` counts missing as wrong in the headline accuracy."""

    qa: bool = False
    counts: dict[str, Counter] = field(default_factory=dict)
    confusion: dict[str, Counter] = field(default_factory=dict)   # fact -> Counter[(true, pred-or-MISSING)]
    family_tp: int = 0
    family_fp: int = 0
    family_fn: int = 0

    def add(self, j: Judgement) -> None:
        self.counts.setdefault(j.fact, Counter())[j.status] += 1
        self.confusion.setdefault(j.fact, Counter())[(j.true, j.pred or MISSING)] += 1

    def add_families(self, parsed: ParsedFacts, sheet: FactSheet) -> None:
        said, true = set(parsed.families), set(sheet.families)
        self.family_tp += len(said & true)
        self.family_fp += len(said - true)
        self.family_fn += len(true - said)

    def confusion_matrix(self, fact: str) -> dict:
        """{"rows": true labels, "cols": predicted labels + MISSING, "matrix": counts} over labels that occur."""
        c = self.confusion.get(fact, Counter())
        vocab = LABELS[fact]
        seen_true = {t for t, _ in c}
        seen_pred = {p for _, p in c}
        rows = [v for v in vocab if v in seen_true] + sorted(seen_true - set(vocab))
        cols = [v for v in vocab if v in seen_pred or v in seen_true] + sorted(seen_pred - set(vocab) - {MISSING})
        cols.append(MISSING)
        return {"rows": rows, "cols": cols, "matrix": [[c[(r, k)] for k in cols] for r in rows]}

    def to_dict(self) -> dict:
        facts = {}
        tot_n = tot_correct = tot_stated = 0
        for fact in ALL_FACTS:
            if fact not in self.counts:
                continue
            k = self.counts[fact]
            n = sum(k.values())
            stated = k["correct"] + k["wrong"]
            facts[fact] = {
                "n": n, "correct": k["correct"], "wrong": k["wrong"], "missing": k["missing"],
                "accuracy": k["correct"] / n,                                  # missing counts as wrong
                "accuracy_when_stated": k["correct"] / stated if stated else None,
                "stated_rate": stated / n,
                "confusion": self.confusion_matrix(fact),
            }
            tot_n += n
            tot_correct += k["correct"]
            tot_stated += stated
        p_den, r_den = self.family_tp + self.family_fp, self.family_tp + self.family_fn
        prec = self.family_tp / p_den if p_den else None
        rec = self.family_tp / r_den if r_den else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
        return {
            "kind": "qa" if self.qa else "caption",
            "facts": facts,
            "overall": {"n": tot_n, "correct": tot_correct, "accuracy": tot_correct / tot_n if tot_n else None,
                        "accuracy_when_stated": tot_correct / tot_stated if tot_stated else None,
                        "stated_rate": tot_stated / tot_n if tot_n else None},
            "family_set": {"tp": self.family_tp, "fp": self.family_fp, "fn": self.family_fn,
                           "precision": prec, "recall": rec, "f1": f1},
        }
