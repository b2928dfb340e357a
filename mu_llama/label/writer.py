"""Crash-safe storage of a labelling job and assembly of its final outputs.

The work dir (default `<out>.work/`) holds
  job.json                     the manifest: labeler fingerprint, questions, window policy (a rerun must match it)
  lock                         flock'ed while a job runs (the kernel drops it if the process is killed)
  shards/part-000000.jsonl     committed records, one JSON object per line: {"kind": "row"|"error", "key", "data"}
A commit writes `part-N.jsonl.tmp`, fsyncs it, renames it into place and fsyncs the directory: a shard either exists
whole or not at all, so kill -9 at any moment loses at most the uncommitted records, which the rerun redoes.
Shards are never rewritten; the final JSONL / parquet / save_to_disk output is rebuilt from them in source order
with the same serialiser, so a row's text never changes once written.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from mu_llama.errors import ConfigError, choice_error
from mu_llama.label.rows import dumps, features

FORMATS = ("auto", "jsonl", "parquet", "hf")
_SHARD_PREFIX, _SHARD_SUFFIX = "part-", ".jsonl"


def resolve_format(out: str | Path, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise choice_error("output format", fmt, FORMATS)
    if fmt != "auto":
        return fmt
    suffix = Path(out).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(suffix, "hf")


def default_errors_path(out: str | Path) -> Path:
    """labels.jsonl -> labels.errors.jsonl; labels.parquet -> labels.errors.jsonl; labels_ds/ -> labels_ds.errors.jsonl"""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".jsonl", ".json", ".parquet") else out
    return stem.parent / (stem.name + ".errors.jsonl")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class WorkDir:
    """Committed records of one job. `records[key] = (kind, data)`; a later shard overrides an earlier one
    (that only happens when a rerun retries a recorded error)."""

    def __init__(self, path: str | Path, manifest: dict, *, restart: bool = False,
                 commit_every: int = 64, commit_seconds: float = 30.0):
        self.path = Path(path)
        self.shards = self.path / "shards"
        self.commit_every, self.commit_seconds = commit_every, commit_seconds
        self.shards.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(f"{self.path}: another label job is using this work dir") from None
        job = self.path / "job.json"
        if job.exists():
            old = json.loads(job.read_text(encoding="utf-8"))
            if old.get("fingerprint") != manifest.get("fingerprint") and not restart:
                self.close()
                raise ConfigError(f"{self.path} holds a job labelled with other options (fingerprint "
                                  f"{old.get('fingerprint')} != {manifest.get('fingerprint')}); pass restart=True "
                                  "(--restart) to discard it, or write to another output")
            if restart:
                shutil.rmtree(self.shards)
                self.shards.mkdir()
        if restart or not job.exists() or json.loads(job.read_text(encoding="utf-8")) != manifest:
            atomic_write_text(job, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        self.records: dict[str, tuple[str, dict]] = {}
        self._next = 0
        self._load()
        self._buffer: list[tuple[str, str, str, dict]] = []  # (line, kind, key, data) not yet durable
        self._buffer_since = time.monotonic()
        # called with the (kind, key, data) records of each commit once they are durable (the job feeds its cache)
        self.on_commit: Callable[[list[tuple[str, str, dict]]], None] | None = None

    def _load(self) -> None:
        for stale in self.shards.glob("*.tmp"):  # a commit that was killed before its rename: never happened
            stale.unlink()
        for shard in sorted(self.shards.glob(f"{_SHARD_PREFIX}*{_SHARD_SUFFIX}")):
            seq = int(shard.name[len(_SHARD_PREFIX):-len(_SHARD_SUFFIX)])
            self._next = max(self._next, seq + 1)
            try:
                recs = [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
            except (UnicodeDecodeError, json.JSONDecodeError):
                # Only disk damage can do this (commits are atomic); set it aside and let its items be redone.
                shard.rename(shard.with_name(shard.name + ".damaged"))
                warnings.warn(f"{shard}: damaged shard set aside; its items will be labelled again", stacklevel=2)
                continue
            for r in recs:
                self.records[r["key"]] = (r["kind"], r["data"])

    def add(self, kind: str, key: str, data: dict) -> None:
        if not self._buffer:
            self._buffer_since = time.monotonic()  # the commit clock runs from the oldest uncommitted record
        self._buffer.append((dumps({"kind": kind, "key": key, "data": data}), kind, key, data))
        self.records[key] = (kind, data)
        if len(self._buffer) >= self.commit_every or time.monotonic() - self._buffer_since >= self.commit_seconds:
            self.commit()

    @property
    def uncommitted(self) -> int:
        return len(self._buffer)

    def commit(self) -> None:
        """Make the buffered records durable as one new shard (all or nothing)."""
        if self._buffer:
            final = self.shards / f"{_SHARD_PREFIX}{self._next:06d}{_SHARD_SUFFIX}"
            atomic_write_text(final, "".join(b[0] + "\n" for b in self._buffer))
            self._next += 1
            done, self._buffer = self._buffer, []
            if self.on_commit is not None:
                self.on_commit([b[1:] for b in done])
        self._buffer_since = time.monotonic()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


# ---------------------------------------------------------------- final outputs

def write_errors(path: Path, errors: Iterable[dict]) -> int:
    lines = [dumps(e) for e in errors]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_output(out: str | Path, fmt: str, rows: list[dict], *, question_names: tuple[str, ...],
                 audio_ref: Callable[[int], dict], audio: str = "path", description: str = "",
                 chunk_rows: int = 512) -> None:
    """Rows (already in source order) -> `out`, replaced atomically. `audio_ref(i)` gives row i's
    {"path", "bytes"} for the parquet/hf `audio` column. audio: "embed" (bytes stored; files are read now),
    "path" (the file's absolute path only) or "none" (no audio column; rows join their audio by `source`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        atomic_write_text(out, "".join(dumps(r) + "\n" for r in rows))
        return
    import pyarrow as pa

    feats = features(question_names)
    if not question_names:  # an empty struct cannot be stored in parquet: no questions, no answers column
        del feats["answers"]
    if audio == "none":
        del feats["audio"]
    schema = feats.arrow_schema

    def batches():
        for start in range(0, len(rows), chunk_rows):
            chunk = []
            for i in range(start, min(start + chunk_rows, len(rows))):
                r = {k: v for k, v in rows[i].items() if k in feats}
                if audio != "none":
                    r["audio"] = _audio_cell(audio_ref(i), audio == "embed")
                chunk.append(r)
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)

    if fmt == "parquet":
        import pyarrow.parquet as pq

        tmp = out.with_name(out.name + ".tmp")
        with pq.ParquetWriter(tmp, schema) as w:
            for b in batches():
                w.write_batch(b)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
        return
    _write_hf(out, schema, batches(), feats, description)


