"""`mu-llama train-emotion --data DIR`: fit the audio VAD estimator on rendered clips of the generator's training data
(the recipe mu_llama.recipes.train_emotion); prints the held-out metrics as JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from mu_llama.emotion.features import FEATURE_NAMES, N_FEATURES_V2
    from mu_llama.recipes import train_emotion as recipe

    C = recipe.EmotionTrainConfig
    p = subparsers.add_parser("train-emotion", help="fit the audio valence/arousal/dominance estimator",
                              description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="folder with train.jsonl / heldout.jsonl (`mu-llama generator-data`); the rendered clips are "
                        "cached there")
    p.add_argument("--n-train", type=int, default=C.n_train)
    p.add_argument("--n-heldout", type=int, default=C.n_heldout)
    p.add_argument("--clip-s", type=float, default=C.clip_s)
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--out", default=C.out)
    p.add_argument("--excerpt-targets", dest="clip_targets", action="store_false",
                   help="label clips with the whole excerpt's VAD (the v1 behaviour) instead of the clip's own")
    p.add_argument("--all-features-for-valence", dest="axis_features", action="store_false",
                   help="fit valence on every feature (v1) instead of audio.AXIS_FEATURES")
    p.add_argument("--n-features", type=int, default=None,
                   help=f"use the first N features (default: all {len(FEATURE_NAMES)} for cues, {N_FEATURES_V2} "
                        "(the v2 set) for ridge; 18 = the v1 set)")
    p.add_argument("--perform-augment", action="store_true",
                   help="add a copy of every training clip played by the performance layer at a random arousal "
                        "(held-out metrics are then also reported on performed held-out clips)")
    p.add_argument("--estimator", choices=recipe.ESTIMATORS, default=C.estimator,
                   help="cues: v3, boosted trees per cue + the rules (default); ridge: v2, features -> VAD directly")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mu_llama.recipes.train_emotion import EmotionTrainConfig, train_emotion

    cfg = EmotionTrainConfig(data=args.data, n_train=args.n_train, n_heldout=args.n_heldout, clip_s=args.clip_s,
                             seed=args.seed, out=args.out, clip_targets=args.clip_targets,
                             axis_features=args.axis_features, n_features=args.n_features,
                             perform_augment=args.perform_augment, estimator=args.estimator)
    print(json.dumps(train_emotion(cfg), indent=1))
    return 0
