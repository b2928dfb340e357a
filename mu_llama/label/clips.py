"""Turn one source item into a ready clip (or a failure record) in a background worker: check and hash the file,
consult the label cache, choose the windows to hear, decode and resample them.

Everything here runs off the main thread (thread pool, process pool or a Ray task), never raises for a bad file,
and returns small picklable results. soundfile, soxr and hashlib release the GIL, so threads overlap with the model.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from mu_llama.errors import AudioError
from mu_llama.label import cache as label_cache
from mu_llama.label.rows import INTERNAL, make_error
from mu_llama.label.sources import Item

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class PrepareContext:
    """Everything a worker needs (picklable): the source, the labeler's rate, the window policy, the cache."""
    source: object                       # FileSource | DatasetSource
    sample_rate: int
    window_seconds: float
    max_windows: int
    max_duration: float | None
    cache_path: str | None
    fingerprint: str


@dataclass
class Prepared:
    item: Item
    sha256: str
    duration: float                      # whole file, seconds (header), rounded to 1 ms
    sample_rate: int                     # the file's own rate
    windows: list[tuple[float, float]]   # heard spans, seconds
    audio: np.ndarray | None = None      # (n,) float32 at ctx.sample_rate: the windows concatenated; None when cached
    cached: dict | None = None           # label fields from the cache
    decode_s: float = 0.0                # worker seconds spent on this item


@dataclass
class Failed:
    item: Item
    error: dict                          # rows.make_error record


def plan_windows(duration: float, window_seconds: float, max_windows: int) -> list[tuple[float, float]]:
    """Which spans to hear. Files up to window_seconds * max_windows are heard whole; longer ones as max_windows
    windows of window_seconds spread evenly from the start to the end (one window: the centre, past any intro)."""
    if max_windows <= 0 or duration <= window_seconds * max_windows:
        return [(0.0, round(duration, 3))]
    span = duration - window_seconds
    starts = [span / 2] if max_windows == 1 else [span * i / (max_windows - 1) for i in range(max_windows)]
    return [(round(s, 3), round(s + window_seconds, 3)) for s in starts]


def prepare(item: Item, ctx: PrepareContext) -> Prepared | Failed:
    t0 = time.perf_counter()
    try:
        data, name = ctx.source.read_bytes(item)
        out = _prepare_bytes(item, data, name, ctx) if data is not None else _prepare_file(item, name, ctx)
    except AudioError as e:
        return Failed(item, make_error(item.key, e.reason, e.detail, "decode"))
    except MemoryError:
        return Failed(item, make_error(item.key, "too_long", "out of memory while decoding", "decode"))
    except Exception as e:  # noqa: BLE001 - one strange file must never stop the job; recorded, not hidden
        return Failed(item, make_error(item.key, INTERNAL, f"{type(e).__name__}: {e}", "decode"))
    out.decode_s = time.perf_counter() - t0
    return out


def _prepare_file(item: Item, path: str, ctx: PrepareContext) -> Prepared:
    from mu_llama.audio import load_audio, probe

    info = probe(path)  # every unreadable / non-audio / empty case becomes an AudioError with its reason
    if ctx.max_duration is not None and info.duration > ctx.max_duration:
        raise AudioError(path, "too_long", f"{info.duration:.1f} s exceeds the limit of {ctx.max_duration:g} s")
    sha = _hash_file(path)
    prep = Prepared(item, sha, round(info.duration, 3), info.sample_rate,
                    plan_windows(info.duration, ctx.window_seconds, ctx.max_windows))
    prep.cached = label_cache.lookup(ctx.cache_path, sha, ctx.fingerprint)
    if prep.cached is None:
        if len(prep.windows) == 1:
            # whole file: decode to the decoder's end (headers can lie); the limit guards underestimating headers
            limit = None if ctx.max_duration is None else ctx.max_duration + 1.0
            prep.audio = load_audio(path, ctx.sample_rate, max_duration=limit)
        else:
            prep.audio = np.concatenate([load_audio(path, ctx.sample_rate, offset=a, duration=b - a)
                                         for a, b in prep.windows])
    return prep


def _prepare_bytes(item: Item, data: bytes, name: str, ctx: PrepareContext) -> Prepared:
    """In-memory encoded audio (a dataset row): decoded whole, the windows cut from the decoded array."""
    import io

    import soundfile as sf

    from mu_llama.audio import decode_bytes

    limit = None if ctx.max_duration is None else ctx.max_duration
    try:
        info = sf.info(io.BytesIO(data))
        duration, sr = info.frames / info.samplerate, info.samplerate
    except Exception:  # noqa: BLE001 - let decode_bytes name the reason (empty, not_audio, corrupt, ...)
        decode_bytes(data, ctx.sample_rate, name, max_duration=limit)
        raise AudioError(name, "decode_failed", "soundfile cannot read the stream's header") from None
    if limit is not None and duration > limit:
        raise AudioError(name, "too_long", f"{duration:.1f} s exceeds the limit of {limit:g} s")
    prep = Prepared(item, hashlib.sha256(data).hexdigest(), round(duration, 3), sr,
                    plan_windows(duration, ctx.window_seconds, ctx.max_windows))
    prep.cached = label_cache.lookup(ctx.cache_path, prep.sha256, ctx.fingerprint)
    if prep.cached is None:
        audio = decode_bytes(data, ctx.sample_rate, name, max_duration=None if limit is None else limit + 1.0)
        if len(prep.windows) > 1:
            audio = np.concatenate([audio[round(a * ctx.sample_rate):round(b * ctx.sample_rate)]
                                    for a, b in prep.windows])
        prep.audio = audio
    return prep


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
    except PermissionError:
        raise AudioError(path, "permission", "permission denied") from None
    except IsADirectoryError:
        raise AudioError(path, "not_a_file", "is a directory") from None
    except OSError as e:
        raise AudioError(path, "decode_failed", f"read error: {e.strerror or e}") from None
    return h.hexdigest()



