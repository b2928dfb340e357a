"""`--engine ray`: the same job on Ray Data. Stages:

  from_items(pending items) -> map_batches(prepare, Ray tasks: probe, hash, cache lookup, decode + resample)
                            -> map_batches(_LabelActor, actor pool: concurrency=N, num_gpus per actor)
                            -> the driver iterates the results and feeds the same work dir as the local engine.

Everything the stages exchange is a pyarrow table of scalar columns (audio as float32 bytes), so nothing
framework-specific is pickled beyond the context objects. The driver builds rows with the same function as the local
engine, so the two engines give the same rows (only `labeled_at` differs between any two runs).
Only the driver writes (work dir, cache): a kill -9 of the driver loses at most the uncommitted records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np

from mu_llama.isolate import describe_failure
from mu_llama.label.clips import Failed, PrepareContext, prepare
from mu_llama.label.labelers import Clip, LabelerSpec, label_isolating
from mu_llama.label.rows import MODEL_FAILED, make_error, now_utc
from mu_llama.label.sources import Item

_COLUMNS = ("key", "kind", "meta", "fields", "audio", "labeled_at", "work_s")


def _table(cols: dict):
    import pyarrow as pa

    types = {"audio": pa.binary(), "work_s": pa.float64()}
    return pa.table({c: pa.array(cols[c], type=types.get(c, pa.string())) for c in _COLUMNS})


def _prepare_batch(batch, ctx: PrepareContext):
    """Ray task: items -> prepared clips (audio bytes), cached labels or error records."""
    cols = {c: [] for c in _COLUMNS}
    for rec in batch.to_pylist():
        res = prepare(Item(**rec), ctx)
        cols["key"].append(res.item.key)
        if isinstance(res, Failed):
            kind, meta, fields, audio = "error", res.error, None, b""
        else:
            meta = {"sha256": res.sha256, "duration": res.duration, "sample_rate": res.sample_rate,
                    "windows": res.windows}
            kind, fields = ("cached", res.cached) if res.cached is not None else ("clip", None)
            audio = b"" if res.audio is None else np.ascontiguousarray(res.audio, np.float32).tobytes()
        cols["kind"].append(kind)
        cols["meta"].append(json.dumps(meta))
        cols["fields"].append(json.dumps(fields))
        cols["audio"].append(audio)
        cols["labeled_at"].append("")
        cols["work_s"].append(getattr(res, "decode_s", 0.0))
    return _table(cols)


class _LabelActor:
    """One labeler (one model copy, on one GPU when the cluster has them) per actor."""

    def __init__(self, spec: LabelerSpec, expected):
        self.labeler = spec.build()
        if self.labeler.info != expected:  # e.g. another device/dtype than the driver assumed: labels would differ
            raise RuntimeError(f"labeler identity in the actor {self.labeler.info} differs from the driver's "
                               f"{expected}; pin it (e.g. --device)")
        self.last_end: float | None = None

    def __call__(self, batch):
        start = time.perf_counter()
        idle = 0.0 if self.last_end is None else start - self.last_end  # waiting for decoded input
        recs = batch.to_pylist()
        todo = [i for i, r in enumerate(recs) if r["kind"] == "clip"]
        clips = [Clip(recs[i]["key"], np.frombuffer(recs[i]["audio"], np.float32), json.loads(recs[i]["meta"])["duration"])
                 for i in todo]
        results = label_isolating(self.labeler, clips) if clips else []
        stamp = now_utc()
        for i, r in zip(todo, results):
            if isinstance(r, Exception):
                recs[i].update(kind="error", fields="null",
                               meta=json.dumps(make_error(recs[i]["key"], MODEL_FAILED, describe_failure(r), "model")))
            else:
                recs[i].update(kind="row", fields=json.dumps(r), labeled_at=stamp)
        model_s = time.perf_counter() - start
        cols = {c: [r[c] for r in recs] for c in _COLUMNS}
        cols["audio"] = [b""] * len(recs)          # the audio is not needed downstream
        # per-batch timings ride on the first record: (model seconds, idle seconds) for the driver's summary
        if recs:
            cols["meta"][0] = json.dumps({**json.loads(cols["meta"][0]), "_model_s": model_s, "_idle_s": idle})
        self.last_end = time.perf_counter()
        return _table(cols)


class RaySession:
    """A connection to Ray (a private local one, or an existing cluster) and the actor layout for this job."""

    def __init__(self, opts):
        import ray

        self.started = False
        if not ray.is_initialized():
            if opts.ray_address:
                ray.init(address=opts.ray_address, log_to_driver=False)
            else:
                # A private single-node Ray bound to loopback; its workers import what the driver imports.
                path = os.pathsep.join(p for p in sys.path if p)
                ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
            self.started = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self.gpus_per_actor = opts.ray_gpus_per_actor if opts.ray_gpus_per_actor is not None else (1.0 if gpus else 0.0)
        self.actors = opts.ray_concurrency or (max(1, int(gpus // self.gpus_per_actor)) if self.gpus_per_actor else 1)
        self.cpus_per_actor, self.cpus_per_task = cpu_shares(float(ray.cluster_resources().get("CPU", 1.0)),
                                                             self.actors, opts.workers, bool(self.gpus_per_actor))

    def resolve(self, spec: LabelerSpec) -> LabelerSpec:
        """The built-in labeler picks its device where it runs; pin it so the driver's identity is the actors'."""
        if spec.factory == LabelerSpec().factory and not spec.kwargs.get("device"):
            return LabelerSpec(spec.factory, {**spec.kwargs, "device": "cuda" if self.gpus_per_actor else "cpu"})
        return spec

    def close(self) -> None:
        import ray

        if self.started:
            ray.shutdown()


def cpu_shares(cpus: float, actors: int, workers: int, gpu_actors: bool) -> tuple[float, float]:
    """(num_cpus per labeler actor, per decode task). Ray starts an actor or a task only where its num_cpus fits, so
    CPU-only actors asking for a whole CPU each (Ray's default) can take every CPU of a small node and starve the
    decode tasks that feed them: the job hangs (2 actors on a 2-CPU node did). CPU actors get at most 3/4 of the
    node's CPUs, the decode tasks the rest; GPU actors keep one CPU each."""
    per_actor = 1.0 if gpu_actors else max(0.1, min(1.0, 0.75 * cpus / max(1, actors)))
    spare = cpus - (0.0 if gpu_actors else per_actor * actors)
    return per_actor, max(0.1, min(1.0, spare / max(1, workers)))


def run_ray(session: RaySession, pending: list[Item], ctx: PrepareContext, spec: LabelerSpec, info, opts,
            sink) -> None:
    import ray
    import ray.data

    dctx = ray.data.DataContext.get_current()
    dctx.enable_progress_bars = False
    dctx.print_on_execution_start = False
    actors = session.actors
    ds = ray.data.from_items([asdict(it) for it in pending],
                             override_num_blocks=max(1, min(len(pending), 4 * opts.workers)))
    ds = ds.map_batches(_prepare_batch, fn_kwargs={"ctx": ctx}, batch_size=opts.batch_size,
                        batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=opts.workers),
                        num_cpus=session.cpus_per_task)
    ds = ds.map_batches(_LabelActor, fn_constructor_kwargs={"spec": spec, "expected": info},
                        batch_size=opts.batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=session.gpus_per_actor,
                        num_cpus=session.cpus_per_actor)
    summary = sink.summary
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for rec in batch.to_pylist():
            meta = json.loads(rec["meta"])
            summary.model_s += meta.pop("_model_s", 0.0)
            summary.decode_wait_s += meta.pop("_idle_s", 0.0) / actors
            summary.decode_work_s += rec["work_s"]
            if rec["kind"] == "error":
                sink.error(rec["key"], meta)
                continue
            fields = json.loads(rec["fields"])
            cached = rec["kind"] == "cached"
            if not cached:
                summary.heard_s += sum(b - a for a, b in meta["windows"])
            sink.row(rec["key"], meta["sha256"], meta["duration"], meta["sample_rate"], meta["windows"], fields,
                     rec["labeled_at"] or now_utc(), cached=cached)
