"""Default-model captioning on this CPU: latency and peak memory for one 10-s clip, and throughput over N clips.

    python bench/bench_caption.py [--model mu-llama-mini] [--clips 100] [--batch-size 8] [--threads 1]
                                  [--quantize none|int8|8bit|4bit] [--out bench/results/caption_mini_cpu.json]

- Latency: a fresh subprocess loads the model (timed), captions one 10-s bundled example (first call, "cold"), then
  the same clip 3 more times (median, "warm"); its peak RSS (ru_maxrss) is the memory a user needs.
- Throughput: the first N clips (sorted ids) of the corpus test split (data/corpus, never seen in training), or a
  folder/glob given with --source, captioned with `mu_llama.caption` in batches (greedy); clips/s, audio-s/s and
  generated tokens/s. Audio decoding is part of the timed work here (one process, no prefetch): this is what
  `mu-llama caption` does; `mu-llama label` overlaps decoding with the model (see bench_label.py).
Timings on 2 shared cores are noisy: run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = "mu_llama/assets/examples"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup(threads: int):
    import warnings

    import torch
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    return torch


def _load(model: str, quantize: str):
    from mu_llama.cli.caption import (
        QUANTIZE_FLAGS,  # the CLI's flag names -> LLMOptions.quantize
    )
    from mu_llama.llm import LLMOptions
    from mu_llama.model import load_model
    return load_model(model, LLMOptions(quantize=QUANTIZE_FLAGS[quantize]))


def ten_second_clip() -> str:
    """The bundled example closest to 10 s."""
    from mu_llama.audio import probe
    files = sorted(f for f in glob.glob(f"{EXAMPLE}/*.*") if f.endswith((".flac", ".ogg", ".mp3", ".wav")))
    return min(files, key=lambda f: abs(probe(f).duration - 10.0))


def latency_child(model: str, quantize: str, threads: int) -> dict:
    t0 = time.perf_counter()
    _setup(threads)
    import mu_llama
    from mu_llama.audio import probe
    t_import = time.perf_counter()
    m = _load(model, quantize)
    t_load = time.perf_counter()
    clip = ten_second_clip()
    times, caption = [], ""
    for _ in range(4):
        t = time.perf_counter()
        caption = mu_llama.caption(m, clip)
        times.append(time.perf_counter() - t)
    return {"clip": clip, "clip_seconds": probe(clip).duration, "import_s": t_import - t0, "load_s": t_load - t_import,
            "first_caption_s": times[0], "warm_caption_s": statistics.median(times[1:]),
            "peak_rss_mb": _peak_mb(), "caption": caption}


def test_clips(corpus: str, n: int) -> list[str]:
    rows = [json.loads(x) for x in (Path(corpus) / "manifests" / "test.jsonl").read_text().splitlines() if x.strip()]
    rows.sort(key=lambda r: r["id"])
    return [str(Path(corpus) / r["audio"]) for r in rows[:n]]


def throughput(model: str, quantize: str, threads: int, files: list[str], batch_size: int) -> dict:
    _setup(threads)
    from tqdm import tqdm

    import mu_llama
    from mu_llama.audio import probe
    m = _load(model, quantize)
    tok = m.tokenizer
    audio_s = sum(probe(f).duration for f in files)
    tokens, t0 = 0, time.perf_counter()
    for i in tqdm(range(0, len(files), batch_size), desc="caption", unit="batch"):
        for text in mu_llama.caption(m, files[i:i + batch_size], batch_size=batch_size):
            tokens += len(tok.encode(text, add_special_tokens=False))
    wall = time.perf_counter() - t0
    return {"clips": len(files), "audio_s": audio_s, "wall_s": wall, "clips_per_s": len(files) / wall,
            "audio_s_per_s": audio_s / wall, "generated_tokens_per_s": tokens / wall, "batch_size": batch_size,
            "peak_rss_mb": _peak_mb()}


def markdown(r: dict) -> str:
    lat, thr = r["latency"], r["throughput"]
    return "\n".join([
        f"# Captioning with `{r['model']}` on this CPU", "",
        f"{r['machine']}; torch {r['torch']}; {r['threads']} thread(s); quantize {r['quantize']}; {r['date']}.", "",
        f"Reproduce: `{r['command']}`", "",
        "| one clip | value |", "|---|---:|",
        f"| clip | `{Path(lat['clip']).name}` ({lat['clip_seconds']:.1f} s) |",
        f"| model load | {lat['load_s']:.1f} s |",
        f"| first caption (cold) | {lat['first_caption_s']:.2f} s |",
        f"| caption, warm (median of 3) | {lat['warm_caption_s']:.2f} s |",
        f"| peak RSS (whole process) | {lat['peak_rss_mb']:.0f} MB |", "",
        f"Caption: \"{lat['caption']}\"", "",
        f"| throughput over {thr['clips']} clips ({thr['audio_s'] / 60:.1f} min of audio), batch {thr['batch_size']} | value |",
        "|---|---:|",
        f"| wall time | {thr['wall_s']:.0f} s |", f"| clips/s | {thr['clips_per_s']:.3f} |",
        f"| audio-s per s | {thr['audio_s_per_s']:.2f} |",
        f"| generated tokens/s | {thr['generated_tokens_per_s']:.1f} |",
        f"| peak RSS | {thr['peak_rss_mb']:.0f} MB |", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mu-llama-mini")
    ap.add_argument("--quantize", default="none", choices=("none", "int8", "8bit", "4bit"))  # = mu-llama caption's
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--source", default=None, help="a folder or glob instead of the corpus test split")
    ap.add_argument("--out", default="bench/results/caption_mini_cpu.json")
    ap.add_argument("--child", choices=("latency",), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(latency_child(a.model, a.quantize, a.threads)))
        return 0
    import torch
    child = subprocess.run([sys.executable, __file__, "--child", "latency", "--model", a.model, "--quantize",
                            a.quantize, "--threads", str(a.threads)], capture_output=True, text=True, check=True)
    latency = json.loads(child.stdout.strip().splitlines()[-1])
    if a.source:
        files = sorted(glob.glob(a.source + "/**/*.*", recursive=True) if Path(a.source).is_dir()
                       else glob.glob(a.source))[:a.clips]
    else:
        files = test_clips(a.corpus, a.clips)
    result = {"model": a.model, "quantize": a.quantize, "threads": a.threads,
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cpus",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python bench/bench_caption.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "latency": latency, "throughput": throughput(a.model, a.quantize, a.threads, files, a.batch_size)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
