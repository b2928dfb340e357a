"""`mu-llama corpus build|stats|assemble`: the open music-caption corpus (renders of music21-corpus works and
popular-style arrangements of their melodies) with fact sheets, captions and QA pairs."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("corpus", help="build the synthetic music-caption corpus, or describe one")
    sub = p.add_subparsers(dest="corpus_cmd", metavar="CMD", required=True)

    from mu_llama.corpus.build import ALL_STYLES, KINDS
    from mu_llama.corpus.sources import COLLECTIONS

    b = sub.add_parser("build", help="render clips (resumable: finished clips are kept) and assemble the dataset")
    b.add_argument("--out", required=True, help="output folder (e.g. data/corpus)")
    b.add_argument("--clips", type=int, default=6600, help="total clips in the corpus (default 6600)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--collections", nargs="+", default=list(COLLECTIONS), metavar="NAME",
                   help=f"music21 collections to draw from: {', '.join(COLLECTIONS)}")
    b.add_argument("--styles", nargs="+", default=list(ALL_STYLES), metavar="STYLE",
                   help=f"styles to include: {', '.join(ALL_STYLES)}")
    b.add_argument("--arrangement-share", type=float, default=0.45, help="share of arrangement clips (default 0.45)")
    b.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS,
                   help="build only these streams now; the plan (and so the final corpus) does not change")
    b.add_argument("--limit", type=int, default=None, help="build at most this many planned clips this run")
    b.add_argument("--no-assemble", action="store_true", help="skip writing manifests and the DatasetDict")
    b.set_defaults(func=run)

    s = sub.add_parser("stats", help="clips, hours, works per split and fact distributions; writes docs/corpus/")
    s.add_argument("dir", help="a corpus folder made by `corpus build`")
    s.add_argument("--docs", default="docs/corpus", help="where stats.md and the PNG charts go")
    s.add_argument("--examples", type=int, default=3, help="spectrogram examples per style (0: none)")
    s.set_defaults(func=run)

    a = sub.add_parser("assemble", help="rewrite manifests + dataset from the finished clips in DIR")
    a.add_argument("dir")
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.corpus_cmd == "build":
        from mu_llama.corpus.build import BuildOptions, build_corpus

        opts = BuildOptions(out=args.out, clips=args.clips, seed=args.seed, workers=args.workers,
                            collections=tuple(args.collections), styles=tuple(args.styles),
                            arrangement_share=args.arrangement_share, kinds=tuple(args.kinds), limit=args.limit,
                            assemble=not args.no_assemble)
        rep = build_corpus(opts)
        hours = rep.audio_seconds / 3600
        rate = rep.built / rep.seconds if rep.seconds else 0.0
        print(f"planned {rep.planned}, built {rep.built}, already done {rep.skipped}, failed {rep.failed} "
              f"in {rep.seconds:.0f} s ({rate:.2f} clips/s, {hours:.2f} h of audio); splits {rep.per_split}")
        return 0
    if args.corpus_cmd == "assemble":
        from pathlib import Path

        from mu_llama.corpus.build import assemble

        print(assemble(Path(args.dir)))
        return 0
    from mu_llama.corpus.stats import corpus_stats

    out = corpus_stats(args.dir, docs=args.docs, examples=args.examples)
    print(f"wrote {out}")
    return 0
