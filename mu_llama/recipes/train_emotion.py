"""Fit the audio VAD estimator on rendered clips of the generator's training data.

For each row (tokens + derived VAD label) the first `clip_s` seconds are rendered with fluidsynth, featurised, and
cached in <cache>.npz (re-running skips clips already done). Rows come from train.jsonl (fit) and heldout.jsonl
(held-out works: reported metrics). Ridge alphas are picked on a work-grouped split of the training clips.
--estimator cues (default) fits the v3 CueVAD (boosted trees per cue + the rules), --estimator ridge the v2 RidgeVAD.

    mu-llama train-emotion --data data/generator/all --n-train 2000 --n-heldout 142 --out mu_llama/assets/emotion
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.emotion.audio import AXIS_FEATURES, CUES, CueVAD, RidgeVAD
from mu_llama.emotion.features import FEATURE_NAMES, N_FEATURES_V2, SR, audio_features
from mu_llama.emotion.trees import TreeEnsemble
from mu_llama.errors import ConfigError, choice_error

ESTIMATORS = ("cues", "ridge")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def render_rows(rows: list[dict], cache: Path, clip_s: float = 12.0, progress: bool = True) -> dict[str, np.ndarray]:
    """key -> rendered clip (int16 at SR), rendering only rows not yet in the cache (<cache>.npz, resumable).

    Caching the audio (not features) lets a new feature set be evaluated without re-rendering."""
    from tqdm import tqdm

    from mu_llama.generate.render import render_piece

    done: dict[str, np.ndarray] = {}
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        done = {k: z[f"a{i}"] for i, k in enumerate(z["keys"].tolist())}
    keys = [row_key(r, i) for i, r in enumerate(rows)]
    todo = [i for i, k in enumerate(keys) if k not in done]
    for n, i in enumerate(tqdm(todo, desc="render", disable=not progress)):
        w = render_piece(clip_piece(rows[i], clip_s), sample_rate=SR, duration=clip_s)
        done[keys[i]] = np.clip(np.round(w * 32767), -32768, 32767).astype(np.int16)
        if (n + 1) % 100 == 0 or n + 1 == len(todo):
            ks = list(done)
            np.savez(cache, keys=np.array(ks), **{f"a{j}": done[k] for j, k in enumerate(ks)})
    return {k: done[k] for k in keys}


def row_key(r: dict, i: int) -> str:
    key = f"{r['work_id']}|{r['excerpt']}|{i}"
    return key if r.get("perform_arousal") is None else f"{key}|perf{r['perform_arousal']:+.3f}"


def clip_piece(row: dict, clip_s: float = 12.0):
    """The row's first `clip_s` seconds as a Piece; a row with "perform_arousal" is played through the generator's
    performance layer at that arousal (velocity, accents, articulation: mu_llama.generate.performance)."""
    from mu_llama.generate.performance import perform
    from mu_llama.generate.symbolic import Piece
    from mu_llama.generate.tokenizer import Tokenizer

    p = Tokenizer().decode(row["tokens"])
    clip = Piece([n for n in p.notes if n.onset < clip_s * p.bpm / 60.0], bpm=p.bpm, meter=p.meter, program=p.program)
    return perform(clip, row.get("perform_arousal"))


def performed_copies(rows: list[dict], seed: int = 0) -> list[dict]:
    """Each row again, played at a random arousal in [-1, 1] by the performance layer (augmentation: staccato /
    legato and accents change how loud and how fast a clip sounds without changing its notated tempo, and the
    generator plays its scores so; an estimator trained on deadpan renderings only hears performed staccato as
    slower and quieter)."""
    rng = np.random.default_rng(seed + 1)
    return [dict(r, perform_arousal=round(float(a), 3)) for r, a in zip(rows, rng.uniform(-1, 1, len(rows)))]


def featurise_rows(rows: list[dict], cache: Path, clip_s: float = 12.0, progress: bool = True,
                   clip_targets: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X (N, F), Y (N, 3), work ids) from the rendered clips (audio cache `cache`, see render_rows)."""
    from tqdm import tqdm

    audio = render_rows(rows, cache, clip_s, progress)
    fcache = cache.with_name(cache.stem + ".features.npz")        # features of this feature set, by clip key
    known: dict[str, np.ndarray] = {}
    if fcache.exists():
        z = np.load(fcache, allow_pickle=False)
        if tuple(z["names"].tolist()) == FEATURE_NAMES:
            known = dict(zip(z["keys"].tolist(), z["X"]))
    for k in tqdm([k for k in audio if k not in known], desc="features", disable=not progress):
        known[k] = audio_features(audio[k].astype(np.float32) / 32767.0, SR)
    np.savez(fcache, names=np.array(FEATURE_NAMES), keys=np.array(list(known)), X=np.stack(list(known.values())))
    X = np.stack([known[k] for k in audio])
    Y = np.array([clip_target(r, clip_s) if clip_targets else [r["vad"][a] for a in ("valence", "arousal", "dominance")]
                  for r in rows], np.float32)
    return X, Y, [r["work_id"] for r in rows]


