"""Content-hash label cache: (sha256 of the file's bytes, labeler fingerprint) -> label fields.

A file already labelled by the same model, revision, decoding options, questions and window policy is not run
through the model again, whatever its path or job. SQLite (stdlib) in WAL mode: each `put_many` is one transaction,
so a kill -9 leaves the cache either with or without a whole commit, never a half row. Readers open their own
read-only connection per thread/process (decode workers and Ray tasks look up; only the job's driver writes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

_local = threading.local()


def default_cache_path() -> Path:
    """$MU_LLAMA_CACHE/label_cache.sqlite, else $XDG_CACHE_HOME (or ~/.cache)/mu_llama/label_cache.sqlite."""
    root = os.environ.get("MU_LLAMA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mu_llama")
    return Path(root) / "label_cache.sqlite"


class LabelCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS labels (sha256 TEXT, fingerprint TEXT, fields TEXT NOT NULL, "
                         "PRIMARY KEY (sha256, fingerprint))")
        self._db.commit()

    def put_many(self, entries: list[tuple[str, str, dict]]) -> None:
        """entries: (sha256, fingerprint, normalized fields). Existing keys keep their first value."""
        if entries:
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO labels VALUES (?, ?, ?)",
                                     [(s, f, json.dumps(d, ensure_ascii=False)) for s, f, d in entries])

    def close(self) -> None:
        self._db.close()


def lookup(path: str | os.PathLike | None, sha256: str, fingerprint: str) -> dict | None:
    """Read-only lookup usable from any thread or process; a missing cache file is simply a miss."""
    if path is None:
        return None
    conns = _local.__dict__.setdefault("conns", {})
    key = str(path)
    if key not in conns:
        if not os.path.exists(key):
            return None
        try:
            conns[key] = sqlite3.connect(Path(key).resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0, check_same_thread=False)
        except sqlite3.Error:
            return None
    try:
        row = conns[key].execute("SELECT fields FROM labels WHERE sha256=? AND fingerprint=?",
                                 (sha256, fingerprint)).fetchone()
    except sqlite3.Error:
        return None
    return json.loads(row[0]) if row else None
