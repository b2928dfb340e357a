"""`mu-llama predict --model-dir DIR --split SPLIT --out FILE.jsonl`: a caption (and answers) per clip of a corpus
split from a trained model, written as predictions for `mu-llama eval --pred` (the recipe
mu_llama.recipes.train.predict_split; the split's encoder features are cached first, resumably).

    mu-llama predict --model-dir mu_llama/assets/mu-llama-mini --corpus data/corpus --split test --out pred.jsonl
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="write a trained model's predictions for a corpus split (for eval)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, metavar="DIR", help="the trained model folder")
    p.add_argument("--corpus", default="data/corpus", help="corpus folder (manifests/<split>.jsonl) [data/corpus]")
    p.add_argument("--split", required=True, help="the corpus split to predict, e.g. test")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the predictions file")
    p.add_argument("--qa", choices=("none", "facts", "factual", "all"), default="facts",
                   help="also answer the clips' questions: facts = those scored as facts (default), factual = every "
                        "non-description question, all")
    p.add_argument("--fact-fusion", type=float, default=1.0, metavar="W",
                   help="weight of the model's audio fact tagger in decoding (0 = off; default 1)")
    p.add_argument("--limit", type=int, default=None, help="N clips evenly spaced over the split's sorted ids")
    p.add_argument("--shard", metavar="K/N", default="0/1",
                   help="only clips K, K+N, ... (run N processes, one per core, after a 0/1 run with --qa none has "
                        "filled the feature cache)")
    p.add_argument("--refs-out", metavar="DIR", help="also write the scored rows (+ the train split, for baselines) as "
                                                     "DIR/<split>.jsonl: a fixed corpus for mu-llama eval")
    p.add_argument("--feature-cache", default=None, help="feature cache root [$MU_LLAMA_CACHE/features]")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.cli.args import parse_shard
    from mu_llama.recipes.train import predict_split

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    path = predict_split(args.model_dir, args.corpus, args.split, args.out, qa=args.qa, limit=args.limit,
                         feature_cache=args.feature_cache, device=args.device, batch_size=args.batch_size,
                         progress=not args.no_progress, refs_out=args.refs_out, shard=parse_shard(args.shard),
                         fact_fusion=args.fact_fusion)
    print(f"predictions written to {path}", file=sys.stderr)
    return 0
