"""musicnn (Pons & Serra 2019, ISC licence) as a distillation teacher, without TensorFlow.

The PyPI package `musicnn` (install with `pip install --no-deps musicnn`: its TensorFlow dependency is not needed)
ships TF1 checkpoints. We read the checkpoint's tensor bundle directly (a LevelDB-format table of BundleEntryProto
records in `.index` pointing into `.data-00000-of-00001`) and run the MTT_musicnn graph in PyTorch:
- input: librosa-style log-mel at 16 kHz (n_fft 512, hop 256, 96 Slaney mel bands, power 2, centred frames),
  cast to float16 and compressed as log10(10000 x + 1), in 187-frame (3-s) patches;
- front-end: BN, two timbral convs (7 x 38, 7 x 67; 204 filters) and three temporal convs (128/64/32 x 1; 51 filters),
  each ReLU -> BN -> max over frequency; mid-end: three 7-frame convs (64) with residuals, dense concat;
- back-end: max and mean over time (interleaved per channel, as TF's concat-then-flatten), BN, dense 200 + ReLU + BN,
  dense 50 -> sigmoid tag probabilities (MagnaTagATune's 50 tags).
TF layer names (conv2d_i, batch_normalization_i) follow the graph's construction order; BN epsilon is TF's 1e-3.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mu_llama import signal
from mu_llama.errors import CheckpointError, ConfigError

MTT_TAGS = ("guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
            "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
            "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
            "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
            "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral")
SR, N_FFT, HOP, N_MELS, PATCH = 16000, 512, 256, 96, 187
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 19: np.float16}
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")


# ------------------------------------------------------------------------------------------------ TF checkpoint reader


def _varint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return out, i


def _block(b: bytes):
    """Entries of one table block: prefix-compressed keys, then a restart array and its count (uint32s)."""
    restarts = struct.unpack("<I", b[-4:])[0]
    end, i, key = len(b) - 4 - 4 * restarts, 0, b""
    while i < end:
        shared, i = _varint(b, i)
        fresh, i = _varint(b, i)
        size, i = _varint(b, i)
        key = key[:shared] + b[i:i + fresh]
        i += fresh
        yield key, b[i:i + size]
        i += size


def _fields(b: bytes) -> dict[int, list]:
    """A protobuf message -> field number -> values (varints as int, length-delimited as bytes)."""
    i, out = 0, {}
    while i < len(b):
        tag, i = _varint(b, i)
        wire = tag & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(tag >> 3, []).append(v)
    return out


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard TF checkpoint (`prefix.index` + `prefix.data-00000-of-00001`; a folder as
    prefix means files named `.index` / `.data-00000-of-00001` inside it, as musicnn ships them)."""
    p = Path(prefix)
    index_path, data_path = ((p / ".index", p / ".data-00000-of-00001") if p.is_dir()
                             else (Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")))
    try:
        idx, data = index_path.read_bytes(), data_path.read_bytes()
    except OSError as e:
        raise CheckpointError(index_path, f"unreadable TF checkpoint ({e})") from None
    if len(idx) < 48 or idx[-8:] != _TABLE_MAGIC:
        raise CheckpointError(index_path, "not a TF tensor-bundle index (bad table magic)")
    footer, j = idx[-48:], 0
    for _ in range(2):  # skip the metaindex handle
        _, j = _varint(footer, j)
    off, j = _varint(footer, j)
    size, j = _varint(footer, j)
    out = {}
    for _, handle in _block(idx[off:off + size]):
        bo, k = _varint(handle, 0)
        bs, k = _varint(handle, k)
        if idx[bo + bs] != 0:
            raise CheckpointError(index_path, "compressed table blocks are not supported")
        for key, val in _block(idx[bo:bo + bs]):
            if not key:
                continue  # the bundle header
            f = _fields(val)
            if f.get(3, [0])[0] != 0 or 7 in f:
                raise CheckpointError(index_path, f"{key.decode()}: multi-shard or sliced tensors are not supported")
            dtype = _DTYPES.get(f.get(1, [1])[0])
            if dtype is None:
                raise CheckpointError(index_path, f"{key.decode()}: unsupported dtype {f[1][0]}")
            shape = [_fields(d).get(1, [0])[0] for d in _fields(f[2][0]).get(2, [])] if 2 in f else []
            o, n = f.get(4, [0])[0], f.get(5, [0])[0]
            out[key.decode()] = np.frombuffer(data[o:o + n], dtype=dtype).reshape(shape).copy()
    return out


def find_checkpoint(model: str = "MTT_musicnn") -> Path:
    """The checkpoint folder inside the installed musicnn package (found without importing it)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("distillation needs the musicnn checkpoints: pip install --no-deps musicnn")
    folder = Path(list(spec.submodule_search_locations)[0]) / model
    if not (folder / ".index").is_file():
        raise ConfigError(f"{folder}: no musicnn checkpoint {model!r} in the installed package")
    return folder


# ------------------------------------------------------------------------------------------------ features and model


def slaney_mel(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel defaults (Slaney mel scale, Slaney area normalisation), fmin 0, fmax sr/2: (n_mels, bins)."""
    return signal.mel_filterbank(sr, n_fft, n_mels, scale="slaney", norm="slaney")


def musicnn_input(y16: np.ndarray) -> np.ndarray:
    """(N,) 16 kHz audio -> (frames, 96) compressed log-mel, as musicnn's extractor computes it (librosa: periodic
    Hann, centred frames)."""
    power = signal.spectrogram(y16.astype(np.float32), N_FFT, HOP, power=2, window="hann_periodic")   # (F, T)
    mel = (power.T @ slaney_mel().T).astype(np.float16).astype(np.float32)
    return np.log10(10000.0 * mel + 1.0)


class Musicnn(nn.Module):
    """MTT_musicnn's inference graph on a dict of TF tensors (kernels (kh, kw, in, out), BN moving statistics)."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        super().__init__()
        for k, v in tensors.items():
            if "Adam" not in k and "power" not in k:
                self.register_buffer(k.replace("/", "__"), torch.from_numpy(v))

    def _t(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace("/", "__"))

    def _bn(self, x: torch.Tensor, i: int) -> torch.Tensor:  # channels last
        n = "batch_normalization" + (f"_{i}" if i else "")
        g, b, m, v = (self._t(f"{n}/{k}") for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return (x - m) / torch.sqrt(v + 1e-3) * g + b

    def _conv(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """x (B, 1, H, W) -> relu(conv) channels last (B, H', W', C)."""
        n = "conv2d" + (f"_{i}" if i else "")
        out = F.conv2d(x, self._t(f"{n}/kernel").permute(3, 2, 0, 1), self._t(f"{n}/bias"))
        return F.relu(out).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, 96) -> (logits (B, 50), penultimate (B, 200))."""
        x = self._bn(x[:, None, :, :, None], 0)[..., 0]          # (B, 1, T, 96): BN over the single channel
        feats = []
        padded = F.pad(x, (0, 0, 3, 3))
        for i in (0, 1):                                           # timbral blocks, 'valid' in frequency
            feats.append(self._bn(self._conv(padded, i), i + 1).amax(2))
        for i, k in ((2, 128), (3, 64), (4, 32)):                  # temporal blocks, TF 'same' padding in time
            xp = F.pad(x, (0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2))
            feats.append(self._bn(self._conv(xp, i), i + 1).amax(2))
        h = front = torch.cat(feats, 2)                            # (B, T, 561)
        outs, prev = [front], None
        for i in (5, 6, 7):                                        # mid-end: 7-frame convs over all channels
            c = self._bn(self._conv(F.pad(h[:, None], (0, 0, 3, 3)), i)[:, :, 0], i + 1)   # (B, T, 64)
            h = c if prev is None else c + prev
            prev = h
            outs.append(h)
        mid = torch.cat(outs, 2)                                   # (B, T, 753)
        pooled = torch.stack([mid.amax(1), mid.mean(1)], 2).reshape(len(mid), -1)   # (B, 1506) max/mean interleaved
        z = self._bn(F.relu(self._bn(pooled, 9) @ self._t("dense/kernel") + self._t("dense/bias")), 10)
        return z @ self._t("dense_1/kernel") + self._t("dense_1/bias"), z


def load_musicnn(model: str = "MTT_musicnn") -> Musicnn:
    return Musicnn(read_tf_checkpoint(find_checkpoint(model))).eval()


@torch.no_grad()
def clip_tags(model: Musicnn, wave: np.ndarray, sample_rate: int = 24000, max_patches: int = 2) -> np.ndarray:
    """(50,) mean sigmoid tag probabilities over the clip's first non-overlapping 3-s patches (a short clip: one
    patch, zero-padded)."""
    import soxr

    y = soxr.resample(wave.astype(np.float32), sample_rate, SR, quality="HQ") if sample_rate != SR else wave
    rep = musicnn_input(y)
    if len(rep) < PATCH:
        rep = np.pad(rep, ((0, PATCH - len(rep)), (0, 0)))
    n = min(max_patches, len(rep) // PATCH)
    batch = torch.from_numpy(np.stack([rep[i * PATCH:(i + 1) * PATCH] for i in range(n)]))
    return torch.sigmoid(model(batch)[0]).mean(0).numpy().astype(np.float32)


__all__ = ["MTT_TAGS", "Musicnn", "clip_tags", "find_checkpoint", "load_musicnn", "musicnn_input",
           "read_tf_checkpoint", "slaney_mel"]
