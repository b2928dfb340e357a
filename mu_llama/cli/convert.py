"""`mu-llama convert`: import foreign checkpoints.

    mu-llama convert mullama --checkpoint checkpoint.pth --llama DIR --mert ID|DIR --out DIR
        MU-LLaMA's released weights -> a mu-llama model directory (load with --model DIR). DIR for --llama is a
        transformers LLaMA-2 folder (referenced where it is) or Meta's layout (params.json + consolidated.00.pth,
        or MU-LLaMA's llama_dir with 7B/ and tokenizer.model), converted into --llm-out (default OUT/llm).
    mu-llama convert llama --meta DIR --out DIR
        Meta-layout LLaMA -> transformers folder (rotary q/k rows permuted).

Parses arguments and calls mu_llama.convert; prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json

DTYPES = ("float32", "bfloat16", "float16")  # = mu_llama.convert.meta_llama.DTYPES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="import MU-LLaMA / Meta-layout LLaMA checkpoints",
                              description="Convert foreign checkpoints into mu-llama / transformers layouts.")
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    m = sub.add_parser("mullama", help="MU-LLaMA checkpoint.pth -> mu-llama model directory",
                       description="Import MU-LLaMA's released checkpoint (adapter, bridge, gates, LoRA, biases, norms) "
                                   "as a mu-llama model directory; the logits match MU-LLaMA's forward.")
    m.add_argument("--checkpoint", required=True, metavar="PTH", help="MU-LLaMA checkpoint.pth")
    m.add_argument("--llama", required=True, metavar="DIR",
                   help="LLaMA-2-7B: transformers folder, or Meta layout (params.json + consolidated.00.pth, "
                        "or a llama_dir holding 7B/ and tokenizer.model)")
    m.add_argument("--mert", default="m-a-p/MERT-v1-330M", metavar="ID|DIR",
                   help="the MERT the model hears with (hub id or local MERT folder), loaded and checked against the "
                        "checkpoint before anything is written; default m-a-p/MERT-v1-330M")
    m.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    m.add_argument("--llm-out", metavar="DIR", help="where a Meta-layout LLaMA is converted to (default OUT/llm)")
    m.add_argument("--tokenizer", metavar="PATH",
                   help="Meta layout only: tokenizer.model or a transformers tokenizer folder (default: found with "
                        "the weights)")
    m.add_argument("--llama-type", metavar="NAME", help="sub-folder of a MU-LLaMA llama_dir, e.g. 7B")
    m.add_argument("--dtype", choices=DTYPES, help="cast the converted LLaMA weights (default: keep their dtype)")
    m.add_argument("--full-audio", action="store_true",
                   help="hear whole recordings (MU-LLaMA hears only the first 60 s; default: reproduce that)")
    m.add_argument("--force", action="store_true",
                   help="replace a model already in --out: its model files and a LLaMA converted there earlier from "
                        "other weights (other files in --out are kept)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=run_mullama)

    ll = sub.add_parser("llama", help="Meta-layout LLaMA -> transformers folder",
                        description="Convert Meta's consolidated LLaMA weights to a transformers LlamaForCausalLM "
                                    "folder (config, safetensors, tokenizer).")
    ll.add_argument("--meta", required=True, metavar="DIR", help="folder with params.json + consolidated.*.pth")
    ll.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ll.add_argument("--tokenizer", metavar="PATH", help="tokenizer.model or tokenizer folder (default: found)")
    ll.add_argument("--llama-type", metavar="NAME", help="sub-folder of a llama_dir, e.g. 7B")
    ll.add_argument("--dtype", choices=DTYPES, help="cast the weights (default: keep their dtype)")
    ll.add_argument("--no-progress", action="store_true", help="no progress bar")
    ll.set_defaults(func=run_llama)
    return p


def run_mullama(args: argparse.Namespace) -> int:
    from mu_llama.convert import convert_mullama

    report = convert_mullama(args.checkpoint, args.llama, args.mert, args.out, llm_out=args.llm_out,
                             tokenizer=args.tokenizer, llama_type=args.llama_type, full_audio=args.full_audio,
                             dtype=args.dtype, overwrite=args.force, progress=not args.no_progress)
    summary = {k: v for k, v in report.to_dict().items() if k != "config"}
    print(json.dumps(summary, indent=2))
    return 0


def run_llama(args: argparse.Namespace) -> int:
    from mu_llama.convert import convert_meta_to_hf, find_llama

    out = convert_meta_to_hf(find_llama(args.meta, args.llama_type), args.out, tokenizer=args.tokenizer,
                             dtype=args.dtype, progress=not args.no_progress)
    print(json.dumps({"out": str(out)}, indent=2))
    return 0
