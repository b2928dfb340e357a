"""`mu-llama label SOURCE --out OUT`: caption a whole collection / auto-label a dataset (resumable; rerun to continue).

Exit codes: 0 every item labelled, 1 some items failed (see the errors file), 2 usage / configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "label", help="caption a folder / glob / file list / datasets dataset into JSONL, parquet or save_to_disk",
        description="Label every audio file of SOURCE with a caption and answers to a question set. Resumable: "
                    "rerun the same command after any interruption; finished rows are kept, nothing is duplicated. "
                    "Bad files go to an errors file and the exit code is 1.")
    p.add_argument("source", help="directory, glob ('data/**/*.mp3'), .txt/.lst file list, audio file, "
                                  "datasets save_to_disk dir, or hf:OWNER/NAME[:CONFIG] (hub)")
    p.add_argument("--out", required=True, help="OUT.jsonl, OUT.parquet, or a directory (datasets save_to_disk)")
    p.add_argument("--format", default="auto", choices=("auto", "jsonl", "parquet", "hf"))
    p.add_argument("--errors", help="errors JSONL (default: OUT's stem + .errors.jsonl)")
    p.add_argument("--work-dir", help="job state directory (default: OUT.work)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="registry name or checkpoint dir (default: the registry's default)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--question", action="append", default=[], metavar="NAME=TEXT",
                   help="add (or replace) a question; NAME becomes the answers column")
    g.add_argument("--questions-file", help="JSON object {name: question}")
    g.add_argument("--no-default-questions", action="store_true", help="ask only --question / --questions-file")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy (default, deterministic)")
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-vad", action="store_true", help="leave valence/arousal/dominance empty")
    g.add_argument("--labeler", metavar="MODULE:CALLABLE",
                   help="a custom labeler factory instead of the MuLlama model (see mu_llama.label.labelers)")
    g.add_argument("--labeler-arg", action="append", default=[], metavar="KEY=JSON",
                   help="keyword argument for --labeler (value parsed as JSON, else taken as a string)")
    g = p.add_argument_group("source")
    g.add_argument("--source-kind", default="auto", choices=("auto", "files", "dataset", "hub"))
    g.add_argument("--split", help="dataset split (default: all splits)")
    g.add_argument("--audio-column", help="dataset audio column (default: the first Audio feature)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--workers", type=int, default=4, help="decode workers (threads or processes)")
    g.add_argument("--decode-pool", default="thread", choices=("thread", "process"))
    g.add_argument("--prefetch", type=int, default=None, help="decoded clips held ahead of the model")
    g.add_argument("--bucket-batches", type=int, default=2, help="length bucketing span in batches (1 = off)")
    g.add_argument("--window-seconds", type=float, default=30.0)
    g.add_argument("--max-windows", type=int, default=0,
                   help="0 (default) hears every file whole; N > 0 hears files longer than window-seconds x N "
                        "as N spread-out windows (faster on very long files; rows record the windows heard)")
    g.add_argument("--max-duration", type=float, default=4 * 3600.0, help="longer files are errors (seconds; 0 = none)")
    g.add_argument("--commit-every", type=int, default=64, help="records per durable commit")
    g.add_argument("--commit-seconds", type=float, default=30.0, help="commit at least this often")
    g.add_argument("--cache", help="label cache file (default: ~/.cache/mu_llama/label_cache.sqlite)")
    g.add_argument("--no-cache", action="store_true")
    g.add_argument("--restart", action="store_true", help="discard a previous job made with other options")
    g.add_argument("--retry-errors", action="store_true", help="retry files recorded as errors by a previous run")
    g.add_argument("--embed-audio", action=argparse.BooleanOptionalAction, default=None,
                   help="parquet/hf: store audio bytes (default: only for dataset sources)")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--summary-json", help="also write the run summary as JSON here")
    g = p.add_argument_group("ray")
    g.add_argument("--engine", default="local", choices=("local", "ray"))
    g.add_argument("--ray-address", help="existing cluster (e.g. auto, ray://head:10001); default: start a local Ray")
    g.add_argument("--ray-actors", type=int, default=None, help="labeler actors (default: one per GPU, else 1)")
    g.add_argument("--ray-gpus-per-actor", type=float, default=None)
    p.set_defaults(func=run)


def _kv(items: list[str], what: str) -> dict:
    from mu_llama.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def build_spec(args):
    """The LabelerSpec the flags describe (the model is loaded later, once per process / actor)."""
    from mu_llama.errors import ConfigError
    from mu_llama.label import DEFAULT_QUESTIONS, LabelerSpec

    if args.labeler:
        kwargs = {}
        for k, v in _kv(args.labeler_arg, "--labeler-arg").items():
            try:
                kwargs[k] = json.loads(v)
            except json.JSONDecodeError:
                kwargs[k] = v
        return LabelerSpec(args.labeler, kwargs)
    questions = {} if args.no_default_questions else dict(DEFAULT_QUESTIONS)
    if args.questions_file:
        with open(args.questions_file, encoding="utf-8") as f:
            extra = json.load(f)
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ConfigError(f"{args.questions_file}: expected a JSON object {{name: question}}")
        questions.update(extra)
    questions.update(_kv(args.question, "--question"))
    decoding = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                  ("top_p", args.top_p), ("seed", args.seed)) if v is not None}
    kwargs = {"questions": questions, "decoding": decoding, "vad": not args.no_vad}
    if args.model:
        kwargs["model"] = args.model
    if args.device:
        kwargs["device"] = args.device
    return LabelerSpec(kwargs=kwargs)


def run(args) -> int:
    from mu_llama.label import LabelOptions, label_collection

    options = LabelOptions(
        batch_size=args.batch_size, workers=args.workers, decode_pool=args.decode_pool, prefetch=args.prefetch,
        bucket_batches=args.bucket_batches, window_seconds=args.window_seconds, max_windows=args.max_windows,
        max_duration=args.max_duration or None, commit_every=args.commit_every, commit_seconds=args.commit_seconds,
        retry_errors=args.retry_errors, restart=args.restart, format=args.format, embed_audio=args.embed_audio,
        progress=not args.no_progress, engine=args.engine, ray_address=args.ray_address,
        ray_concurrency=args.ray_actors, ray_gpus_per_actor=args.ray_gpus_per_actor)
    cache = None if args.no_cache else (args.cache or ...)
    kwargs = {} if cache is ... else {"cache": cache}
    summary = label_collection(args.source, args.out, build_spec(args), options, work_dir=args.work_dir,
                               errors_path=args.errors, source_kind=args.source_kind, split=args.split,
                               audio_column=args.audio_column, **kwargs)
    print(summary.render())
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary.to_dict(), f, indent=2)
    sys.stdout.flush()
    return 1 if summary.errors else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mu_llama.cli.label ...`: this verb alone (starts fast: no other verb's imports)."""
    from mu_llama.errors import MuLlamaError

    parser = argparse.ArgumentParser(prog="mu-llama")
    add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["label", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except MuLlamaError as e:
        print(f"mu-llama label: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (finished rows are saved; rerun to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
