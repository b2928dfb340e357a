"""`mu-llama generator-data OUT`: build the embedded generator's training data from the music21 corpus (the recipe
mu_llama.recipes.generator_data); prints the row counts per split."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from mu_llama.recipes import generator_data as recipe

    p = subparsers.add_parser("generator-data", help="build the generator's training data (music21 excerpts, "
                                                     "augmented, captioned, VAD-labelled)",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for train.jsonl, heldout.jsonl and meta.json")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N corpus files per source (a quick, "
                                                                        "small set)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.errors import ConfigError
    from mu_llama.recipes.generator_data import build

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    print(build(args.out, seed=args.seed, limit_per_source=args.limit))
    return 0
