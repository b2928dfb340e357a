"""`mu-llama <verb>`: one module per verb under mu_llama/cli/, each exposing `add_parser(subparsers)`.

A verb module's `add_parser` registers its sub-parser and sets `func=run` where `run(args) -> int` is the exit code.
Only the chosen verb's module is imported (start-up stays fast and one broken extra never breaks the others);
`mu-llama --help` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mu_llama.errors import MuLlamaError

# verb -> module under mu_llama.cli (kept as data: adding a verb is one line here plus its module)
VERBS: dict[str, str] = {
    "embed": "embed",
    "caption": "caption",
    "ask": "ask",
    "corpus": "corpus",
    "eval": "evaluate",
    "train": "train",
    "export": "export",
    "predict": "predict",
    "pretrain-encoder": "pretrain_encoder",
    "probe-encoder": "probe_encoder",
    "train-tagger": "train_tagger",
    "generator-data": "generator_data",
    "train-emotion": "train_emotion",
    "train-generator": "train_generator",
    "eval-generator": "eval_generator",
    "label": "label",
    "emotion": "emotion",
    "generate": "generate",
    "demo": "demo",
    "bench": "bench",
    "convert": "convert",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mu-llama", description="Music understanding and captioning toolkit.")
    parser.add_argument("--version", action="version", version=f"mu-llama {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in VERBS.items():
        if only is not None and verb != only:
            continue
        try:
            mod = importlib.import_module(f"mu_llama.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"mu_llama.cli.{module}":
                continue  # verb not built yet
            raise
        mod.add_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mu-llama")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MuLlamaError as e:
        # User-caused errors: one clear line, no traceback.
        print(f"mu-llama {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
