"""mu-llama benchmark suite (GitHub issue 9): every stage timed separately and end to end, against a MU-LLaMA-style
reference pipeline measured side by side in the same run. Never part of pass/fail tests.

    OMP_NUM_THREADS=1 python bench/suite.py                      # CPU, default model, writes bench/results/suite_cpu.*
    python bench/suite.py --device cuda                          # GPU: MERT-330M + LLaMA-2-7B shapes, random weights
    python bench/suite.py --smoke --out /tmp/suite               # seconds: tiny random models, every code path

Stages: decode + resample (audio s per s); encoder real-time factor (random MERT-95M / -330M shapes); LLM prefill and
decode tokens/s; captioning throughput (clips/s) per quantization mode (none, bnb 8bit, bnb 4bit NF4, torch int8
dynamic on CPU) at batch sizes 1/4/16 (+64 on GPU); peak memory per configuration in a child process (RSS; on CUDA
also torch.cuda.max_memory_allocated); a profile of one caption batch (stage breakdown + torch.profiler ops);
quality kept per mode (--quality N: mu_llama.eval fact accuracy + caption metrics of the default model
"mu-llama-mini" on N evenly spaced clips of the corpus test split, every mode vs unquantized; "pending" when the
model or the corpus is missing).

Reference (MU-LLaMA's way): same weights, batch size 1, fp32 on CPU / fp16 LLM + fp32 encoder on GPU, no
quantization, whole-model sequential (decode, encode, generate per clip; no prefetch, no bucketing). Every
throughput figure is reported as a ratio to it. Configurations are timed round-robin (--runs rounds, medians) so
machine-load drift hits all alike; CPU runs use --threads torch threads (default 1). Generation is fixed-length
(min_new_tokens = max_new_tokens) so every configuration does identical work.
Ours: the library's own pipeline (mu_llama.tasks.caption over all paths): batched, with decode worker threads
prefetching audio up to two batches ahead while the model runs. "decode wait" is the model thread's time in
mu_llama.tasks._load_batch (the first batch's fill included); the workers' own decode time is overlapped work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # sibling modules (suite_models, suite_stages, bench_label) when run from anywhere

KEYS = ("meta", "audio", "encoder", "captioning", "llm", "memory", "profile", "quality", "targets")
CPU_MODES, CUDA_MODES = ("none", "8bit", "4bit", "int8-dynamic"), ("none", "8bit", "4bit")
QUALITY_MODEL = "mu-llama-mini"


# --- helpers ------------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process image's high-water RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent across
    fork + exec, so a child would report the suite's own peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _trim() -> None:
    from bench_llm import _trim as trim  # one copy of the malloc_trim helper

    trim()


def _setup(args):
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # 8-bit on CPU logs a cast warning on every matmul
    return torch


def _decoding(args):
    from mu_llama.decoding import DecodingOptions

    return DecodingOptions(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)


def _cuda(args) -> bool:
    return args.device.startswith("cuda")


def _sync(args):
    if _cuda(args):
        import torch
        torch.cuda.synchronize()


# --- captioning runners -------------------------------------------------------------------------------------
def run_ours(model, paths, batch_size: int, options) -> list[str]:
    """What a user gets: mu_llama.tasks.caption over every path (batched; decode workers prefetch audio up to two
    batches ahead). The StageTimer times the model thread's waits in tasks._load_batch as stage "audio"."""
    from mu_llama.tasks import caption

    return caption(model, list(paths), options, batch_size=batch_size)


def run_reference(model, paths, options) -> list[str]:
    """MU-LLaMA's way: one clip at a time, decode -> encode -> generate, nothing overlapped."""
    from mu_llama.tasks import caption

    return [caption(model, [p], options, batch_size=1)[0] for p in paths]


def timed_run(args, model, paths, batch_size: int | None, sync_stages: bool) -> dict:
    """One pass over all clips (batch_size None = the reference runner) -> wall time + stage breakdown."""
    from suite_stages import StageTimer

    timer = StageTimer(sync=sync_stages)
    options = _decoding(args)
    with timer.instrument(model):
        _sync(args)
        t0 = time.perf_counter()
        if batch_size is None:
            run_reference(model, paths, options)
        else:
            run_ours(model, paths, batch_size, options)
        _sync(args)
        wall = time.perf_counter() - t0
    return timer.breakdown(wall)


