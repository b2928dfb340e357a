"""Baselines scored by the same harness, so a model's figures have a floor to beat.

- "most-common-caption": every clip gets the training split's most frequent caption; every question gets the
  training split's most frequent answer to a question of that kind.
- "majority-facts": a caption (and per-kind answers) built from the majority value of each fact over the training
  split: primary family, key, mode, meter, tempo class, texture, and for arrangements style, drums and bass type.
  Its text is written so `parse_facts` reads those facts back (tested), i.e. it scores what always guessing the
  majority would score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from mu_llama.errors import ConfigError, choice_error
from mu_llama.eval.data import Prediction, Reference
from mu_llama.eval.facts_score import QA_KIND_TO_FACT, is_arrangement, truth

BASELINES = ("most-common-caption", "majority-facts")

_FAMILY_PHRASE = {"keyboard": "keyboard", "mallet percussion": "mallet percussion", "organ": "organ",
                  "guitar": "guitar", "bass": "bass guitar", "strings": "strings", "voice": "a choir",
                  "brass": "brass", "woodwind": "woodwinds", "synth": "synthesizer", "drums": "drums",
                  "other": "other instruments"}
_TEMPO_PHRASE = {"slow": "a slow tempo", "moderate": "a moderate tempo", "fast": "a fast tempo"}
_METER_PHRASE = {"other": "an irregular meter"}


def _most_common(values: Iterable[str]) -> str | None:
    """Most frequent value; ties broken by the smallest value so the choice is deterministic."""
    c = Counter(values)
    if not c:
        return None
    top = max(c.values())
    return min(v for v, n in c.items() if n == top)


def majority_facts(train: Sequence[Reference]) -> dict[str, str]:
    """Majority value of each fact over the training rows that carry a fact sheet (arrangement facts over
    arrangements only; the key among the majority mode's keys). Values in `facts_score.truth` form."""
    sheets = [r.facts for r in train if r.facts is not None]
    if not sheets:
        raise ConfigError("majority-facts baseline: no training rows carry a fact sheet")
    out = {f: _most_common(truth(s, f) for s in sheets) for f in ("family", "mode", "meter", "tempo_class", "texture")}
    # one caption cannot state a key of the other mode: the key is the most common among the majority mode's keys
    out["key"] = _most_common(s.key for s in sheets if s.mode == out["mode"])
    arr = [s for s in sheets if is_arrangement(s)]
    if arr:
        out.update({f: _most_common(truth(s, f) for s in arr) for f in ("style", "drums", "bass_type")})
    return out


def majority_caption(facts: dict[str, str]) -> str:
    meter = _METER_PHRASE.get(facts["meter"], f"{facts['meter']} time")
    text = (f"A {facts['texture']} piece in {facts['key']} at {_TEMPO_PHRASE[facts['tempo_class']]}, in {meter}, "
            f"played by {_FAMILY_PHRASE[facts['family']]}.")
    if "style" in facts:
        drums = "with drums" if facts["drums"] == "yes" else "without drums"
        bass = "no bass" if facts["bass_type"] == "none" else f"a {facts['bass_type']}"
        text += f" A {facts['style']} arrangement {drums} and with {bass}."
    return text


def majority_answer(fact: str, facts: dict[str, str]) -> str | None:
    """A short answer stating the majority value of `fact` (None when the fact has no majority)."""
    v = facts.get(fact)
    if v is None:
        return None
    if fact == "family":
        return f"It is played by {_FAMILY_PHRASE[v]}."
    if fact == "drums":
        return "Yes, there are drums." if v == "yes" else "No, there are no drums."
    if fact == "bass_type":
        return "There is no bass." if v == "none" else f"The bass is a {v}."
    return {
        "mode": f"It is in a {v} key.",
        "key": f"It is in {v}.",
        "meter": f"It is in {_METER_PHRASE.get(v, v + ' time')}.",
        "tempo_class": f"It has {_TEMPO_PHRASE.get(v, v)}.",
        "texture": f"The texture is {v}.",
        "style": f"It is a {v} arrangement.",
    }[fact]


def baseline_predictions(name: str, train: Sequence[Reference], evaluate_on: Sequence[Reference]) -> list[Prediction]:
    """Predictions of baseline `name` for the rows `evaluate_on`, learned from the rows `train`."""
    if name not in BASELINES:
        raise choice_error("baseline", name, BASELINES)
    if not train:
        raise ConfigError("baselines need a non-empty training split")
    common_answer: dict[str, str | None] = {}
    kinds = {qa.kind for r in evaluate_on for qa in r.qa}
    for kind in kinds:
        common_answer[kind] = _most_common(qa.answer for r in train for qa in r.qa if qa.kind == kind) \
            or _most_common(qa.answer for r in train for qa in r.qa)
    if name == "most-common-caption":
        caption = _most_common(" ".join(c.split()) for r in train for c in r.captions)
        answer_for = common_answer
    else:
        facts = majority_facts(train)
        caption = majority_caption(facts)
        answer_for = {}
        for kind in kinds:
            fact = QA_KIND_TO_FACT.get(kind.lower())
            answer_for[kind] = (majority_answer(fact, facts) if fact else None) or common_answer[kind]
    preds = []
    for r in evaluate_on:
        answers = {qa.question: answer_for[qa.kind] for qa in r.qa if answer_for.get(qa.kind) is not None}
        preds.append(Prediction(id=r.id, caption=caption if r.captions and caption else None, answers=answers))
    return preds


def evaluate_baselines(references: Sequence[Reference], *, split: str = "test", train_split: str = "train",
                       names: Sequence[str] = BASELINES, **evaluate_kwargs) -> dict:
    """{baseline name: EvalReport} on `split`, each learned from `train_split` of the same references."""
    from mu_llama.eval.harness import evaluate

    train = [r for r in references if r.split == train_split]
    test = [r for r in references if r.split == split]
    present = sorted({r.split for r in references})
    for s, rows in ((train_split, train), (split, test)):
        if not rows:
            raise ConfigError(f"no rows in split {s!r}; splits present: {', '.join(present) or '(none)'}")
    return {n: evaluate(baseline_predictions(n, train, test), test, name=f"baseline: {n}", **evaluate_kwargs)
            for n in names}
