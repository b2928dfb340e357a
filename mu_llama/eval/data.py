"""The harness's inputs: corpus manifest rows (references) and model predictions, read from JSONL.

Manifest row:   {"id", "facts": FactSheet.to_dict() | null, "captions": [str, ...],
                 "qa": [{"question", "answer", "kind"}, ...], "split"}
Prediction row: {"id", "caption"?: str, "answers"?: {question: answer}}

A corpus may be given as the manifest file itself or as a folder holding `manifest.jsonl`, or else per-split files
`<split>.jsonl` (their rows get that split when they carry none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mu_llama.errors import ConfigError, MuLlamaError
from mu_llama.facts import FactSheet


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    kind: str = ""


@dataclass(frozen=True)
class Reference:
    id: str
    facts: FactSheet | None = None
    captions: tuple[str, ...] = ()
    qa: tuple[QAPair, ...] = ()
    split: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        if not isinstance(d, dict) or "id" not in d:
            raise ConfigError("manifest row needs an 'id'")
        facts = d.get("facts")
        qa = tuple(QAPair(str(q["question"]), str(q["answer"]), str(q.get("kind", ""))) for q in d.get("qa") or ())
        return cls(id=str(d["id"]), facts=FactSheet.from_dict(facts) if facts else None,
                   captions=tuple(str(c) for c in d.get("captions") or ()), qa=qa, split=str(d.get("split", "")))


@dataclass(frozen=True)
class Prediction:
    id: str
    caption: str | None = None
    answers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> Prediction:
        if not isinstance(d, dict) or "id" not in d:
            raise ConfigError("prediction row needs an 'id'")
        cap = d.get("caption")
        answers = d.get("answers") or {}
        if not isinstance(answers, dict):
            raise ConfigError("prediction 'answers' must map question -> answer")
        return cls(id=str(d["id"]), caption=None if cap is None else str(cap),
                   answers={str(k): str(v) for k, v in answers.items()})

    def to_dict(self) -> dict:
        d: dict = {"id": self.id}
        if self.caption is not None:
            d["caption"] = self.caption
        if self.answers:
            d["answers"] = dict(self.answers)
        return d


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, parsed row) for each non-blank line; a bad line raises ConfigError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def _rows(path: Path, cls, default_split: str = "") -> list:
    out = []
    for lineno, row in read_jsonl(path):
        try:
            if default_split and isinstance(row, dict) and not row.get("split"):
                row = {**row, "split": default_split}
            out.append(cls.from_dict(row))
        except (MuLlamaError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{lineno}: {e}") from None
    return out


def manifest_files(corpus: str | Path) -> list[tuple[Path, str]]:
    """(file, default split) pairs making up a corpus given as a manifest file or a folder."""
    corpus = Path(corpus)
    if corpus.is_file():
        return [(corpus, "")]
    if not corpus.is_dir():
        raise ConfigError(f"{corpus}: corpus not found (give a manifest .jsonl or a folder holding manifest.jsonl)")
    if (corpus / "manifest.jsonl").is_file():
        return [(corpus / "manifest.jsonl", "")]
    if (corpus / "manifests").is_dir():  # a folder written by `mu-llama corpus build`
        corpus = corpus / "manifests"
    split_files = sorted(corpus.glob("*.jsonl"))
    if not split_files:
        raise ConfigError(f"{corpus}: no manifest.jsonl or <split>.jsonl files in this folder")
    return [(p, p.stem) for p in split_files]


def load_references(corpus: str | Path, split: str | None = None) -> list[Reference]:
    """Manifest rows, optionally only one split. Unknown split -> ConfigError naming the splits present."""
    refs = [r for path, default in manifest_files(corpus) for r in _rows(path, Reference, default)]
    if split is None:
        return refs
    chosen = [r for r in refs if r.split == split]
    if not chosen:
        present = sorted({r.split for r in refs})
        raise ConfigError(f"{corpus}: no rows in split {split!r}; splits present: {', '.join(present) or '(none)'}")
    return chosen


def load_predictions(path: str | Path) -> list[Prediction]:
    preds = _rows(Path(path), Prediction)
    seen: set[str] = set()
    for p in preds:
        if p.id in seen:
            raise ConfigError(f"{path}: duplicate prediction id {p.id!r}")
        seen.add(p.id)
    return preds


def as_references(items: Iterable[Reference | dict]) -> list[Reference]:
    return [r if isinstance(r, Reference) else Reference.from_dict(r) for r in items]


def as_predictions(items: Iterable[Prediction | dict]) -> list[Prediction]:
    return [p if isinstance(p, Prediction) else Prediction.from_dict(p) for p in items]


def write_predictions(preds: Iterable[Prediction], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in preds:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    return path
