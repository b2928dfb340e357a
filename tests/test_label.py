"""`mu-llama label`: every file exactly once (a row or an error record), resumable after kill -9 with rows identical
to an uninterrupted run, bad files isolated, labels invariant to batch size / workers / engine, cache hits skip the
model, datasets in and out. The labeler is the deterministic FakeLabeler (tests/test_label_fakes.py); the real
tiny model is exercised in tests/test_label_model.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_label_fakes import FakeLabeler

from mu_llama.errors import ConfigError
from mu_llama.label import LabelerSpec, LabelOptions, label_collection
from mu_llama.label.clips import plan_windows

TESTS = Path(__file__).resolve().parent
SR = 8000
FAST = dict(progress=False)


def _tone(seconds: float, freq: float, amp: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_good(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    """n distinct short files, mixed rates / formats / lengths, in a nested tree."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        ext = (".wav", ".flac", ".ogg")[i % 3]
        sr = (SR, 16000, 11025)[i % 3]
        x = _tone(0.3 + 0.1 * (i % 7), 150 + 37 * i, 0.05 + 0.6 * rng.random(), sr)
        p = sub / f"clip{i:03d}{ext}"
        sf.write(p, x, sr)
        paths.append(p)
    return paths


def make_bad(folder: Path) -> dict[str, str]:
    """Crafted bad files -> the reason each must be recorded with (plus a truncated WAV that still labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "ok.wav", _tone(1.0, 440, 0.3), SR)
    good = (folder / "ok.wav").read_bytes()
    (folder / "corrupt_header.wav").write_bytes(good[:12] + b"fmt \x10\x00\x00\x00" + b"\xff" * 16 + good[36:])
    (folder / "truncated.wav").write_bytes(good[: len(good) * 6 // 10])          # decodes: labelled, not an error
    sf.write(folder / "full.flac", _tone(1.0, 330, 0.3), SR)
    flac = (folder / "full.flac").read_bytes()
    (folder / "full.flac").unlink()
    (folder / "cut_header.flac").write_bytes(flac[:30])
    (folder / "cut_middle.flac").write_bytes(flac[: len(flac) // 2])
    (folder / "zero.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("these are my notes, not audio\n")
    (folder / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "album.mp3").mkdir()
    os.symlink("loop.wav", folder / "loop.wav")
    os.symlink("nowhere.wav", folder / "broken.wav")
    sf.write(folder / "long.wav", _tone(6.0, 220, 0.2), SR)                      # > max_duration=5 below
    expected = {"corrupt_header.wav": "unsupported_format", "cut_header.flac": "corrupt", "cut_middle.flac": "corrupt",
                "zero.wav": "empty", "notes.wav": "not_audio", "noise.mp3": "not_audio", "album.mp3": "not_a_file",
                "loop.wav": "not_a_file", "broken.wav": "missing", "long.wav": "too_long"}
    if os.geteuid() != 0:  # root reads anything: a permission error cannot be made
        sf.write(folder / "locked.wav", _tone(1.0, 550, 0.3), SR)
        os.chmod(folder / "locked.wav", 0)
        expected["locked.wav"] = "permission"
    return expected


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def stable(rows: list[dict]) -> list[dict]:
    """Rows without labeled_at, the one field that legitimately differs between runs."""
    return [{k: v for k, v in r.items() if k != "labeled_at"} for r in rows]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    make_good(root / "good", 24)
    return root / "good"


def test_windows_plan():
    assert plan_windows(50.0, 30.0, 3) == [(0.0, 50.0)]
    assert plan_windows(300.0, 30.0, 3) == [(0.0, 30.0), (135.0, 165.0), (270.0, 300.0)]
    assert plan_windows(300.0, 30.0, 1) == [(135.0, 165.0)]
    assert plan_windows(300.0, 30.0, 0) == [(0.0, 300.0)]


def test_every_file_once_rows_in_source_order(collection, tmp_path):
    out = tmp_path / "labels.jsonl"
    s = label_collection(collection, out, FakeLabeler(), LabelOptions(batch_size=5, workers=3, **FAST), cache=None)
    rows = read_jsonl(out)
    files = sorted(str(p) for p in collection.rglob("clip*"))
    assert [r["source"] for r in rows] == files and s.rows == 24 and s.errors == 0
    assert read_jsonl(tmp_path / "labels.errors.jsonl") == []
    r = rows[0]
    assert list(r) == ["source", "duration", "sample_rate", "sha256", "windows", "caption", "answers", "valence",
                       "arousal", "dominance", "model_id", "model_revision", "decoding", "options_hash", "labeled_at"]
    import hashlib
    assert r["sha256"] == hashlib.sha256(Path(r["source"]).read_bytes()).hexdigest()
    assert r["windows"] == [[0.0, r["duration"]]] and r["model_id"] == "fake-labeler"
    assert set(r["answers"]) == {"genre", "mood"}
    # the caption is the fake's function of exactly the audio the pipeline decoded
    from mu_llama.audio import load_audio
    assert r["caption"] == FakeLabeler().one(load_audio(r["source"], SR))["caption"]


def test_bad_files_are_recorded_and_the_job_continues(tmp_path):
    expected = make_bad(tmp_path / "mixed")
    make_good(tmp_path / "mixed" / "fine", 4)
    out = tmp_path / "out.jsonl"
    s = label_collection(tmp_path / "mixed", out, FakeLabeler(), LabelOptions(batch_size=3, max_duration=5.0, **FAST),
                         cache=None)
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    got = {Path(e["path"]).name: e["reason"] for e in errors}
    assert got == expected
    assert all(e["stage"] == "decode" and e["detail"] for e in errors)
    labelled = sorted(Path(r["source"]).name for r in read_jsonl(out))
    assert labelled == sorted(["ok.wav", "truncated.wav"] + [f"clip{i:03d}{e}" for i, e in
                                                                 zip(range(4), (".wav", ".flac", ".ogg", ".wav"))])
    assert s.errors == len(expected) and s.rows == 6 and s.reasons["not_audio"] == 2


def test_cli_exit_codes(collection, tmp_path):
    from mu_llama.cli.label import main

    base = ["--labeler", "test_label_fakes:FakeLabeler", "--no-cache", "--no-progress"]
    assert main([str(collection), "--out", str(tmp_path / "a.jsonl"), *base]) == 0
    make_bad(tmp_path / "bad")
    assert main([str(tmp_path / "bad"), "--out", str(tmp_path / "b.jsonl"), *base]) == 1
    assert main([str(tmp_path / "nothing-here"), "--out", str(tmp_path / "c.jsonl"), *base]) == 2


def test_one_bad_clip_never_costs_its_batch(collection, tmp_path):
    """The labeler fails any batch holding the poisoned clip: bisection labels all the others."""
    src = tmp_path / "src"
    make_good(src, 10)
    sf.write(src / "poison.wav", _tone(0.5, 300, 0.777), SR)
    lab = FakeLabeler(poison_peak=0.777)
    s = label_collection(src, tmp_path / "o.jsonl", lab, LabelOptions(batch_size=11, bucket_batches=1, **FAST),
                         cache=None)
    errors = read_jsonl(tmp_path / "o.errors.jsonl")
    assert [(Path(e["path"]).name, e["reason"], e["stage"]) for e in errors] == [("poison.wav", "model_failed", "model")]
    assert "poisoned batch" in errors[0]["detail"]
    assert s.rows == 10 and s.labelled == 10
    assert lab.calls[0] == 11 and len(lab.calls) <= 1 + 2 * 4  # one full batch, then a bisection path


@pytest.mark.parametrize("opts", [dict(batch_size=1, workers=1, bucket_batches=1),
                                  dict(batch_size=7, workers=3, bucket_batches=3),
                                  dict(batch_size=4, workers=2, decode_pool="process", prefetch=8)])
def test_batch_size_and_worker_invariance(collection, tmp_path, opts):
    ref = tmp_path / "ref.jsonl"
    label_collection(collection, ref, FakeLabeler(), LabelOptions(batch_size=24, workers=1, **FAST), cache=None)
    out = tmp_path / "o.jsonl"
    label_collection(collection, out, LabelerSpec("test_label_fakes:FakeLabeler"), LabelOptions(**opts, **FAST),
                     cache=None)
    assert stable(read_jsonl(out)) == stable(read_jsonl(ref))


def test_content_hash_cache_skips_the_model(collection, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = label_collection(collection, tmp_path / "a.jsonl", FakeLabeler(), LabelOptions(**FAST), cache=cache)
    assert (first.labelled, first.cached) == (24, 0)
    # same content under other names, in another job: every clip comes from the cache
    copy = tmp_path / "copy"
    copy.mkdir()
    for i, p in enumerate(sorted(collection.rglob("clip*"))):
        (copy / f"renamed{i:02d}{p.suffix}").write_bytes(p.read_bytes())
    lab = FakeLabeler()
    second = label_collection(copy, tmp_path / "b.jsonl", lab, LabelOptions(**FAST), cache=cache)
    assert (second.labelled, second.cached) == (0, 24) and lab.calls == []
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("source", "labeled_at")} for r in rows]
    assert strip(read_jsonl(tmp_path / "b.jsonl")) == strip(read_jsonl(tmp_path / "a.jsonl"))
    # another revision (or other options) is another key: no hits
    third = label_collection(copy, tmp_path / "c.jsonl", FakeLabeler(revision="r2"), LabelOptions(**FAST), cache=cache)
    assert (third.labelled, third.cached) == (24, 0)
    fourth = label_collection(copy, tmp_path / "d.jsonl", FakeLabeler(), LabelOptions(max_windows=1, window_seconds=0.2,
                                                                                       **FAST), cache=cache)
    assert fourth.cached == 0


def test_rerun_continues_and_keeps_rows(collection, tmp_path):
    src = tmp_path / "src"
    make_good(src, 6)
    out = tmp_path / "o.jsonl"
    label_collection(src, out, FakeLabeler(), LabelOptions(**FAST), cache=None)
    before = out.read_text().splitlines()
    again = label_collection(src, out, FakeLabeler(), LabelOptions(**FAST), cache=None)
    assert again.resumed == 6 and again.processed == 0 and out.read_text().splitlines() == before
    sf.write(src / "d0" / "aaa_new.wav", _tone(0.4, 999, 0.4), SR)   # sorts first in its folder
    more = label_collection(src, out, FakeLabeler(), LabelOptions(**FAST), cache=None)
    after = out.read_text().splitlines()
    assert more.labelled == 1 and len(after) == 7
    assert [line for line in after if "aaa_new" not in line] == before   # old rows byte-identical, order kept
    with pytest.raises(ConfigError, match="other options"):
        label_collection(src, out, FakeLabeler(revision="r2"), LabelOptions(**FAST), cache=None)
    fresh = label_collection(src, out, FakeLabeler(revision="r2"), LabelOptions(restart=True, **FAST), cache=None)
    assert fresh.labelled == 7


def test_retry_errors(tmp_path):
    src = tmp_path / "src"
    make_good(src, 2)
    (src / "later.wav").write_bytes(b"")
    out = tmp_path / "o.jsonl"
    assert label_collection(src, out, FakeLabeler(), LabelOptions(**FAST), cache=None).errors == 1
    sf.write(src / "later.wav", _tone(0.5, 700, 0.5), SR)  # fixed meanwhile
    assert label_collection(src, out, FakeLabeler(), LabelOptions(**FAST), cache=None).errors == 1  # kept by default
    s = label_collection(src, out, FakeLabeler(), LabelOptions(retry_errors=True, **FAST), cache=None)
    assert (s.errors, s.rows, s.labelled) == (0, 3, 1)


def _shards(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "shards").glob("part-*.jsonl"))}


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """Kill -9 the CLI at random points (mid-commit-cycle, mid-batch, maybe mid-assembly), rerun, and compare."""
    src = tmp_path / "src"
    make_good(src, 40, seed=3)
    make_bad(src / "bad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mu_llama.cli.label", str(src), "--labeler", "test_label_fakes:FakeLabeler",
           "--labeler-arg", "sleep=0.04", "--no-cache", "--no-progress", "--batch-size", "2", "--commit-every", "3",
           "--workers", "2", "--max-duration", "5"]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref.jsonl")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ref.returncode == 1, ref.stderr          # the bad files
    out, work = tmp_path / "out.jsonl", tmp_path / "out.jsonl.work"
    rng = random.Random(20261122)
    seen: dict[str, bytes] = {}
    kills = 0
    for target in (1, 4, 8, 12):
        proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and len(_shards(work)) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.12))   # a random point inside the next commit cycle
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        now = _shards(work)
        assert all(now[name] == data for name, data in seen.items())   # committed shards never change
        seen.update(now)
    assert kills >= 3
    final = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 1, final.stderr
    assert all(_shards(work)[name] == data for name, data in seen.items())
    rows, ref_rows = read_jsonl(out), read_jsonl(tmp_path / "ref.jsonl")
    assert stable(rows) == stable(ref_rows)
    assert (tmp_path / "out.errors.jsonl").read_bytes() == (tmp_path / "ref.errors.jsonl").read_bytes()
    keys = [json.loads(line)["key"] for data in _shards(work).values() for line in data.decode().splitlines()]
    assert len(keys) == len(set(keys)) == 40 + 2 + len(read_jsonl(tmp_path / "ref.errors.jsonl"))
    # rows written before the kills are the very same text in the final output
    committed = {json.loads(line)["key"]: json.loads(line)["data"] for data in seen.values()
                 for line in data.decode().splitlines()}
    from mu_llama.label.rows import dumps
    text = out.read_text()
    assert all(dumps(d) in text for d in committed.values() if "caption" in d)


def _audio_dataset(tmp_path: Path, paths: list[Path], bad: bytes | None = None):
    """A save_to_disk dataset with an Audio column of embedded bytes (built from Arrow: no torchcodec needed)."""
    import pyarrow as pa
    from datasets import Audio, Dataset, DatasetInfo, Features, Value

    feats = Features({"audio": Audio(), "title": Value("string")})
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in paths]
    if bad is not None:
        cells.append({"bytes": bad, "path": "bad.wav"})
    table = pa.Table.from_pylist([{"audio": c, "title": f"t{i}"} for i, c in enumerate(cells)],
                                 schema=feats.arrow_schema)
    ds = Dataset(table, info=DatasetInfo(features=feats))
    ds.save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


def test_datasets_source_and_outputs_load(collection, tmp_path):
    import datasets
    from datasets import Audio

    paths = sorted(collection.rglob("clip*"))[:6]
    ds_dir = _audio_dataset(tmp_path, paths, bad=b"garbage bytes, not audio")
    s = label_collection(ds_dir, tmp_path / "out.parquet", FakeLabeler(), LabelOptions(batch_size=4, **FAST),
                         cache=None)
    assert (s.rows, s.errors) == (6, 1)
    assert read_jsonl(tmp_path / "out.errors.jsonl")[0]["path"] == "train/6"
    table = datasets.load_dataset("parquet", data_files=str(tmp_path / "out.parquet"), split="train")
    table = table.cast_column("audio", Audio(decode=False))
    assert table["source"] == [f"train/{i}" for i in range(6)]
    assert [a["bytes"] for a in table["audio"]] == [p.read_bytes() for p in paths]   # embedded by default
    # the same audio labelled from files gives the same labels
    files = tmp_path / "files.jsonl"
    label_collection(collection, files, FakeLabeler(), LabelOptions(**FAST),
                     cache=None)
    by_hash = {r["sha256"]: r for r in read_jsonl(files)}
    for row in table:
        ref = by_hash[row["sha256"]]
        assert (row["caption"], row["answers"], row["duration"]) == (ref["caption"], ref["answers"], ref["duration"])

    # JSONL and save_to_disk outputs of one job hold the same rows as its parquet
    label_collection(ds_dir, tmp_path / "out.jsonl", FakeLabeler(), LabelOptions(**FAST), cache=None)
    label_collection(ds_dir, tmp_path / "hfout", FakeLabeler(), LabelOptions(embed_audio=False, **FAST), cache=None)
    j = datasets.load_dataset("json", data_files=str(tmp_path / "out.jsonl"), split="train")
    h = datasets.load_from_disk(str(tmp_path / "hfout"))
    assert j["caption"] == h["caption"] == table["caption"]
    assert h["answers"] == table["answers"] and h["windows"] == table["windows"]
    assert "audio" not in h.column_names and "Labelled by fake-labeler" in h.info.description

    # the hub path (datasets.load_dataset) on a local data dir: same labels, keys "split/row"
    hub = tmp_path / "hub"
    hub.mkdir()
    datasets.load_from_disk(str(ds_dir)).to_parquet(str(hub / "train.parquet"))
    s = label_collection(f"hf:{hub}", tmp_path / "hub.jsonl", FakeLabeler(), LabelOptions(**FAST), cache=None)
    assert (s.rows, s.errors) == (6, 1)
    assert stable(read_jsonl(tmp_path / "hub.jsonl")) == stable(read_jsonl(tmp_path / "out.jsonl"))


def test_file_list_and_glob_sources(collection, tmp_path):
    files = sorted(collection.rglob("clip*.wav"))
    (tmp_path / "list.txt").write_text("# my list\n" + "\n".join(os.path.relpath(p, tmp_path) for p in files) + "\n")
    a = label_collection(tmp_path / "list.txt", tmp_path / "a.jsonl", FakeLabeler(), LabelOptions(**FAST), cache=None)
    b = label_collection(f"{collection}/**/*.wav", tmp_path / "b.jsonl", FakeLabeler(), LabelOptions(**FAST),
                         cache=None)
    assert a.rows == b.rows == len(files)
    assert [r["caption"] for r in read_jsonl(tmp_path / "a.jsonl")] == [r["caption"] for r in read_jsonl(tmp_path / "b.jsonl")]


def test_long_files_record_heard_windows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "long.wav", np.concatenate([_tone(2.0, 200, 0.1), _tone(2.0, 400, 0.5), _tone(2.0, 800, 0.9)]), SR)
    out = tmp_path / "o.jsonl"
    label_collection(src, out, FakeLabeler(), LabelOptions(window_seconds=1.0, max_windows=3, **FAST), cache=None)
    (row,) = read_jsonl(out)
    assert row["duration"] == 6.0 and row["windows"] == [[0.0, 1.0], [2.5, 3.5], [5.0, 6.0]]
    assert row["caption"].startswith(f"{3 * SR} samples")  # three 1-s windows were heard, not the whole 6 s


@pytest.fixture(scope="module")
def local_ray():  # ~30 s of Ray start-up and actor launches on 2 CPU cores: kept out of the default CI run
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_equals_local(tmp_path, local_ray):
    src = tmp_path / "src"
    make_good(src, 12)
    make_bad(src / "bad")
    spec = LabelerSpec("test_label_fakes:FakeLabeler", {"poison_peak": 0.777})
    sf.write(src / "poison.wav", _tone(0.5, 300, 0.777), SR)
    opts = dict(batch_size=4, workers=2, max_duration=5.0, **FAST)
    cache = tmp_path / "cache.sqlite"
    local = label_collection(src, tmp_path / "local.jsonl", spec, LabelOptions(**opts), cache=None)
    ray_run = label_collection(src, tmp_path / "ray.jsonl", spec, LabelOptions(engine="ray", **opts), cache=cache)
    assert stable(read_jsonl(tmp_path / "ray.jsonl")) == stable(read_jsonl(tmp_path / "local.jsonl"))
    assert (tmp_path / "ray.errors.jsonl").read_bytes() == (tmp_path / "local.errors.jsonl").read_bytes()
    assert (ray_run.rows, ray_run.errors) == (local.rows, local.errors)
    again = label_collection(src, tmp_path / "ray2.jsonl", spec, LabelOptions(engine="ray", **opts), cache=cache)
    assert again.cached == local.rows and again.labelled == 0


def test_default_questions_start_with_musicqa_description_prompts():
    from mu_llama.label import DEFAULT_QUESTIONS

    qa = pytest.importorskip("mu_llama.corpus.qa")
    assert tuple(DEFAULT_QUESTIONS.values())[:4] == qa.DESCRIPTION_QUESTIONS
    assert {"genre", "instruments", "mood", "tempo"} <= set(DEFAULT_QUESTIONS)


@pytest.mark.parametrize("cpus,actors,workers", [(2, 2, 2), (2, 1, 2), (16, 4, 4), (4, 8, 2), (1, 1, 1)])
def test_ray_cpu_shares_leave_room_for_decoding(cpus, actors, workers):
    """The Ray engine's CPU requests: all actors and all decode tasks fit on the node at once (2 CPU actors on a
    2-CPU node once starved the decode tasks and hung); GPU actors keep a whole CPU."""
    from mu_llama.label.ray_engine import cpu_shares

    per_actor, per_task = cpu_shares(cpus, actors, workers, gpu_actors=False)
    assert 0 < per_actor <= 1 and 0 < per_task <= 1
    assert per_actor * actors + per_task * workers <= cpus + 1e-9 or per_task == per_actor == 0.1
    assert cpu_shares(cpus, actors, workers, gpu_actors=True)[0] == 1.0
