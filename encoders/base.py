"""The audio-encoder interface every encoder in mu_llama.encoders implements, and its options.

An encoder turns a batch of mono waveforms at its own `sample_rate` into per-frame hidden states of
every layer. Batches may mix clips of different lengths: `lengths` says how many samples of each row
are real, and an encoder must give each clip the same features it would get if run alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mu_llama.errors import ConfigError, choice_error

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class EncoderOptions:
    """Where and how an encoder runs. Half precision is offered on CUDA only (CPU kernels are slow or missing)."""

    device: str = "cpu"
    dtype: str = "float32"
    attn_implementation: str = "sdpa"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise choice_error("dtype", self.dtype, DTYPES)
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise choice_error("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"invalid device {self.device!r} ({e}); e.g. cpu, cuda, cuda:1") from None
        if self.dtype != "float32" and device.type != "cuda":
            raise ConfigError(f"dtype {self.dtype!r} needs a CUDA device (got {self.device!r}); use float32 on {device.type}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def check_available(self) -> None:
        """Raise ConfigError if the requested device is not usable on this machine."""
        device = self.torch_device
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {self.device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")


@dataclass(frozen=True)
class EncoderOutput:
    """hidden_states: (L, B, T, D), one slice per requested hidden state (index 0 = embedding output);
    frame_mask: (B, T) bool, True on real frames. Padded frames hold zeros. layers: the hidden-state
    indices (0..num_layers-1) the L slices correspond to."""

    hidden_states: torch.Tensor
    frame_mask: torch.Tensor
    layers: tuple[int, ...]

    @property
    def frames(self) -> torch.Tensor:
        """(B,) number of real frames per clip."""
        return self.frame_mask.sum(dim=1)


class AudioEncoder(nn.Module, ABC):
    """A frozen frame-level audio encoder built from a stack of unpadded strided convolutions.

    Subclasses set: sample_rate (Hz), num_layers (hidden states including the embedding output),
    hidden_size (D), frame_stride (samples between frames) and receptive_field (samples per frame).
    """

    sample_rate: int
    num_layers: int
    hidden_size: int
    frame_stride: int
    receptive_field: int

    @property
    def frame_rate(self) -> float:
        """Frames per second (75.0 for MERT at 24 kHz)."""
        return self.sample_rate / self.frame_stride

    def frames_for(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples: floor((N - R) / S) + 1, or 0 when N < R.

        Exact for a stack of unpadded convolutions: frame t exists iff its receptive field
        [t*S, t*S + R) lies inside the input.
        """
        n = int(num_samples)
        return 0 if n < self.receptive_field else (n - self.receptive_field) // self.frame_stride + 1

    def frames_for_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Vectorised frames_for over a (B,) integer tensor."""
        frames = torch.div(lengths - self.receptive_field, self.frame_stride, rounding_mode="floor") + 1
        return frames.clamp_min(0)

    def resolve_layers(self, layers: Sequence[int] | None) -> tuple[int, ...]:
        """Normalise a layer selection (None = all; negative indices count from the end) to sorted-as-given indices."""
        if layers is None:
            return tuple(range(self.num_layers))
        out = []
        for i in layers:
            j = int(i) + self.num_layers if int(i) < 0 else int(i)
            if not 0 <= j < self.num_layers:
                raise ConfigError(
                    f"layer {i} out of range: this encoder has {self.num_layers} hidden states (0..{self.num_layers - 1})")
            out.append(j)
        if len(set(out)) != len(out):
            raise ConfigError(f"duplicate layers in {list(layers)}")
        if not out:
            raise ConfigError("empty layer selection")
        return tuple(out)

    @abstractmethod
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *,
                layers: Sequence[int] | None = None) -> EncoderOutput:
        """wave: (B, N) float at `sample_rate`; lengths: (B,) valid samples per row (None = all N)."""
