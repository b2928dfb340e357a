"""Encoder speed: our MertEncoder vs a bare HubertModel forward on the same weights and the same clip.

    python bench/bench_encoder.py --out bench/results/encoder_cpu.json [--config mert-95m] [--seconds 30]
                                  [--threads 1] [--runs 5] [--device cpu] [--dtype float32]

Both sides return every hidden state (the bare model with output_hidden_states=True). Ours also normalises
the waveform and stacks the states into one (L, B, T, D) tensor; the ratio ours/bare is that overhead.
Random weights (build_random): speed does not depend on the values. Prints a markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from mu_llama.encoders import EncoderOptions, build_random, normalize_clips


def _time(fn, runs: int, sync) -> list[float]:
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON output path")
    p.add_argument("--config", default="mert-95m", help="built-in config (tiny, mert-95m, mert-330m)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--runs", type=int, default=5, help="timed runs per side (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--attn", default="sdpa")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    options = EncoderOptions(args.device, args.dtype, args.attn)
    encoder = build_random(args.config, seed=0, options=options)
    device = encoder.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n = round(args.seconds * encoder.sample_rate)
    g = torch.Generator().manual_seed(0)
    wave = (0.1 * torch.randn(1, n, generator=g)).to(device)
    lengths = torch.tensor([n])
    x = normalize_clips(wave.float(), lengths.to(device)).to(encoder.dtype)  # the bare model gets pre-normalised input

    def ours():
        return encoder(wave, lengths).hidden_states

    @torch.no_grad()
    def bare():
        return encoder.model(x, output_hidden_states=True).hidden_states

    ours(), bare()  # warm-up (allocator, kernels)
    # Interleave the two sides run by run so drift in machine load hits both equally.
    t_ours, t_bare = [], []
    for _ in range(args.runs):
        t_ours += _time(ours, 1, sync)
        t_bare += _time(bare, 1, sync)
    med_ours, med_bare = statistics.median(t_ours), statistics.median(t_bare)
    result = {
        "config": args.config, "clip_seconds": args.seconds, "frames": encoder.frames_for(n),
        "hidden_states": encoder.num_layers, "device": str(device), "dtype": args.dtype, "attn": args.attn,
        "threads": torch.get_num_threads(), "runs": args.runs,
        "ours_seconds": t_ours, "bare_seconds": t_bare,
        "ours_median_s": med_ours, "bare_median_s": med_bare, "ours_min_s": min(t_ours), "bare_min_s": min(t_bare),
        "ours_rtf": med_ours / args.seconds, "bare_rtf": med_bare / args.seconds,
        "overhead_ratio": med_ours / med_bare, "overhead_ratio_min": min(t_ours) / min(t_bare),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
    }
    print(f"\nEncoder speed: {args.config}, {args.seconds:g}-s clip, {device} {args.dtype}, "
          f"{torch.get_num_threads()} thread(s), median of {args.runs}\n")
    print("| forward | median s | min s | real-time factor (median) | x real time |")
    print("|---|---:|---:|---:|---:|")
    for name, s, lo in (("MertEncoder (ours)", med_ours, min(t_ours)), ("bare HubertModel", med_bare, min(t_bare))):
        print(f"| {name} | {s:.3f} | {lo:.3f} | {s / args.seconds:.4f} | {args.seconds / s:.2f} |")
    print(f"\noverhead ratio ours / bare: {result['overhead_ratio']:.3f} median, "
          f"{result['overhead_ratio_min']:.3f} min (target <= 1.2)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