def _median(xs):
    return statistics.median(xs) if xs else None


def captioning_stage(args, models: dict, paths) -> tuple[dict, dict]:
    """Round-robin timing of the reference and every (mode, batch size); returns (captioning, llm) sections."""
    configs = [("reference", None)] + [(m, b) for m in models if m != "reference" for b in args.batch_sizes]
    for name, b in configs:  # warm-up (allocator, kernels, lazy init), 2 clips
        timed_run(args, models[name], paths[:2], None if b is None else min(b, 2), False)
    records: dict[tuple, list[dict]] = {c: [] for c in configs}
    for r in range(args.runs):
        for name, b in configs:
            records[(name, b)].append(timed_run(args, models[name], paths, b, False))
            print(f"round {r + 1}/{args.runs} {name} bs={b or 1}: {records[(name, b)][-1]['wall_s']:.2f} s",
                  file=sys.stderr)
    # On CUDA the hook timings above are launch times: measure the LLM split again with synchronisation.
    llm_records = records
    if _cuda(args):
        llm_configs = [("reference", None)] + [(m, b) for m in models if m != "reference"
                                                for b in sorted({1, max(args.batch_sizes)})]
        llm_records = {c: [timed_run(args, models[c[0]], paths, c[1], True) for _ in range(args.runs)]
                       for c in llm_configs}
    n = len(paths)
    ref_cps = _median([n / x["wall_s"] for x in records[("reference", None)]])

    def summary(recs):
        cps = _median([n / x["wall_s"] for x in recs])
        return {"clips_per_s": round(cps, 4), "ratio_to_reference": round(cps / ref_cps, 3),
                "decode_wait_share": round(_median([x["share"]["audio"] for x in recs]), 4),
                "decode_wait_after_first_batch_share": round(_median(
                    [x["audio_after_first_batch_s"] / x["wall_s"] for x in recs]), 4),
                "runs_clips_per_s": [round(n / x["wall_s"], 4) for x in recs]}

    captioning = {"clips": n, "new_tokens_per_clip": args.new_tokens, "clip_seconds": args.seconds,
                  "reference": summary(records[("reference", None)]), "modes": {}}
    for (name, b), recs in records.items():
        if name != "reference":
            captioning["modes"].setdefault(name, {})[str(b)] = summary(recs)
    llm = {}
    for (name, b), recs in llm_records.items():
        key = "reference" if name == "reference" else f"{name}@bs{b}"
        llm[key] = {f"{k}_tokens_per_s": round(_median([x.get(f"{k}_tokens_per_s", 0) for x in recs]), 2)
                    for k in ("prefill", "decode")}
    ref = llm["reference"]
    for v in llm.values():
        for k in ("prefill", "decode"):
            base = ref[f"{k}_tokens_per_s"]
            v[f"{k}_ratio_to_reference"] = round(v[f"{k}_tokens_per_s"] / base, 3) if base else None
    return captioning, llm


