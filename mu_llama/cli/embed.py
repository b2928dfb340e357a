"""`mu-llama embed PATH... --out DIR`: MERT features per audio file (safetensors) plus manifest.jsonl.

Parses arguments and calls mu_llama.embed.embed_files; exit code 1 if any file failed, 0 otherwise.
The library (torch, transformers) is imported in run(), so `mu-llama --help` stays fast; the choices below
mirror mu_llama.embed / mu_llama.encoders (a test checks they agree) and the library validates again.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "mu-llama-mini"  # = mu_llama.embed.DEFAULT_MODEL = mu_llama.model.DEFAULT_MODEL
MANIFEST = "manifest.jsonl"  # = mu_llama.embed.MANIFEST
POOLS = ("none", "mean")  # = mu_llama.embed.POOLS
DTYPES = ("float32", "bfloat16", "float16")  # = mu_llama.encoders.DTYPES
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # = mu_llama.encoders.ATTN_IMPLEMENTATIONS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "embed", help="extract MERT features from audio files",
        description="Extract per-frame MERT hidden states from audio files (long files in overlapping windows). "
                    f"Writes DIR/<name>.safetensors per file and DIR/{MANIFEST}; continues past bad files.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files, directories, globs or .txt/.lst lists")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|DIR|ID",
                   help="a model name (mu-llama-mini, untrained:smollm2, ...) or model directory: the encoder that "
                        "model hears with (with its descriptor layer, last, when it has one); or an encoder: a local "
                        "MERT directory or hub id (m-a-p/MERT-v1-95M); random:NAME (tiny, mert-95m, mert-330m) for "
                        f"random weights (smoke tests only). Default {DEFAULT_MODEL}")
    p.add_argument("--layers", default="all", type=_layers, metavar="all|I,J",
                   help="hidden states to keep: 'all' or indices such as 0,6,-1 (0 = embedding output)")
    p.add_argument("--pool", default="none", choices=POOLS, help="none: every frame; mean: one vector per layer")
    p.add_argument("--window", type=float, default=30.0, metavar="S", help="window length in seconds (default 30)")
    p.add_argument("--hop", type=float, default=25.0, metavar="S", help="hop between windows in seconds (default 25)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="windows per encoder call (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--dtype", default="float32", choices=tuple(DTYPES), help="bfloat16/float16 need CUDA")
    p.add_argument("--attn", default="sdpa", choices=ATTN_IMPLEMENTATIONS, help="attention implementation")
    p.add_argument("--max-duration", type=float, default=None, metavar="S", help="refuse files longer than S seconds")
    p.add_argument("--seed", type=int, default=0, help="weights of an explicit --model random:NAME")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _layers(text: str) -> tuple[int, ...] | None:
    from mu_llama.embed import parse_layers

    try:
        return parse_layers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    from mu_llama.embed import EmbedOptions, embed_files

    options = EmbedOptions(model=args.model, layers=args.layers, pool=args.pool, window_s=args.window, hop_s=args.hop,
                           batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                           attn_implementation=args.attn, max_duration=args.max_duration, seed=args.seed)
    results = embed_files(args.paths, args.out, options, progress=not args.no_progress)
    failed = [r for r in results if not r.ok]
    for r in failed:  # errors from mu_llama.audio already name the file
        print(f"mu-llama embed: {r.error if r.path in r.error else f'{r.path}: {r.error}'}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} file(s) embedded into {args.out} "
          f"(manifest: {args.out}/{MANIFEST})", file=sys.stderr)
    return 1 if failed or not results else 0
