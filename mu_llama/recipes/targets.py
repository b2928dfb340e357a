"""Training targets for the encoder recipe, from corpus records: what each clip's score gives for free.

Frame targets live on the encoder's own frame grid (frame t covers samples [t*S, t*S + R), S = 320, R = 400 at 24 kHz;
its centre is t*S + R/2), so a crop that starts on a frame boundary takes its targets by slicing:
- chroma (T, 12): pitch classes of the pitched notes sounding at the frame centre (start <= t < end; drums excluded);
- onsets (T, 2): [pitched onset, drum hit], 1 on the frame whose centre is nearest to the note-on (clamped to the grid);
- log-mel (T, M): log(mel power + 1e-5) of a 1024-point Hann window centred on the frame centre (reconstruction target).
Clip targets are the FactSheet's categorical fields (CLIP_HEADS), one class index each, plus a families multi-hot.
Masked-prediction targets (`fit_teacher`): k-means clusters of standardised log-mel frames, fitted on train clips only
(HuBERT's first-iteration acoustic teacher; MERT-v0 used log-mel + chroma clusters).

The cache (`build_cache`) decodes every clip once into flat files under a folder: audio as int16 (the corpus stores
16-bit FLAC, so this is lossless), frame targets concatenated over clips, and an index.json (written last: it marks
the cache complete) with per-clip offsets and clip labels.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mu_llama import signal
from mu_llama.errors import ConfigError
from mu_llama.facts import (BASS_TYPES, DENSITIES, DYNAMICS, FAMILIES, METERS, MODES, PITCH_CLASSES, REGISTERS, STYLES,
                            TEMPO_CLASSES, TEXTURES, FactSheet)

SAMPLE_RATE = 24000
FRAME_STRIDE = 320     # MERT's conv stack: 75 frames per second at 24 kHz
RECEPTIVE_FIELD = 400
N_MELS = 64
N_FFT = 1024
LOG_FLOOR = 1e-5
CACHE_VERSION = 1

# Single-label clip heads: name -> vocabulary. Each reads the FactSheet field (or property) of the same name.
CLIP_HEADS: dict[str, tuple[str, ...]] = {
    "mode": MODES, "meter": METERS, "tempo_class": TEMPO_CLASSES, "texture": TEXTURES, "style": STYLES,
    "drums": ("no", "yes"), "bass_type": BASS_TYPES, "register": REGISTERS, "density_class": DENSITIES,
    "dynamics": DYNAMICS, "key_tonic": PITCH_CLASSES,
}


@dataclass(frozen=True)
class ClipRecord:
    """One finished corpus clip (OUT/clips/<id[:3]>/<id>.json with its .flac and .mid)."""

    clip_id: str
    split: str
    audio: Path
    midi: Path
    duration: float
    facts: FactSheet


def scan_corpus(root: str | Path, splits: Sequence[str] = ("train", "validation")) -> list[ClipRecord]:
    """A snapshot of the finished clips of `splits` in a corpus folder, sorted by id. The test split is never read
    unless asked for. A clip counts as finished when its .json record exists (the builder writes it last)."""
    root = Path(root)
    if not (root / "clips").is_dir():
        raise ConfigError(f"{root}: not a corpus folder (no clips/ inside); build one with `mu-llama corpus`")
    out = []
    for path in sorted((root / "clips").glob("*/*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # being written by a running build: not finished yet
        if rec.get("failed") or rec.get("split") not in splits:
            continue
        out.append(ClipRecord(rec["id"], rec["split"], root / rec["audio"], root / rec["midi"], float(rec["duration"]),
                              FactSheet.from_dict(rec["facts"])))
    return sorted(out, key=lambda r: r.clip_id)


# ------------------------------------------------------------------------------------------------ clip targets


def clip_targets(facts: FactSheet) -> tuple[np.ndarray, np.ndarray]:
    """(single (len(CLIP_HEADS),) int64 class indices in CLIP_HEADS order, families (12,) float32 multi-hot)."""
    values = {"drums": "yes" if facts.drums else "no", "tempo_class": facts.tempo_class,
              "density_class": facts.density_class}
    single = np.array([vocab.index(values.get(name, getattr(facts, name, None))) for name, vocab in CLIP_HEADS.items()],
                      dtype=np.int64)
    fam = np.zeros(len(FAMILIES), dtype=np.float32)
    for f in facts.families:
        fam[FAMILIES.index(f)] = 1.0
    return single, fam


# ------------------------------------------------------------------------------------------------ frame targets


def num_frames(num_samples: int) -> int:
    return 0 if num_samples < RECEPTIVE_FIELD else (num_samples - RECEPTIVE_FIELD) // FRAME_STRIDE + 1


def frame_centres(frames: int) -> np.ndarray:
    """(T,) seconds: the centre of each frame's receptive field."""
    return (np.arange(frames) * FRAME_STRIDE + RECEPTIVE_FIELD / 2) / SAMPLE_RATE


