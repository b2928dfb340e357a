"""Long audio: overlapping windows on the encoder's frame grid, stitched into one full-length frame sequence.

Geometry (S = frame stride, R = receptive field; MERT: 320 and 400 samples at 24 kHz):
- A window spans wf frames = (wf - 1) * S + R samples; windows start every hf frames = hf * S samples, so every
  window's frames sit exactly on the global frame grid (window k's local frame j is global frame k*hf + j).
- Consecutive windows overlap by ov = wf - hf frames. The seam goes through the middle of the overlap: window k
  keeps frames up to local hf + ov//2, window k+1 keeps from local ov//2. So every kept frame (except at the true
  start/end of the audio) has at least ov//2 frames of context on both sides inside its own window, and the kept
  frames tile the global grid exactly: stitched length == frames_for(N).
- The last window is wherever the audio ends (it may be short); a window exists only if it adds frames.

Defaults: 30-s windows, 25-s hop. 30 s bounds attention cost (2250 frames, about 5 M attention entries per head)
and matches the clip lengths MERT-based captioners are trained on (MusicCaps 10 s, MTT ~30 s); the 5-s overlap
gives each kept frame >= 2.5 s of context each side: that is half of MERT's 5-s pretraining context and more than the
positional convolution's reach (128 frames = 1.7 s), so seams are not visible to the local parts of the network.

Each window is one clip for the encoder, so it is normalised on its own (MERT's feature extractor sees whatever
clip it is given); that is also what streaming allows, since global statistics are unknown until the end.

Streaming: encode_stream() takes any iterable of 1-D audio blocks (e.g. mu_llama.audio.stream_audio) and keeps at
most one window plus one block of samples; features are handed out window by window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mu_llama.errors import ConfigError

from .base import AudioEncoder


@dataclass(frozen=True)
class WindowOptions:
    """window_s / hop_s in seconds (rounded to whole frames); batch_size windows per encoder call."""

    window_s: float = 30.0
    hop_s: float = 25.0
    batch_size: int = 1

    def __post_init__(self):
        for name in ("window_s", "hop_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}")
        if self.hop_s > self.window_s:
            raise ConfigError(f"hop_s {self.hop_s} is larger than window_s {self.window_s}: audio between windows would be skipped")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")


@dataclass(frozen=True)
class WindowPlan:
    """Window geometry in frames and samples for one encoder."""

    frame_stride: int
    receptive_field: int
    window_frames: int
    hop_frames: int

    @classmethod
    def for_encoder(cls, encoder: AudioEncoder, options: WindowOptions) -> WindowPlan:
        fps = encoder.sample_rate / encoder.frame_stride
        wf = max(1, round(options.window_s * fps))
        hf = max(1, min(wf, round(options.hop_s * fps)))
        return cls(encoder.frame_stride, encoder.receptive_field, wf, hf)

    @property
    def window_samples(self) -> int:
        return (self.window_frames - 1) * self.frame_stride + self.receptive_field

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.frame_stride

    @property
    def overlap_frames(self) -> int:
        return self.window_frames - self.hop_frames

    def frames_for(self, num_samples: int) -> int:
        return 0 if num_samples < self.receptive_field else (num_samples - self.receptive_field) // self.frame_stride + 1

    def num_windows(self, num_samples: int) -> int:
        """Windows needed for num_samples: the first k whose window reaches the last frame, plus one."""
        frames = self.frames_for(num_samples)
        if frames == 0:
            return 0
        return max(0, math.ceil((frames - self.window_frames) / self.hop_frames)) + 1

    def keep(self, first: bool, last: bool, num_frames: int) -> tuple[int, int]:
        """Local [lo, hi) frames a window contributes to the stitched sequence."""
        half = self.overlap_frames // 2
        lo = 0 if first else half
        hi = num_frames if last else self.hop_frames + half
        return lo, hi


@dataclass(frozen=True)
class WindowFeatures:
    """One window's output. hidden_states: (L, hi - lo, D) the frames it contributes (float32, CPU);
    pooled: (L, D) mean over ALL its num_frames frames (overlap included): a per-window summary."""

    index: int
    start_sample: int
    num_samples: int
    frame_offset: int  # global index of this window's local frame 0
    keep_start: int  # local index of its first contributed frame
    num_frames: int
    hidden_states: torch.Tensor
    pooled: torch.Tensor
    layers: tuple[int, ...]

    @property
    def first_frame(self) -> int:
        """Global index of the first contributed frame."""
        return self.frame_offset + self.keep_start


@dataclass(frozen=True)
class WindowedOutput:
    """hidden_states: (L, F, D) stitched, F == frames_for(N); pooled: (n_windows, L, D);
    bounds: (n_windows, 2) int64 [start, end) sample of each window."""

    hidden_states: torch.Tensor
    pooled: torch.Tensor
    bounds: torch.Tensor
    layers: tuple[int, ...]


def _as_block(block) -> np.ndarray:
    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().numpy()
    arr = np.asarray(block, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"audio blocks must be 1-D mono arrays, got shape {arr.shape}")
    return arr


def encode_stream(encoder: AudioEncoder, blocks: Iterable, options: WindowOptions | None = None, *,
                  layers: Sequence[int] | None = None) -> Iterator[WindowFeatures]:
    """Encode a stream of 1-D audio blocks (any sizes) window by window. Block boundaries never change the result."""
    options = options or WindowOptions()
    plan = WindowPlan.for_encoder(encoder, options)
    selected = encoder.resolve_layers(layers)
    W, H, S, R = plan.window_samples, plan.hop_samples, plan.frame_stride, plan.receptive_field
    source = iter(blocks)
    buf = np.zeros(0, dtype=np.float32)  # samples from `start` on; at most W + S + one block
    start, index, exhausted = 0, 0, False
    pending: list[tuple[int, int, np.ndarray, bool]] = []
    while True:
        # Window `index` is final iff global frame (index*hf + wf) does not exist, i.e. fewer than W + S samples remain.
        while not exhausted and len(buf) < W + S:
            try:
                block = _as_block(next(source))
            except StopIteration:
                exhausted = True
                break
            if block.size:
                buf = np.concatenate((buf, block))
        if len(buf) < R:  # only possible before the first window: audio shorter than one frame
            break
        last = len(buf) < W + S
        pending.append((index, start, buf[:W].copy(), last))
        if len(pending) == options.batch_size or last:
            yield from _run(encoder, plan, pending, selected)
            pending = []
        if last:
            break
        buf, start, index = buf[H:], start + H, index + 1


def _run(encoder: AudioEncoder, plan: WindowPlan, pending: list[tuple[int, int, np.ndarray, bool]],
         selected: tuple[int, ...]) -> Iterator[WindowFeatures]:
    lengths = torch.tensor([len(a) for _, _, a, _ in pending], dtype=torch.long)
    wave = torch.zeros(len(pending), int(lengths.max()))
    for b, (_, _, audio, _) in enumerate(pending):
        wave[b, : len(audio)] = torch.from_numpy(audio)
    out = encoder(wave, lengths, layers=selected)
    frames = out.frames.tolist()
    for b, (index, start, audio, last) in enumerate(pending):
        n = int(frames[b])
        lo, hi = plan.keep(index == 0, last, n)
        hs = out.hidden_states[:, b, :n].float()  # (L, n, D)
        yield WindowFeatures(index=index, start_sample=start, num_samples=len(audio), frame_offset=index * plan.hop_frames,
                             keep_start=lo, num_frames=n, hidden_states=hs[:, lo:hi].cpu().clone(),
                             pooled=hs.mean(dim=1).cpu(), layers=selected)


def encode_windows(encoder: AudioEncoder, wave, options: WindowOptions | None = None, *,
                   layers: Sequence[int] | None = None) -> WindowedOutput:
    """Encode one in-memory 1-D waveform with overlapping windows and stitch the result."""
    selected = encoder.resolve_layers(layers)
    windows = list(encode_stream(encoder, [wave], options, layers=selected))
    L, D = len(selected), encoder.hidden_size
    if not windows:
        return WindowedOutput(torch.zeros(L, 0, D), torch.zeros(0, L, D), torch.zeros(0, 2, dtype=torch.long), selected)
    return WindowedOutput(
        hidden_states=torch.cat([w.hidden_states for w in windows], dim=1),
        pooled=torch.stack([w.pooled for w in windows]),
        bounds=torch.tensor([[w.start_sample, w.start_sample + w.num_samples] for w in windows], dtype=torch.long),
        layers=selected,
    )
