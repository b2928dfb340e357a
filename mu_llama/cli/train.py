"""`mu-llama train`: train the LLM side of a model on the corpus (stage 1 adapter, stage 2 LoRA), resumably.

    mu-llama train --config mu_llama/recipes/configs/mini.yaml [--out runs/mini] [--stage1-steps N] [--set KEY=VALUE]
    mu-llama train --config ... --cache-only                      # only fill the frozen-encoder feature cache

Rerunning the same command resumes from the run's last checkpoint. Options: dataclass defaults < YAML < flags.
Packaging and predicting are verbs of their own (`mu-llama export`, `mu-llama predict`); the old spellings
`mu-llama train --export ...` and `mu-llama train --predict ...` still work and say so on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

# flag -> TrainConfig field (None defaults: only given flags override the YAML)
FLAGS: dict[str, tuple[type, str]] = {
    "corpus": (str, "corpus folder (manifests/<split>.jsonl) [data/corpus]"),
    "out": (str, "run folder: checkpoints/, final/, log.jsonl, curves.png [runs/mini]"),
    "feature_cache": (str, "feature cache root [<out>/../features]"),
    "stage1_steps": (int, "optimizer steps of stage 1 (adapter, prefix, gates)"),
    "stage2_steps": (int, "optimizer steps of stage 2 (LoRA + bias/norm)"),
    "batch_size": (int, "examples per micro-batch"),
    "grad_accum": (int, "micro-batches per optimizer step"),
    "lr1": (float, "stage 1 peak learning rate"),
    "lr2": (float, "stage 2 peak learning rate"),
    "warmup": (int, "warmup steps at the start of each stage"),
    "checkpoint_every": (int, "checkpoint + validation every N steps"),
    "val_generate": (int, "validation clips captioned and scored at each checkpoint"),
    "max_train_clips": (int, "use N train clips (evenly spaced over the ids)"),
    "device": (str, "cpu, cuda or cuda:N"),
    "threads": (int, "torch CPU threads (1 on a shared CPU)"),
    "seed": (int, "data order / example sampling seed"),
    "stop_after": (int, "stop (checkpointed) after this step; rerun to resume"),
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    from mu_llama.recipes.train_config import AMP_MODES, QUANTIZE

    p = subparsers.add_parser(
        "train", help="train the music adapter + LoRA on the corpus (resumable)",
        description="Train a MU-LLaMA model's trainable parts on the corpus: stage 1 the music adapter, prefix and "
                    "gates; stage 2 LoRA (+ bias/norm tuning). Frozen-encoder features are cached first. Rerun the "
                    "same command to resume from the last checkpoint.")
    p.add_argument("--config", metavar="YAML", help="training config (e.g. mu_llama/recipes/configs/mini.yaml)")
    for name, (typ, text) in FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None, help=text)
    p.add_argument("--encoder", default=None, help="encoder spec (model.encoder): a MERT folder, hub id, random:tiny")
    p.add_argument("--llm", default=None, help="base LLM spec (model.llm), default smollm2-135m-instruct")
    p.add_argument("--amp", choices=AMP_MODES, default=None, help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--quantize", choices=QUANTIZE, default=None, help="4bit = QLoRA base weights (bitsandbytes)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="any option, e.g. --set model.injection_layers=12 --set caption_share=0.6 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cache-only", action="store_true", help="only compute the feature cache, then stop")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and stop")
    # Deprecated spellings of `mu-llama export` and `mu-llama predict`, kept working (hidden from --help).
    hidden = argparse.SUPPRESS
    for flag in ("--export", "--to", "--encoder-dir", "--predict", "--model-dir", "--pred-out", "--refs-out"):
        p.add_argument(flag, help=hidden)
    p.add_argument("--fact-fusion", type=float, default=1.0, help=hidden)
    p.add_argument("--qa", choices=("none", "facts", "factual", "all"), default="facts", help=hidden)
    p.add_argument("--limit", type=int, default=None, help=hidden)
    p.add_argument("--shard", default="0/1", help=hidden)
    p.set_defaults(func=run)
    return p


def resolve_from_args(args):
    from mu_llama.recipes.train_config import parse_assignment, resolve_config

    overrides = {name: getattr(args, name) for name in FLAGS}
    overrides.update({"model.encoder": args.encoder, "model.llm": args.llm, "amp": args.amp,
                      "quantize": args.quantize})
    if args.no_progress:
        overrides["progress"] = False
    for text in args.assignments:
        key, value = parse_assignment(text)
        overrides[key] = value
    return resolve_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    if args.export:
        return _deprecated_export(args)
    if args.predict:
        return _deprecated_predict(args)
    config = resolve_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    from mu_llama.recipes.train import train

    path = train(config, cache_only=args.cache_only)
    print(path)
    return 0


def _deprecated_export(args: argparse.Namespace) -> int:
    from mu_llama.cli import export
    from mu_llama.errors import ConfigError

    print("mu-llama train --export is deprecated: use `mu-llama export MODEL_DIR --to DIR [--encoder-dir ENC]`",
          file=sys.stderr)
    if not args.to:
        raise ConfigError("--export needs --to DIR")
    return export.run(argparse.Namespace(model_dir=args.export, to=args.to, encoder_dir=args.encoder_dir))


def _deprecated_predict(args: argparse.Namespace) -> int:
    from mu_llama.cli import predict
    from mu_llama.errors import ConfigError

    print("mu-llama train --predict is deprecated: use `mu-llama predict --model-dir DIR --split SPLIT "
          "--out FILE.jsonl`", file=sys.stderr)
    if not (args.model_dir and args.pred_out):
        raise ConfigError("--predict needs --model-dir DIR and --pred-out FILE.jsonl")
    return predict.run(argparse.Namespace(
        model_dir=args.model_dir, corpus=args.corpus or "data/corpus", split=args.predict, out=args.pred_out,
        qa=args.qa, fact_fusion=args.fact_fusion, limit=args.limit, shard=args.shard, refs_out=args.refs_out,
        feature_cache=args.feature_cache, device=args.device or "cpu", batch_size=args.batch_size or 8,
        threads=args.threads, no_progress=args.no_progress))
