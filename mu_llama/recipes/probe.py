"""Linear probes: how much of the corpus facts a frozen encoder's pooled features expose, vs a random-init encoder of
the same shape and vs the majority class. Trains on (a subset of) the train clips of a pretraining run's cached
snapshot and scores on its validation clips; the test split is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mu_llama.encoders import MertEncoder, build_random, load_mert
from mu_llama.recipes.targets import CLIP_HEADS, SAMPLE_RATE, TargetCache, open_cache


@torch.no_grad()
def clip_features(encoder: MertEncoder, cache: TargetCache, clips: np.ndarray, seconds: float = 8.0,
                  batch_size: int = 8) -> torch.Tensor:
    """(C, L * D): every hidden state mean-pooled over the first `seconds` of each clip (each clip as if run alone)."""
    feats = []
    for lo in range(0, len(clips), batch_size):
        waves = [cache.wave(int(i))[: int(seconds * SAMPLE_RATE)] for i in clips[lo: lo + batch_size]]
        lengths = torch.tensor([len(w) for w in waves])
        x = torch.zeros(len(waves), int(lengths.max()))
        for b, w in enumerate(waves):
            x[b, : len(w)] = torch.from_numpy(w)
        out = encoder(x, lengths)
        m = out.frame_mask[None, :, :, None].float()
        pooled = (out.hidden_states * m).sum(2) / m.sum(2).clamp_min(1.0)   # (L, B, D)
        feats.append(pooled.permute(1, 0, 2).reshape(len(waves), -1))
    return torch.cat(feats)


def _fit_softmax(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> nn.Linear:
    """Multinomial logistic regression, L2-regularised, full-batch L-BFGS (deterministic)."""
    lin = nn.Linear(x.shape[1], classes).double()
    nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def linear_probe(encoder: MertEncoder, cache: TargetCache, train: np.ndarray, val: np.ndarray, *,
                 seconds: float = 8.0, l2: float = 1e-3) -> dict[str, float]:
    """Validation accuracy of a linear classifier per CLIP_HEADS field on frozen, pooled encoder features."""
    xtr, xva = clip_features(encoder, cache, train, seconds).double(), clip_features(encoder, cache, val, seconds).double()
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    out = {}
    for k, (name, vocab) in enumerate(CLIP_HEADS.items()):
        ytr, yva = torch.from_numpy(cache.single[train, k]), torch.from_numpy(cache.single[val, k])
        lin = _fit_softmax(xtr, ytr, len(vocab), l2)
        with torch.no_grad():
            out[name] = float((lin(xva).argmax(1) == yva).double().mean())
    return out


def majority_baseline(cache: TargetCache, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
    """Accuracy of always answering the most frequent train class."""
    out = {}
    for k, name in enumerate(CLIP_HEADS):
        top = np.bincount(cache.single[train, k]).argmax()
        out[name] = float(np.mean(cache.single[val, k] == top))
    return out


def probe_report(run: str | Path, encoder_dir: str | Path, *, max_train: int = 600, seconds: float = 8.0,
                 seed: int = 0, threads: int = 1) -> dict:
    """Linear probes of the trained encoder vs a random-init encoder of the same shape vs the majority class,
    on the run's cached snapshot: train on (up to max_train) train clips, score on validation clips."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cache = open_cache(Path(run) / "cache")
        train, val = cache.indices("train"), cache.indices("validation")
        if len(train) > max_train:
            train = np.sort(np.random.default_rng([seed, 13]).choice(train, max_train, replace=False))
        trained = load_mert(encoder_dir)
        rand = build_random(trained.config, seed=seed)
        return {"train_clips": len(train), "validation_clips": len(val),
                "trained": linear_probe(trained, cache, train, val, seconds=seconds),
                "random_init": linear_probe(rand, cache, train, val, seconds=seconds),
                "majority": majority_baseline(cache, train, val)}
    finally:
        torch.set_num_threads(old)


__all__ = ["clip_features", "linear_probe", "majority_baseline", "probe_report"]