def clip_major_share(rows: list[dict], clip_s: float = 12.0) -> np.ndarray:
    """(N,) major share of the notes in each rendered clip (score side, Krumhansl-Kessler windows)."""
    from mu_llama.generate.symbolic import major_share

    return np.array([major_share(clip_piece(r, clip_s)) for r in rows])


def clip_cues(row: dict, clip_s: float = 12.0):
    """MusicCues of the *rendered clip* (clip_piece: its first `clip_s` seconds, performed when the row says so);
    None when it has no notes."""
    from mu_llama.emotion.targets import FAMILY_POWER, TEXTURE_OF, MusicCues
    from mu_llama.generate.symbolic import major_share

    clip = clip_piece(row, clip_s)
    notes = clip.notes
    if not notes:
        return None
    f = row["facts"]
    secs = min(clip_s, max(clip.seconds, 1e-6))
    return MusicCues(major_share=major_share(clip), tempo_bpm=clip.bpm, notes_per_second=len(notes) / secs,
                     mean_velocity=float(np.mean([n.velocity for n in notes])),
                     mean_pitch=float(np.mean([n.pitch for n in notes])), texture=TEXTURE_OF[f["texture"]],
                     family_power=FAMILY_POWER.get(f["family"], 0.0))


def text_part(row: dict) -> tuple[float, float, float]:
    """The caption-text part of a row's label: (vad - 0.8 vad_facts) / 0.2 (mu_llama.generate.data blends so)."""
    vad, vf = row["vad"], row["vad_facts"]
    return tuple((vad[a] - 0.8 * vf[a]) / 0.2 for a in ("valence", "arousal", "dominance"))


def clip_target(row: dict, clip_s: float = 12.0) -> tuple[float, float, float]:
    """The derived VAD of the *rendered clip*: 0.8 x cue rules on the clip's own notes + 0.2 x the caption's text VAD.

    The row's stored label describes the whole excerpt (up to 16 bars), but only its first `clip_s` seconds are
    rendered; at slow tempi that is a third of it, and the clip's score mode agrees with the excerpt's only at 0.65
    Spearman (held-out works). Labelling the clip with its own facts removes that label noise."""
    from mu_llama.emotion.targets import vad_from_cues

    cues, vad = clip_cues(row, clip_s), row["vad"]
    if cues is None or row.get("vad_facts") is None:
        return vad["valence"], vad["arousal"], vad["dominance"]
    facts, text = vad_from_cues(cues).as_tuple(), text_part(row)
    return tuple(float(np.clip(0.8 * facts[i] + 0.2 * text[i], -1, 1)) for i in range(3))


