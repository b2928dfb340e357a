"""Build the corpus: plan -> per-clip audio + MIDI + record (atomic, resumable, parallel) -> manifests + DatasetDict.

Layout of OUT:
  build.json                       options that define the corpus (a rerun with other defining options is refused)
  clips/<id[:3]>/<id>.{flac,mid,json}   one clip; the .json (written last) marks it finished
  manifests/{train,validation,test}.jsonl, dataset/ (datasets.DatasetDict.save_to_disk), LICENCES.md, licences.json
A rerun skips clips whose .json exists; the manifests and dataset are reassembled from all finished records, so an
interrupted build resumes to the same corpus as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mu_llama.corpus.plan import ARRANGEMENT_STYLES, RENDER_STYLES, ClipSpec, plan
from mu_llama.corpus.sources import COLLECTIONS, LICENCES, check_collections, list_works
from mu_llama.corpus.splits import SPLITS, split_of
from mu_llama.errors import ConfigError, choice_error

ALL_STYLES = RENDER_STYLES + ARRANGEMENT_STYLES
KINDS = ("render", "arrange")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BuildOptions:
    out: str
    clips: int = 6600
    seed: int = 0
    workers: int = 1
    collections: tuple[str, ...] = tuple(COLLECTIONS)
    styles: tuple[str, ...] = ALL_STYLES
    arrangement_share: float = 0.45
    kinds: tuple[str, ...] = KINDS          # build only these streams now (does not change the plan)
    captions_per_clip: int = 4
    factual_questions: int = 6
    limit: int | None = None                # stop after this many planned clips (for tests / interruption)
    assemble: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.clips < 1:
            raise ConfigError(f"clips must be >= 1, got {self.clips}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.arrangement_share <= 1.0:
            raise ConfigError(f"arrangement_share must be in [0, 1], got {self.arrangement_share}")
        check_collections(self.collections)
        for s in self.styles:
            if s not in ALL_STYLES:
                raise choice_error("style", s, ALL_STYLES)
        for k in self.kinds:
            if k not in KINDS:
                raise choice_error("kind", k, KINDS)
        if self.captions_per_clip < 1:
            raise ConfigError("captions_per_clip must be >= 1")

    def defining(self) -> dict:
        """The options that decide the corpus content (clips may grow between runs; workers etc. do not matter)."""
        return {"format": FORMAT_VERSION, "seed": self.seed, "collections": sorted(self.collections),
                "styles": sorted(self.styles), "arrangement_share": self.arrangement_share,
                "captions_per_clip": self.captions_per_clip, "factual_questions": self.factual_questions}


@dataclass
class BuildReport:
    planned: int
    built: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    per_split: dict = field(default_factory=dict)


def clip_paths(out: Path, clip_id: str) -> dict[str, Path]:
    d = out / "clips" / clip_id[:3]
    return {"dir": d, "json": d / f"{clip_id}.json", "flac": d / f"{clip_id}.flac", "mid": d / f"{clip_id}.mid"}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _lead_for(perf, texture: str) -> str:
    """Renders: the top part's instrument leads when the music is a melody (monophonic) or a melody over chords whose
    top part has its own timbre; polyphony and single-timbre ensembles have no single lead."""
    tracks = perf.pitched
    if texture == "monophonic":
        return tracks[0].name
    if texture == "homophonic" and len(tracks) > 1 and sum(t.program == tracks[0].program for t in tracks) == 1:
        return tracks[0].name
    return ""


def describe(fs, seed: tuple[int, ...] | list[int], n_captions: int, n_factual: int) -> tuple[list[str], list[dict]]:
    """Captions and QA pairs of a clip: a pure function of its facts and seed (so `assemble` can refresh them)."""
    from mu_llama.corpus.captions import captions
    from mu_llama.corpus.qa import qa_pairs

    crng = np.random.default_rng(list(seed) + [97])
    caps = captions(crng, fs, n_captions)
    long_caps = sorted(caps, key=len, reverse=True)[:max(1, n_captions - 1)]
    return caps, qa_pairs(crng, fs, long_caps, n_factual)


def clip_seed(clip_id: str, seed: int) -> tuple[int, int, int]:
    """The seed tuple of a clip id ('r00042' -> (seed, 0, 42); 'a00007' -> (seed, 1, 7)), as planned."""
    return (seed, {"r": 0, "a": 1}[clip_id[0]], int(clip_id[1:]))


def make_clip(spec: ClipSpec, opts: BuildOptions) -> dict:
    """Render one planned clip to OUT (audio, MIDI, record) and return its record. Deterministic in (spec, opts)."""
    from mu_llama.corpus.analyze import fact_sheet
    from mu_llama.corpus.excerpt import ExcerptError, render_work
    from mu_llama.corpus.perf import write_midi
    from mu_llama.corpus.render import SAMPLE_RATE, synthesize

    out = Path(opts.out)
    paths = clip_paths(out, spec.clip_id)
    works = list_works(spec.collection)
    errors = []
    for attempt, wi in enumerate(spec.work_candidates):
        rng = np.random.default_rng(list(spec.seed) + [attempt])
        try:
            if spec.kind == "render":
                perf, meta, extra = render_work(rng, works[wi])
                fs = fact_sheet(perf, meta, style=extra["style"])
                fs.lead_instrument = _lead_for(perf, fs.texture)
            else:
                from mu_llama.corpus.arrange import arrange_work

                perf, meta, extra, layer_facts = arrange_work(rng, works[wi], spec.style)
                fs = fact_sheet(perf, meta, style=spec.style, **layer_facts)
            break
        except ExcerptError as e:
            errors.append(str(e))
    else:
        record = {"id": spec.clip_id, "failed": True, "errors": errors}
        paths["dir"].mkdir(parents=True, exist_ok=True)
        _atomic_write(paths["json"], lambda p, rec=record: p.write_text(json.dumps(rec)))
        return record

    paths["dir"].mkdir(parents=True, exist_ok=True)
    caps, qa = describe(fs, spec.seed, opts.captions_per_clip, opts.factual_questions)

    _atomic_write(paths["mid"], lambda p: write_midi(perf, p))
    audio = synthesize(paths["mid"], perf.duration)

    def _flac(p: Path) -> None:
        import soundfile as sf

        sf.write(str(p), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")

    _atomic_write(paths["flac"], _flac)
    coll = COLLECTIONS[spec.collection]
    lic = LICENCES[spec.collection]
    record = {
        "id": spec.clip_id, "kind": spec.kind, "split": split_of(fs.work_id),
        "audio": str(paths["flac"].relative_to(out)), "midi": str(paths["mid"].relative_to(out)),
        "duration": round(len(audio) / SAMPLE_RATE, 4), "sample_rate": SAMPLE_RATE,
        "audio_sha256": hashlib.sha256(paths["flac"].read_bytes()).hexdigest(),
        "facts": fs.to_dict(), "captions": caps, "qa": qa,
        "source": {"title": meta.title, "collection": spec.collection, "work_id": fs.work_id,
                   "genre_source": coll.genre, **{k: v for k, v in extra.items() if k != "style"}},
        "licence": {"collection": spec.collection, "commercial_use": lic.commercial_use},
    }
    _atomic_write(paths["json"], lambda p: p.write_text(json.dumps(record, ensure_ascii=False, indent=1)))
    return record


def _load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _worker(args: tuple[list[ClipSpec], BuildOptions]) -> list[tuple[str, dict]]:
    specs, opts = args
    out = []
    for spec in specs:
        try:
            rec = make_clip(spec, opts)
        except Exception as e:  # one unrenderable score never kills the build: record it (so a rerun skips it), go on
            rec = {"id": spec.clip_id, "failed": True, "errors": [f"{type(e).__name__}: {e}"]}
            paths = clip_paths(Path(opts.out), spec.clip_id)
            paths["dir"].mkdir(parents=True, exist_ok=True)
            _atomic_write(paths["json"], lambda p, r=rec: p.write_text(json.dumps(r)))
        out.append(("failed" if rec.get("failed") else "built", rec))
    return out


def _groups(specs: list[ClipSpec]) -> list[list[ClipSpec]]:
    """Clips of the same (kind, collection, first-choice work) together, so each worker parses a score once; groups
    of the two streams interleave by their position in their stream, so a partly built corpus stays balanced."""
    groups: dict[tuple[str, str, int], list[ClipSpec]] = {}
    for s in specs:
        groups.setdefault((s.kind, s.collection, s.work_candidates[0]), []).append(s)
    size = {k: max(1, sum(s.kind == k for s in specs)) for k in KINDS}
    return sorted(groups.values(), key=lambda g: (int(g[0].clip_id[1:]) / size[g[0].kind], g[0].clip_id))


def _import_recipes() -> None:
    """Import every module a clip needs before workers fork, so a long build runs one version of the code even if
    the source files change while it runs (forked workers inherit loaded modules instead of re-importing)."""
    import importlib

    for m in ("analyze", "captions", "excerpt", "perf", "qa", "render", "scores", "arrange"):
        try:
            importlib.import_module(f"mu_llama.corpus.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"mu_llama.corpus.{m}":
                raise


def _check_build_json(out: Path, opts: BuildOptions) -> None:
    bj = out / "build.json"
    if bj.exists():
        old = json.loads(bj.read_text())
        if old.get("defining") != opts.defining():
            raise ConfigError(f"{bj}: this folder holds a corpus built with other options ({old.get('defining')}); "
                              "use a new --out or the same --seed/--collections/--styles")
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(bj, lambda p: p.write_text(json.dumps({"defining": opts.defining(), "clips": opts.clips}, indent=1)))


def build_corpus(opts: BuildOptions) -> BuildReport:
    """Render every planned clip not yet finished (in parallel), then assemble manifests and the DatasetDict."""
    import time

    from tqdm import tqdm

    out = Path(opts.out)
    _check_build_json(out, opts)
    _import_recipes()
    specs = plan(opts.clips, opts.seed, opts.collections, opts.styles, opts.arrangement_share)
    specs = [s for s in specs if s.kind in opts.kinds]
    if opts.limit is not None:
        specs = specs[:opts.limit]
    report = BuildReport(planned=len(specs))
    todo = [s for s in specs if not clip_paths(out, s.clip_id)["json"].exists()]
    report.skipped = len(specs) - len(todo)
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="corpus", unit="clip", disable=not opts.progress)
    jobs = [(g, opts) for g in _groups(todo)]
    if opts.workers == 1:
        results: Iterator = map(_worker, jobs)
        pool = None
    else:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(opts.workers, maxtasksperchild=50)
        results = pool.imap_unordered(_worker, jobs)
    try:
        for res in results:
            for status, rec in res:
                if status == "failed":
                    report.failed += 1
                else:
                    report.built += 1
                    report.audio_seconds += rec["duration"]
                bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    report.seconds = round(time.time() - t0, 2)
    if opts.assemble:
        report.per_split = assemble(out, specs)
    return report


def finished_records(out: Path, specs: list[ClipSpec] | None = None) -> list[dict]:
    """All finished, non-failed clip records in OUT (of `specs` when given), sorted by id."""
    if specs is not None:
        paths = [clip_paths(out, s.clip_id)["json"] for s in specs]
    else:
        paths = sorted((out / "clips").glob("*/*.json"))
    recs = [r for r in (_load_record(p) for p in paths if p.exists()) if r and not r.get("failed")]
    return sorted(recs, key=lambda r: r["id"])


def refresh_text(out: Path, recs: list[dict]) -> int:
    """Regenerate every record's captions and QA with the current caption code (facts and audio untouched), so a corpus
    built over several sessions has uniform text. Deterministic: a record's text depends on its facts and seed only.
    Rewrites the per-clip JSON files that change; returns how many."""
    from mu_llama.facts import FactSheet

    d = json.loads((out / "build.json").read_text())["defining"]
    changed = 0
    for r in recs:
        caps, qa = describe(FactSheet.from_dict(r["facts"]), clip_seed(r["id"], d["seed"]), d["captions_per_clip"],
                            d["factual_questions"])
        if caps != r["captions"] or qa != r["qa"]:
            r["captions"], r["qa"] = caps, qa
            _atomic_write(clip_paths(out, r["id"])["json"],
                          lambda p, r=r: p.write_text(json.dumps(r, ensure_ascii=False, indent=1)))
            changed += 1
    return changed


def assemble(out: Path, specs: list[ClipSpec] | None = None) -> dict:
    """Write manifests/<split>.jsonl, the DatasetDict under dataset/, and the licence table, from finished records
    (captions and QA refreshed first, see refresh_text). An exclusive lock on OUT/.assemble.lock serialises two
    builds or assemblies of the same folder (their clips are identical, but their outputs must not interleave)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _assemble_locked(out, specs)