def onset_frame(seconds: float) -> int:
    """The frame whose centre is nearest to a time (may be outside 0..T-1)."""
    return int(math.floor((seconds * SAMPLE_RATE - RECEPTIVE_FIELD / 2) / FRAME_STRIDE + 0.5))


def frame_targets(perf, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A corpus Performance (mu_llama.corpus.perf) -> chroma (T, 12) uint8, onsets (T, 2) uint8 [pitched, drums]."""
    centres = frame_centres(frames)
    chroma = np.zeros((frames, 12), dtype=np.uint8)
    onsets = np.zeros((frames, 2), dtype=np.uint8)
    for track in perf.tracks:
        for n in track.notes:
            k = onset_frame(n.start)
            if -1 <= k <= frames:  # just outside the grid (e.g. a note at 0 s, nearer to frame -1's centre): clamp
                k = min(max(k, 0), frames - 1)
                onsets[k, 1 if track.is_drum else 0] = 1
            if track.is_drum:
                continue
            lo, hi = np.searchsorted(centres, [n.start, n.end], side="left")  # centres in [start, end)
            chroma[lo:hi, n.pitch % 12] = 1
    return chroma, onsets


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, evenly spaced on the HTK mel scale from 30 Hz to 11 kHz, peak 1."""
    return signal.mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 30.0, 11000.0)


def log_mel(wave: np.ndarray, frames: int | None = None) -> np.ndarray:
    """(N,) float waveform -> (T, N_MELS) float32 log-mel, one row per encoder frame (window centred on the frame)."""
    frames = num_frames(len(wave)) if frames is None else frames
    if frames == 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    # window t starts at t*S + R/2 - N_FFT/2 in the unpadded signal (zeros outside it)
    power = signal.spectrogram(np.asarray(wave, np.float32), N_FFT, FRAME_STRIDE, power=2,
                               start=RECEPTIVE_FIELD // 2 - N_FFT // 2, count=frames)      # (F, T)
    return np.log(power.T.astype(np.float32) @ mel_filterbank().T + LOG_FLOOR).astype(np.float32)


# ------------------------------------------------------------------------------------------------ the cache


@dataclass
class TargetCache:
    """Flat arrays over every cached clip (memory-mapped) and the per-clip index."""

    folder: Path
    ids: list[str]
    splits: list[str]
    audio_offset: np.ndarray   # (C,) int64 into audio
    audio_len: np.ndarray      # (C,) samples
    frame_offset: np.ndarray   # (C,) int64 into the frame arrays
    frames: np.ndarray         # (C,) frames per clip
    audio: np.ndarray          # (sum samples,) int16: x * 32768
    chroma: np.ndarray         # (sum frames, 12) uint8
    onsets: np.ndarray         # (sum frames, 2) uint8
    mel: np.ndarray            # (sum frames, N_MELS) float16
    single: np.ndarray         # (C, len(CLIP_HEADS)) int64
    families: np.ndarray       # (C, 12) float32

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def wave(self, i: int) -> np.ndarray:
        o = int(self.audio_offset[i])
        return self.audio[o: o + int(self.audio_len[i])].astype(np.float32) / 32768.0


def build_cache(records: Sequence[ClipRecord], folder: str | Path, *, progress: bool = False) -> TargetCache:
    """Decode the clips and their MIDI once; reuse the cache when it holds exactly these clip ids."""
    from mu_llama.audio import load_audio
    from mu_llama.corpus.perf import read_midi

    folder = Path(folder)
    index_path = folder / "index.json"
    ids = [r.clip_id for r in records]
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("version") == CACHE_VERSION and index["ids"] == ids:
            return open_cache(folder)
        index_path.unlink()  # another snapshot: rebuild
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: open(folder / f"{k}.bin", "wb") for k in ("audio", "chroma", "onsets", "mel")}
    a_off, a_len, f_off, n_fr, single, fams = [], [], [], [], [], []
    a_pos = f_pos = 0
    it = records
    if progress:
        from tqdm import tqdm

        it = tqdm(records, desc="cache", unit="clip")
    try:
        for r in it:
            wave = load_audio(r.audio, SAMPLE_RATE)
            t = num_frames(len(wave))
            chroma, onsets = frame_targets(read_midi(r.midi, r.duration), t)
            files["audio"].write(np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16).tobytes())
            files["chroma"].write(chroma.tobytes())
            files["onsets"].write(onsets.tobytes())
            files["mel"].write(log_mel(wave, t).astype(np.float16).tobytes())
            s, f = clip_targets(r.facts)
            a_off.append(a_pos), a_len.append(len(wave)), f_off.append(f_pos), n_fr.append(t)
            single.append(s.tolist()), fams.append(f.tolist())
            a_pos += len(wave)
            f_pos += t
    finally:
        for fh in files.values():
            fh.close()
    index = {"version": CACHE_VERSION, "ids": ids, "splits": [r.split for r in records], "audio_offset": a_off,
             "audio_len": a_len, "frame_offset": f_off, "frames": n_fr, "single": single, "families": fams,
             "heads": list(CLIP_HEADS), "n_mels": N_MELS}
    tmp = folder / ".index.json.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, index_path)
    return open_cache(folder)


