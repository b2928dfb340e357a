"""What labels a batch of clips: the `Labeler` protocol, a picklable `LabelerSpec` that builds one inside any process
(a decode worker never needs it; a Ray actor does), and `label_isolating`, which turns one failing batch into
per-clip results by bisection so one bad clip never costs its neighbours their labels.

A labeler is any object with
    info: LabelerInfo                      # what it is; everything that changes its output
    __call__(clips: list[Clip]) -> list[dict]   # one {caption, answers: {name: text}, [valence, arousal, dominance]} per clip
Its output for a clip must not depend on the other clips in the batch (greedy decoding, padding masked), which is
what makes the labels independent of batch size, worker count and completion order.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mu_llama.errors import ConfigError
from mu_llama.isolate import isolate_failures
from mu_llama.label.rows import normalize_fields

# Asked of every clip unless the job says otherwise: name -> question (-> answers column). The caption is the
# model's own description question (mu_llama.prompts.default_question), asked first.
DEFAULT_QUESTIONS: dict[str, str] = {
    # MusicQA's (MU-LLaMA's) four open description prompts, verbatim (= mu_llama.corpus.qa.DESCRIPTION_QUESTIONS)
    "describe": "Describe the audio",
    "describe_detail": "Describe the audio in detail",
    "hear": "What do you hear in the audio",
    "inferred": "What can be inferred from the audio",
    "genre": "What is the genre of this music?",
    "instruments": "Which instruments can be heard in this music?",
    "mood": "What is the mood of this music?",
    "tempo": "What is the tempo of this music?",
}


@dataclass(frozen=True)
class Clip:
    """One decoded clip: the heard windows concatenated, mono float32 (n,) at the labeler's sample rate."""
    key: str
    audio: np.ndarray
    duration: float      # of the whole file, seconds


# The distributions whose versions can change a label: ours, and the libraries the model runs on.
LABEL_SOFTWARE = ("mu-llama", "torch", "transformers", "peft")


def software_versions() -> dict[str, str]:
    """{distribution: installed version, or "absent"} for LABEL_SOFTWARE."""
    from importlib import metadata

    versions = {}
    for name in LABEL_SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass(frozen=True)
class LabelerInfo:
    model_id: str
    model_revision: str
    sample_rate: int
    decoding: dict = field(default_factory=dict)       # JSON-able decoding options (greedy => deterministic)
    questions: dict = field(default_factory=dict)      # name -> question text, asked in this order
    extra: dict = field(default_factory=dict)          # anything else that changes outputs (VAD estimator, prompt style)

    def __post_init__(self):
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ConfigError(f"labeler sample_rate must be a positive int, got {self.sample_rate!r}")
        for name in self.questions:
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"question name {name!r} must be an identifier (it becomes a column name)")

    @property
    def decoding_json(self) -> str:
        return json.dumps(self.decoding, sort_keys=True, separators=(",", ":"))

    def fingerprint(self, **more) -> str:
        """sha256 (16 hex) of canonical JSON of everything that decides the labels, plus the job's window policy and
        the software that computed them (a fixed bug or a changed library never reuses rows labelled before)."""
        blob = json.dumps({"model_id": self.model_id, "revision": self.model_revision, "sr": self.sample_rate,
                           "decoding": self.decoding, "questions": self.questions, "extra": self.extra,
                           "software": software_versions(), **more},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@runtime_checkable
class Labeler(Protocol):
    info: LabelerInfo

    def __call__(self, clips: Sequence[Clip]) -> list[dict]: ...


@dataclass(frozen=True)
class LabelerSpec:
    """How to build a labeler anywhere: `factory` is "package.module:callable", called with `kwargs` (JSON-able).
    Only the user's own code is imported (like `gunicorn module:app`); nothing is unpickled."""
    factory: str = "mu_llama.label.mullama:MuLlamaLabeler"
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        mod, sep, attr = self.factory.partition(":")
        if not (mod and sep and attr):
            raise ConfigError(f"labeler factory must look like 'package.module:callable', got {self.factory!r}")
        try:
            json.dumps(self.kwargs)
        except TypeError as e:
            raise ConfigError(f"labeler kwargs must be JSON-able: {e}") from None

    def build(self) -> Labeler:
        mod, _, attr = self.factory.partition(":")
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import labeler factory {self.factory!r}: {e}") from None
        labeler = obj(**self.kwargs)
        if not isinstance(getattr(labeler, "info", None), LabelerInfo) or not callable(labeler):
            raise ConfigError(f"{self.factory} did not return a Labeler (callable with an `info: LabelerInfo`)")
        return labeler


def label_isolating(labeler: Labeler, clips: list[Clip]) -> list[dict | Exception]:
    """Label `clips`; a failing batch is bisected (mu_llama.isolate) until every clip has its own result:
    normalized fields, or the exception that clip alone raised."""
    names = tuple(labeler.info.questions)
    return isolate_failures(lambda part: [normalize_fields(f, names) for f in labeler(part)], clips)