def _assemble_locked(out: Path, specs: list[ClipSpec] | None) -> dict:
    recs = finished_records(out, specs)
    refresh_text(out, recs)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    per_split = {}
    for split in SPLITS:
        rows = [r for r in recs if r["split"] == split]
        per_split[split] = len(rows)
        _atomic_write(out / "manifests" / f"{split}.jsonl",
                      lambda p, rows=rows: p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)))
    write_licences(out, recs)
    save_dataset(out, recs)
    return per_split


def write_licences(out: Path, recs: list[dict]) -> None:
    from collections import Counter

    counts = Counter(r["source"]["collection"] for r in recs)
    table = {c: {**asdict(LICENCES[c]), "clips": counts.get(c, 0)} for c in sorted(LICENCES)}
    _atomic_write(out / "licences.json", lambda p: p.write_text(json.dumps(table, indent=1)))
    lines = ["# Licences of the corpus sources", "",
             "Audio is synthesised here from music21-corpus encodings with the FluidR3_GM soundfont (MIT licence).",
             "Compositions are public domain or traditional; encodings carry the terms below. Clips whose collection",
             "says commercial_use 'no' or 'unclear' should be treated as research / non-commercial data.", "",
             "| collection | clips | commercial use | composition | encoding |", "|---|---|---|---|---|"]
    for c, t in table.items():
        lines.append(f"| {c} | {t['clips']} | {t['commercial_use']} | {t['composition']} | {t['encoding']} |")
    _atomic_write(out / "LICENCES.md", lambda p: p.write_text("\n".join(lines) + "\n"))


