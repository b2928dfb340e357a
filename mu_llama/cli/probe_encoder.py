"""`mu-llama probe-encoder RUN ENCODER_DIR`: linear probes of a pretrained encoder against a random-init encoder of the
same shape and the majority class, on a pretraining run's cached snapshot (the recipe mu_llama.recipes.probe); prints
the validation accuracies as JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from mu_llama.recipes import probe as recipe

    p = subparsers.add_parser("probe-encoder", help="linear probes of a pretrained encoder vs random init vs majority",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a `mu-llama pretrain-encoder` run folder (its cache/ is read)")
    p.add_argument("encoder_dir", help="the encoder folder to probe (RUN/best, or the folder --export wrote)")
    p.add_argument("--max-train", type=int, default=600, help="train clips for the probes (default 600)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of each clip pooled (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.errors import ConfigError
    from mu_llama.recipes.probe import probe_report

    if args.max_train < 1 or args.seconds <= 0 or args.threads < 1:
        raise ConfigError("--max-train and --threads must be >= 1 and --seconds > 0")
    print(json.dumps(probe_report(args.run, args.encoder_dir, max_train=args.max_train, seconds=args.seconds,
                                  seed=args.seed, threads=args.threads), indent=1))
    return 0
