"""One labelled clip = one row; one failed file = one error record. Both are plain JSON objects with a fixed
field order, serialised by one function (`dumps`) so a row written once is byte-identical wherever it is re-emitted
(the work dir's shards, the final JSONL, a rerun after kill -9).

Row fields (in this order):
  source          path as enumerated, or "split/index" for a datasets row
  duration        seconds, from the file header (rounded to 1 ms)
  sample_rate     the file's own rate (Hz); the model heard it resampled to its rate
  sha256          of the file's bytes (content hash; also the label cache's key)
  windows         [[start, end], ...] seconds that were heard (one window = the whole file)
  caption         free-text description
  answers         {question name: answer}; the question texts live in the job manifest / dataset description
  valence, arousal, dominance   VAD estimates in [-1, 1] (mu_llama.emotion.VAD axes) or null when no estimator ran
  model_id, model_revision      what labelled it
  decoding        the decoding options as canonical JSON text
  options_hash    fingerprint of everything that changes the labels (model, revision, decoding, questions, windows)
  labeled_at      UTC time the label was produced (ISO 8601, seconds). The one field that differs between runs.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

VAD_FIELDS = ("valence", "arousal", "dominance")
# Error reasons beyond AudioError.REASONS: the model failed on this clip alone (after bisection), or an unexpected bug.
MODEL_FAILED, INTERNAL = "model_failed", "internal_error"


def dumps(obj: dict) -> str:
    """Canonical one-line JSON: insertion order kept, UTF-8 text, no NaN (json would write invalid `NaN`)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_fields(fields: dict, question_names: tuple[str, ...]) -> dict:
    """Check and canonicalise a labeler's per-clip output: {caption, answers, [valence, arousal, dominance]}.
    The result round-trips through JSON unchanged, so a cached label and a fresh one serialise identically."""
    if not isinstance(fields, dict) or not isinstance(fields.get("caption"), str):
        raise TypeError(f"a labeler must return one dict with a str 'caption' per clip, got {type(fields).__name__}")
    answers = fields.get("answers") or {}
    missing = [q for q in question_names if not isinstance(answers.get(q), str)]
    if missing:
        raise TypeError(f"labeler output lacks answers to {missing}")
    out = {"caption": fields["caption"], "answers": {q: answers[q] for q in question_names}}
    for k in VAD_FIELDS:
        v = fields.get(k)
        if v is not None:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"labeler returned non-finite {k}={v}")
        out[k] = v
    return json.loads(dumps(out))


def make_row(source: str, duration: float, sample_rate: int, sha256: str, windows: list, fields: dict,
             identity: dict, labeled_at: str) -> dict:
    """`fields` from normalize_fields; `identity` = {model_id, model_revision, decoding (JSON text), options_hash}."""
    return {
        "source": source, "duration": duration, "sample_rate": int(sample_rate), "sha256": sha256,
        "windows": [[float(a), float(b)] for a, b in windows],
        "caption": fields["caption"], "answers": fields["answers"],
        **{k: fields.get(k) for k in VAD_FIELDS},
        "model_id": identity["model_id"], "model_revision": identity["model_revision"],
        "decoding": identity["decoding"], "options_hash": identity["options_hash"], "labeled_at": labeled_at,
    }


def make_error(path: str, reason: str, detail: str, stage: str) -> dict:
    """stage: 'decode' (the file could not become audio) or 'model' (the labeler failed on this clip alone)."""
    return {"path": path, "reason": reason, "detail": detail, "stage": stage}


def features(question_names: tuple[str, ...]):
    """datasets Features for the parquet / save_to_disk outputs: the row fields plus an `audio` column."""
    from datasets import Audio, Features, List, Value

    return Features({
        "source": Value("string"), "audio": Audio(), "duration": Value("float64"), "sample_rate": Value("int32"),
        "sha256": Value("string"), "windows": List(List(Value("float64"))), "caption": Value("string"),
        "answers": {q: Value("string") for q in question_names},
        **{k: Value("float32") for k in VAD_FIELDS},
        "model_id": Value("string"), "model_revision": Value("string"), "decoding": Value("string"),
        "options_hash": Value("string"), "labeled_at": Value("string"),
    })
