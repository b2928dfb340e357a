"""`mu-llama train-tagger`: fit the audio fact tagger (instrument family, tempo class, mode) on the corpus clips and
the generator's rendered excerpts (the recipe mu_llama.recipes.train_tagger); prints the scores as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    from mu_llama.recipes import train_tagger as recipe

    C = recipe.TaggerTrainConfig
    p = subparsers.add_parser("train-tagger", help="fit the audio fact tagger (family, tempo class, mode)",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=C.corpus)
    p.add_argument("--generator-data", type=Path, default=C.generator_data)
    p.add_argument("--cache", type=Path, default=C.cache)
    p.add_argument("--out", type=Path, default=None, help="save the fitted tagger here")
    p.add_argument("--shard", default="0/1", help="K/N: featurise every N-th clip from K (parallel processes)")
    p.add_argument("--featurize-only", action="store_true")
    p.add_argument("--test", action="store_true", help="also score the corpus test split")
    p.add_argument("--corpus-only", action="store_true", help="fit on the corpus train clips only (ablation)")
    p.add_argument("--max-iter", type=int, default=C.max_iter)
    p.add_argument("--learning-rate", type=float, default=C.learning_rate)
    p.add_argument("--l2", type=float, default=C.l2, help="leaf-value L2 regularisation (see FactTagger.fit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.cli.args import parse_shard
    from mu_llama.recipes.train_tagger import TaggerTrainConfig, train_tagger

    cfg = TaggerTrainConfig(corpus=args.corpus, generator_data=args.generator_data, cache=args.cache, out=args.out,
                            shard=parse_shard(args.shard), featurize_only=args.featurize_only, test=args.test,
                            corpus_only=args.corpus_only, max_iter=args.max_iter, learning_rate=args.learning_rate,
                            l2=args.l2)
    scores = train_tagger(cfg)
    if scores is not None:
        print(json.dumps(scores, indent=1))
        if cfg.out:
            print(f"saved {cfg.out}")
    return 0