def save_dataset(out: Path, recs: list[dict]) -> None:
    """datasets.DatasetDict (train/validation/test) with an Audio(decode=False) column; facts/source as JSON strings.

    save_to_disk embeds each FLAC's bytes in the Arrow files (the saved dataset is self-contained and portable;
    reading it needs no torchcodec: row["audio"] is {"bytes", "path"}); `audio_path` keeps the path inside OUT."""
    import shutil

    import datasets

    feats = datasets.Features({
        "id": datasets.Value("string"), "audio": datasets.Value("string"),
        "audio_path": datasets.Value("string"), "duration": datasets.Value("float32"),
        "split": datasets.Value("string"), "kind": datasets.Value("string"), "work_id": datasets.Value("string"),
        "style": datasets.Value("string"), "captions": datasets.Sequence(datasets.Value("string")),
        "questions": datasets.Sequence(datasets.Value("string")), "answers": datasets.Sequence(datasets.Value("string")),
        "facts": datasets.Value("string"), "source": datasets.Value("string"),
    })
    dd = {}
    for split in SPLITS:
        rows = [r for r in recs if r["split"] == split]
        cols = {k: [] for k in feats}
        for r in rows:
            cols["id"].append(r["id"])
            cols["audio"].append(str((out / r["audio"]).resolve()))
            cols["audio_path"].append(r["audio"])
            cols["duration"].append(r["duration"])
            cols["split"].append(split)
            cols["kind"].append(r["kind"])
            cols["work_id"].append(r["facts"]["work_id"])
            cols["style"].append(r["facts"]["style"])
            cols["captions"].append(r["captions"])
            cols["questions"].append([q["question"] for q in r["qa"]])
            cols["answers"].append([q["answer"] for q in r["qa"]])
            cols["facts"].append(json.dumps(r["facts"], ensure_ascii=False))
            cols["source"].append(json.dumps(r["source"], ensure_ascii=False))
        # a path column cast to Audio(decode=False): no torchcodec needed to build or to read the bytes back
        ds = datasets.Dataset.from_dict(cols, features=feats)
        ds = ds.cast_column("audio", datasets.Audio(sampling_rate=24000, decode=False))
        if len(ds):                      # datasets cannot reload a saved empty split: tiny builds may lack one
            dd[split] = ds
    target = out / "dataset"
    tmp = out / f".dataset.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    datasets.DatasetDict(dd).save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