def open_cache(folder: str | Path) -> TargetCache:
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    total_a, total_f = int(sum(index["audio_len"])), int(sum(index["frames"]))

    def mm(name, dtype, shape):
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r", shape=shape)

    return TargetCache(
        folder=folder, ids=index["ids"], splits=index["splits"],
        audio_offset=np.array(index["audio_offset"], dtype=np.int64), audio_len=np.array(index["audio_len"], dtype=np.int64),
        frame_offset=np.array(index["frame_offset"], dtype=np.int64), frames=np.array(index["frames"], dtype=np.int64),
        audio=mm("audio", np.int16, (total_a,)), chroma=mm("chroma", np.uint8, (total_f, 12)),
        onsets=mm("onsets", np.uint8, (total_f, 2)), mel=mm("mel", np.float16, (total_f, index["n_mels"])),
        single=np.array(index["single"], dtype=np.int64).reshape(len(index["ids"]), len(CLIP_HEADS)),
        families=np.array(index["families"], dtype=np.float32).reshape(len(index["ids"]), len(FAMILIES)),
    )


# ------------------------------------------------------------------------------------------------ k-means teacher


def fit_teacher(cache: TargetCache, train: np.ndarray, *, clusters: int = 64, frames: int = 100_000, iters: int = 20,
                seed: int = 0) -> dict:
    """Per-bin log-mel mean/std over train frames, k-means centroids on standardised log-mel, a label for every frame."""
    rows = np.concatenate([np.arange(cache.frame_offset[i], cache.frame_offset[i] + cache.frames[i]) for i in train])
    rng = np.random.default_rng([seed, 11])
    sample = np.sort(rng.choice(rows, size=min(frames, len(rows)), replace=False))
    x = torch.from_numpy(cache.mel[sample].astype(np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    x = (x - mean) / std
    k = min(clusters, len(x))
    g = torch.Generator().manual_seed(seed)
    cent = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):  # Lloyd; empty clusters keep their centroid
        a = torch.cdist(x, cent).argmin(1)
        sums = torch.zeros_like(cent).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).float()[:, None]
        cent = torch.where(cnt > 0, sums / cnt.clamp_min(1.0), cent)
    labels = np.zeros(len(cache.mel), np.int64)
    for lo in range(0, len(cache.mel), 65536):  # labels for every cached frame (validation too: teacher is fixed)
        z = (torch.from_numpy(cache.mel[lo: lo + 65536].astype(np.float32)) - mean) / std
        labels[lo: lo + 65536] = torch.cdist(z, cent).argmin(1).numpy()
    return {"mean": mean.numpy(), "std": std.numpy(), "centroids": cent.numpy(), "labels": labels}


__all__ = ["CLIP_HEADS", "ClipRecord", "TargetCache", "scan_corpus", "clip_targets", "frame_targets",
           "frame_centres", "onset_frame", "num_frames", "log_mel", "mel_filterbank", "build_cache", "open_cache",
           "fit_teacher"]
