"""Music descriptors as one more hidden state: timbre, pitch-class, chord and tempo evidence per encoder frame.

`DescriptorEncoder` wraps any AudioEncoder (the MERT encoder) and appends one hidden state whose first
`DESCRIPTOR_DIM` channels are hand-designed per-frame descriptors (the rest zero, so the stack keeps one width D):

    log-mel       64  log10 power in 64 mel bands (30 Hz .. 11 kHz) / 4            timbre, loudness, register
    mfcc          20  DCT of the log-mel / 10, and their squares (20)               timbre (time-mean + variance)
    chroma        12  pitch-class share of the 55 Hz .. 4.2 kHz power (sum 1)  key profile
    triads        24  27 c_r c_{r+4} c_{r+7} major and 27 c_r c_{r+3} c_{r+7} minor triad at each root r (products, not
                      sums: a triad counts only when all three tones sound together),
                   2  + their sums over r                                           mode (rooted, so major != minor)
    onset          2  positive log-mel flux o(t) (mean over bands) and o(t)^2
    periodicity   24  o(t) * o(t + lag) at lags of 24 log-spaced tempi (30 .. 480 BPM)   tempo

Why: a small MERT-style encoder pretrained on a CPU hears instrument family, mode and tempo poorly (its probe
accuracies are 0.5-0.6), and clip-mode adapters only see the time-mean of each hidden state. Every descriptor above is
chosen so that its *time-mean* is meaningful: the mean of o(t) o(t + lag) is the onset envelope's autocorrelation
(tempo), the mean of the MFCCs and of their squares give timbre mean and spread, the mean chroma and triad strengths
give key and mode without depending on the key (the triads are summed over roots too). So the descriptors pool
exactly like encoder layers (frame sums + counts, chunks add up), and the adapter reads them through its own
projection (`MusicAdapterConfig.descriptor_dim`).

Frame t is centred on the middle of the inner encoder's receptive field (t * stride + receptive_field / 2) and
padding is zeros, so a clip gets the same descriptors alone or in a padded batch. Lagged products reach up to 2 s past
a frame; at the end of a clip (or of a long-audio encoder window) they see silence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mu_llama import signal
from mu_llama.errors import ConfigError

from .base import AudioEncoder, EncoderOutput

N_FFT = 2048
N_MELS, N_MFCC = 64, 20
TEMPI = tuple(30.0 * 2 ** (i / 6) for i in range(24))          # 30 .. 453 BPM, 1/6 octave apart
VERSION = 1        # bump when the descriptors change: it is in the state dict, so feature caches key on it
DESCRIPTOR_DIM = N_MELS + 2 * N_MFCC + 12 + 26 + 2 + len(TEMPI)  # 168


def frame_descriptors(wave: torch.Tensor, sample_rate: int, hop: int, first_centre: int, frames: int) -> torch.Tensor:
    """(B, N) waves -> (B, frames, DESCRIPTOR_DIM) descriptors at centres first_centre + t * hop (zero padding)."""
    b = wave.shape[0]
    lags = [max(1, round(60.0 / bpm * sample_rate / hop)) for bpm in TEMPI]
    extra = max(lags)                      # frames past the last one, for the lagged products
    n_frames = frames + 1 + extra          # + 1: one frame before frame 0, for the flux
    # frame k is centred on first_centre + (k - 1) hop, zeros outside the wave; periodic Hann, as torch.stft's
    spec = signal.spectrogram(wave.float(), N_FFT, hop, window="hann_periodic", start=first_centre - hop - N_FFT // 2,
                              count=n_frames)                               # (B, F, n_frames)
    # filterbanks built in torch float32 (xp=torch), as the shipped model was trained on
    fb = signal.mel_filterbank(sample_rate, N_FFT, N_MELS, 30.0, min(11000.0, sample_rate / 2), xp=torch)
    logmel = torch.log10(fb.to(spec.device) @ spec.pow(2) + 1e-8)          # (B, 64, n)
    flux = signal.onset_envelope(logmel, mean=True)                         # (B, n - 1): o(t) for t = 0..
    logmel = logmel[:, :, 1: frames + 1]                                    # (B, 64, T)
    mfcc = signal.mfcc(logmel, N_MFCC) / 10.0
    mag = spec[:, :, 1: frames + 1]
    chroma = signal.chroma_filterbank(sample_rate, N_FFT, xp=torch).to(spec.device) @ mag.pow(2)  # (B, 12, T) power
    total = chroma.sum(1, keepdim=True)
    chroma = torch.where(total > 1e-3, chroma / total.clamp(min=1e-8), torch.zeros_like(chroma))
    roll = [torch.roll(chroma, -k, dims=1) for k in (3, 4, 7)]             # c_{r+k} at row r
    major = 27.0 * chroma * roll[1] * roll[2]                               # 1 for an even 3-note triad
    minor = 27.0 * chroma * roll[0] * roll[2]
    o = flux[:, :frames]
    periodicity = torch.stack([o * flux[:, lag: lag + frames] for lag in lags], 1)   # (B, 24, T)
    feats = torch.cat([logmel / 4.0, mfcc, mfcc.pow(2), chroma, major, minor, major.sum(1, keepdim=True),
                       minor.sum(1, keepdim=True), o[:, None], o[:, None].pow(2), periodicity], 1)
    return feats.transpose(1, 2).reshape(b, frames, DESCRIPTOR_DIM)


class DescriptorEncoder(AudioEncoder):
    """An AudioEncoder + one descriptor hidden state (the last one): (L + 1, B, T, D), descriptors in [..., :168]."""

    def __init__(self, inner: AudioEncoder):
        super().__init__()
        if inner.hidden_size < DESCRIPTOR_DIM:
            raise ConfigError(f"descriptors need an encoder width >= {DESCRIPTOR_DIM}, got {inner.hidden_size}")
        self.inner = inner
        self.sample_rate, self.frame_stride = inner.sample_rate, inner.frame_stride
        self.receptive_field, self.hidden_size = inner.receptive_field, inner.hidden_size
        self.num_layers = inner.num_layers + 1
        self.config = getattr(inner, "config", None)
        self.register_buffer("descriptor_version", torch.tensor([VERSION]))

    @property
    def descriptor_layer(self) -> int:
        return self.num_layers - 1

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *,
                layers: Sequence[int] | None = None) -> EncoderOutput:
        selected = self.resolve_layers(layers)
        inner_layers = [i for i in selected if i != self.descriptor_layer]
        out = self.inner(wave, lengths, layers=inner_layers or [0])
        hs, mask = out.hidden_states, out.frame_mask                        # (L', B, T, D), (B, T)
        if self.descriptor_layer not in selected:
            return out
        b, t = mask.shape
        n = wave.shape[1]
        lengths = torch.full((b,), n, dtype=torch.long) if lengths is None else torch.as_tensor(lengths).long()
        # zero the padding so a row in a batch sees what it would see alone
        x = wave.float() * (torch.arange(n, device=wave.device)[None] < lengths.to(wave.device)[:, None])
        d = frame_descriptors(x, self.sample_rate, self.frame_stride, self.receptive_field // 2, t)
        d = torch.nn.functional.pad(d, (0, self.hidden_size - DESCRIPTOR_DIM)).to(hs.device, hs.dtype)
        d = d * mask[..., None].to(d.dtype)
        by_index = dict(zip(inner_layers, hs)) if inner_layers else {}
        by_index[self.descriptor_layer] = d
        return EncoderOutput(torch.stack([by_index[i] for i in selected]), mask, selected)
