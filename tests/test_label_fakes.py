"""Test doubles for the labelling pipeline (importable as `test_label_fakes:FakeLabeler` by subprocesses and Ray
actors that get tests/ on PYTHONPATH), plus tests of the doubles themselves.

FakeLabeler is deterministic and per-clip: its output is a function of the clip's samples only (never of the batch),
which is the contract a real labeler must meet (greedy decoding, masked padding). It can poison batches that
contain a marked clip (to exercise bisection) and sleep per call (to give kill -9 tests something to interrupt).
"""

from __future__ import annotations

import time

import numpy as np

from mu_llama.label.labelers import Clip, LabelerInfo

QUESTIONS = {"genre": "What is the genre of this music?", "mood": "What is the mood of this music?"}


class FakeLabeler:
    def __init__(self, sample_rate: int = 8000, *, poison_peak: float | None = None, sleep: float = 0.0,
                 revision: str = "r1", calls_log: str | None = None):
        self.info = self.describe(sample_rate=sample_rate, revision=revision)
        self.poison_peak, self.sleep, self.calls_log = poison_peak, sleep, calls_log
        self.calls: list[int] = []   # batch sizes seen

    @staticmethod
    def describe(sample_rate: int = 8000, revision: str = "r1", **_) -> LabelerInfo:
        return LabelerInfo(model_id="fake-labeler", model_revision=revision, sample_rate=sample_rate,
                           decoding={"greedy": True, "max_new_tokens": 8}, questions=dict(QUESTIONS))

    def __call__(self, clips: list[Clip]) -> list[dict]:
        self.calls.append(len(clips))
        if self.calls_log:
            with open(self.calls_log, "a") as f:
                f.write(f"{len(clips)}\n")
        if self.sleep:
            time.sleep(self.sleep)
        if self.poison_peak is not None and any(abs(float(np.abs(c.audio).max()) - self.poison_peak) < 2e-3
                                                for c in clips):
            raise RuntimeError("poisoned batch")
        return [self.one(c.audio) for c in clips]

    def one(self, audio: np.ndarray) -> dict:
        x = audio.astype(np.float64)
        rms, peak = float(np.sqrt(np.mean(x * x))), float(np.abs(x).max())
        zc = int(np.count_nonzero(np.diff(np.signbit(x))))
        return {"caption": f"{len(x)} samples, rms {rms:.5f}, peak {peak:.4f}, {zc} zero crossings",
                "answers": {"genre": f"genre-{zc % 5}", "mood": "bright" if rms > 0.2 else "calm"},
                "valence": round(2 * min(rms, 1.0) - 1, 6), "arousal": round(min(zc / max(len(x), 1), 1.0), 6),
                "dominance": None}


def test_fake_labeler_is_per_clip_deterministic():
    rng = np.random.default_rng(0)
    clips = [Clip(str(i), rng.standard_normal(800 + 100 * i).astype(np.float32) * 0.1, 0.1) for i in range(5)]
    lab = FakeLabeler()
    together = lab(clips)
    alone = [lab([c])[0] for c in clips]
    assert together == alone
    assert len({r["caption"] for r in together}) == 5
