"""`mu-llama generate --text "..." [--valence V --arousal A --dominance D] [--from-audio X [--shift-valence +0.5]]
   --duration S --out F.wav`

Writes F.wav and F.mid (same stem) with the embedded generator (CPU). Same seed, same options -> same output.
With --from-audio the VAD comes from the audio estimator (then shifted); with --caption-model the audio is also
captioned by an understanding model and the caption used as text when --text is not given.
Missing V/A/D axes (when some are given) default to 0; with none given and no --from-audio the VAD is unconditioned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate music from text and/or valence-arousal-dominance",
                              description="Emotion- and text-conditioned music generation (embedded CPU generator).")
    p.add_argument("--text", default=None, help="caption text (empty -> unconditional on text)")
    for ax in ("valence", "arousal", "dominance"):
        p.add_argument(f"--{ax}", type=float, default=None, help=f"{ax} in [-1, 1]")
    p.add_argument("--from-audio", default=None, metavar="AUDIO", help="take VAD (and a caption) from this audio")
    for ax in ("valence", "arousal", "dominance"):
        p.add_argument(f"--shift-{ax}", type=float, default=0.0, help=f"add to the {ax} taken from --from-audio")
    p.add_argument("--caption-model", default="mu-llama-mini",
                   help="understanding model that captions --from-audio (default mu-llama-mini; 'none' = VAD only)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--out", required=True, help="output WAV path (MIDI is written beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: model's)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="generator checkpoint directory (default: bundled)")
    p.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: FluidR3_GM)")
    p.add_argument("--mode-prior", type=float, default=None,
                   help="strength of valence -> major/minor at the mode header (default: model's; 0 = off)")
    p.add_argument("--mode-control", default=None, metavar="{set,prior}",
                   help="set: P(major) = sigmoid(mode_prior x valence) (default); prior: add it to the model's odds")
    p.add_argument("--tempo-prior-bins", type=float, default=None,
                   help="width (tempo bins) of the arousal -> tempo prior at the tempo header (default 1; 0 = off)")
    p.add_argument("--vad-control", default=None, metavar="{plan,priors}",
                   help="plan: invert the cue rules for all axes at the header (default); priors: one axis per slot")
    p.add_argument("--mode-draw", default=None, metavar="{reach,valence,residual}",
                   help="how the planner draws major/minor for the requested valence: reach = the mode the cue rules "
                        "need (default), valence = sigmoid(6 x valence), residual = for the valence left after tempo "
                        "and register")
    p.add_argument("--text-facts", default=None, metavar="{constrain,none}",
                   help="constrain: the facts the text states (instrument family, tempo class, mode, key, meter) "
                        "limit the header (default); none: the text steers through its embedding only")
    p.add_argument("--no-performance", action="store_true",
                   help="play the score as sampled (no arousal -> dynamics/articulation performance rules)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from mu_llama.emotion.vad import VAD
    from mu_llama.errors import ConfigError
    from mu_llama.generate import Conditioning, EmbeddedGenerator, vad_and_caption_from_audio
    from mu_llama.generate.api import check_duration
    from mu_llama.generate.sampling import SamplingOptions

    # everything the user typed is checked before any audio is heard or music made
    check_duration(args.duration)
    out_path = _check_out(args.out)
    overrides = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("temperature", args.temperature),
                                   ("top_k", args.top_k), ("mode_prior", args.mode_prior),
                                   ("mode_control", args.mode_control), ("tempo_prior_bins", args.tempo_prior_bins),
                                   ("vad_control", args.vad_control), ("text_facts", args.text_facts),
                                   ("mode_draw", args.mode_draw))
                 if v is not None}
    SamplingOptions(seed=args.seed, **overrides)  # validates each value (finite, in range, a valid choice)
    shift = (args.shift_valence, args.shift_arousal, args.shift_dominance)
    VAD(0.0, 0.0, 0.0).shifted(*shift)  # finite shifts
    given = [getattr(args, ax) for ax in ("valence", "arousal", "dominance")]
    text = args.text
    if args.from_audio:
        if any(g is not None for g in given):
            raise ConfigError("give either --from-audio or --valence/--arousal/--dominance, not both")
        vad, caption = vad_and_caption_from_audio(
            args.from_audio, shift=shift,
            caption_model=None if args.caption_model.lower() == "none" else args.caption_model)
        if text is None and caption:
            text = caption
    elif any(g is not None for g in given):
        vad = VAD(*[0.0 if g is None else g for g in given], source="user")
    else:
        vad = None
    gen = EmbeddedGenerator.load(args.checkpoint)
    opts = SamplingOptions(seed=args.seed, **gen.model.config.info.get("sampling_defaults", {}))
    opts = replace(opts, **overrides)
    cond = Conditioning(text, vad)
    out = gen.generate(cond, duration=args.duration, options=opts,
                       **({"performance": None} if args.no_performance else {}))
    wav, mid = out.save(out_path, soundfont=args.soundfont)
    summary = {"wav": str(wav), "midi": str(mid), "text": text, "vad": vad.to_dict() if vad else None,
               "seed": args.seed, "duration": args.duration, "tempo_bpm": round(out.piece.bpm, 1),
               "notes": len(out.piece.notes), "guidance_scale": opts.guidance_scale}
    print(json.dumps(summary) if args.json else
          f"wrote {wav} and {mid} ({len(out.piece.notes)} notes, {out.piece.bpm:.0f} bpm"
          f"{', ' + str(vad) if vad else ''})", file=sys.stdout)
    return 0


def _check_out(out: str) -> Path:
    """--out before any work: an audio suffix libsndfile writes, not a directory, in a folder we can create or write."""
    import os

    import soundfile as sf

    from mu_llama.errors import ConfigError

    path = Path(out).expanduser()
    formats = {f".{k.lower()}" for k in sf.available_formats()}
    if path.suffix.lower() not in formats:
        raise ConfigError(f"--out {out}: unknown audio suffix {path.suffix!r}; use .wav, .flac, .ogg or .mp3")
    if path.is_dir():
        raise ConfigError(f"--out {out}: is a directory")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write in {folder}")
    return path
