"""`mu-llama train-generator --data DIR --out DIR`: train the embedded music generator (the recipe
mu_llama.recipes.train_generator); rerun the same command to resume."""

from __future__ import annotations

import argparse
import json

INT_FLAGS = ("steps", "batch_size", "seq_len", "threads", "seed", "ckpt_every", "eval_every")


def add_parser(subparsers) -> None:
    from mu_llama.recipes import train_generator as recipe

    C = recipe.GeneratorTrainConfig
    p = subparsers.add_parser("train-generator", help="train the embedded text+VAD music generator (resumable)",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train.jsonl / heldout.jsonl (`mu-llama generator-data`)")
    p.add_argument("--out", required=True, help="run folder: last/ (checkpoint), final/ (the trained generator)")
    for name in INT_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=C.__dataclass_fields__[name].default)
    p.add_argument("--lr", type=float, default=C.lr)
    p.add_argument("--model", default="{}", help='GeneratorConfig overrides as JSON, e.g. \'{"d_model": 256}\'')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.errors import ConfigError
    from mu_llama.recipes.train_generator import GeneratorTrainConfig, train_generator

    try:
        model = json.loads(args.model)
    except ValueError as e:
        raise ConfigError(f"--model must be a JSON object of GeneratorConfig fields: {e}") from None
    cfg = GeneratorTrainConfig(data=args.data, out=args.out, lr=args.lr, model=model,
                               **{name: getattr(args, name) for name in INT_FLAGS})
    train_generator(cfg)
    return 0
