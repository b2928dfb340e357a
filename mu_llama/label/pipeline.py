"""Label a whole collection: `label_collection(source, out, labeler, options)`.

Flow (local engine): source items -> background decode workers (probe, sha256, cache lookup, decode + resample the
heard windows) -> a bounded pool of ready clips -> length-bucketed model batches on the calling thread -> rows and
error records committed to the work dir in durable shards -> at the end, the output in source order.
The `ray` engine (mu_llama.label.ray_engine) runs the same prepare / label steps as Ray Data stages and feeds the
same work dir, so both engines produce the same rows.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mu_llama.errors import ConfigError, choice_error
from mu_llama.label.cache import LabelCache, default_cache_path
from mu_llama.isolate import describe_failure
from mu_llama.label.clips import Failed, PrepareContext, Prepared, prepare
from mu_llama.label.labelers import Clip, Labeler, LabelerInfo, LabelerSpec, label_isolating, software_versions
from mu_llama.label.rows import MODEL_FAILED, VAD_FIELDS, make_error, make_row, now_utc
from mu_llama.label.sources import DatasetSource, FileSource, open_source
from mu_llama.label.writer import WorkDir, default_errors_path, resolve_format, write_errors, write_output

ENGINES = ("local", "ray")
DECODE_POOLS = ("thread", "process")
_DEFAULT = object()


@dataclass(frozen=True)
class LabelOptions:
    batch_size: int = 8                  # clips per model call
    workers: int = 4                     # decode workers
    decode_pool: str = "thread"          # "thread" (soundfile/soxr/hashlib release the GIL) or "process"
    prefetch: int | None = None          # decoded clips held ahead of the model; default 2 * batch_size * bucket_batches
    bucket_batches: int = 2              # length bucketing: sort this many batches' worth of clips by length (1 = off)
    window_seconds: float = 30.0         # long files are heard as max_windows windows of this length ...
    max_windows: int = 0                 # ... 0 = hear every file whole (default); N > 0 caps cost on very long files
    max_duration: float | None = 4 * 3600.0   # longer files are errors ("too_long"); None = no limit
    commit_every: int = 64               # records per durable shard ...
    commit_seconds: float = 30.0         # ... or at least this often
    retry_errors: bool = False           # a rerun retries files recorded as errors
    restart: bool = False                # discard a work dir made with other options
    format: str = "auto"                 # jsonl | parquet | hf (save_to_disk) | auto (from the suffix)
    embed_audio: bool | None = None      # parquet/hf: True store the audio bytes; False files: path only, dataset
    #                                      rows: no audio column; None: bytes for dataset rows, paths for files
    progress: bool = True
    engine: str = "local"
    ray_address: str | None = None       # None: start a local Ray bound to 127.0.0.1
    ray_concurrency: int | None = None   # labeler actors; default: one per GPU, else 1
    ray_gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs, else 0

    def __post_init__(self):
        for name in ("batch_size", "workers", "bucket_batches", "commit_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if self.prefetch is not None and self.prefetch < self.batch_size:
            raise ConfigError(f"prefetch ({self.prefetch}) must be >= batch_size ({self.batch_size})")
        if not self.window_seconds > 0 or self.max_windows < 0:
            raise ConfigError(f"window_seconds must be > 0 and max_windows >= 0 (0 = always whole file); got "
                              f"{self.window_seconds}, {self.max_windows}")
        if self.max_duration is not None and not self.max_duration > 0:
            raise ConfigError(f"max_duration must be > 0 or None, got {self.max_duration}")
        if self.decode_pool not in DECODE_POOLS:
            raise choice_error("decode_pool", self.decode_pool, DECODE_POOLS)
        if self.engine not in ENGINES:
            raise choice_error("engine", self.engine, ENGINES)
        resolve_format("x", self.format)  # validates

    @property
    def ahead(self) -> int:
        return self.prefetch or 2 * self.batch_size * self.bucket_batches


@dataclass
class LabelSummary:
    out: str
    errors_path: str
    format: str
    total: int = 0            # items in the source
    rows: int = 0             # rows in the output
    errors: int = 0           # error records in the errors file
    resumed: int = 0          # items already done before this run (rows and errors)
    labelled: int = 0         # labelled by the model in this run
    cached: int = 0           # taken from the content-hash cache in this run
    failed: int = 0           # new error records in this run
    elapsed_s: float = 0.0    # labelling loop wall time (excludes enumerating and writing the output)
    model_s: float = 0.0      # in labeler calls
    decode_wait_s: float = 0.0   # the model thread idle, waiting for decoded clips
    decode_work_s: float = 0.0   # summed worker time preparing clips
    audio_s: float = 0.0      # duration of the files processed in this run (labelled + cached)
    heard_s: float = 0.0      # audio the model actually heard (windows)
    assemble_s: float = 0.0
    reasons: dict = field(default_factory=dict)   # error reason -> count (whole output)

    @property
    def processed(self) -> int:
        return self.labelled + self.cached + self.failed

    @property
    def clips_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def audio_hours_per_hour(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def decode_wait_share(self) -> float:
        return self.decode_wait_s / self.elapsed_s if self.elapsed_s else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "clips_per_s": self.clips_per_s, "audio_hours_per_hour": self.audio_hours_per_hour,
                "decode_wait_share": self.decode_wait_share}

    def render(self) -> str:
        lines = [f"labelled {self.rows}/{self.total} items -> {self.out} ({self.format})",
                 (f"  this run: {self.labelled} by the model, {self.cached} from cache, {self.failed} failed; "
                  f"{self.resumed} already done"),
                 (f"  {self.clips_per_s:.2f} clips/s, {self.audio_hours_per_hour:.1f} audio-hours/hour, "
                  f"decode wait {self.decode_wait_s:.1f} s ({100 * self.decode_wait_share:.0f}% of "
                  f"{self.elapsed_s:.1f} s), model {self.model_s:.1f} s")]
        if self.errors:
            why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
            lines.append(f"  {self.errors} failed ({why}) -> {self.errors_path}")
        return "\n".join(lines)


class _Sink:
    """Where results go: the work dir (durable), the counters, the progress bar."""

    def __init__(self, work: WorkDir, identity: dict, summary: LabelSummary, bar):
        self.work, self.identity, self.summary, self.bar = work, identity, summary, bar

    def row(self, key: str, sha256: str, duration: float, sample_rate: int, windows, fields: dict,
            labeled_at: str, *, cached: bool) -> None:
        self.work.add("row", key, make_row(key, duration, sample_rate, sha256, windows, fields, self.identity,
                                           labeled_at))
        self.summary.cached += cached
        self.summary.labelled += not cached
        self.summary.audio_s += duration
        self._tick()

    def error(self, key: str, err: dict) -> None:
        self.work.add("error", key, err)
        self.summary.failed += 1
        self._tick()

    def _tick(self):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.summary.failed, cached=self.summary.cached, refresh=False)


def label_collection(source, out: str | Path, labeler: Labeler | LabelerSpec,
                     options: LabelOptions = LabelOptions(), *, cache=_DEFAULT, work_dir: str | Path | None = None,
                     errors_path: str | Path | None = None, source_kind: str = "auto", split: str | None = None,
                     audio_column: str | None = None) -> LabelSummary:
    """Label every item of `source` into `out` (resumable: rerun the same call after any interruption).
    `cache`: a path, None (off) or the default (~/.cache/mu_llama/label_cache.sqlite)."""
    src = source if isinstance(source, (FileSource, DatasetSource)) else open_source(
        source, kind=source_kind, split=split, audio_column=audio_column)
    fmt = resolve_format(out, options.format)
    spec = labeler if isinstance(labeler, LabelerSpec) else None
    session = None
    if options.engine == "ray":
        if spec is None:
            raise ConfigError("the ray engine builds a labeler inside each actor: pass a LabelerSpec, not an instance")
        from mu_llama.label.ray_engine import RaySession

        session = RaySession(options)
        spec = session.resolve(spec)
    try:
        return _label(src, Path(out), fmt, spec, labeler if spec is None else None, options, cache, work_dir,
                      errors_path, session)
    finally:
        if session is not None:
            session.close()


def _label(src, out: Path, fmt: str, spec: LabelerSpec | None, lab: Labeler | None, options: LabelOptions, cache,
           work_dir, errors_path, session) -> LabelSummary:
    if lab is None and session is None:
        lab = spec.build()
    info: LabelerInfo = lab.info if lab is not None else describe_spec(spec)
    fp = info.fingerprint(window_seconds=options.window_seconds, max_windows=options.max_windows)
    identity = {"model_id": info.model_id, "model_revision": info.model_revision, "decoding": info.decoding_json,
                "options_hash": fp}
    manifest = {"version": 1, "fingerprint": fp, "model_id": info.model_id, "model_revision": info.model_revision,
                "sample_rate": info.sample_rate, "decoding": info.decoding, "questions": info.questions,
                "extra": info.extra, "window_seconds": options.window_seconds, "max_windows": options.max_windows,
                "software": software_versions()}
    errors_path = Path(errors_path) if errors_path else default_errors_path(out)
    cache_path = default_cache_path() if cache is _DEFAULT else (Path(cache) if cache else None)

    work = WorkDir(work_dir or out.with_name(out.name + ".work"), manifest, restart=options.restart,
                   commit_every=options.commit_every, commit_seconds=options.commit_seconds)
    store = LabelCache(cache_path) if cache_path else None
    summary = LabelSummary(out=str(out), errors_path=str(errors_path), format=fmt)
    try:
        items = src.items()
        summary.total = len(items)
        keep = ("row",) if options.retry_errors else ("row", "error")
        pending = [it for it in items if work.records.get(it.key, ("",))[0] not in keep]
        summary.resumed = len(items) - len(pending)
        if store is not None:
            def feed_cache(records):
                store.put_many([(d["sha256"], fp, {"caption": d["caption"], "answers": d["answers"],
                                                   **{k: d[k] for k in VAD_FIELDS}})
                                for kind, _, d in records if kind == "row"])
            work.on_commit = feed_cache
        ctx = PrepareContext(src, info.sample_rate, options.window_seconds, options.max_windows,
                             options.max_duration, str(cache_path) if cache_path else None, fp)
        bar = _progress(len(pending), options.progress)
        sink = _Sink(work, identity, summary, bar)
        t0 = time.perf_counter()
        try:
            if pending and options.engine == "local":
                run_local(pending, ctx, lab, options, sink)
            elif pending:
                from mu_llama.label.ray_engine import run_ray

                run_ray(session, pending, ctx, spec, info, options, sink)
        finally:
            work.commit()  # whatever finished is durable, also on KeyboardInterrupt
            summary.elapsed_s = time.perf_counter() - t0
            if bar is not None:
                bar.close()
        t1 = time.perf_counter()
        _assemble(items, work, src, out, fmt, errors_path, info, options, summary)
        summary.assemble_s = time.perf_counter() - t1
    finally:
        work.close()
        if store is not None:
            store.close()
    return summary


def describe_spec(spec: LabelerSpec) -> LabelerInfo:
    """The labeler's identity without loading its weights when its factory offers `describe(**kwargs)`."""
    import importlib

    mod, _, attr = spec.factory.partition(":")
    factory = getattr(importlib.import_module(mod), attr)
    if hasattr(factory, "describe"):
        return factory.describe(**spec.kwargs)
    return spec.build().info


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="label", dynamic_ncols=True, smoothing=0.1)


