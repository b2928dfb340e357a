"""`mu-llama eval-generator`: measure the embedded generator (emotion control, diversity / copying, speed, examples,
optionally text adherence), or pool earlier grid runs (--pool); the recipe is mu_llama.recipes.evaluate_generator."""

from __future__ import annotations

import argparse
import json

# flag -> (SamplingOptions field, type, help): --FLAG overrides that field for the grid
SAMPLING_FLAGS: dict[str, tuple[type, str]] = {
    "mode_prior": (float, "override SamplingOptions.mode_prior"),
    "tempo_prior_bins": (float, "override SamplingOptions.tempo_prior_bins (0 = the model's own tempo)"),
    "plan_width": (float, "override SamplingOptions.plan_width"),
    "plan_pull": (float, "override SamplingOptions.plan_pull"),
    "residual_slope": (float, "override SamplingOptions.residual_slope"),
}


def add_parser(subparsers) -> None:
    from mu_llama.generate.sampling import MODE_CONTROLS, MODE_DRAWS, VAD_CONTROLS
    from mu_llama.recipes import evaluate_generator as recipe

    C = recipe.GeneratorEvalConfig
    p = subparsers.add_parser("eval-generator", help="measure the embedded generator: emotion control, diversity, "
                                                     "speed (or pool earlier grid runs)",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="generator folder (default: the bundled one)")
    p.add_argument("--out", default=C.out)
    p.add_argument("--levels", type=int, default=C.levels)
    p.add_argument("--seed-offset", type=int, default=C.seed_offset,
                   help="grid cell i uses seed offset + i (another draw)")
    p.add_argument("--duration", type=float, default=C.duration)
    p.add_argument("--data", default=C.data, help="training data (for the copying check)")
    p.add_argument("--no-performance", action="store_true", help="grid without the arousal performance layer")
    for name, (typ, text) in SAMPLING_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None, help=text)
    p.add_argument("--mode-control", choices=MODE_CONTROLS, default=None, help="override SamplingOptions.mode_control")
    p.add_argument("--vad-control", choices=VAD_CONTROLS, default=None,
                   help="override SamplingOptions.vad_control (plan: rule-inverting header planner; priors: one "
                        "axis per header slot)")
    p.add_argument("--plan-axis-weights", type=float, nargs=3, default=None, metavar=("V", "A", "D"),
                   help="override SamplingOptions.plan_axis_weights")
    p.add_argument("--plan-clarity", type=int, choices=(0, 1), default=None,
                   help="override SamplingOptions.plan_clarity")
    p.add_argument("--plan-heard", type=int, choices=(0, 1), default=None,
                   help="override SamplingOptions.plan_heard (1: plan on heard cues, 0: on the score's cues)")
    p.add_argument("--mode-draw", choices=MODE_DRAWS, default=None, help="override SamplingOptions.mode_draw")
    p.add_argument("--skip", nargs="*", default=[], choices=recipe.SECTIONS)
    p.add_argument("--examples-out", default=C.examples_out)
    p.add_argument("--text-adherence", metavar="MODEL", default=None,
                   help="also caption generated audio with this understanding model (e.g. mu-llama-mini)")
    p.add_argument("--adherence-seeds", type=int, default=C.adherence_seeds,
                   help="text adherence: seeds per prompt (default 2)")
    p.add_argument("--pool", nargs="+", metavar="DIR", default=None,
                   help="only pool the grid_rows.json of earlier grid runs (other draws) into --out: rows, "
                        "control.json and the scatter plots")
    p.set_defaults(func=run)


def sampling_overrides(args: argparse.Namespace) -> dict:
    """The SamplingOptions fields that flags set (unset flags leave the options' defaults)."""
    given = {name: getattr(args, name) for name in (*SAMPLING_FLAGS, "mode_control", "vad_control", "mode_draw")}
    given["plan_heard"] = None if args.plan_heard is None else bool(args.plan_heard)
    given["plan_clarity"] = None if args.plan_clarity is None else bool(args.plan_clarity)
    given["plan_axis_weights"] = None if args.plan_axis_weights is None else tuple(args.plan_axis_weights)
    return {k: v for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from mu_llama.recipes.evaluate_generator import GeneratorEvalConfig, evaluate_generator, pool_grids

    if args.pool:
        print(json.dumps(pool_grids(args.pool, args.out)["spearman_audio_estimator"]))
        return 0
    evaluate_generator(GeneratorEvalConfig(
        checkpoint=args.checkpoint, out=args.out, levels=args.levels, seed_offset=args.seed_offset,
        duration=args.duration, data=args.data, performance=not args.no_performance,
        sampling=sampling_overrides(args), skip=tuple(args.skip), examples_out=args.examples_out,
        text_adherence=args.text_adherence, adherence_seeds=args.adherence_seeds))
    return 0
