"""`mu-llama pretrain-encoder`: train the small MERT-architecture encoder of mu-llama-mini on the corpus.

    mu-llama pretrain-encoder --out runs/encoder/run2 --steps 800 --lr 1e-3 --warmup 50 --checkpoint-every 100
        --distill --amp bf16 --stop-after 400 --export mu_llama/assets/mu-llama-mini/encoder

(the shipped encoder: the best validated checkpoint, step 400 of an 800-step schedule). Every PretrainConfig field
is a flag (mu_llama.recipes.pretrain_encoder); rerun the same command to resume; --export gets the best encoder so
far, also when --stop-after ends the process early.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields


def _flag_type(default):
    return {bool: None, int: int, float: float}.get(type(default), str)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from mu_llama.recipes.pretrain_encoder import PretrainConfig

    p = subparsers.add_parser("pretrain-encoder", help="pretrain the small MERT-architecture encoder on the corpus",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(PretrainConfig):
        if f.name == "loss_weights":
            continue  # a dict: use the Python API
        default = f.default if f.default is not MISSING else None
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            typ = int if f.name in ("max_clips", "stop_after") else _flag_type(default)
            p.add_argument(flag, dest=f.name, type=typ, default=default, help=f"default {default}")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from mu_llama.recipes.pretrain_encoder import PretrainConfig, pretrain_encoder

    names = {f.name for f in fields(PretrainConfig)} - {"loss_weights"}
    folder = pretrain_encoder(PretrainConfig(**{n: getattr(args, n) for n in names}))
    print(f"encoder written to {folder}")
    return 0
