"""`mu-llama label` at collection scale: throughput, kill -9 / resume, and the bad-file table.

    python bench/bench_label.py make-data [--clips 200]              # data/label_bench/clips: 10-30 s synthetic music
    python bench/bench_label.py throughput --model tiny --out bench/results/label_tiny.json
           [--model tiny|null|untrained:smollm2|mu-llama-mini|DIR] [--questions default|none] [--max-new-tokens 16]
           [--batch-size 8] [--workers 2] [--threads 1] [--clips N]
    python bench/bench_label.py kill-resume --model tiny [--kills 3]  # SIGKILL the CLI at random times, rerun, count
    python bench/bench_label.py bad-files                            # the crafted bad-file folder -> reasons table

Clips are synthesised (seeded): a few harmonic voices playing random notes over a noise-burst beat, at mixed
sample rates (22.05-48 kHz), mono/stereo, in wav / flac / ogg / mp3, so decoding and resampling cost is real.
"tiny" is a tiny random LLaMA + tiny random encoder saved as a checkpoint (plumbing speed, not model speed);
"null" answers instantly (the pipeline's decode ceiling). Figures: clips/s, audio-hours per hour and the share of
wall time the model thread waited for decoded audio. CPU timings on shared cores are noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "label_bench"
CLIPS = DATA / "clips"
FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III"))
RATES = (44100, 48000, 22050, 32000)


def make_clip(rng: np.random.Generator, seconds: float, sr: int, channels: int) -> np.ndarray:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    bpm = rng.uniform(60, 160)
    beat = 60 / bpm
    for voice in range(rng.integers(2, 5)):
        note_len = beat * rng.choice([0.5, 1, 2])
        base = 48 + 12 * voice
        for start in np.arange(0, seconds, note_len):
            a, b = int(start * sr), min(n, int((start + note_len) * sr))
            f = 440 * 2 ** ((base + rng.integers(0, 12) - 69) / 12)
            env = np.exp(-3 * (t[a:b] - start) / note_len)
            out[a:b] += (0.3 / (voice + 1)) * env * sum(np.sin(2 * np.pi * f * k * t[a:b]) / k for k in (1, 2, 3))
    for start in np.arange(0, seconds, beat):  # percussion: decaying noise bursts
        a = int(start * sr)
        b = min(n, a + int(0.08 * sr))
        out[a:b] += 0.2 * rng.standard_normal(b - a) * np.exp(-np.arange(b - a) / (0.02 * sr))
    out /= max(1e-6, np.abs(out).max()) / 0.8
    if channels == 2:
        out = np.stack([out, np.roll(out, int(0.01 * sr))], axis=1)
    return out.astype(np.float32)


def make_data(n: int) -> Path:
    import soundfile as sf

    CLIPS.mkdir(parents=True, exist_ok=True)
    have = sorted(CLIPS.glob("clip*"))
    if len(have) >= n:
        return CLIPS
    rng = np.random.default_rng(2026)
    total = 0.0
    for i in range(n):
        seconds, sr, ch = float(rng.uniform(10, 30)), int(rng.choice(RATES)), int(rng.integers(1, 3))
        ext, subtype = FORMATS[i % len(FORMATS)]
        x = make_clip(rng, seconds, sr, ch)
        path = CLIPS / f"clip{i:04d}.{ext}"
        if not path.exists():
            sf.write(path, x, sr, subtype=subtype)
        total += seconds
    print(f"{n} clips, {total / 3600:.2f} h of audio in {CLIPS}")
    return CLIPS


def tiny_checkpoint() -> Path:
    import torch

    from mu_llama.model import MuLlama, MuLlamaConfig

    path = DATA / "models" / "tiny-mu-llama"
    if not (path / "config.json").is_file():
        model = MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama", injection_layers=2))
        with torch.no_grad():
            model.injection.gates.fill_(1.0)
        model.save_pretrained(path)
    return path


class NullLabeler:
    """Answers instantly: what the pipeline alone sustains (decode, hash, write)."""

    def __init__(self, sample_rate: int = 24000):
        from mu_llama.label import LabelerInfo

        self.info = LabelerInfo("null", "0", sample_rate, {}, {})

    def __call__(self, clips):
        return [{"caption": f"{len(c.audio)} samples", "answers": {}} for c in clips]


def _questions(kind: str) -> dict | None:
    from mu_llama.label import DEFAULT_QUESTIONS

    return {"default": DEFAULT_QUESTIONS, "none": {}}[kind]


def throughput(args) -> dict:
    import torch

    from mu_llama.label import LabelOptions, MuLlamaLabeler, label_collection

    torch.set_num_threads(args.threads)
    src = make_data(args.clips)
    if args.model == "null":
        labeler, model_name = NullLabeler(), "null"
    else:
        model = str(tiny_checkpoint()) if args.model == "tiny" else args.model
        t = time.perf_counter()
        labeler = MuLlamaLabeler(model, questions=_questions(args.questions),
                                 decoding={"max_new_tokens": args.max_new_tokens}, device=args.device)
        print(f"model loaded in {time.perf_counter() - t:.1f} s")
        model_name = args.model
    out = ROOT / "runs" / "label_bench" / f"{model_name.replace(':', '_').replace('/', '_')}_{args.questions}.jsonl"
    sources = sorted(src.glob("clip*"))[: args.clips]
    listing = out.with_suffix(".list.txt")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{p}\n" for p in sources))
    opts = LabelOptions(batch_size=args.batch_size, workers=args.workers, restart=True, progress=not args.quiet)
    import shutil

    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    s = label_collection(listing, out, labeler, opts, cache=None)
    print(s.render())
    result = {"model": model_name, "questions": args.questions, "max_new_tokens": args.max_new_tokens,
              "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads,
              "clips": s.processed, "audio_hours": s.audio_s / 3600, "elapsed_s": s.elapsed_s,
              "clips_per_s": s.clips_per_s, "audio_hours_per_hour": s.audio_hours_per_hour,
              "decode_wait_s": s.decode_wait_s, "decode_wait_share": s.decode_wait_share, "model_s": s.model_s,
              "model_share": s.model_s / s.elapsed_s if s.elapsed_s else 0, "decode_work_s": s.decode_work_s,
              "heard_hours": s.heard_s / 3600, "errors": s.errors,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
              "device": args.device or "auto"}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _committed(work: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (work / "shards").glob("part-*.jsonl"))


def kill_resume(args) -> dict:
    """Run the CLI, SIGKILL it at random times, rerun to completion; compare with one uninterrupted run."""
    src = make_data(args.clips)
    model = str(tiny_checkpoint()) if args.model == "tiny" else args.model
    listing = ROOT / "runs" / "label_bench" / "kill.list.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{p}\n" for p in sorted(src.glob("clip*"))[: args.clips]))
    base = [sys.executable, "-m", "mu_llama.cli.label", str(listing), "--model", model, "--no-cache", "--no-progress",
            "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size), "--commit-every", "6",
            "--workers", str(args.workers), "--device", "cpu"]
    if args.questions == "none":
        base.append("--no-default-questions")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    ref, out = listing.with_name("kill_ref.jsonl"), listing.with_name("kill_out.jsonl")
    for p in (ref, out):
        import shutil

        shutil.rmtree(p.with_name(p.name + ".work"), ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(base + ["--out", str(ref)], env=env, check=True, capture_output=True)
    ref_s = time.perf_counter() - t
    rng = random.Random(7)
    log = []
    work = out.with_name(out.name + ".work")
    for k in range(args.kills):
        # kill once the job is past a target share of the clips, at a random moment inside a commit cycle
        target = int(args.clips * (k + 1) / (args.kills + 1))
        proc = subprocess.Popen(base + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while proc.poll() is None and (not work.exists() or _committed(work) < target):
            time.sleep(0.05)
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.append({"run": k + 1, "killed_at_s": round(time.perf_counter() - t0, 2), "killed": killed,
                    "committed_records": _committed(work)})
        print(log[-1])
    final = subprocess.run(base + ["--out", str(out)], env=env, capture_output=True, text=True)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "labeled_at"}
                       for line in p.read_text().splitlines()]
    rows, ref_rows = strip(out), strip(ref)
    keys = [r["source"] for r in rows]
    result = {"clips": args.clips, "uninterrupted_s": ref_s, "kills": log, "final_rc": final.returncode,
              "final_summary": final.stdout.strip(), "rows": len(rows), "unique_sources": len(set(keys)),
              "identical_to_uninterrupted": rows == ref_rows}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def bad_files(args) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_label import make_bad, make_good
    from test_label_fakes import FakeLabeler

    from mu_llama.label import LabelOptions, label_collection

    folder = ROOT / "runs" / "label_bench" / "bad"
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    make_bad(folder / "mixed")
    make_good(folder / "mixed" / "good", 3)
    s = label_collection(folder / "mixed", folder / "out.jsonl", FakeLabeler(), LabelOptions(max_duration=5.0,
                                                                                            progress=False), cache=None)
    errors = [json.loads(line) for line in (folder / "out.errors.jsonl").read_text().splitlines()]
    print("| file | reason | detail |\n|---|---|---|")
    for e in errors:
        print(f"| {Path(e['path']).name} | {e['reason']} | {e['detail']} |")
    rows = [json.loads(line)["source"] for line in (folder / "out.jsonl").read_text().splitlines()]
    print(f"\nlabelled: {', '.join(Path(r).name for r in rows)}\n{s.render()}")
    return errors


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("make-data", "throughput", "kill-resume", "bad-files"))
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--model", default="tiny")
    p.add_argument("--questions", default="default", choices=("default", "none"))
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    return {"make-data": lambda a: make_data(a.clips), "throughput": throughput, "kill-resume": kill_resume,
            "bad-files": bad_files}[args.command](args)


if __name__ == "__main__":
    main()
