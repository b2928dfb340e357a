"""`mu-llama eval`: score predictions against a corpus split, or score the baselines.

    mu-llama eval --pred PRED.jsonl --corpus DIR_OR_MANIFEST --split test --out REPORT_DIR [--mode mullama-compat]
    mu-llama eval --baselines --corpus DIR_OR_MANIFEST --split test [--train-split train] --out REPORT_DIR

Parses arguments and calls mu_llama.eval; prints the markdown tables; writes report.json, report.md, items.jsonl
and confusion PNGs under REPORT_DIR (one sub-folder per system with --baselines).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mu_llama.errors import ConfigError
from mu_llama.eval.baselines import BASELINES
from mu_llama.eval.harness import COMPAT_METRICS, EVAL_MODES, MISSING_POLICIES, STANDARD_METRICS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="score captions / answers (BLEU, METEOR, ROUGE-L, CIDEr-D, MiniLM, fact accuracy)",
        description="Score predicted captions and QA answers against a corpus split, offline. Standard mode uses "
                    "coco-caption definitions; --mode mullama-compat reproduces MU-LLaMA's own metrics "
                    "(character BLEU, ROUGE-L recall, BERTScore recall with MiniLM instead of roberta-large).")
    p.add_argument("--pred", metavar="PRED.jsonl", help='predictions: rows {"id", "caption"?, "answers"?}')
    p.add_argument("--baselines", action="store_true",
                   help=f"score the baselines ({', '.join(BASELINES)}) instead of --pred")
    p.add_argument("--corpus", required=True, metavar="DIR_OR_MANIFEST",
                   help="corpus folder (manifest.jsonl or <split>.jsonl files) or a manifest .jsonl")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--train-split", default="train", help="split the baselines learn from (default train)")
    p.add_argument("--out", metavar="REPORT_DIR", help="write report.json, report.md, items.jsonl, PNGs here")
    p.add_argument("--mode", default="standard", choices=EVAL_MODES, help="metric definitions (default standard)")
    p.add_argument("--metrics", default=None, metavar="A,B",
                   help=f"subset; standard: {','.join(STANDARD_METRICS)}; "
                        f"mullama-compat: {','.join(COMPAT_METRICS)} (default: all of the mode)")
    p.add_argument("--missing", default="skip", choices=MISSING_POLICIES,
                   help="references without a prediction: skip (counted), score as empty text, or error")
    p.add_argument("--no-plots", action="store_true", help="no confusion-matrix PNGs")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from mu_llama.eval import evaluate, evaluate_baselines, load_predictions, load_references
    from mu_llama.eval.report import comparison_markdown

    if bool(args.pred) == bool(args.baselines):
        raise ConfigError("give either --pred PRED.jsonl or --baselines")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None
    kwargs = {"metrics": metrics, "mode": args.mode, "missing": args.missing}
    if args.baselines:
        refs = load_references(args.corpus)
        reports = evaluate_baselines(refs, split=args.split, train_split=args.train_split, **kwargs)
        for name, rep in reports.items():
            print(rep.to_markdown())
            if args.out:
                rep.save(Path(args.out) / name, plots=not args.no_plots)
        table = comparison_markdown(reports)
        print(table)
        if args.out:
            (Path(args.out) / "baselines.md").write_text(table, encoding="utf-8")
    else:
        refs = load_references(args.corpus, split=args.split)
        report = evaluate(load_predictions(args.pred), refs, name=Path(args.pred).stem, **kwargs)
        print(report.to_markdown())
        if args.out:
            report.save(args.out, plots=not args.no_plots)
    if args.out:
        print(f"report written to {args.out}", file=sys.stderr)
    return 0
