"""`mu-llama caption PATH|DIR|GLOB... [--model NAME|DIR] [--quantize ...] [--batch-size N] [--out FILE.jsonl]`

Writes one JSON line per input file: {"path", "caption", "error"}. A file that cannot be read is recorded
with its error and the run goes on; the exit code is 1 if any file failed. Shared option helpers for
`mu-llama ask` live here too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

QUANTIZE_FLAGS = {"none": "none", "int8": "int8-dynamic", "8bit": "8bit", "4bit": "4bit"}


def add_model_args(p: argparse.ArgumentParser) -> None:
    # no mu_llama.model import here: `mu-llama --help` must not load torch
    p.add_argument("--model", default=None,
                   help="model name (mu-llama-mini, untrained:smollm2, ...; see mu_llama.model.MODELS) or a "
                        "directory written by MuLlama.save_pretrained (default: mu-llama-mini)")
    p.add_argument("--quantize", choices=list(QUANTIZE_FLAGS), default="none",
                   help="LLM weights: int8 = torch dynamic int8 (CPU), 8bit/4bit = bitsandbytes (default: none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    from mu_llama.decoding import DecodingOptions

    d = DecodingOptions()
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"default {d.max_new_tokens}")
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"nucleus sampling mass (default {d.top_p})")
    p.add_argument("--top-k", type=int, default=d.top_k, help="0 = off (default)")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help="1 = off (default)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument("--fact-fusion", type=float, default=d.fact_fusion, metavar="W",
                   help=f"weight of the model's audio fact tagger in decoding, when it ships one (0 = off; "
                        f"default {d.fact_fusion})")


def decoding_from_args(args):
    from mu_llama.decoding import DecodingOptions

    return DecodingOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                           top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed,
                           fact_fusion=args.fact_fusion)


def load_model_from_args(args):
    from mu_llama.llm import LLMOptions
    from mu_llama.model import DEFAULT_MODEL, load_model

    args.model = args.model or DEFAULT_MODEL
    options = LLMOptions(device=args.device, quantize=QUANTIZE_FLAGS[args.quantize])
    print(f"loading model {args.model} (quantize={args.quantize}, device={args.device}) ...", file=sys.stderr)
    return load_model(args.model, options)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("caption", help="describe music files (JSON lines out)",
                              description="Caption audio files with a MU-LLaMA model. One JSON line per file.")
    p.add_argument("paths", nargs="+", help="audio files, directories (recursive), globs, or .txt/.lst lists")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    p.add_argument("--out", type=Path, default=None, help="write JSON lines here (default: stdout)")
    p.add_argument("--prompt", default=None, help="instruction to use instead of the default caption question")
    add_decoding_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from contextlib import closing

    from tqdm import tqdm

    from mu_llama.audio import iter_audio_files
    from mu_llama.errors import ConfigError, MuLlamaError
    from mu_llama.isolate import describe_failure, isolate_failures
    from mu_llama.tasks import audio_batches, caption

    if args.batch_size < 1:
        raise ConfigError(f"invalid --batch-size {args.batch_size}; must be >= 1")
    decoding = decoding_from_args(args)
    paths = [p for entry in args.paths for p in iter_audio_files(entry)]
    if not paths:
        raise ConfigError(f"no audio files matched {' '.join(args.paths)}")
    model = load_model_from_args(args)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    failed = 0
    try:
        with tqdm(total=len(paths), unit="file", desc="caption", file=sys.stderr) as bar, \
                closing(audio_batches(model, paths, args.batch_size, keep_errors=True)) as batches:
            for rows, loaded in batches:  # decoded on worker threads, two batches ahead of the model
                records = [{"path": str(paths[i]), "caption": None,
                            "error": str(w) if isinstance(w, MuLlamaError) else None} for i, w in zip(rows, loaded)]
                good = [r for r, w in zip(records, loaded) if not isinstance(w, MuLlamaError)]
                waves = [w for w in loaded if not isinstance(w, MuLlamaError)]
                # a file the model fails on is recorded alone; its batch-mates are still captioned
                texts = isolate_failures(
                    lambda part: caption(model, part, decoding, prompt=args.prompt, batch_size=len(part)), waves)
                for rec, text in zip(good, texts):
                    if isinstance(text, Exception):
                        rec["error"] = f"{rec['path']}: model failed: {describe_failure(text)}"
                    else:
                        rec["caption"] = text
                failed += sum(rec["error"] is not None for rec in records)
                for rec in records:
                    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                bar.update(len(rows))
    finally:
        if args.out:
            out.close()
    print(f"captioned {len(paths) - failed} of {len(paths)} files" + (f"; {failed} failed" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0