def cue_matrix(rows: list[dict], clip_s: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """(C (N, 7) clip cues in audio.CUES order, T (N, 3) text parts) for rows with notes and a facts label; rows
    without get NaN (the fit skips them)."""
    C, T = np.full((len(rows), 7), np.nan), np.full((len(rows), 3), np.nan)
    for i, r in enumerate(rows):
        c = clip_cues(r, clip_s)
        if c is None or r.get("vad_facts") is None:
            continue
        C[i] = (np.log2(max(c.tempo_bpm, 1.0)), np.log2(max(c.notes_per_second, 0.1)), c.mean_velocity, c.mean_pitch,
                c.major_share, c.texture, c.family_power)
        T[i] = text_part(r)
    return C, T


def _pick_alpha(X, y, groups, feature_names, axis_features=None) -> float:
    """Ridge alpha by a work-grouped 80/20 split of the training clips."""
    best = None
    for alpha in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        m = RidgeVAD.fit(X[groups != 0], y[groups != 0], alpha, feature_names, axis_features=axis_features)
        err = float(((m.predict(X[groups == 0]) - y[groups == 0]) ** 2).mean())
        if best is None or err < best[1]:
            best = (alpha, err)
    return best[0]


def _work_groups(work_ids) -> np.ndarray:
    return np.array([int(hashlib.sha1(g.encode()).hexdigest(), 16) % 5 for g in work_ids])   # stable across runs


def fit_cues(Xtr, rows_tr, gtr, clip_s: float = 12.0, feature_names=FEATURE_NAMES) -> CueVAD:
    """The v3 estimator: one boosted-tree regressor per cue on the clip's own cues, a ridge for the text part."""
    C, T = cue_matrix(rows_tr, clip_s)
    ok = ~np.isnan(C).any(1)
    X, C, T = Xtr[ok], C[ok], T[ok]
    trees = {name: TreeEnsemble.fit(X, C[:, j]) for j, name in enumerate(CUES)}
    groups = _work_groups(np.asarray(gtr)[ok])
    alpha = _pick_alpha(X, T, groups, feature_names)
    return CueVAD(tuple(feature_names), trees, RidgeVAD.fit(X, T, alpha, feature_names), {"text_alpha": alpha})


def cue_spearman(model: CueVAD, X, rows: list[dict], clip_s: float = 12.0) -> dict[str, float]:
    """Per cue: Spearman of the estimator's reading with the clip's own cue (rows with notes only)."""
    C, _ = cue_matrix(rows, clip_s)
    ok = ~np.isnan(C).any(1)
    P = model.predict_cues(X)
    return {c: round(_spearman(P[ok, j], C[ok, j]), 3) for j, c in enumerate(CUES)}


def heldout_metrics(model, Xte, Yte) -> dict:
    P = model.predict(Xte)
    metrics = {"n_heldout": len(Xte)}
    for a, ax in enumerate(("valence", "arousal", "dominance")):
        metrics[ax] = {"spearman": round(_spearman(P[:, a], Yte[:, a]), 3),
                       "pearson": round(float(np.corrcoef(P[:, a], Yte[:, a])[0, 1]), 3),
                       "mae": round(float(np.abs(P[:, a] - Yte[:, a]).mean()), 3)}
    return metrics


def fit_and_report(Xtr, Ytr, gtr, Xte, Yte, feature_names=FEATURE_NAMES,
                   axis_features: dict | None = None) -> tuple[RidgeVAD, dict]:
    """The v2 ridge estimator and its held-out metrics."""
    alpha = _pick_alpha(Xtr, Ytr, _work_groups(gtr), feature_names, axis_features)
    model = RidgeVAD.fit(Xtr, Ytr, alpha, feature_names, axis_features=axis_features)
    metrics = {"alpha": alpha, "n_train": len(Xtr), **heldout_metrics(model, Xte, Yte)}
    return model, metrics


@dataclass(frozen=True)
class EmotionTrainConfig:
    data: str                          # folder with train.jsonl / heldout.jsonl (mu_llama.recipes.generator_data)
    n_train: int = 900
    n_heldout: int = 150
    clip_s: float = 12.0
    seed: int = 0
    out: str = "mu_llama/assets/emotion"
    clip_targets: bool = True          # False: label clips with the whole excerpt's VAD (the v1 behaviour)
    axis_features: bool = True         # False: fit valence on every feature (v1) instead of audio.AXIS_FEATURES
    n_features: int | None = None      # the first N features; None: all for cues, N_FEATURES_V2 (the v2 set) for ridge
    perform_augment: bool = False      # add every training clip played by the performance layer at a random arousal
    estimator: str = "cues"            # cues: v3, boosted trees per cue + the rules; ridge: v2, features -> VAD

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise choice_error("estimator", self.estimator, ESTIMATORS)
        if self.n_train < 1 or self.n_heldout < 1 or self.clip_s <= 0:
            raise ConfigError("n_train and n_heldout must be >= 1 and clip_s > 0")
        if self.n_features is not None and not 1 <= self.n_features <= len(FEATURE_NAMES):
            raise ConfigError(f"n_features must be in 1..{len(FEATURE_NAMES)}, got {self.n_features}")


def train_emotion(cfg: EmotionTrainConfig) -> dict:
    """Render, featurise, fit, save the estimator to `cfg.out`; returns its held-out metrics."""
    d = Path(cfg.data)
    rng = np.random.default_rng(cfg.seed)

    def pick(name, n):
        rows = [json.loads(x) for x in open(d / name)]
        idx = rng.permutation(len(rows))[:n]
        return [rows[i] for i in sorted(idx)]

    tr, te = pick("train.jsonl", cfg.n_train), pick("heldout.jsonl", cfg.n_heldout)
    Xtr, Ytr, gtr = featurise_rows(tr, d / "audio_clips_train.npz", cfg.clip_s, clip_targets=cfg.clip_targets)
    Xte, Yte, _ = featurise_rows(te, d / "audio_clips_heldout.npz", cfg.clip_s, clip_targets=cfg.clip_targets)
    if cfg.perform_augment:
        tr_perf, te_perf = performed_copies(tr, cfg.seed), performed_copies(te, cfg.seed + 1)
        Xp, Yp, gp = featurise_rows(tr_perf, d / "audio_clips_train_perf.npz", cfg.clip_s)
        Xtr, Ytr, gtr, tr = np.concatenate([Xtr, Xp]), np.concatenate([Ytr, Yp]), list(gtr) + list(gp), tr + tr_perf
        Xtp, Ytp, _ = featurise_rows(te_perf, d / "audio_clips_heldout_perf.npz", cfg.clip_s)
    nf = cfg.n_features or (len(FEATURE_NAMES) if cfg.estimator == "cues" else N_FEATURES_V2)
    axis = AXIS_FEATURES if cfg.axis_features else None
    if cfg.estimator == "cues":
        model = fit_cues(Xtr[:, :nf], tr, gtr, cfg.clip_s, FEATURE_NAMES[:nf])
        metrics = {"n_train": len(Xtr), **heldout_metrics(model, Xte[:, :nf], Yte),
                   "cues_spearman": cue_spearman(model, Xte[:, :nf], te, cfg.clip_s)}
    else:
        model, metrics = fit_and_report(Xtr[:, :nf], Ytr, gtr, Xte[:, :nf], Yte, FEATURE_NAMES[:nf], axis)
    if cfg.perform_augment:
        metrics["performed_heldout"] = heldout_metrics(model, Xtp[:, :nf], Ytp)
        if cfg.estimator == "cues":
            metrics["performed_heldout"]["cues_spearman"] = cue_spearman(model, Xtp[:, :nf], te_perf, cfg.clip_s)
    P = model.predict(Xte[:, :nf])
    score_major = np.array([r["facts"]["major_share"] for r in te])
    metrics["valence_vs_score_major_share_spearman"] = round(_spearman(P[:, 0], score_major), 3)
    clip_major = clip_major_share(te, cfg.clip_s)
    metrics["valence_vs_clip_score_major_share_spearman"] = round(_spearman(P[:, 0], clip_major), 3)
    score_tempo = np.array([r["facts"]["tempo_bpm"] for r in te])
    metrics["arousal_vs_score_tempo_spearman"] = round(_spearman(P[:, 1], score_tempo), 3)
    model.info = {**model.info, "estimator": cfg.estimator, "metrics_heldout_works": metrics,
                  "features": list(FEATURE_NAMES[:nf]), "clip_s": cfg.clip_s,
                  "targets": ("0.8 vad_from_cues(facts of the rendered clip's notes) + 0.2 vad_from_text(caption): "
                              "derived, not annotated" if cfg.clip_targets else
                              "0.8 vad_from_cues(facts of the whole excerpt) + 0.2 vad_from_text(caption)"),
                  "data": str(d), "sample_rate": SR, "perform_augment": cfg.perform_augment,
                  "axis_features": axis if cfg.estimator == "ridge" else None,
                  "trees": "sklearn HistGradientBoostingRegressor, 300 rounds, learning rate 0.05, 15 leaves"
                  if cfg.estimator == "cues" else None}
    model.save(cfg.out)
    return metrics