def run_local(pending: list, ctx: PrepareContext, labeler: Labeler, opts: LabelOptions, sink: _Sink) -> None:
    """Decode in a pool while the calling thread runs the model. At most `opts.ahead` items are in flight or
    decoded-and-waiting, which bounds memory; the model thread's idle time is counted as decode wait."""
    summary = sink.summary
    if opts.decode_pool == "process":
        import multiprocessing as mp

        pool = ProcessPoolExecutor(opts.workers, mp_context=mp.get_context("spawn"))
    else:
        pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="label-decode")
    todo = iter(pending)
    inflight: set[Future] = set()
    ready: list[Prepared] = []
    bucket = min(opts.batch_size * opts.bucket_batches, opts.ahead)  # a full bucket must fit in the window
    exhausted = False

    def fill():
        nonlocal exhausted
        while not exhausted and len(inflight) + len(ready) < opts.ahead:
            item = next(todo, None)
            if item is None:
                exhausted = True
            else:
                inflight.add(pool.submit(prepare, item, ctx))

    def collect(done):
        for f in done:
            inflight.discard(f)
            res = f.result()
            summary.decode_work_s += getattr(res, "decode_s", 0.0)
            if isinstance(res, Failed):
                sink.error(res.item.key, res.error)
            elif res.cached is not None:
                sink.row(res.item.key, res.sha256, res.duration, res.sample_rate, res.windows, res.cached, now_utc(),
                         cached=True)
            else:
                ready.append(res)

    try:
        while True:
            fill()
            collect([f for f in inflight if f.done()])
            drained = exhausted and not inflight
            if len(ready) >= bucket or (drained and ready):
                # Length bucketing: similar lengths share a batch (less padding); output order is restored later.
                group, ready[:] = sorted(ready, key=lambda p: (len(p.audio), p.item.index)), []
                for start in range(0, len(group), opts.batch_size):
                    _run_batch(group[start:start + opts.batch_size], labeler, ctx.sample_rate, sink)
                    fill()
                    collect([f for f in inflight if f.done()])
            elif drained:
                break
            elif inflight:
                t = time.perf_counter()
                collect(wait(inflight, return_when=FIRST_COMPLETED).done)
                summary.decode_wait_s += time.perf_counter() - t
    finally:
        for f in inflight:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _run_batch(batch: list[Prepared], labeler: Labeler, sample_rate: int, sink: _Sink) -> None:
    clips = [Clip(p.item.key, p.audio, p.duration) for p in batch]
    t = time.perf_counter()
    results = label_isolating(labeler, clips)
    sink.summary.model_s += time.perf_counter() - t
    sink.summary.heard_s += sum(len(c.audio) for c in clips) / sample_rate
    stamp = now_utc()
    for p, r in zip(batch, results):
        if isinstance(r, Exception):
            sink.error(p.item.key, make_error(p.item.key, MODEL_FAILED, describe_failure(r), "model"))
        else:
            sink.row(p.item.key, p.sha256, p.duration, p.sample_rate, p.windows, r, stamp, cached=False)


