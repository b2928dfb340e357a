"""Audio files -> MERT features on disk: one safetensors file per input plus a manifest.jsonl (the `mu-llama embed` library).

Each file is streamed (mu_llama.audio.stream_audio) through overlapping windows (mu_llama.encoders.windowing),
so an hour of audio is never decoded into memory at once; with pool="mean" only running sums are kept, with
pool="none" the stitched frames of the selected layers are kept (use `layers` to bound that).

Per-file tensors (float32):
  pool "none": hidden_states (L, F, D), the stitched frames, F == frames_for(N)
  pool "mean": mean (L, D), the mean over all F frames (equal to hidden_states.mean(1))
  always:      window_pooled (n_windows, L, D) per-window means; window_bounds (n_windows, 2) int64 [start, end) samples
Header metadata: model, encoder, layers, sample_rate, frame_rate, frames, duration, pool, window_s, hop_s, source.
Manifest line per input: {"path", "output", "frames", "duration", "windows", "error", "warning"}.

Which encoder (`EmbedOptions.model`, `--model`; resolve_encoder): the same names every other verb takes, meaning
"the encoder that model hears with" -- a registry name (mu-llama-mini, the default, ships its trained MERT in
./encoder; see mu_llama.model.MODELS) or a save_pretrained directory, run exactly as the model runs it (wrapped in
DescriptorEncoder when the model uses descriptors: one more hidden state, the last) -- or an encoder itself: a
local MERT directory or a hub id (m-a-p/MERT-v1-95M). Random weights only by the explicit name random:NAME.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mu_llama.audio import TruncatedAudioWarning, iter_audio_files, stream_audio
from mu_llama.encoders import (
    BUILTIN_CONFIGS,
    AudioEncoder,
    DescriptorEncoder,
    EncoderOptions,
    WindowOptions,
    encode_stream,
    load_encoder,
)
from mu_llama.encoders.mert import RANDOM_PREFIX
from mu_llama.encoders.mert_checkpoint import HUB_ID
from mu_llama.errors import ConfigError, MuLlamaError, choice_error

DEFAULT_MODEL = "mu-llama-mini"  # = mu_llama.model.DEFAULT_MODEL (a test checks): the default model's encoder
POOLS = ("none", "mean")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class EmbedOptions:
    """What `mu-llama embed` computes. layers: hidden-state indices (None = all; negatives count from the end)."""

    model: str = DEFAULT_MODEL
    layers: tuple[int, ...] | None = None
    pool: str = "none"
    window_s: float = 30.0
    hop_s: float = 25.0
    batch_size: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    max_duration: float | None = None
    seed: int = 0  # weights of an explicit random:NAME encoder (a model's own random encoder uses the model's seed)

    def __post_init__(self):
        if self.pool not in POOLS:
            raise choice_error("pool", self.pool, POOLS)
        if self.max_duration is not None and not self.max_duration > 0:
            raise ConfigError(f"max_duration must be > 0 seconds, got {self.max_duration!r}")
        WindowOptions(self.window_s, self.hop_s, self.batch_size)  # validates window_s / hop_s / batch_size
        EncoderOptions(self.device, self.dtype, self.attn_implementation)  # validates device / dtype / attention

    @property
    def window_options(self) -> WindowOptions:
        return WindowOptions(self.window_s, self.hop_s, self.batch_size)

    @property
    def encoder_options(self) -> EncoderOptions:
        return EncoderOptions(self.device, self.dtype, self.attn_implementation)


@dataclass(frozen=True)
class EncoderChoice:
    """What a --model spec resolved to. spec: what load_encoder takes (a MERT directory, a hub id, random:NAME)."""

    spec: str
    seed: int = 0  # weights of random:* encoders
    descriptors: bool = False  # the model runs its encoder inside DescriptorEncoder (one more hidden state)
    model: str | None = None  # the model (registry name or directory) the encoder was taken from, if any

    @property
    def random(self) -> bool:
        return self.spec.startswith(RANDOM_PREFIX)


def resolve_encoder(model: str | Path = DEFAULT_MODEL, seed: int = 0) -> EncoderChoice:
    """--model SPEC -> the encoder to load. No weights are loaded here; unknown names are a ConfigError naming the
    choices.

    In order: random:NAME (explicit random weights, `seed`); a mu-llama model directory (config.json with a
    "format" header) or a registry name (mu_llama.model.MODELS), found as load_model finds them; an existing path,
    taken as a MERT directory; a hub id owner/name, taken as a MERT repository. A model's encoder keeps the model's
    encoder_seed and descriptors.
    """
    from mu_llama.model import MODELS, model_config

    spec = str(model)
    if spec.startswith(RANDOM_PREFIX):
        return EncoderChoice(spec, seed)
    path = Path(spec).expanduser()
    if _is_model_dir(path) or spec in MODELS:
        config = model_config(spec)
        return EncoderChoice(str(config.encoder), config.encoder_seed, config.descriptors, spec)
    if path.exists() or HUB_ID.fullmatch(spec):  # a MERT directory or hub repository: load_mert checks it
        return EncoderChoice(str(path) if path.exists() else spec, seed)
    raise ConfigError(f"unknown model {spec!r}; valid choices: {', '.join(MODELS)}, a model directory "
                      f"(save_pretrained), a MERT directory or hub id (e.g. m-a-p/MERT-v1-95M), or random weights "
                      f"{', '.join(RANDOM_PREFIX + n for n in BUILTIN_CONFIGS)}")


def _is_model_dir(path: Path) -> bool:
    """A save_pretrained directory (config.json with a "format" header), as opposed to a MERT one (model fields)."""
    from mu_llama.model import CONFIG_FILE

    try:
        body = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no / unreadable config.json: not a model; the MERT loader names the problem
        return False
    return isinstance(body, dict) and "format" in body


def load_embed_encoder(options: EmbedOptions) -> tuple[AudioEncoder, EncoderChoice]:
    """The encoder options.model names, built as its model runs it (see resolve_encoder)."""
    choice = resolve_encoder(options.model, options.seed)
    encoder = load_encoder(choice.spec, options.encoder_options, seed=choice.seed)
    return (DescriptorEncoder(encoder) if choice.descriptors else encoder), choice


@dataclass(frozen=True)
class EmbedResult:
    """One manifest line."""

    path: str
    output: str | None = None
    frames: int | None = None
    duration: float | None = None
    windows: int | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_layers(text: str) -> tuple[int, ...] | None:
    """'all' -> None; '0,6,-1' -> (0, 6, -1)."""
    if text.strip().lower() == "all":
        return None
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"invalid layers {text!r}; use 'all' or comma-separated indices such as 0,6,12") from None
    if not layers:
        raise ConfigError(f"invalid layers {text!r}; use 'all' or comma-separated indices such as 0,6,12")
    return layers


def embed_file(encoder: AudioEncoder, path: str | Path, out_path: Path, options: EmbedOptions) -> EmbedResult:
    """Encode one file and write its features; user-caused failures become EmbedResult.error, never exceptions."""
    from safetensors.torch import save_file

    sr = encoder.sample_rate
    layers = encoder.resolve_layers(options.layers)
    num_samples = 0

    def counted(blocks: Iterable) -> Iterable:
        nonlocal num_samples
        for block in blocks:
            num_samples += len(block)
            yield block

    frames, sums, pooled, bounds = [], None, [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            blocks = stream_audio(path, sr, block_seconds=min(options.window_s, 30.0), max_duration=options.max_duration)
            for w in encode_stream(encoder, counted(blocks), options.window_options, layers=layers):
                if options.pool == "none":
                    frames.append(w.hidden_states)
                else:
                    s = w.hidden_states.double().sum(dim=1)  # (L, D) running sum: constant memory for any length
                    sums = s if sums is None else sums + s
                pooled.append(w.pooled)
                bounds.append((w.start_sample, w.start_sample + w.num_samples))
        except (MuLlamaError, OSError, ValueError, RuntimeError) as e:
            return EmbedResult(str(path), error=_one_line(e), warning=_warnings(caught))
    warning = _warnings(caught)
    duration = num_samples / sr
    num_frames = encoder.frames_for(num_samples)
    if num_frames == 0:
        return EmbedResult(str(path), duration=duration, windows=0, warning=warning,
                           error=f"too short: {num_samples} samples at {sr} Hz, the encoder needs {encoder.receptive_field} for one frame")
    tensors = {"window_pooled": torch.stack(pooled).contiguous(), "window_bounds": torch.tensor(bounds, dtype=torch.long)}
    if options.pool == "none":
        tensors["hidden_states"] = torch.cat(frames, dim=1).contiguous()
    else:
        tensors["mean"] = (sums / num_frames).float().contiguous()
    metadata = {"model": str(options.model), "encoder": _encoder_name(encoder), "layers": json.dumps(list(layers)),
                "sample_rate": str(sr),
                "frame_rate": str(encoder.frame_rate), "frames": str(num_frames), "duration": repr(duration),
                "pool": options.pool, "window_s": repr(options.window_s), "hop_s": repr(options.hop_s), "source": str(path)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=metadata)
    return EmbedResult(str(path), str(out_path), num_frames, duration, len(pooled), warning=warning)


def embed_files(sources: Sequence[str | Path], out_dir: str | Path, options: EmbedOptions | None = None, *,
                encoder: AudioEncoder | None = None, progress: bool = True) -> list[EmbedResult]:
    """Encode every audio file named by `sources` (files, directories, globs, .txt lists) into `out_dir`.

    Writes out_dir/<stem>.safetensors per file (stems made unique) and out_dir/manifest.jsonl (rewritten,
    one line per input, flushed as it goes). Bad files are recorded and skipped.
    """
    options = options or EmbedOptions()
    out_dir = Path(out_dir)
    paths = [p for source in sources for p in iter_audio_files(source)]
    if encoder is None:  # before anything is written: a bad --model leaves no output directory behind
        encoder, choice = load_embed_encoder(options)
        if choice.random:  # shown even without a progress bar: these features mean nothing
            via = f" (the encoder of {choice.model})" if choice.model else ""
            print(f"warning: encoder {choice.spec}{via} has random weights: features are for smoke tests only",
                  file=sys.stderr)
    encoder.resolve_layers(options.layers)  # fail fast on a bad layer selection
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[EmbedResult] = []
    names = _unique_names(paths)
    with open(out_dir / MANIFEST, "w", encoding="utf-8") as manifest:
        for path, name in tqdm(list(zip(paths, names)), desc="embed", unit="file", disable=not progress):
            result = embed_file(encoder, path, out_dir / f"{name}.safetensors", options)
            results.append(result)
            manifest.write(json.dumps(asdict(result)) + "\n")
            manifest.flush()
    return results


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, with -1, -2, ... appended on repeats (a/x.wav and b/x.wav), in input order."""
    used: set[str] = set()
    names = []
    for p in paths:
        stem = name = Path(p).stem or "audio"
        n = 0
        while name.lower() in used:  # lower(): case-insensitive file systems
            n += 1
            name = f"{stem}-{n}"
        used.add(name.lower())
        names.append(name)
    return names


def _encoder_name(encoder: AudioEncoder) -> str:
    """What the features came from: the encoder's name (its spec), '+descriptors' when wrapped."""
    if isinstance(encoder, DescriptorEncoder):
        return f"{_encoder_name(encoder.inner)}+descriptors"
    return str(getattr(encoder, "name", type(encoder).__name__))


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg if isinstance(e, MuLlamaError) else f"{type(e).__name__}: {msg}"


def _warnings(caught: list) -> str | None:
    """Audio warnings (a truncated file) go into the manifest; any other warning is shown as usual."""
    msgs = []
    for w in caught:
        if issubclass(w.category, TruncatedAudioWarning):
            msgs.append(" ".join(str(w.message).split()))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return "; ".join(msgs) if msgs else None
