"""`mu-llama label` with the real MuLlama model (a tiny random LLaMA + tiny random encoder built in code, saved as a
checkpoint): rows equal the tasks API on the same audio, labels do not depend on batch size or workers, the
identity (revision) follows the weights, and the weight-free `describe` agrees with the loaded labeler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mu_llama.label import LabelerSpec, LabelOptions, MuLlamaLabeler, label_collection

QUESTIONS = {"genre": "What is the genre of this music?", "mood": "What is the mood of this music?"}
DECODING = {"max_new_tokens": 6}
FAST = dict(progress=False)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from mu_llama.model import MuLlama, MuLlamaConfig

    model = MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=2))
    with torch.no_grad():
        model.injection.gates.fill_(1.0)  # open gates: the music changes the text (zero gates would ignore it)
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny-mu-llama")


@pytest.fixture(scope="module")
def labeler(tiny_ckpt) -> MuLlamaLabeler:
    return MuLlamaLabeler(str(tiny_ckpt), questions=QUESTIONS, decoding=DECODING, device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i, (f, sec, amp, sr) in enumerate([(110, 1.0, 0.1, 24000), (880, 2.0, 0.5, 16000), (3000, 0.6, 0.9, 44100),
                                           (55, 1.4, 0.05, 22050), (440, 0.8, 0.3, 24000)]):
        t = np.arange(int(sec * sr)) / sr
        sf.write(root / f"c{i}.wav", (amp * np.sin(2 * np.pi * f * t)).astype(np.float32), sr)
    return root


def _stable(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "labeled_at"} for r in rows]


def test_rows_equal_the_tasks_api(labeler, clips, tmp_path):
    from mu_llama import tasks
    from mu_llama.audio import load_audio
    from mu_llama.decoding import DecodingOptions

    out = tmp_path / "o.jsonl"
    s = label_collection(clips, out, labeler, LabelOptions(batch_size=4, **FAST), cache=None)
    assert (s.rows, s.errors) == (5, 0)
    rows = _stable(out)
    model, opts = labeler._impl.model, DecodingOptions(**DECODING)
    waves = [load_audio(r["source"], model.sample_rate) for r in rows]
    assert [r["caption"] for r in rows] == tasks.caption(model, waves, opts, batch_size=1)
    for name, q in QUESTIONS.items():
        assert [r["answers"][name] for r in rows] == tasks.ask(model, waves, q, options=opts, batch_size=1)
    assert rows[0]["model_id"] == "tiny-mu-llama" and len(rows[0]["model_revision"]) == 12
    assert json.loads(rows[0]["decoding"])["max_new_tokens"] == 6 and json.loads(rows[0]["decoding"])["temperature"] == 0
    if labeler.info.extra.get("vad"):
        assert all(-1 <= r[k] <= 1 for r in rows for k in ("valence", "arousal", "dominance"))


def test_labels_do_not_depend_on_batch_size_or_workers(labeler, clips, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    label_collection(clips, a, labeler, LabelOptions(batch_size=1, workers=1, bucket_batches=1, **FAST), cache=None)
    label_collection(clips, b, labeler, LabelOptions(batch_size=5, workers=3, **FAST), cache=None)
    assert _stable(a) == _stable(b)


def test_identity_follows_the_weights(tiny_ckpt, labeler, tmp_path):
    info = MuLlamaLabeler.describe(str(tiny_ckpt), questions=QUESTIONS, decoding=DECODING, device="cpu")
    assert info == labeler.info   # the Ray driver's weight-free identity is the actors' identity
    import shutil

    from safetensors.torch import load_file, save_file

    other = tmp_path / "tiny-mu-llama"
    shutil.copytree(tiny_ckpt, other)
    state = load_file(str(other / "adapter.safetensors"))
    state["injection.gates"] = state["injection.gates"] * 0.5
    save_file(state, str(other / "adapter.safetensors"))
    moved = MuLlamaLabeler.describe(str(other), questions=QUESTIONS, decoding=DECODING, device="cpu")
    assert moved.model_id == info.model_id and moved.model_revision != info.model_revision
    assert moved.fingerprint() != info.fingerprint()
    # a fact tagger steers the captions: adding (or retraining) one is another revision too
    from tests.test_fusion import _fit_tiny

    _fit_tiny()[2].save(other)
    tagged = MuLlamaLabeler.describe(str(other), questions=QUESTIONS, decoding=DECODING, device="cpu")
    assert tagged.model_revision not in (moved.model_revision, info.model_revision)


def test_spec_builds_the_same_labeler(tiny_ckpt, labeler):
    spec = LabelerSpec(kwargs={"model": str(tiny_ckpt), "questions": QUESTIONS, "decoding": DECODING,
                               "device": "cpu"})
    from mu_llama.label.pipeline import describe_spec

    assert describe_spec(spec) == labeler.info


def test_fingerprint_changes_with_the_software_that_labels(monkeypatch):
    """A cache key that ignores the code and library versions served rows labelled by a since-fixed bug."""
    from importlib import metadata

    from mu_llama.label import labelers

    info = labelers.LabelerInfo("m", "rev", 24000)
    versions = labelers.software_versions()
    assert set(versions) == {"mu-llama", "torch", "transformers", "peft"}
    assert versions["transformers"] == metadata.version("transformers")
    base = info.fingerprint()
    for name in labelers.LABEL_SOFTWARE:
        real = metadata.version
        monkeypatch.setattr(metadata, "version", lambda n, name=name, real=real: "9.9.9" if n == name else real(n))
        assert info.fingerprint() != base, name
        monkeypatch.setattr(metadata, "version", real)
    assert info.fingerprint() == base
