"""`mu-llama export MODEL_DIR --to DIR [--encoder-dir ENC]`: package a trained model folder (the recipe
mu_llama.recipes.train.export_model): its config, adapter and fact tagger, plus an encoder folder if given."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="package a trained model folder (with its encoder) for loading",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a trained model folder (e.g. runs/mini/final)")
    p.add_argument("--to", required=True, metavar="DIR", help="destination folder (a tagger already there stays "
                                                              "when the model has none)")
    p.add_argument("--encoder-dir", metavar="DIR", help="bundle this encoder folder as DIR/encoder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.recipes.train import export_model

    print(export_model(args.model_dir, args.to, args.encoder_dir))
    return 0
