"""VAD from audio, estimated from handcrafted audio features (mu_llama.emotion.features).

Both estimators are trained on rendered clips whose targets are *derived* labels: 0.8 x vad_from_cues(the clip's score
facts) + 0.2 x vad_from_text(caption) (mu_llama.emotion.targets / .text). They estimate "what the documented cue rules
would say about this clip" from the sound alone; they are not fitted to listener ratings (none exist offline).

- `CueVAD` (v3, the default): reads the rules' *cues* from the sound (tempo, note density, loudness as velocity,
  register, major share, texture, instrument power), one boosted-tree regressor each (mu_llama.emotion.trees), then
  applies the rules themselves; a ridge on the same features adds the caption-text part. Cross-talk between the axes
  is then only what the rules put there, and the measured cues are reported too (`predict_cues`).
  Checkpoint: mu_llama/assets/emotion/audio_vad_cues.{json,safetensors}.
- `RidgeVAD` (v2): one ridge regression from the first 36 features straight to the three axes.
  Checkpoint: audio_vad.{json,safetensors}.
The learned mu-llama-mini encoder's pooled features were tried as extra inputs and did not help (held-out arousal
0.695 -> 0.657..0.710 by layer): its pretraining targets carry little tempo or mode.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.emotion.features import FEATURE_NAMES, SR, audio_features
from mu_llama.emotion.targets import MusicCues, vad_from_cues
from mu_llama.emotion.trees import TreeEnsemble, read_tree_checkpoint
from mu_llama.emotion.vad import VAD
from mu_llama.errors import CheckpointError

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "emotion"


# Per-axis feature subsets (the cues the facts rules name for an axis; an axis not listed uses every feature).
# v1 tried subsets for all three axes: on held-out clips arousal lost (0.66 -> 0.57), because timbre and flux carry
# tempo/density evidence the weak tempo feature misses. v2 restricts *valence* only, to mode, tempo and register cues
# (the rules: valence <- mode, tempo, register): held-out valence 0.625 -> 0.64 with clip targets, and loudness /
# timbre (which follow dominance and the instrument) can no longer move the valence reading.
VALENCE_FEATURES: tuple[str, ...] = (
    "kk_major", "kk_minor", "mode_diff", "major_share", "tempo_log2", "onset_rate", "pitch_centroid",
    "tempo_centroid", "tgram_1", "tgram_2", "tgram_3", "tgram_4", "tgram_5") + tuple(f"deg_{i}" for i in range(12))
AXIS_FEATURES: dict[str, tuple[str, ...]] = {"valence": VALENCE_FEATURES}


@dataclass
class RidgeVAD:
    feature_names: tuple[str, ...]
    mean: np.ndarray       # (F,)
    std: np.ndarray        # (F,)
    weight: np.ndarray     # (F, 3)
    bias: np.ndarray       # (3,)
    info: dict

    @classmethod
    def fit(cls, X: np.ndarray, Y: np.ndarray, alpha: float = 1.0, feature_names=FEATURE_NAMES,
            info: dict | None = None, axis_features: dict[str, tuple[str, ...]] | None = None) -> "RidgeVAD":
        """X (N, F) features, Y (N, 3) targets. Closed-form ridge on standardised features; with `axis_features`
        (e.g. AXIS_FEATURES) each axis uses only its subset (the other weights stay 0)."""
        mean, std = X.mean(0), X.std(0) + 1e-6
        Z = (X - mean) / std
        bias = Y.mean(0)
        W = np.zeros((Z.shape[1], 3))
        names = list(feature_names)
        for a, axis in enumerate(("valence", "arousal", "dominance")):
            subset = axis_features.get(axis, ()) if axis_features else ()
            cols = [names.index(f) for f in subset if f in names] or list(range(Z.shape[1]))
            Za = Z[:, cols]
            W[cols, a] = np.linalg.solve(Za.T @ Za + alpha * np.eye(len(cols)), Za.T @ (Y[:, a] - bias[a]))
        return cls(tuple(feature_names), mean.astype(np.float32), std.astype(np.float32), W.astype(np.float32),
                   bias.astype(np.float32), info or {})

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, 3) clipped to [-1, 1]."""
        return np.clip(((X - self.mean) / self.std) @ self.weight + self.bias, -1.0, 1.0)

    def save(self, directory: str | Path, name: str = "audio_vad") -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias},
                  str(d / f"{name}.safetensors"))
        (d / f"{name}.json").write_text(json.dumps({"feature_names": list(self.feature_names), "info": self.info},
                                                   indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path = ASSET_DIR, name: str = "audio_vad") -> "RidgeVAD":
        meta, names, t, st = _read_checkpoint(directory, name, "audio VAD regressor")
        if missing := {"mean", "std", "weight", "bias"} - set(t):
            raise CheckpointError(st, f"missing regressor tensors {sorted(missing)}")
        if t["weight"].shape != (len(names), 3):
            raise CheckpointError(st, f"weights {t['weight'].shape} do not match the feature set ({len(names)}, 3)")
        return cls(names, t["mean"], t["std"], t["weight"], t["bias"], meta.get("info", {}))


def _read_checkpoint(directory: str | Path, name: str, what: str) -> tuple[dict, tuple[str, ...], dict, Path]:
    return read_tree_checkpoint(directory, name, what, FEATURE_NAMES, "mu-llama train-emotion")


# What CueVAD reads from the sound, in MusicCues units (tempo and density as log2: trees see octave steps evenly).
CUES = ("tempo_log2", "density_log2", "mean_velocity", "mean_pitch", "major_share", "texture", "family_power")


def cues_to_vad(C: np.ndarray) -> np.ndarray:
    """(N, 7) cue rows (CUES order) -> (N, 3) VAD by the documented rules (values clipped to their ranges first)."""
    out = []
    for t, d, vel, pitch, major, texture, power in np.asarray(C, np.float64):
        cues = MusicCues(major_share=float(np.clip(major, 0, 1)), tempo_bpm=float(2 ** t),
                         notes_per_second=float(2 ** d), mean_velocity=float(vel), mean_pitch=float(pitch),
                         texture=float(np.clip(texture, -1, 1)), family_power=float(np.clip(power, -1, 1)))
        out.append(vad_from_cues(cues).as_tuple())
    return np.array(out, np.float64).reshape(-1, 3)


@dataclass
class CueVAD:
    """features (N, F) -> cues (N, 7) by boosted trees -> 0.8 x rules(cues) + 0.2 x text part (ridge)."""

    feature_names: tuple[str, ...]
    trees: dict[str, TreeEnsemble]   # one per name in CUES
    text: RidgeVAD                   # the caption-text part of the target, (N, F) -> (N, 3)
    info: dict
    FACTS_WEIGHT = 0.8               # the targets' blend (mu_llama.generate.data, recipes.train_emotion.clip_target)

    def predict_cues(self, X: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, 7) in CUES order (log2 BPM, log2 notes/s, MIDI velocity, MIDI pitch, 0..1, -1..1, -1..1)."""
        return np.stack([self.trees[c].predict(X) for c in CUES], 1)

    def predict_with_cues(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) -> (VAD (N, 3) clipped to [-1, 1], the cues it came from (N, 7)): the trees run once."""
        C, w = self.predict_cues(X), self.FACTS_WEIGHT
        return np.clip(w * cues_to_vad(C) + (1 - w) * self.text.predict(X), -1.0, 1.0), C

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, 3) clipped to [-1, 1]."""
        return self.predict_with_cues(X)[0]

    def save(self, directory: str | Path, name: str = "audio_vad_cues") -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"text.{k}": getattr(self.text, k) for k in ("mean", "std", "weight", "bias")}
        for c in CUES:
            tensors.update(self.trees[c].to_tensors(f"cue.{c}"))
        save_file(tensors, str(d / f"{name}.safetensors"))
        (d / f"{name}.json").write_text(json.dumps({"kind": "cues", "feature_names": list(self.feature_names),
                                                    "cues": list(CUES), "info": self.info}, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path = ASSET_DIR, name: str = "audio_vad_cues") -> "CueVAD":
        meta, names, t, st = _read_checkpoint(directory, name, "cue VAD estimator")
        if tuple(meta.get("cues", ())) != CUES:
            raise CheckpointError(st.with_suffix(".json"),
                                  f"cues {meta.get('cues')} do not match this version's {CUES}")
        try:
            trees = {c: TreeEnsemble.from_tensors(t, f"cue.{c}") for c in CUES}
            if any((tr.feature >= len(names)).any() for tr in trees.values()):
                raise ValueError("a split on a feature index past the feature set")
            text = RidgeVAD(names, t["text.mean"], t["text.std"], t["text.weight"], t["text.bias"], {})
            if text.weight.shape != (len(names), 3):
                raise ValueError(f"text weights {text.weight.shape}, expected {(len(names), 3)}")
        except (KeyError, ValueError) as e:
            raise CheckpointError(st, f"malformed estimator tensors ({e})") from None
        return cls(names, trees, text, meta.get("info", {}))


def load_estimator(directory: str | Path = ASSET_DIR) -> CueVAD | RidgeVAD:
    """The cue estimator when the folder has one (audio_vad_cues.*), else the ridge one (audio_vad.*)."""
    d = Path(directory)
    return CueVAD.load(d) if (d / "audio_vad_cues.json").is_file() else RidgeVAD.load(d)


@functools.lru_cache(maxsize=2)
def default_regressor(directory: str | None = None) -> CueVAD | RidgeVAD:
    return load_estimator(directory or ASSET_DIR)


def read_wave(wave: np.ndarray, sample_rate: int = SR, regressor: CueVAD | RidgeVAD | None = None
              ) -> tuple[VAD, dict[str, float] | None]:
    """Derived VAD of in-memory mono audio, and (cue estimator only) the cues it heard, in readable units:
    tempo_bpm, notes_per_second, mean_velocity, mean_pitch (MIDI), major_share, texture, family_power."""
    reg = regressor or default_regressor()
    f = audio_features(wave, sample_rate)[None, : len(reg.feature_names)]
    if not isinstance(reg, CueVAD):
        return VAD(*map(float, reg.predict(f)[0]), source="audio"), None
    P, C = reg.predict_with_cues(f)
    c = C[0].copy()
    c[4], c[5:] = np.clip(c[4], 0, 1), np.clip(c[5:], -1, 1)    # the ranges the rules read them in (cues_to_vad)
    return VAD(*map(float, P[0]), source="audio"), {
        "tempo_bpm": round(float(2 ** c[0]), 1), "notes_per_second": round(float(2 ** c[1]), 2),
        **{k: round(float(v), 3) for k, v in zip(CUES[2:], c[2:])}}


def vad_from_wave(wave: np.ndarray, sample_rate: int = SR, regressor: CueVAD | RidgeVAD | None = None) -> VAD:
    """Derived VAD of in-memory mono audio."""
    return read_wave(wave, sample_rate, regressor)[0]


def read_audio(path: str | Path, regressor: CueVAD | RidgeVAD | None = None, max_duration: float = 60.0
               ) -> tuple[VAD, dict[str, float] | None]:
    """`read_wave` of an audio file (first `max_duration` seconds; mono, resampled to 22.05 kHz)."""
    from mu_llama.audio import load_audio

    return read_wave(load_audio(path, sample_rate=SR, max_duration=None, duration=max_duration), SR, regressor)


def vad_from_audio(path: str | Path, regressor: CueVAD | RidgeVAD | None = None, max_duration: float = 60.0) -> VAD:
    """Derived VAD of an audio file (first `max_duration` seconds; mono, resampled to 22.05 kHz)."""
    return read_audio(path, regressor, max_duration)[0]
