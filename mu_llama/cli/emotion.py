"""`mu-llama emotion AUDIO|TEXT [--json] [--explain]`: Valence-Arousal-Dominance of an audio file or a text.

An argument that names an existing file (or ends in an audio suffix) is read as audio; anything else is text.
Values are derived estimates (see mu_llama/emotion), each axis in [-1, 1].
"""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("emotion", help="valence/arousal/dominance of audio or text",
                              description="Estimate Valence-Arousal-Dominance (each in [-1, 1]) of an audio file "
                                          "or a text. Estimates are derived, not human-annotated.")
    p.add_argument("input", help="audio file path, or text (quote it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--explain", action="store_true",
                   help="text: the matched lexicon evidence; audio: the musical cues heard (tempo, density, ...)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mu_llama.emotion import estimate_text, looks_like_audio
    from mu_llama.emotion.audio import read_audio

    extra: dict = {}
    if looks_like_audio(args.input):
        vad, cues = read_audio(args.input)
        extra["input_kind"] = "audio"
        if args.explain and cues is not None:
            extra["audio_cues"] = cues
    else:
        est = estimate_text(args.input)
        vad = est.vad
        extra["input_kind"] = "text"
        if args.explain:
            extra.update(music_terms=list(est.music_terms), nrc=list(est.nrc_hits),
                         vader_compound=est.vader_compound, evidence_weight=est.weights)
    if args.json:
        print(json.dumps({**vad.to_dict(), **extra}))
    else:
        print(f"valence   {vad.valence:+.3f}\narousal   {vad.arousal:+.3f}\ndominance {vad.dominance:+.3f}")
        for k, v in extra.items():
            if k != "input_kind":
                print(f"{k}: {v}")
    return 0