def _audio_cell(ref: dict, embed: bool) -> dict:
    path, data = ref.get("path"), ref.get("bytes")
    if embed:
        if data is None and path:
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                warnings.warn(f"{path}: cannot embed audio bytes ({e.strerror}); keeping the path only", stacklevel=2)
                return {"bytes": None, "path": path}
        return {"bytes": data, "path": os.path.basename(path) if path else None}
    if path and not os.path.exists(path):  # gone since it was labelled (datasets would stat it on save)
        warnings.warn(f"{path}: no longer exists; its row keeps no audio reference", stacklevel=2)
        path = None
    return {"bytes": None, "path": path}


def _write_hf(out: Path, schema, batches, feats, description: str) -> None:
    """save_to_disk layout, built from an Arrow stream file written batch by batch (bounded memory)."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    if out.exists() and not (out / "dataset_info.json").exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a datasets directory; refusing to replace it")
    stage = out.with_name(out.name + ".tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    stream = stage / "rows.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    ds = Dataset.from_file(str(stream), info=DatasetInfo(features=feats, description=description))
    # shards of ~500 MB, counted from the stream file (datasets' own estimate stats every audio path, which
    # fails for a dataset row's bare file name)
    _quiet_save(ds, stage / "dataset", num_shards=max(1, min(len(ds), stream.stat().st_size // (500 << 20) + 1)))
    del ds
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(stage / "dataset", out)
    _fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def _quiet_save(ds, path: Path, num_shards: int) -> None:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        ds.save_to_disk(str(path), num_shards=num_shards)
    finally:
        if not was:
            enable_progress_bars()