def _assemble(items, work: WorkDir, src, out: Path, fmt: str, errors_path: Path, info: LabelerInfo,
              options: LabelOptions, summary: LabelSummary) -> None:
    """Every current source item appears exactly once: as a row (in source order) or as an error record."""
    rows, row_items, errors = [], [], []
    for it in items:
        kind, data = work.records.get(it.key, (None, None))
        if kind == "row":
            rows.append(data)
            row_items.append(it)
        elif kind == "error":
            errors.append(data)
            summary.reasons[data["reason"]] = summary.reasons.get(data["reason"], 0) + 1
    missing = len(items) - len(rows) - len(errors)
    if missing:  # only reachable if the engine was interrupted; the output would silently lack files
        raise RuntimeError(f"{missing} items have neither a row nor an error record; rerun to finish the job")
    summary.rows, summary.errors = len(rows), len(errors)
    from_ds = isinstance(src, DatasetSource)
    if options.embed_audio is None:
        audio = "embed" if from_ds else "path"
    else:
        audio = "embed" if options.embed_audio else ("none" if from_ds else "path")
    questions = "\n".join(f"  {k}: {v}" for k, v in info.questions.items())
    description = (f"Labelled by {info.model_id} (revision {info.model_revision}) with mu-llama label; decoding "
                   f"{info.decoding_json}; windows {options.window_seconds:g} s x {options.max_windows}.\n"
                   f"answers columns:\n{questions}")
    write_output(out, fmt, rows, question_names=tuple(info.questions), audio_ref=lambda i: src.audio_ref(row_items[i]),
                 audio=audio, description=description)
    write_errors(errors_path, errors)
