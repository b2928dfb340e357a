"""The captioning pipeline the benchmark suite measures: mu_llama.tasks decodes audio on worker threads ahead of the
model (same results as inline decoding, errors at the same clip), and the suite's StageTimer books only the model
thread's wait as "audio". Plus the suite's quality subset and report. Tiny random models, CPU, no downloads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mu_llama import tasks
from mu_llama.decoding import DecodingOptions
from mu_llama.errors import AudioError
from mu_llama.model import MuLlama, MuLlamaConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import suite
from suite_stages import StageTimer

SR = 24000
OPTS = DecodingOptions(max_new_tokens=3, min_new_tokens=3)


@pytest.fixture(scope="module")
def model():
    return MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=2)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """7 clips of different lengths, stereo 44.1 kHz (every one is resampled on load)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = folder / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal((int((0.4 + 0.1 * i) * 44100), 2))).astype(np.float32), 44100)
        paths.append(path)
    return paths


def test_prefetch_matches_inline_decoding(model, files, monkeypatch):
    """3 batches with the decode pool == the same captions decoded inline, one clip per call."""
    prefetched = tasks.caption(model, files, OPTS, batch_size=3)
    monkeypatch.setattr(tasks, "DECODE_WORKERS", 0)
    assert prefetched == tasks.caption(model, files, OPTS, batch_size=3)
    assert prefetched == [tasks.caption(model, p, OPTS) for p in files]


def test_prefetch_decodes_on_workers_ahead_and_bounded(model, files, monkeypatch):
    """Decoding runs on worker threads, at most PREFETCH_BATCHES batches ahead of the batch the model is on."""
    threads, decoded, seen_at_batch = set(), [], []
    load = tasks.load_input

    def spy(m, audio):
        threads.add(threading.current_thread().name)
        wave = load(m, audio)
        decoded.append(audio)
        return wave

    real_batch = tasks._load_batch

    def batch_spy(m, jobs):
        waves = real_batch(m, jobs)
        seen_at_batch.append(len(decoded))
        return waves

    monkeypatch.setattr(tasks, "load_input", spy)
    monkeypatch.setattr(tasks, "_load_batch", batch_spy)
    tasks.caption(model, files, OPTS, batch_size=2)
    assert threads and all(t.startswith("mu-llama-decode") for t in threads)
    assert sorted(decoded) == sorted(files)
    for k, n in enumerate(seen_at_batch):  # after handing batch k over, <= batches k, k+1, k+2 were decoded
        assert min(len(files), 2 * (k + 1)) <= n <= min(len(files), 2 * (k + 1 + tasks.PREFETCH_BATCHES))


def test_prefetch_error_surfaces_at_its_batch(model, files, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    calls = []
    with pytest.raises(AudioError, match="bad.wav"):
        tasks.caption(model, [*files[:4], bad, files[5]], OPTS, batch_size=2, progress=calls.append)
    assert calls == [2, 2]  # the two batches before the bad file were captioned, nothing after


def test_stage_timer_counts_only_the_model_thread(model, files):
    """Decode workers' time is not model-thread time: the audio stage of a prefetched run stays within the wall
    time and the stages never sum past it (the old runner booked worker decode time as wait)."""
    timer = StageTimer()
    seen = []
    with timer.instrument(model):
        t = threading.Thread(target=lambda: (timer.start("audio"), seen.append(1), timer.stop("audio")))
        t.start()
        t.join()
        assert timer.seconds["audio"] == 0 and seen == [1]  # another thread never touches the stages
        import time
        t0 = time.perf_counter()
        tasks.caption(model, files, OPTS, batch_size=3)
        wall = time.perf_counter() - t0
    out = timer.breakdown(wall)
    assert len(timer.audio_waits) == 3  # one wait per batch, on the model thread
    assert sum(v for k, v in out["seconds"].items() if k != "other") <= wall + 1e-6
    assert 0 <= out["audio_after_first_batch_s"] <= out["seconds"]["audio"]
    assert tasks._load_batch.__name__ == "_load_batch"  # instrumentation removed


def test_quality_clips_evenly_spaced_and_resolved(tmp_path):
    man = tmp_path / "manifests"
    man.mkdir()
    rows = [f'{{"id": "t{i:02d}", "split": "test", "audio": "clips/t{i:02d}.flac"}}' for i in range(10)][::-1]
    (man / "test.jsonl").write_text("\n".join(rows) + "\n")
    (man / "train.jsonl").write_text('{"id": "x", "split": "train", "audio": "clips/x.flac"}\n')
    picked = suite.quality_clips(tmp_path, 4)
    assert [i for i, _ in picked] == ["t00", "t02", "t05", "t07"]  # id order, not file order
    assert picked[0][1] == tmp_path / "clips" / "t00.flac"  # relative to the corpus root, not manifests/
    assert len(suite.quality_clips(tmp_path, 50)) == 10


def test_quality_markdown_reports_deltas():
    q = {"status": "done", "model": "mu-llama-mini", "clips": 4, "corpus": "c", "max_new_tokens": 8, "batch_size": 4,
         "results": {"none": {"caption": {"bleu_4": 0.2, "meteor": 0.3}, "fact_accuracy": 0.5, "family_f1": 0.6,
                              "caption_seconds": 1.0},
                     "4bit": {"caption": {"bleu_4": 0.1, "meteor": 0.3}, "fact_accuracy": 0.25, "family_f1": None,
                              "caption_seconds": 2.0, "identical_captions_vs_none": 1,
                              "delta_vs_none": {"bleu_4": -0.1, "meteor": 0.0, "fact_accuracy": -0.25}}},
         "errors": {"8bit": "ImportError: x"}}
    text = "\n".join(suite.quality_markdown(q))
    assert "| 4bit | 0.250 (-0.250) |" in text and "1/4" in text and "8bit: ImportError" in text
    off = suite.quality_markdown({"status": "off", "model": "m", "reason": "--quality 0"})
    assert "off (--quality 0)" in off[1]


def test_stage_timer_sees_prefill_and_decode_through_lora(files):
    """With LoRA the LLM is a peft wrapper whose generate() bypasses its own forward: the timer must still count
    every prefill / decode token (it once reported 0 tok/s for the default model)."""
    from mu_llama.adapters import LoraOptions

    lora = MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=2,
                                       lora=LoraOptions(rank=2, targets=("q_proj",), bias_targets=()))).eval()
    timer = StageTimer()
    with timer.instrument(lora):
        tasks.caption(lora, files[:2], OPTS, batch_size=2)
    assert timer.counts["prefill_steps"] == 1 and timer.counts["decode_tokens"] == 2 * (OPTS.max_new_tokens - 1)
    assert timer.seconds["prefill"] > 0 and timer.seconds["decode"] > 0
