"""`mu-llama bench`: run the benchmark suite (bench/suite.py) of a source checkout in a child process.

The suite lives next to the package in the repository (bench/), not inside it: the library never imports bench/.
Installed from a wheel there is no bench/ folder, and the verb says so. Options are forwarded to the suite;
`python bench/suite.py --help` lists them all (this verb exposes the common ones).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SUITE = Path("bench") / "suite.py"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="run the benchmark suite (source checkout only)",
        description="Time every stage (audio decode, encoder, LLM prefill/decode, captioning per quantization mode "
                    "and batch size, peak memory, a profile) against a MU-LLaMA-style reference pipeline. "
                    "Writes JSON + a markdown table. Needs a source checkout (bench/suite.py).")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--model", default=None, metavar="SPEC",
                   help="mu-llama-mini (CPU default), random:7b (CUDA default), random:tiny, untrained:smollm2, "
                        "or a checkpoint")
    p.add_argument("--smoke", action="store_true", help="tiny random models, one run: checks every code path")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default bench/results)")
    p.add_argument("--modes", default=None, metavar="M,M", help="quantization modes: none,8bit,4bit,int8-dynamic")
    p.add_argument("--batch-sizes", default=None, metavar="N,N", help="default 1,4,16 (1,4,16,64 on CUDA)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="clips per run")
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="clip length")
    p.add_argument("--new-tokens", type=int, default=None, metavar="N", help="fixed generated length")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="round-robin runs (medians)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1)")
    p.add_argument("--quality", type=int, default=None, metavar="N",
                   help="quality per quantization mode on N test clips (default 32; 0 = off)")
    p.add_argument("--checkout", default=None, metavar="DIR",
                   help="repository root holding bench/suite.py (default: the one this package runs from)")
    p.set_defaults(func=run)
    return p


def find_suite(checkout: str | None = None) -> Path:
    from mu_llama.errors import ConfigError

    roots = [Path(checkout)] if checkout else [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in roots:
        if (root / SUITE).is_file():
            return root / SUITE
    raise ConfigError(f"{SUITE} not found in {', '.join(map(str, roots))}: the benchmark suite runs from a source "
                      "checkout (git clone the repository, pip install -e ., then mu-llama bench)")


def suite_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--device", args.device, "--threads", str(args.threads)]
    for flag in ("model", "out", "modes", "batch_sizes", "clips", "seconds", "new_tokens", "runs", "quality"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv + (["--smoke"] if args.smoke else [])


def run(args: argparse.Namespace) -> int:
    suite = find_suite(args.checkout)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(args.threads))}
    return subprocess.call([sys.executable, str(suite), *suite_argv(args)], cwd=suite.parents[1], env=env)
