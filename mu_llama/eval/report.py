"""The EvalReport (what mu_llama.eval.harness.evaluate returns) and its writers: report.json (figures), items.jsonl
(per-item scores and fact judgements), report.md (tables), and one confusion-matrix PNG per task and fact
(matplotlib, Agg backend)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mu_llama.eval.facts_score import ALL_FACTS


@dataclass
class EvalReport:
    """Corpus figures per task ("caption", "qa"), fact tables, per-item records and the labels that qualify them."""

    mode: str
    metrics: tuple[str, ...]
    counts: dict[str, int]
    scores: dict[str, dict[str, float]]            # task -> metric -> corpus value
    facts: dict[str, dict]                         # task -> FactTally.to_dict()
    items: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    name: str = ""

    def to_dict(self, with_items: bool = False) -> dict:
        d = {"name": self.name, "mode": self.mode, "metrics": list(self.metrics), "counts": self.counts,
             "scores": self.scores, "facts": self.facts, "notes": self.notes}
        if with_items:
            d["items"] = self.items
        return d

    def to_markdown(self) -> str:
        return report_markdown(self)

    def save(self, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
        return save_report(self, out_dir, plots=plots)


METRIC_LABELS = {
    "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "meteor": "METEOR (exact+stem)",
    "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D", "bertscore_p": "BERTScore-P (MiniLM)",
    "bertscore_r": "BERTScore-R (MiniLM)", "bertscore_f": "BERTScore-F (MiniLM)",
    "sentence_cosine": "Sentence cosine (MiniLM)",
    "bleu_char": "BLEU, characters [compat]", "bleu4_char": "BLEU-4 only, characters [compat]",
    "meteor_nltk": "METEOR, nltk, no WordNet [compat]", "rouge_l_recall": "ROUGE-L recall [compat]",
    "bertscore_recall_minilm": "BERTScore recall, MiniLM not roberta-large [compat]",
}


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def report_markdown(report: EvalReport) -> str:
    title = f"# Evaluation report: {report.name}" if report.name else "# Evaluation report"
    c = report.counts
    lines = [title, "", f"Mode: `{report.mode}`. References: {c['references']}, predictions: {c['predictions']}; "
             f"captions scored {c['captions_scored']} (missing {c['captions_missing']}), "
             f"QA answers scored {c['qa_scored']} (missing {c['qa_missing']}, "
             f"kind not a fact {c['qa_unmapped_kind']}).", ""]
    tasks = [t for t in ("caption", "qa") if t in report.scores]
    if tasks:
        names = list(dict.fromkeys(k for t in tasks for k in report.scores[t]))
        lines += ["## Text metrics", "", "| metric | " + " | ".join(tasks) + " |",
                  "|---|" + "---:|" * len(tasks)]
        for k in names:
            lines.append(f"| {METRIC_LABELS.get(k, k)} | "
                         + " | ".join(_fmt(report.scores[t].get(k)) for t in tasks) + " |")
        lines.append("")
    for task, table in report.facts.items():
        lines += _facts_markdown(task, table)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _facts_markdown(task: str, table: dict) -> list[str]:
    head = "QA answers (missing counts as wrong)" if task == "qa" else "captions"
    lines = [f"## Fact accuracy: {head}", "",
             "| fact | n | correct | wrong | missing | accuracy | accuracy when stated |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for fact in ALL_FACTS:
        f = table["facts"].get(fact)
        if f:
            lines.append(f"| {fact} | {f['n']} | {f['correct']} | {f['wrong']} | {f['missing']} | "
                         f"{_fmt(f['accuracy'])} | {_fmt(f['accuracy_when_stated'])} |")
    o = table["overall"]
    lines.append(f"| **overall** | {o['n']} | {o['correct']} | | | {_fmt(o['accuracy'])} | "
                 f"{_fmt(o['accuracy_when_stated'])} |")
    fs = table["family_set"]
    if fs["tp"] + fs["fp"] + fs["fn"]:
        lines += ["", f"Instrument families as a set: precision {_fmt(fs['precision'])}, recall {_fmt(fs['recall'])}, "
                  f"F1 {_fmt(fs['f1'])} (tp {fs['tp']}, fp {fs['fp']}, fn {fs['fn']})."]
    return lines + [""]


def comparison_markdown(reports: dict[str, EvalReport]) -> str:
    """One row per system (model, baselines): caption metrics then caption / QA fact accuracy."""
    metric_keys = list(dict.fromkeys(k for r in reports.values() for k in r.scores.get("caption", {})))
    cols = [METRIC_LABELS.get(k, k) for k in metric_keys] + ["caption facts (when stated)", "caption facts (strict)",
                                                            "QA facts"]
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in reports.items():
        cap = r.facts.get("caption", {}).get("overall", {})
        qa = r.facts.get("qa", {}).get("overall", {})
        vals = [_fmt(r.scores.get("caption", {}).get(k)) for k in metric_keys]
        vals += [_fmt(cap.get("accuracy_when_stated")), _fmt(cap.get("accuracy")), _fmt(qa.get("accuracy"))]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(conf: dict, title: str, path: Path) -> Path:
    """Confusion matrix (rows: truth, columns: prediction incl. missing) as a PNG, cells annotated with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.array(conf["matrix"], dtype=float)                       # (n_true, n_pred)
    rows, cols = conf["rows"], conf["cols"]
    shade = m / np.maximum(m.sum(axis=1, keepdims=True), 1)           # row-normalised: share of each true class
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * len(cols), 1.4 + 0.45 * len(rows)))
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("parsed from text")
    ax.set_ylabel("fact sheet")
    ax.set_title(title, fontsize=10)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shade[i, j] > 0.6 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_report(report: EvalReport, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "items": out / "items.jsonl"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(report.to_markdown(), encoding="utf-8")
    with paths["items"].open("w", encoding="utf-8") as f:
        for it in report.items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    if plots:
        for task, table in report.facts.items():
            for fact, f in table["facts"].items():
                p = out / f"confusion_{task}_{fact}.png"
                paths[f"confusion_{task}_{fact}"] = plot_confusion(f["confusion"], f"{task}: {fact}", p)
    return paths
