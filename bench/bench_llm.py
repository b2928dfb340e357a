"""CPU benchmark of the LLM side: SmolLM2-135M-Instruct in fp32, torch int8-dynamic and bitsandbytes 4-bit
(peak RSS, decode tokens/s), and captioning throughput of the untrained MU-LLaMA pipeline at batch sizes 1/4/16.

    python bench/bench_llm.py [--out bench/results] [--rounds 3] [--new-tokens 32]

Method (these 2 shared cores are noisy; single-thread runs are the steady ones):
- torch.set_num_threads(1) everywhere.
- Memory: each LLM variant is loaded in its own fresh subprocess; we report its peak RSS (ru_maxrss) and the
  RSS growth from loading the model, measured after imports.
- Speed: all variants are loaded in one process and timed round-robin (`--rounds` rounds), so machine-load
  drift hits them alike; we report medians and ratios to fp32 taken from that one run.
- Captioning: the same 16 clips (the packaged examples, cycled) captioned with batch size 1, 4 and 16,
  fixed-length outputs (min_new_tokens = max_new_tokens) so every configuration does identical work;
  also round-robin; throughput ratio to batch size 1.
Writes <out>/bench_llm.json and <out>/bench_llm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"fp32": "none", "int8-dynamic": "int8-dynamic", "bnb-4bit": "4bit"}
PROMPT = "Describe a calm piano piece in a few sentences."


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup():
    import torch
    torch.set_num_threads(1)
    import warnings
    warnings.filterwarnings("ignore")
    return torch


def _prompt_ids(tok):
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    return tok.encode(text, add_special_tokens=False)


def _trim() -> None:
    """Return freed heap to the OS so RSS shows what is live (glibc keeps freed arenas otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory_child(variant: str, new_tokens: int) -> dict:
    """Runs in a fresh process: load one variant, generate once, report memory."""
    torch = _setup()
    from mu_llama.llm import SMOLLM2, LLMOptions, load_llm

    _trim()
    base = _rss_mb()
    model, tok = load_llm(SMOLLM2, LLMOptions(quantize=VARIANTS[variant]))
    ids = torch.tensor([_prompt_ids(tok)])
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    _trim()
    weights = _weights_mb(model)
    return {"variant": variant, "rss_after_imports_mb": round(base, 1),
            "steady_rss_mb": round(_rss_mb(), 1), "steady_model_rss_mb": round(_rss_mb() - base, 1),
            "peak_rss_mb": round(_peak_mb(), 1), "weights_mb": round(weights, 1)}


def _weights_mb(model) -> float:
    """Bytes held by parameters, buffers and torch dynamic-int8 packed weights (tied tensors counted once)."""
    seen, total, alive = set(), 0, []  # alive: unpacked int8 weights are temporaries; keep them so ptrs stay unique
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            tensors += [t for t in packed._weight_bias() if t is not None]
        alive += tensors
        for t in tensors:
            key = (t.data_ptr(), t.numel())
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total / 2**20


def time_generate(torch, model, tok, ids, new_tokens: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return time.perf_counter() - t0


def llm_speed(rounds: int, new_tokens: int) -> dict:
    """Decode tokens/s per variant: (new_tokens - 1) / (time(new_tokens) - time(1)) removes the prefill."""
    torch = _setup()
    from mu_llama.llm import SMOLLM2, LLMOptions, load_llm

    models = {v: load_llm(SMOLLM2, LLMOptions(quantize=q)) for v, q in VARIANTS.items()}
    ids = torch.tensor([_prompt_ids(models["fp32"][1])])
    for model, tok in models.values():  # warm-up
        time_generate(torch, model, tok, ids, 2)
    runs = {v: [] for v in models}
    for _ in range(rounds):
        for v, (model, tok) in models.items():
            t_full = time_generate(torch, model, tok, ids, new_tokens)
            t_one = time_generate(torch, model, tok, ids, 1)
            runs[v].append((new_tokens - 1) / max(t_full - t_one, 1e-9))
    med = {v: statistics.median(r) for v, r in runs.items()}
    return {v: {"decode_tokens_per_s": round(med[v], 2), "runs": [round(x, 2) for x in runs[v]],
                "ratio_to_fp32": round(med[v] / med["fp32"], 3)} for v in models}


def caption_throughput(rounds: int, new_tokens: int, batch_sizes=(1, 4, 16), clips: int = 16) -> dict:
    _setup()
    from mu_llama.audio import iter_audio_files, load_audio
    from mu_llama.decoding import DecodingOptions
    from mu_llama.model import load_model
    from mu_llama.tasks import caption

    model = load_model("untrained:smollm2")
    examples = Path(__file__).resolve().parents[1] / "mu_llama" / "assets" / "examples"
    files = list(iter_audio_files(examples))
    waves = [load_audio(files[i % len(files)], model.sample_rate) for i in range(clips)]
    opts = DecodingOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    caption(model, waves[:2], opts, batch_size=2)  # warm-up
    runs = {b: [] for b in batch_sizes}
    for _ in range(rounds):
        for b in batch_sizes:
            t0 = time.perf_counter()
            caption(model, waves, opts, batch_size=b)
            runs[b].append(clips / (time.perf_counter() - t0))
    med = {b: statistics.median(r) for b, r in runs.items()}
    return {str(b): {"clips_per_s": round(med[b], 3), "tokens_per_s": round(med[b] * new_tokens, 2),
                     "ratio_to_bs1": round(med[b] / med[batch_sizes[0]], 2), "runs": [round(x, 3) for x in runs[b]]}
            for b in batch_sizes} | {"clips": clips, "new_tokens_per_clip": new_tokens,
                                      "audio_seconds": round(sum(len(w) for w in waves) / model.sample_rate, 1)}


def markdown(result: dict) -> str:
    lines = ["# LLM benchmark (CPU, 1 thread)", "",
             f"{result['machine']}; torch {result['torch']}; {result['date']}", "",
             "## SmolLM2-135M-Instruct", "",
             "| variant | weights (MB) | peak RSS (MB) | steady RSS after generate (MB) | of which model (MB) | "
             "decode tokens/s (median) | ratio to fp32 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for v in VARIANTS:
        m, s = result["memory"][v], result["llm_speed"][v]
        lines.append(f"| {v} | {m['weights_mb']} | {m['peak_rss_mb']} | {m['steady_rss_mb']} | "
                     f"{m['steady_model_rss_mb']} | {s['decode_tokens_per_s']} | {s['ratio_to_fp32']} |")
    lines += ["", "Peak RSS includes loading (fp32 weights are read, then quantized); steady RSS is after "
                  "generation with freed heap returned to the OS (malloc_trim)."]
    c = result["captioning"]
    lines += ["", f"## Captioning throughput (untrained:smollm2, fp32; {c['clips']} clips, "
                  f"{c['new_tokens_per_clip']} new tokens each)", "",
              "| batch size | clips/s (median) | generated tokens/s | ratio to batch 1 |", "|---:|---:|---:|---:|"]
    for b in ("1", "4", "16"):
        lines.append(f"| {b} | {c[b]['clips_per_s']} | {c[b]['tokens_per_s']} | {c[b]['ratio_to_bs1']} |")
    lines += ["", f"Rounds: {result['rounds']} (round-robin, medians). Reproduce: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--caption-tokens", type=int, default=16)
    p.add_argument("--memory-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.new_tokens)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    memory = {}
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--memory-child", v, "--new-tokens", str(args.new_tokens)],
                             capture_output=True, text=True, env=env, check=True)
        memory[v] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"memory {v}: {memory[v]}", file=sys.stderr)
    _setup()
    speed = llm_speed(args.rounds, args.new_tokens)
    print(f"speed: {speed}", file=sys.stderr)
    captioning = caption_throughput(args.rounds, args.caption_tokens)
    print(f"captioning: {captioning}", file=sys.stderr)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
              "torch": __import__("torch").__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds,
              "command": "OMP_NUM_THREADS=1 python bench/bench_llm.py " + " ".join(argv or sys.argv[1:]),
              "memory": memory, "llm_speed": speed, "captioning": captioning}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_llm.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_llm.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
