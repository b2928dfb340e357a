"""Music understanding adapter: encoder hidden states -> music tokens in the LLM's embedding space.

Clip mode is MU-LLaMA's adapter: every encoder layer's hidden states are averaged over the clip's valid
frames, a learned 1x1 convolution mixes the L layers into one vector, the vector is L2-normalised and a
bridge (Linear enc_dim -> llm_dim, then residual SwiGLU blocks) turns it into ONE music token.

Time mode keeps *when* things happen: the same averaging is done per window (e.g. one token per 2 s),
the same mix + bridge is applied per window, and a position signal (sinusoidal time features through a
zero-initialised projection, or a learned per-index table) is added so the LLM can tell windows apart.
Long audio is heard in full: when there are more windows than `max_music_tokens`, adjacent windows are
merged (frame-weighted) so the whole recording still fits.

Pooling is split from the bridge on purpose: `pool_frames` turns encoder output into `PooledMusic`
(frame sums + counts per window; small, cacheable, and chunks of a long recording concatenate exactly),
and `MusicAdapter.forward(pooled)` runs the trainable part.

Parameter layout (names in `MusicAdapter.state_dict()`; MU-LLaMA checkpoint name on the right,
shapes for MERT-330M + LLaMA-2-7B: L=25, D=1024, H=4096, F=16384):

    layer_mix.weight        (1, L, 1)   <- mu_mert_agg.weight       Conv1d(L, 1, kernel_size=1)
    layer_mix.bias          (1,)        <- mu_mert_agg.bias
    proj.weight             (H, D)      <- mu_mert_proj.weight      Linear(D, H) with bias
    proj.bias               (H,)        <- mu_mert_proj.bias
    blocks.{i}.norm.weight  (H,)        <- mu_mert_norm_{i+1}.weight  RMSNorm (eps 1e-6); +.bias if bridge_norm="layer"
    blocks.{i}.w1.weight    (F, H)      <- mu_mert_f1_{i+1}.weight  gate: silu(w1 x)
    blocks.{i}.w3.weight    (F, H)      <- mu_mert_f3_{i+1}.weight  up
    blocks.{i}.w2.weight    (H, F)      <- mu_mert_f2_{i+1}.weight  down
    (blocks.{i}.w{1,2,3}.bias only when bridge_bias=True: MU-LLaMA's legacy_bridge)
    position.weight         time mode only: (H, position_dim) sinusoidal projection or (max_music_tokens, H) table

Block i computes x + w2(silu(w1(n)) * w3(n)) with n = norm(x), exactly as MU-LLaMA's bridge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mu_llama.errors import ConfigError, choice_error

ADAPTER_MODES = ("clip", "time")
POSITIONS = ("sinusoidal", "learned", "none")
BRIDGE_NORMS = ("rms", "layer")


@dataclass
class MusicAdapterConfig:
    enc_layers: int  # L: encoder hidden states incl. the embedding output (MERT-330M: 25)
    enc_dim: int  # D: encoder hidden size (MERT-330M: 1024)
    llm_dim: int  # H: LLM hidden size (LLaMA-2-7B: 4096)
    bridge_blocks: int = 3
    bridge_hidden: int | None = None  # F: SwiGLU width; None -> 4 * llm_dim (MU-LLaMA: 16384)
    bridge_norm: str = "rms"  # "layer" + bridge_bias=True reproduces MU-LLaMA's legacy_bridge
    bridge_bias: bool = False
    norm_eps: float = 1e-6
    normalize: bool = True  # L2-normalise the layer-mixed vector before the bridge (MU-LLaMA does)
    mode: str = "clip"
    window_seconds: float = 2.0  # time mode: seconds of audio per music token
    frame_rate: float = 75.0  # encoder frames per second (MERT: 24000 / 320)
    max_music_tokens: int = 256  # time mode: more windows than this are merged pairwise-ish to fit
    position: str = "sinusoidal"
    position_dim: int = 64  # sinusoidal features before the projection
    # > 0: the encoder's LAST hidden state carries this many descriptor channels (mu_llama.encoders.descriptors);
    # they skip the layer mix and enter through their own MLP (zero-initialised: a no-op until trained)
    descriptor_dim: int = 0
    descriptor_hidden: int = 256

    def __post_init__(self):
        for name in ("enc_layers", "enc_dim", "llm_dim", "max_music_tokens", "position_dim", "descriptor_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"invalid {name} {value!r}; must be a positive integer")
        if not isinstance(self.descriptor_dim, int) or not 0 <= self.descriptor_dim <= self.enc_dim:
            raise ConfigError(f"invalid descriptor_dim {self.descriptor_dim!r}; must be an integer in [0, enc_dim]")
        if not isinstance(self.bridge_blocks, int) or self.bridge_blocks < 0:
            raise ConfigError(f"invalid bridge_blocks {self.bridge_blocks!r}; must be an integer >= 0")
        if self.bridge_hidden is None:
            self.bridge_hidden = 4 * self.llm_dim
        if not isinstance(self.bridge_hidden, int) or self.bridge_hidden < 1:
            raise ConfigError(f"invalid bridge_hidden {self.bridge_hidden!r}; must be a positive integer or None")
        if self.mode not in ADAPTER_MODES:
            raise choice_error("adapter mode", self.mode, ADAPTER_MODES)
        if self.position not in POSITIONS:
            raise choice_error("adapter position", self.position, POSITIONS)
        if self.bridge_norm not in BRIDGE_NORMS:
            raise choice_error("bridge_norm", self.bridge_norm, BRIDGE_NORMS)
        if self.position == "sinusoidal" and self.position_dim % 2:
            raise ConfigError(f"invalid position_dim {self.position_dim}; must be even for sinusoidal features")
        if not (self.window_seconds > 0 and math.isfinite(self.window_seconds)):
            raise ConfigError(f"invalid window_seconds {self.window_seconds!r}; must be > 0")
        if not (self.frame_rate > 0 and math.isfinite(self.frame_rate)):
            raise ConfigError(f"invalid frame_rate {self.frame_rate!r}; must be > 0")
        if not (0 < self.norm_eps < 1):
            raise ConfigError(f"invalid norm_eps {self.norm_eps!r}; must be in (0, 1)")

    @property
    def pooled_layers(self) -> int:
        """Hidden states the adapter reads: the encoder layers, + 1 descriptor state when descriptor_dim > 0."""
        return self.enc_layers + (1 if self.descriptor_dim else 0)

    @property
    def window_frames(self) -> int | None:
        """Encoder frames per music token (None in clip mode: the whole clip is one token)."""
        if self.mode == "clip":
            return None
        return max(1, round(self.window_seconds * self.frame_rate))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MusicAdapterConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown MusicAdapterConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class PooledMusic:
    """Frame sums and counts per window: the encoder-side summary the adapter consumes.

    sums:   (B, W, L, D) float32, sum of each layer's hidden states over a window's valid frames
    counts: (B, W)       float32, number of valid frames in the window (0 = empty / padding window)
    seconds_per_window: window length in seconds (None in clip mode)

    Sums + counts (not means) so that chunks of a long recording combine exactly: concatenate along W in
    time mode, add in clip mode; `coarsen` merges adjacent windows with frame weighting.
    """

    sums: Tensor
    counts: Tensor
    seconds_per_window: float | None = None

    @property
    def num_windows(self) -> int:
        return self.sums.shape[1]

    def means(self) -> Tensor:
        """(B, W, L, D) per-window means (zeros for empty windows)."""
        return self.sums / self.counts.clamp(min=1.0)[:, :, None, None]

    @staticmethod
    def cat(parts: list[PooledMusic]) -> PooledMusic:
        """Concatenate consecutive chunks of the same recordings along time (time mode)."""
        return PooledMusic(torch.cat([p.sums for p in parts], 1), torch.cat([p.counts for p in parts], 1),
                           parts[0].seconds_per_window)

    @staticmethod
    def total(parts: list[PooledMusic]) -> PooledMusic:
        """Sum chunks into one window per recording (clip mode: the frame-weighted mean of the whole audio)."""
        sums = sum(p.sums.sum(1, keepdim=True) for p in parts)
        counts = sum(p.counts.sum(1, keepdim=True) for p in parts)
        return PooledMusic(sums, counts, None)

    @staticmethod
    def stack(items: list[PooledMusic]) -> PooledMusic:
        """Batch single-recording summaries (B=1 each), right-padding W with empty windows."""
        w = max(p.num_windows for p in items)
        sums = torch.cat([F.pad(p.sums, (0, 0, 0, 0, 0, w - p.num_windows)) for p in items], 0)
        counts = torch.cat([F.pad(p.counts, (0, w - p.num_windows)) for p in items], 0)
        return PooledMusic(sums, counts, items[0].seconds_per_window)

    def select(self, index: int) -> PooledMusic:
        """One recording (B=1), trailing empty windows dropped."""
        valid = (self.counts[index] > 0).nonzero()
        w = int(valid.max()) + 1 if len(valid) else 1
        return PooledMusic(self.sums[index:index + 1, :w], self.counts[index:index + 1, :w], self.seconds_per_window)

    def coarsen(self, max_windows: int) -> PooledMusic:
        """Merge groups of g adjacent windows (g = ceil(W / max_windows)) so at most max_windows remain."""
        b, w = self.counts.shape
        if w <= max_windows:
            return self
        g = math.ceil(w / max_windows)
        pad = (-w) % g
        sums = F.pad(self.sums, (0, 0, 0, 0, 0, pad)).reshape(b, (w + pad) // g, g, *self.sums.shape[2:]).sum(2)
        counts = F.pad(self.counts, (0, pad)).reshape(b, (w + pad) // g, g).sum(2)
        spw = None if self.seconds_per_window is None else self.seconds_per_window * g
        return PooledMusic(sums, counts, spw)

    def to(self, device) -> PooledMusic:
        return PooledMusic(self.sums.to(device), self.counts.to(device), self.seconds_per_window)


@dataclass
class MusicTokens:
    """Music tokens for one batch: tokens (B, M, llm_dim), mask (B, M) bool (False = padding token)."""

    tokens: Tensor
    mask: Tensor

    def __post_init__(self):
        if self.tokens.dim() != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"MusicTokens: tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} "
                             "must be (B, M, H) and (B, M)")
        self.mask = self.mask.bool()

    def to(self, device) -> MusicTokens:
        return MusicTokens(self.tokens.to(device), self.mask.to(device))

    def expand(self, repeats: int) -> MusicTokens:
        """Repeat each row `repeats` times (generate's num_return_sequences / beams interleave rows)."""
        return MusicTokens(self.tokens.repeat_interleave(repeats, 0), self.mask.repeat_interleave(repeats, 0))


def pool_frames(hidden_states: Tensor, frame_mask: Tensor, window_frames: int | None = None,
                frame_rate: float | None = None) -> PooledMusic:
    """Sum encoder hidden states over valid frames per window.

    hidden_states: (L, B, T, D) from the encoder (any float dtype); frame_mask: (B, T) bool.
    window_frames None -> one window per clip; else window w holds frames [w*F, (w+1)*F).
    Returns PooledMusic with sums (B, W, L, D) float32 and counts (B, W).
    """
    n_layers, b, t, d = hidden_states.shape
    if frame_mask.shape != (b, t):
        raise ValueError(f"frame_mask {tuple(frame_mask.shape)} does not match hidden states (B, T) = {(b, t)}")
    hs = hidden_states if hidden_states.dtype == torch.float32 else hidden_states.float()
    m = frame_mask.to(torch.float32)
    if window_frames is None:
        # (L, B, T, D) x (B, T) -> (B, L, D): a matmul, no masked copy of the big tensor
        sums = torch.einsum("lbtd,bt->bld", hs, m)[:, None]
        return PooledMusic(sums, m.sum(1, keepdim=True), None)
    w = max(1, math.ceil(t / window_frames))
    # assignment matrix A (B, T, W): A[b, t, w] = 1 if frame t is valid and lies in window w
    window_of = torch.arange(t, device=hs.device) // window_frames
    assign = F.one_hot(window_of, w).to(torch.float32)[None] * m[:, :, None]
    sums = torch.einsum("lbtd,btw->bwld", hs, assign)
    spw = None if frame_rate is None else window_frames / frame_rate
    return PooledMusic(sums, assign.sum(1), spw)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back (as LLaMA / MU-LLaMA's bridge)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class BridgeBlock(nn.Module):
    """x + w2(silu(w1(n)) * w3(n)), n = norm(x): one residual SwiGLU block of the bridge."""

    def __init__(self, dim: int, hidden: int, norm: str, bias: bool, eps: float):
        super().__init__()
        self.norm = RMSNorm(dim, eps) if norm == "rms" else nn.LayerNorm(dim, eps=eps)
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        n = self.norm(x)
        return x + self.w2(F.silu(self.w1(n)) * self.w3(n))


def sinusoidal_features(seconds: Tensor, dim: int, min_period: float, max_period: float = 20000.0) -> Tensor:
    """(…,) times in seconds -> (…, dim) [sin, cos] features with geometric periods in [min_period, max_period]."""
    half = dim // 2
    periods = min_period * (max_period / min_period) ** (torch.arange(half, device=seconds.device) / max(half - 1, 1))
    angles = 2 * math.pi * seconds[..., None].float() / periods
    return torch.cat([angles.sin(), angles.cos()], -1)


class MusicAdapter(nn.Module):
    """PooledMusic (B, W, L, D) -> MusicTokens (B, W, llm_dim). See the module docstring for the layout."""

    def __init__(self, config: MusicAdapterConfig):
        super().__init__()
        self.config = config
        c = config
        self.layer_mix = nn.Conv1d(c.enc_layers, 1, kernel_size=1)
        self.proj = nn.Linear(c.enc_dim, c.llm_dim)
        self.blocks = nn.ModuleList(
            BridgeBlock(c.llm_dim, c.bridge_hidden, c.bridge_norm, c.bridge_bias, c.norm_eps)
            for _ in range(c.bridge_blocks))
        self.position: nn.Module | None = None
        if c.mode == "time" and c.position == "sinusoidal":
            self.position = nn.Linear(c.position_dim, c.llm_dim, bias=False)
            nn.init.zeros_(self.position.weight)  # starts as a no-op; learns to use the time features
        elif c.mode == "time" and c.position == "learned":
            self.position = nn.Embedding(c.max_music_tokens, c.llm_dim)
            nn.init.zeros_(self.position.weight)
        self.descriptor: nn.Sequential | None = None
        if c.descriptor_dim:
            # (B, W, K) descriptor means -> (B, W, H), added to the projected layer mix before the bridge blocks
            self.descriptor = nn.Sequential(nn.Linear(c.descriptor_dim, c.descriptor_hidden), nn.SiLU(),
                                            nn.Linear(c.descriptor_hidden, c.llm_dim))
            nn.init.zeros_(self.descriptor[2].weight)
            nn.init.zeros_(self.descriptor[2].bias)

    @torch.no_grad()
    def standardise_descriptors(self, mean: Tensor, std: Tensor) -> None:
        """Fold per-channel standardisation (x - mean) / std of the descriptor means into the first descriptor layer
        (the channels mix log energies, shares and products on very different scales)."""
        if self.descriptor is None:
            raise ConfigError("this adapter has no descriptor input (descriptor_dim = 0)")
        first = self.descriptor[0]
        scale = 1.0 / std.to(first.weight).clamp(min=1e-6)
        first.bias -= first.weight @ (mean.to(first.weight) * scale)
        first.weight *= scale[None]

    def pool(self, hidden_states: Tensor, frame_mask: Tensor) -> PooledMusic:
        """Encoder output (L, B, T, D) + mask (B, T) -> PooledMusic for this adapter's mode."""
        if hidden_states.shape[0] != self.config.pooled_layers or hidden_states.shape[-1] != self.config.enc_dim:
            raise ConfigError(f"encoder output has {hidden_states.shape[0]} layers x {hidden_states.shape[-1]} dims; "
                              f"adapter expects {self.config.pooled_layers} x {self.config.enc_dim}")
        return pool_frames(hidden_states, frame_mask, self.config.window_frames, self.config.frame_rate)

    def forward(self, pooled: PooledMusic) -> MusicTokens:
        c = self.config
        if c.mode == "clip" and pooled.num_windows != 1:
            pooled = PooledMusic.total([pooled])
        pooled = pooled.coarsen(c.max_music_tokens)
        b, w, n_layers, d = pooled.sums.shape
        dtype = self.proj.weight.dtype
        means = pooled.means().to(dtype)  # (B, W, L, D) (L includes the descriptor state when there is one)
        descriptors = None
        if self.descriptor is not None:
            descriptors = means[:, :, -1, : c.descriptor_dim]  # (B, W, K)
            means, n_layers = means[:, :, :-1], n_layers - 1
        mixed = self.layer_mix(means.reshape(b * w, n_layers, d)).reshape(b, w, d)  # (B, W, D)
        if c.normalize:
            mixed = F.normalize(mixed, dim=-1)
        x = self.proj(mixed)  # (B, W, H)
        if descriptors is not None:
            x = x + self.descriptor(descriptors)
        if self.position is not None:
            x = x + self._position(pooled, w, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return MusicTokens(x, pooled.counts > 0)

    def _position(self, pooled: PooledMusic, w: int, device) -> Tensor:
        index = torch.arange(w, device=device)
        if isinstance(self.position, nn.Embedding):
            return self.position(index)[None]  # (1, W, H)
        spw = pooled.seconds_per_window or self.config.window_seconds
        feats = sinusoidal_features(index * spw, self.config.position_dim, 2 * self.config.window_seconds)
        return self.position(feats.to(self.position.weight.dtype))[None]

    def encode(self, hidden_states: Tensor, frame_mask: Tensor) -> MusicTokens:
        """Convenience: pool + forward in one call (training on raw encoder output)."""
        return self(self.pool(hidden_states, frame_mask))
