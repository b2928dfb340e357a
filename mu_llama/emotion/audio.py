"""VAD from audio: a ridge regressor on handcrafted audio features (mu_llama.emotion.features).

Trained on rendered clips whose targets are *derived* labels: 0.8 x vad_from_cues(score facts) + 0.2 x vad_from_text
(caption) (mu_llama.emotion.targets / .text). It therefore estimates "what the documented cue rules would say about
this clip" from the sound alone; it is not fitted to listener ratings (none exist offline).

Checkpoint: mu_llama/assets/emotion/audio_vad.{json,safetensors}: feature names, standardisation, weights, metrics.
Encoder features (mu_llama.encoders, hidden_states (L, B, T, D)) can be appended to the handcrafted vector later:
the regressor only sees a feature matrix.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.emotion.features import FEATURE_NAMES, SR, audio_features
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
        from safetensors.numpy import load_file

        d = Path(directory)
        st, js = d / f"{name}.safetensors", d / f"{name}.json"
        if not st.is_file() or not js.is_file():
            raise CheckpointError(d, f"no audio VAD regressor ({name}.json + {name}.safetensors); "
                                     "train one with `python -m mu_llama.emotion.train_audio`")
        meta = json.loads(js.read_text())
        t = load_file(str(st))
        names = tuple(meta["feature_names"])
        if names != FEATURE_NAMES[: len(names)] or t["weight"].shape != (len(names), 3):
            raise CheckpointError(st, f"feature set {names} does not match this version's {FEATURE_NAMES}")
        return cls(names, t["mean"], t["std"], t["weight"], t["bias"], meta.get("info", {}))


@functools.lru_cache(maxsize=2)
def default_regressor(directory: str | None = None) -> RidgeVAD:
    return RidgeVAD.load(directory or ASSET_DIR)


def vad_from_wave(wave: np.ndarray, sample_rate: int = SR, regressor: RidgeVAD | None = None) -> VAD:
    """Derived VAD of in-memory mono audio."""
    reg = regressor or default_regressor()
    f = audio_features(wave, sample_rate)[None, : len(reg.feature_names)]
    return VAD(*map(float, reg.predict(f)[0]), source="audio")


def vad_from_audio(path: str | Path, regressor: RidgeVAD | None = None, max_duration: float = 60.0) -> VAD:
    """Derived VAD of an audio file (first `max_duration` seconds; mono, resampled to 22.05 kHz)."""
    from mu_llama.audio import load_audio

    wave = load_audio(path, sample_rate=SR, max_duration=None, duration=max_duration)
    return vad_from_wave(wave, SR, regressor)