# --- memory (one child process per configuration) ---------------------------------------------------------
def memory_child(args) -> dict:
    torch = _setup(args)
    from suite_models import build_model, weights_mb

    role, mode, bs = args.memory_child.split(":")
    paths = [Path(p) for p in json.loads(args.paths_json)][:int(bs)]
    _trim()
    base = _rss_mb()
    if _cuda(args):
        torch.cuda.reset_peak_memory_stats()
    model = build_model(args.model, role=role, quantize=mode, device=args.device)
    if role == "reference":
        run_reference(model, paths, _decoding(args))
    else:
        run_ours(model, paths, int(bs), _decoding(args))
    _trim()
    out = {"role": role, "mode": mode, "batch_size": int(bs), "weights_mb": round(weights_mb(model), 1),
           "rss_after_imports_mb": round(base, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
           "steady_rss_mb": round(_rss_mb(), 1),
           "components_mb": {"encoder": round(weights_mb(model.encoder), 1),
                             "adapter": round(weights_mb(model.music_adapter) + weights_mb(model.injection), 1),
                             "llm": round(weights_mb(model.llm), 1)}}
    if _cuda(args):
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def memory_stage(args, modes, paths) -> dict:
    configs = [("reference", "none", 1)] + [("ours", m, b) for m in modes for b in args.memory_batch_sizes]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    method = "child process per configuration: peak RSS (VmHWM, includes loading)"
    result: dict = {"method": method + ("; torch.cuda.max_memory_allocated" if _cuda(args) else "")}
    for role, mode, bs in configs:
        cmd = [sys.executable, __file__, "--memory-child", f"{role}:{mode}:{bs}", "--paths-json",
               json.dumps([str(p) for p in paths]), *_child_args(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        key = "reference" if role == "reference" else f"{mode}@bs{bs}"
        if proc.returncode == 0:
            result[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            result[key] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
        print(f"memory {key}: {result[key]}", file=sys.stderr)
    return result


def _child_args(args) -> list[str]:
    return ["--model", args.model, "--device", args.device, "--threads", str(args.threads),
            "--new-tokens", str(args.new_tokens)]


# --- profile of one caption batch ---------------------------------------------------------------------------
def profile_stage(args, model, paths, mode: str, out_dir: Path, stem: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    bs = min(max(args.batch_sizes), len(paths))
    batch = paths[:bs]
    breakdown = timed_run(args, model, batch, bs, sync_stages=True)  # stage split (synchronised)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if _cuda(args) else [])
    with profile(activities=activities) as prof:
        timed_run(args, model, batch, bs, sync_stages=False)
    sort = "cuda_time_total" if _cuda(args) else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    ops = out_dir / f"{stem}_profile.txt"
    ops.write_text(f"torch.profiler, one caption batch: mode {mode}, batch size {bs}, "
                   f"{args.new_tokens} new tokens, {args.seconds:g}-s clips, torch {torch.__version__}\n\n{table}\n")
    return {"mode": mode, "batch_size": bs, **breakdown, "ops_table": ops.name}


# --- quality per quantization mode --------------------------------------------------------------------------
def _quality_model_installed() -> bool:
    from mu_llama.llm import cache_dir
    from mu_llama.model import CONFIG_FILE, MODELS, models_dir

    ck = MODELS[QUALITY_MODEL].checkpoint
    return any((root / ck / CONFIG_FILE).is_file() for root in (models_dir(), cache_dir() / "models"))


def _corpus_root(manifest: Path) -> Path:
    """Rows' "audio" paths are relative to the corpus folder (the parent of manifests/)."""
    return manifest.parent.parent if manifest.parent.name == "manifests" else manifest.parent


def quality_clips(corpus: Path, n: int) -> list[tuple[str, Path]]:
    """(id, audio path) of n evenly spaced rows (in id order) of the corpus test split: a fixed subset that does
    not depend on the manifest's row order."""
    from mu_llama.eval.data import manifest_files

    rows = []
    for manifest, default in manifest_files(corpus):
        for line in manifest.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            audio = row.get("audio") or row.get("path")
            if row.get("split", default) == "test" and audio:
                rows.append((str(row["id"]), _corpus_root(manifest) / audio))
    rows.sort()
    n = min(n, len(rows))
    return [rows[(i * len(rows)) // n] for i in range(n)] if n else []


def _quality_summary(report) -> dict:
    """Caption metrics + fact accuracy (missing facts count as wrong) of one eval report."""
    d = json.loads(json.dumps(report.to_dict(), default=str))
    facts = d["facts"].get("caption", {})
    overall, family = facts.get("overall", {}), facts.get("family_set", {})
    return {"caption": d["scores"].get("caption", {}), "fact_accuracy": overall.get("accuracy"),
            "fact_accuracy_when_stated": overall.get("accuracy_when_stated"), "fact_stated_rate":
            overall.get("stated_rate"), "family_f1": family.get("f1"),
            "per_fact_accuracy": {k: v["accuracy"] for k, v in facts.get("facts", {}).items()}}


def quality_stage(args, modes) -> dict:
    """mu-llama-mini under every quantization mode on the same fixed test clips (greedy), scored by mu_llama.eval;
    each figure also as a difference to the unquantized model, plus how many captions came out identical."""
    base = {"model": QUALITY_MODEL, "modes": list(modes)}
    if args.quality < 1:
        return {"status": "off", "reason": "--quality 0", **base}
    if not _quality_model_installed():
        return {"status": "pending", "reason": f"{QUALITY_MODEL!r} is not installed yet", **base}
    if not args.quality_corpus.exists():
        return {"status": "pending", "reason": f"corpus {args.quality_corpus} not found (mu-llama corpus build)",
                **base}
    from suite_models import build_model

    from mu_llama.decoding import DecodingOptions
    from mu_llama.eval import Prediction, evaluate, load_references
    from mu_llama.eval.embedding import get_encoder
    from mu_llama.tasks import caption

    clips = quality_clips(args.quality_corpus, args.quality)
    ids = {i for i, _ in clips}
    refs = [r for r in load_references(args.quality_corpus, split="test") if r.id in ids]
    options = DecodingOptions(max_new_tokens=args.quality_tokens)  # greedy: identical work for every mode
    encoder = get_encoder()  # MiniLM for the embedding metric, loaded once
    bs = min(16, len(clips))
    result: dict = {"status": "done", **base, "clips": len(clips), "ids": [i for i, _ in clips],
                    "corpus": str(args.quality_corpus), "max_new_tokens": args.quality_tokens, "batch_size": bs,
                    "results": {}, "errors": {}}
    captions: dict[str, list[str]] = {}
    for mode in ["none", *[m for m in modes if m != "none"]]:  # unquantized first: the baseline
        try:
            model = build_model(QUALITY_MODEL, role="ours", quantize=mode, device=args.device)
        except Exception as e:  # noqa: BLE001  e.g. no bitsandbytes backend for this device: report, keep going
            result["errors"][mode] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        t0 = time.perf_counter()
        captions[mode] = caption(model, [p for _, p in clips], options, batch_size=bs)
        seconds = time.perf_counter() - t0
        del model
        _trim()
        report = evaluate([Prediction(i, c) for (i, _), c in zip(clips, captions[mode], strict=True)], refs,
                          encoder=encoder, name=mode)
        result["results"][mode] = {**_quality_summary(report), "caption_seconds": round(seconds, 2)}
        print(f"quality {mode}: fact accuracy {result['results'][mode]['fact_accuracy']}", file=sys.stderr)
    ref = result["results"].get("none")
    for mode, r in result["results"].items():
        if ref is None or mode == "none":
            continue
        r["delta_vs_none"] = {k: _diff(r["caption"].get(k), v) for k, v in ref["caption"].items()}
        r["delta_vs_none"]["fact_accuracy"] = _diff(r["fact_accuracy"], ref["fact_accuracy"])
        r["identical_captions_vs_none"] = sum(a == b for a, b in zip(captions[mode], captions["none"]))
    result["captions"] = {m: {i: c for (i, _), c in zip(clips, v)} for m, v in captions.items()}
    return result


def _diff(a, b):
    return None if a is None or b is None else round(a - b, 4)


# --- report --------------------------------------------------------------------------------------------------
def targets(args, res: dict) -> dict:
    cap, primary = res["captioning"], args.primary
    modes = cap["modes"].get(primary, {})
    best_bs = max(modes, key=lambda b: modes[b]["clips_per_s"]) if modes else None
    waits = [v["decode_wait_share"] for m in cap["modes"].values() for v in m.values()]
    out = {"primary_mode": primary, "best_batch_size": best_bs,
           "throughput_ratio_to_reference": modes[best_bs]["ratio_to_reference"] if best_bs else None,
           "max_decode_wait_share": max(waits) if waits else None}
    out["decode_wait_ok"] = out["max_decode_wait_share"] is not None and out["max_decode_wait_share"] < 0.10
    need = 10.0 if _cuda(args) else 3.0
    out["throughput_target"] = need
    out["throughput_ok"] = bool(best_bs) and out["throughput_ratio_to_reference"] >= need
    if _cuda(args):
        mem = res["memory"].get(f"{primary}@bs1", {})
        out["memory_bs1_mb"] = mem.get("cuda_max_allocated_mb")
        out["memory_target_mb"] = 8192
        out["memory_ok"] = out["memory_bs1_mb"] is not None and out["memory_bs1_mb"] <= 8192
    return out


def markdown(res: dict) -> str:
    m = res["meta"]
    L = [f"# Benchmark suite ({m['device']})", "", (f"{m['machine']}; torch {m['torch']}; {m['threads']} torch "
         f"thread(s); {m['date']}; model `{m['model']}`; {m['runs']} round-robin runs, medians."), "",
         f"Reproduce: `{m['command']}`", ""]
    if m.get("note"):
        L += [f"**{m['note']}**", ""]
    cap = res["captioning"]
    L += [(f"## Captioning ({cap['clips']} clips of {cap['clip_seconds']:g} s, {cap['new_tokens_per_clip']} new "
          "tokens each)"), "",
          ("| configuration | batch | clips/s | x reference | decode wait | wait after 1st batch | prefill tok/s | "
           "decode tok/s | peak mem MB |"),
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mem_key = "cuda_max_allocated_mb" if m["device"].startswith("cuda") else "peak_rss_mb"

    def row(label, b, s, llm, mem):
        f = lambda v: "" if v is None else v
        L.append(f"| {label} | {b} | {s['clips_per_s']} | {s['ratio_to_reference']} | "
                 f"{100 * s['decode_wait_share']:.1f}% | {100 * s['decode_wait_after_first_batch_share']:.1f}% | "
                 f"{f((llm or {}).get('prefill_tokens_per_s'))} | "
                 f"{f((llm or {}).get('decode_tokens_per_s'))} | {f((mem or {}).get(mem_key, (mem or {}).get('error')))} |")

    row("reference (MU-LLaMA style)", 1, cap["reference"], res["llm"].get("reference"), res["memory"].get("reference"))
    for mode, per_bs in cap["modes"].items():
        for b, s in per_bs.items():
            key = f"{mode}@bs{b}"
            row(f"ours {mode}", b, s, res["llm"].get(key), res["memory"].get(key))
    errors = {k: v for k, v in res.get("errors", {}).items()}
    if errors:
        L += ["", "Modes that could not run: " + "; ".join(f"{k}: {v}" for k, v in errors.items())]
    a = res["audio"]
    L += ["", "## Stages", "",
          (f"Decode + resample: {a['ours_audio_s_per_s']} audio-s/s ({a['files']} files, {', '.join(a['formats'])}); "
          f"reference ({a['reference']}) {a['reference_audio_s_per_s']} audio-s/s; ratio {a['ratio_to_reference']}."),
          "", "| encoder (random weights) | clip s | ours dtype | ours RTF | reference RTF (fp32 eager) | speed-up |",
          "|---|---:|---|---:|---:|---:|"]
    for name, e in res["encoder"].items():
        L.append(f"| {name} | {e['clip_seconds']:g} | {e['ours_dtype']} | {e['ours_rtf']} | {e['reference_rtf']} | "
                 f"{e['speedup_vs_reference']} |")
    p = res["profile"]
    L += ["", (f"## Where the time goes (one caption batch: {p['mode']}, batch size {p['batch_size']}, "
          f"{p['wall_s']:.2f} s; ops table in {p['ops_table']})"), "", "| stage | seconds | share |", "|---|---:|---:|"]
    for k, v in p["seconds"].items():
        L.append(f"| {k} | {v:.3f} | {100 * p['share'][k]:.1f}% |")
    L += ["", f"What we changed because of it: {CHANGES}"]
    t = res["targets"]
    L += ["", "## Targets", "", (f"- throughput ({t['primary_mode']}, best batch {t['best_batch_size']}) "
          f"{t['throughput_ratio_to_reference']}x reference (target >= {t['throughput_target']}x): "
          f"{'met' if t['throughput_ok'] else 'NOT met'}"),
          (f"- max share of wall time waiting on audio decode {t['max_decode_wait_share']} (target < 0.10): "
          f"{'met' if t['decode_wait_ok'] else 'NOT met'}")]
    if "memory_ok" in t:
        L.append(f"- GPU memory at batch 1 {t['memory_bs1_mb']} MB (target <= 8192): "
                 f"{'met' if t['memory_ok'] else 'NOT met'}")
    L += quality_markdown(res["quality"])
    return "\n".join(L) + "\n"


CHANGES = ("Decode wait was measured wrong and the pipeline under-overlapped: the old runner's prefetch thread called "
           "the timer-wrapped load_input, so its background decode time (stretched by CPU contention) was booked as "
           "the model thread's wait (up to 20% at batch 1), and it prefetched one batch on one thread. Now "
           "mu_llama.tasks.ask itself decodes on 2 worker threads up to 2 batches ahead (soundfile/soxr release the "
           "GIL; the first batch is decoded in parallel), the suite runs that library pipeline, and only the model "
           "thread's wait in tasks._load_batch counts, first-batch fill included.")


def quality_markdown(q: dict) -> list[str]:
    head = f"## Quality per quantization mode ({q['model']})"
    if q["status"] != "done":
        return ["", f"{head}: {q['status']} ({q['reason']})", ""]
    L = ["", head, "", (f"{q['clips']} evenly spaced clips of the {q['corpus']} test split, greedy, at most "
         f"{q['max_new_tokens']} new tokens, batch {q['batch_size']}; mu_llama.eval standard metrics; "
         "fact accuracy counts unstated facts as wrong; (+/-x) = difference to unquantized."), ""]
    metrics = [k for k in ("bleu_4", "meteor", "rouge_l", "cider_d", "bertscore_f", "sentence_cosine")
               if any(k in r["caption"] for r in q["results"].values())]
    L += ["| mode | fact accuracy | family F1 | " + " | ".join(metrics) + " | identical captions | caption s |",
          "|---|" + "---:|" * (len(metrics) + 4)]

    def cell(r, key, value):
        d = r.get("delta_vs_none", {}).get(key)
        v = "" if value is None else f"{value:.3f}"
        return v + (f" ({d:+.3f})" if d is not None else "")

    for mode, r in q["results"].items():
        same = "baseline" if mode == "none" else f"{r.get('identical_captions_vs_none')}/{q['clips']}"
        L.append(f"| {mode} | {cell(r, 'fact_accuracy', r['fact_accuracy'])} | "
                 f"{'' if r['family_f1'] is None else format(r['family_f1'], '.3f')} | "
                 + " | ".join(cell(r, k, r["caption"].get(k)) for k in metrics)
                 + f" | {same} | {r['caption_seconds']} |")
    if q.get("errors"):
        L += ["", "Modes that could not run: " + "; ".join(f"{k}: {v}" for k, v in q["errors"].items())]
    return L


# --- main ------------------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--model", default=None,
                   help=f"default: {QUALITY_MODEL} on CPU (untrained:smollm2 until it is installed), random:7b on "
                        "CUDA (MERT-330M + LLaMA-2-7B shapes), random:tiny with --smoke")
    p.add_argument("--modes", default=None, help="comma list of quantization modes (default: all for the device)")
    p.add_argument("--primary", default=None, help="mode the targets are checked on (default: none CPU, 4bit CUDA)")
    p.add_argument("--batch-sizes", default=None, help="comma list (default 1,4,16; 1,4,16,64 on CUDA)")
    p.add_argument("--memory-batch-sizes", default=None, help="batch sizes measured in memory children (default 1)")
    p.add_argument("--clips", type=int, default=None, help="clips captioned per run (default: the largest batch)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default 10; 30 on CUDA; 2 smoke)")
    p.add_argument("--encoder-seconds", type=float, default=None, help="clip length for the encoder stage")
    p.add_argument("--encoders", default=None, help="comma list of MERT shapes (default mert-95m,mert-330m)")
    p.add_argument("--new-tokens", type=int, default=None, help="fixed generated length (default 16; 4 smoke)")
    p.add_argument("--runs", type=int, default=None, help="round-robin rounds (default 3; 1 smoke)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quality", type=int, default=None, metavar="N",
                   help=f"quality stage: {QUALITY_MODEL} on N evenly spaced test clips per mode (default 32; 0 = "
                        "off, the default with --smoke)")
    p.add_argument("--quality-corpus", type=Path, default=ROOT / "data" / "corpus",
                   help="corpus folder or manifest for the quality stage (default data/corpus)")
    p.add_argument("--quality-tokens", type=int, default=96, help="max new tokens per quality caption (greedy)")
    p.add_argument("--smoke", action="store_true", help="tiny random models, 1 run: checks every code path fast")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--paths-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = _cuda(args)
    ints = lambda s: [int(x) for x in s.split(",")]
    s = args.smoke
    args.model = args.model or ("random:tiny" if s else "random:7b" if cuda else
                                 QUALITY_MODEL if _quality_model_installed() else "untrained:smollm2")
    args.quality = (0 if s else 32) if args.quality is None else args.quality
    args.modes = args.modes.split(",") if args.modes else list(CUDA_MODES if cuda else CPU_MODES)
    args.primary = args.primary or ("4bit" if cuda else "none")
    args.batch_sizes = ints(args.batch_sizes) if args.batch_sizes else ([1, 4] if s else [1, 4, 16, 64] if cuda
                                                                           else [1, 4, 16])
    args.memory_batch_sizes = ints(args.memory_batch_sizes) if args.memory_batch_sizes else [1]
    args.clips = args.clips or max(args.batch_sizes)
    args.seconds = args.seconds or (2.0 if s else 30.0 if cuda else 10.0)
    args.encoder_seconds = args.encoder_seconds or (1.0 if s else args.seconds)
    args.encoders = args.encoders.split(",") if args.encoders else (["tiny"] if s else ["mert-95m", "mert-330m"])
    args.new_tokens = args.new_tokens or (4 if s else 16)
    args.runs = args.runs or (1 if s else 3)
    if args.primary not in args.modes:
        p.error(f"--primary {args.primary} is not among --modes {','.join(args.modes)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return 0
    torch = _setup(args)
    from suite_models import build_model
    from suite_stages import audio_stage, encoder_stage, make_clips

    if _cuda(args) and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    args.out.mkdir(parents=True, exist_ok=True)
    from mu_llama.llm import cache_dir

    clip_dir = cache_dir() / "bench" / "clips"
    paths = make_clips(clip_dir, args.clips, args.seconds)
    stem = "suite_" + ("smoke" if args.smoke else "cuda" if _cuda(args) else "cpu")
    res: dict = {"meta": {
        "device": args.device if not _cuda(args) else f"cuda ({torch.cuda.get_device_name()})",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": args.model, "runs": args.runs, "modes": args.modes, "batch_sizes": args.batch_sizes,
        "smoke": args.smoke, "command": "OMP_NUM_THREADS=1 python bench/suite.py " + " ".join(argv)}}
    if args.model == "untrained:smollm2":
        res["meta"]["note"] = ("untrained:smollm2 stands in for the default model mu-llama-mini until it exists: "
                               "tiny random encoder + SmolLM2-135M-Instruct + fresh adapter")
    print("stage: memory", file=sys.stderr)
    res["memory"] = memory_stage(args, args.modes, paths)
    print("stage: audio", file=sys.stderr)
    res["audio"] = audio_stage(paths, args.runs)
    print("stage: encoder", file=sys.stderr)
    res["encoder"] = encoder_stage(args.encoders, args.encoder_seconds, args.runs, args.device)
    print("stage: captioning", file=sys.stderr)
    models, errors = {"reference": build_model(args.model, role="reference", quantize="none", device=args.device)}, {}
    for mode in args.modes:
        try:
            models[mode] = build_model(args.model, role="ours", quantize=mode, device=args.device)
        except Exception as e:  # noqa: BLE001  e.g. bitsandbytes without a backend for this device: report, keep going
            errors[mode] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"mode {mode} unavailable: {errors[mode]}", file=sys.stderr)
    res["errors"] = errors
    res["captioning"], res["llm"] = captioning_stage(args, models, paths)
    primary = args.primary if args.primary in models else next(m for m in models if m != "reference")
    res["profile"] = profile_stage(args, models[primary], paths, primary, args.out, stem)
    del models
    print("stage: quality", file=sys.stderr)
    res["quality"] = quality_stage(args, args.modes)
    res["targets"] = targets(args, res)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
