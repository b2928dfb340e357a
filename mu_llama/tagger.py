"""Audio fact tagger: the primary instrument family, tempo class and mode of a recording, as class probabilities.

Why it exists: mu-llama-mini's captions named the instrument family at chance on generated audio and the tempo class
near chance, although both are in the sound. The LLM side has the words but, after 1,380 CPU training steps, not the
ear. The tagger is the ear: its probabilities enter caption decoding by shallow fusion (mu_llama.fusion), so the LLM
still decides what to say and when, and the tagger weighs in on which family / tempo / mode word it uses.
A model folder that holds fact_tagger.{json,safetensors} gets it (MuLlama.from_pretrained); mu-llama-mini ships one.

Inputs: the emotion estimator's 109 handcrafted features (mu_llama.emotion.features: loudness, onsets, tempo profile,
key profiles) plus 92 timbre features (below), 201 in all, at 22.05 kHz mono.
Model: one boosted-tree classifier per fact (sklearn HistGradientBoostingClassifier at training time), exported node
by node like the emotion trees (mu_llama.emotion.trees): a checkpoint is safetensors + JSON, prediction is numpy.
Labels (training: mu_llama.recipes.train_tagger): FactSheet.families[0], tempo_class, mode of the corpus clips, plus
the generator's single-instrument training excerpts (their header program family, tempo and mode).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama import signal
from mu_llama.emotion.features import (
    FEATURE_NAMES,
    N_FFT,
    SR,
    audio_features,
    stft_mag,
)
from mu_llama.emotion.trees import TreeEnsemble, read_tree_checkpoint
from mu_llama.errors import CheckpointError
from mu_llama.facts import FAMILIES, MODES, TEMPO_CLASSES

CHECKPOINT = "fact_tagger"
TAG_FACTS: dict[str, tuple[str, ...]] = {"family": FAMILIES, "tempo_class": TEMPO_CLASSES, "mode": MODES}

N_MELS, N_MFCC = 64, 20
TIMBRE_NAMES = (tuple(f"mfcc_mean_{i}" for i in range(N_MFCC)) + tuple(f"mfcc_std_{i}" for i in range(N_MFCC))
                + tuple(f"mfcc_dabs_{i}" for i in range(N_MFCC)) + tuple(f"mel_shape_{i}" for i in range(N_MELS // 2)))
TAGGER_FEATURES = FEATURE_NAMES + TIMBRE_NAMES


def timbre_features(wave: np.ndarray, mag: np.ndarray | None = None) -> np.ndarray:
    """mono float at SR (n,) -> (92,): MFCC mean / std / mean |frame-to-frame change| over the frames within 30 dB of
    the loudest (silence would pull every statistic toward the noise floor), and the mean log-mel shape (every other
    band, the frame's mean removed so loudness does not enter). MFCCs separate families by spectral envelope; the
    change statistics separate sustained (organ, strings) from decaying (piano, guitar, mallets) sounds.
    mag: stft_mag of the wave when the caller already has it."""
    fb = signal.mel_filterbank(SR, N_FFT, N_MELS, 30.0, 11000.0)                  # HTK scale, peak 1
    S = stft_mag(np.asarray(wave, np.float32)) if mag is None else mag
    M = np.log(fb @ (S ** 2) + 1e-8)                                              # (N_MELS, T)
    e = M.max(0)
    active = e > e.max() - 3.0 * np.log(10)                                       # 30 dB in natural-log power
    if active.sum() > 4:
        M = M[:, active]
    C = signal.mfcc(M, N_MFCC)                                                    # (N_MFCC, T)
    dabs = np.abs(np.diff(C, axis=1)).mean(1) if C.shape[1] > 1 else np.zeros(N_MFCC, np.float32)
    shape = (M - M.mean(0)).mean(1)[::2]
    return np.concatenate([C.mean(1), C.std(1), dabs, shape]).astype(np.float32)


def tagger_features(wave: np.ndarray, sample_rate: int = SR) -> np.ndarray:
    """mono float (n,) at `sample_rate` -> (len(TAGGER_FEATURES),) float32."""
    x = np.asarray(wave, np.float32)
    if sample_rate != SR:
        import soxr

        x = soxr.resample(x, sample_rate, SR).astype(np.float32)
    if len(x) < SR // 2:
        x = np.pad(x, (0, SR // 2 - len(x)))
    mag = stft_mag(x)                                # (F, T), shared: both feature sets read the same STFT
    return np.concatenate([audio_features(x, SR, mag=mag), timbre_features(x, mag)])


LONG_SECONDS, SEGMENT_SECONDS, MAX_SEGMENTS = 60.0, 30.0, 4


def audio_segments(wave: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """The wave itself up to LONG_SECONDS; beyond, ceil(duration / SEGMENT_SECONDS) (at most MAX_SEGMENTS) evenly
    spaced excerpts of SEGMENT_SECONDS, the first at the start and the last at the end."""
    seg = int(SEGMENT_SECONDS * sample_rate)
    if len(wave) <= LONG_SECONDS * sample_rate:
        return [wave]
    n = min(MAX_SEGMENTS, -(-len(wave) // seg))
    return [wave[int(a): int(a) + seg] for a in np.linspace(0, len(wave) - seg, n)]


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(1, keepdims=True)
    P = np.exp(Z)
    return P / P.sum(1, keepdims=True)


@dataclass
class FactTagger:
    """heads[fact]: one TreeEnsemble per class of classes[fact] giving that class's raw score (a binary fact has a
    single ensemble: the log-odds of its second class). classes[fact] lists only the labels seen in training; the
    others get probability 0."""

    heads: dict[str, list[TreeEnsemble]]
    classes: dict[str, tuple[str, ...]]
    info: dict

    @classmethod
    def fit(cls, X: np.ndarray, labels: dict[str, list[str]], *, max_iter: int = 200, learning_rate: float = 0.1,
            l2_regularization: float = 1.0, seed: int = 0, info: dict | None = None) -> FactTagger:
        """X (n, F) in TAGGER_FEATURES order; labels[fact] (n,) strings from TAG_FACTS[fact].

        l2_regularization: a leaf's value is -G / (H + l2). Without it (sklearn's default 0) a multi-class fit on
        separable data runs away: once a class's probabilities saturate its hessian H -> 0, leaves reach 1e3-1e4 and
        a few trees decide everything (an unregularised corpus-only fit scored 0.32 on its own training clips)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        heads, classes = {}, {}
        for fact, y in labels.items():
            bad = sorted(set(y) - set(TAG_FACTS[fact]))
            if bad:
                raise ValueError(f"{fact} labels {bad} are not among {TAG_FACTS[fact]}")
            est = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                                 l2_regularization=l2_regularization, early_stopping=False,
                                                 random_state=seed)
            est.fit(np.asarray(X, np.float64), np.asarray(y))
            classes[fact] = tuple(str(c) for c in est.classes_)
            k = 1 if len(classes[fact]) == 2 else len(classes[fact])
            heads[fact] = [TreeEnsemble.from_sklearn(est, tree=j, check=X) for j in range(k)]
        return cls(heads, classes, dict(info or {}))

    def predict_proba(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """(n, F) -> {fact: (n, len(TAG_FACTS[fact])) probabilities in TAG_FACTS order}."""
        X = np.asarray(X, np.float64)
        out = {}
        for fact, trees in self.heads.items():
            Z = np.stack([t.predict(X) for t in trees], 1)                         # (n, k)
            if Z.shape[1] == 1:                                                     # binary: log-odds of class 1
                Z = np.concatenate([np.zeros_like(Z), Z], 1)
            P = np.zeros((len(X), len(TAG_FACTS[fact])))
            P[:, [TAG_FACTS[fact].index(c) for c in self.classes[fact]]] = _softmax(Z)
            out[fact] = P
        return out

    def tag_waves(self, waves: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        """Mono waves at `sample_rate` -> {fact: (len(waves), classes)}. A wave longer than LONG_SECONDS is heard as
        up to MAX_SEGMENTS evenly spaced SEGMENT_SECONDS excerpts whose probabilities are averaged: the whole piece
        is sampled (not only its opening), and time and memory stay bounded for hour-long files."""
        segments = [audio_segments(np.asarray(w), sample_rate) for w in waves]
        P = self.predict_proba(np.stack([tagger_features(x, sample_rate) for segs in segments for x in segs]))
        bounds = np.cumsum([0] + [len(segs) for segs in segments])
        return {f: np.stack([p[a:b].mean(0) for a, b in itertools.pairwise(bounds)]) for f, p in P.items()}

    def save(self, directory: str | Path, name: str = CHECKPOINT) -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for fact, trees in self.heads.items():
            for j, t in enumerate(trees):
                tensors.update(t.to_tensors(f"{fact}.{j}"))
        save_file(tensors, str(d / f"{name}.safetensors"))
        meta = {"kind": "fact_tagger", "feature_names": list(TAGGER_FEATURES),
                "classes": {f: list(c) for f, c in self.classes.items()}, "info": self.info}
        (d / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, name: str = CHECKPOINT) -> FactTagger:
        meta, names, t, st = read_tree_checkpoint(directory, name, "fact tagger", TAGGER_FEATURES,
                                                  "mu-llama train-tagger")
        js = st.with_suffix(".json")
        try:
            classes = {f: tuple(c) for f, c in meta["classes"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(js, f"unreadable fact tagger metadata ({e})") from None
        for fact, cs in classes.items():
            if fact not in TAG_FACTS or not set(cs) <= set(TAG_FACTS[fact]) or len(cs) < 2:
                raise CheckpointError(js, f"fact {fact!r} with classes {cs}; valid facts and classes: {TAG_FACTS}")
        try:
            heads = {f: [TreeEnsemble.from_tensors(t, f"{f}.{j}") for j in range(1 if len(cs) == 2 else len(cs))]
                     for f, cs in classes.items()}
            if any((tr.feature >= len(names)).any() for trees in heads.values() for tr in trees):
                raise ValueError("a split on a feature index past the feature set")
        except (KeyError, ValueError) as e:
            raise CheckpointError(st, f"malformed fact tagger tensors ({e})") from None
        return cls(heads, classes, meta.get("info", {}))
