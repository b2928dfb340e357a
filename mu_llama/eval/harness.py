"""`evaluate(predictions, references)`: every figure the harness reports, for captions and for QA answers.

Standard mode (word-level, coco-caption definitions; see metrics.py): BLEU-1..4, METEOR (exact+stem), ROUGE-L,
CIDEr-D, MiniLM BERTScore-style P/R/F and sentence cosine, plus fact accuracy parsed from the text.
mullama-compat mode: MU-LLaMA's definitions (compat.py), plus the same fact accuracy.

Predictions are matched to references by id. A reference without a prediction (or a QA question without an answer)
is skipped, counted in `counts`, or scored as an empty text with missing="empty"; missing="error" refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mu_llama.errors import ConfigError, choice_error
from mu_llama.eval.data import Prediction, Reference, as_predictions, as_references
from mu_llama.eval.facts_parse import parse_facts
from mu_llama.eval.facts_score import QA_KIND_TO_FACT, FactTally, facts_for, judge, judge_answer
from mu_llama.eval.metrics import MetricResult, bleu, cider_d, meteor, rouge_l
from mu_llama.eval.report import EvalReport
from mu_llama.eval.tokenize import ptb_tokenize

EVAL_MODES = ("standard", "mullama-compat")
STANDARD_METRICS = ("bleu", "meteor", "rouge_l", "cider_d", "embedding", "facts")
COMPAT_METRICS = ("bleu_char", "meteor_nltk", "rouge_l_recall", "bertscore", "facts")
MISSING_POLICIES = ("skip", "empty", "error")

NOTES = {
    "meteor": "METEOR: exact + Porter-stem matching only (no WordNet synonyms or paraphrases offline), "
              "alpha 0.9, beta 3, gamma 0.5, fewest-chunk alignment; mean of sentence scores.",
    "cider_d": "CIDEr-D: document frequencies from this evaluation's own reference sets (coco-caption convention).",
    "embedding": "BERTScore-style P/R/F and sentence cosine use all-MiniLM-L6-v2 (offline), not roberta-large: "
                 "not comparable with published BERTScore figures.",
    "mullama-compat": "mullama-compat: MU-LLaMA's metric definitions (character-level nltk BLEU, ROUGE-L recall, "
                      "BERTScore recall). Comparable only with MU-LLaMA's own table; their BERTScore used "
                      "roberta-large, ours all-MiniLM-L6-v2; their METEOR used WordNet synonyms, ours does not.",
    "facts": "Facts are parsed from text with synonym lexicons (mu_llama.eval.facts_parse); captions: a fact the "
             "text does not state is 'missing'; QA: an answer that does not state the asked fact is wrong.",
}


@dataclass(frozen=True)
class EvalOptions:
    mode: str = "standard"
    metrics: tuple[str, ...] | None = None     # None: every metric of the mode
    missing: str = "skip"

    def __post_init__(self):
        if self.mode not in EVAL_MODES:
            raise choice_error("eval mode", self.mode, EVAL_MODES)
        if self.missing not in MISSING_POLICIES:
            raise choice_error("missing-prediction policy", self.missing, MISSING_POLICIES)
        valid = STANDARD_METRICS if self.mode == "standard" else COMPAT_METRICS
        for m in self.metrics or ():
            if m not in valid:
                raise choice_error(f"metric for mode {self.mode}", m, valid)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(self.metrics) if self.metrics else (
            STANDARD_METRICS if self.mode == "standard" else COMPAT_METRICS)


def evaluate(predictions: Iterable[Prediction | dict], references: Iterable[Reference | dict], *,
             metrics: Iterable[str] | None = None, mode: str = "standard", missing: str = "skip",
             encoder=None, name: str = "") -> EvalReport:
    """Score predictions against corpus references. `encoder`: a TextEncoder to reuse (embedding metrics)."""
    opts = EvalOptions(mode=mode, metrics=tuple(metrics) if metrics is not None else None, missing=missing)
    preds = {p.id: p for p in as_predictions(predictions)}
    refs = as_references(references)
    known = {r.id for r in refs}
    unknown = [pid for pid in preds if pid not in known]
    if unknown:
        raise ConfigError(f"{len(unknown)} prediction id(s) not in the references (wrong split?), "
                          f"e.g. {', '.join(map(repr, unknown[:3]))}")

    counts = {"references": len(refs), "predictions": len(preds), "captions_scored": 0, "captions_missing": 0,
              "qa_scored": 0, "qa_missing": 0, "qa_unmapped_kind": 0}
    cap_items: list[tuple[Reference, str]] = []
    qa_items: list[tuple[Reference, str, str, str, str]] = []   # ref, question, kind, answer, candidate
    for r in refs:
        p = preds.get(r.id)
        if r.captions:
            cand = p.caption if p is not None else None
            if cand is None:
                counts["captions_missing"] += 1
                if opts.missing == "error":
                    raise ConfigError(f"no caption predicted for {r.id!r} (missing='error')")
            if cand is not None or opts.missing == "empty":
                cap_items.append((r, cand or ""))
        for qa in r.qa:
            cand = p.answers.get(qa.question) if p is not None else None
            if cand is None:
                counts["qa_missing"] += 1
                if opts.missing == "error":
                    raise ConfigError(f"no answer predicted for {r.id!r}: {qa.question!r} (missing='error')")
            if cand is not None or opts.missing == "empty":
                qa_items.append((r, qa.question, qa.kind, qa.answer, cand or ""))
    counts["captions_scored"], counts["qa_scored"] = len(cap_items), len(qa_items)

    scores: dict[str, dict[str, float]] = {}
    facts: dict[str, dict] = {}
    items: list[dict] = []
    text_tasks = {"caption": ([c for _, c in cap_items], [list(r.captions) for r, _ in cap_items]),
                  "qa": ([q[4] for q in qa_items], [[q[3]] for q in qa_items])}
    per_item: dict[str, dict[str, list[float]]] = {}
    for task, (cands, refsets) in text_tasks.items():
        if not cands:
            continue
        results = _text_metrics(cands, refsets, opts, encoder)
        scores[task] = {k: v.value for k, v in results.items()}
        per_item[task] = {k: v.per_item for k, v in results.items()}

    if "facts" in opts.active:
        cap_tally, qa_tally = FactTally(qa=False), FactTally(qa=True)
        for i, (r, cand) in enumerate(cap_items):
            rec = {"task": "caption", "id": r.id, "candidate": cand,
                   **{k: v[i] for k, v in per_item.get("caption", {}).items()}}
            if r.facts is not None:
                parsed = parse_facts(cand)
                js = judge(parsed, r.facts, facts_for(r.facts))
                for j in js.values():
                    cap_tally.add(j)
                cap_tally.add_families(parsed, r.facts)
                rec["facts"] = {f: j.to_dict() for f, j in js.items()}
            items.append(rec)
        for i, (r, question, kind, _, cand) in enumerate(qa_items):
            rec = {"task": "qa", "id": r.id, "question": question, "kind": kind, "candidate": cand,
                   **{k: v[i] for k, v in per_item.get("qa", {}).items()}}
            fact = QA_KIND_TO_FACT.get(kind.lower())
            if fact is None:
                counts["qa_unmapped_kind"] += 1
            elif r.facts is not None:
                parsed = parse_facts(cand)
                j = judge_answer(parsed, cand, fact, r.facts)
                qa_tally.add(j)
                if fact == "family":
                    qa_tally.add_families(parsed, r.facts)
                rec["facts"] = {fact: j.to_dict()}
            items.append(rec)
        if cap_tally.counts:
            facts["caption"] = cap_tally.to_dict()
        if qa_tally.counts:
            facts["qa"] = qa_tally.to_dict()
    else:
        for task, pool in (("caption", cap_items), ("qa", qa_items)):
            for i, it in enumerate(pool):
                items.append({"task": task, "id": it[0].id, **{k: v[i] for k, v in per_item.get(task, {}).items()}})

    notes = [NOTES["mullama-compat"]] if opts.mode == "mullama-compat" else \
        [NOTES[m] for m in ("meteor", "cider_d", "embedding") if m in opts.active]
    if "facts" in opts.active:
        notes.append(NOTES["facts"])
    return EvalReport(mode=opts.mode, metrics=opts.active, counts=counts, scores=scores, facts=facts,
                      items=items, notes=notes, name=name)


def _text_metrics(cands: list[str], refsets: list[list[str]], opts: EvalOptions, encoder) -> dict[str, MetricResult]:
    active = opts.active
    out: dict[str, MetricResult] = {}
    if opts.mode == "mullama-compat":
        if not any(m in active for m in ("bleu_char", "meteor_nltk", "rouge_l_recall", "bertscore")):
            return out
        from mu_llama.eval.compat import compat_scores

        res = compat_scores(cands, refsets, embedding="bertscore" in active, encoder=encoder)
        keep = {"bleu_char": ("bleu_char", "bleu4_char"), "meteor_nltk": ("meteor_nltk",),
                "rouge_l_recall": ("rouge_l_recall",), "bertscore": ("bertscore_recall_minilm",)}
        return {k: res[k] for m in active if m in keep for k in keep[m]}
    hyp = [ptb_tokenize(c) for c in cands]
    refs = [[ptb_tokenize(r) for r in rs] for rs in refsets]
    if "bleu" in active:
        out.update(bleu(hyp, refs))
    if "meteor" in active:
        out["meteor"] = meteor(hyp, refs)
    if "rouge_l" in active:
        out["rouge_l"] = rouge_l(hyp, refs)
    if "cider_d" in active:
        out["cider_d"] = cider_d(hyp, refs)
    if "embedding" in active:
        from mu_llama.eval.embedding import embedding_scores

        out.update(embedding_scores(cands, refsets, encoder))
    return out
