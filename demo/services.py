"""What the demo page needs besides widgets: settings, cached loaders and thin wrappers over library calls.

No model logic lives here: decoding is mu_llama.audio, captions and answers are mu_llama.tasks, emotion is
mu_llama.emotion, music is mu_llama.generate, figures are mu_llama.plots. This module only decides what is
loaded once per process (st.cache_resource: models, the generator), what is remembered per input
(st.cache_data: decoded clips, captions, VAD estimates; keyed by the content's SHA-256, never by file name),
and serialises model calls, since a loaded model is shared by every browser session (its injection layer holds
the current music while it generates).

Settings come from environment variables, which `mu-llama demo` sets from its flags:
    MU_LLAMA_DEMO_MODEL          model the page starts with (registry name or save_pretrained directory)
    MU_LLAMA_DEMO_GENERATOR      generator checkpoint directory (default: the packaged one)
    MU_LLAMA_DEMO_MAX_UPLOAD_MB  upload size limit in MB (default 25; also pass --server.maxUploadSize)
    MU_LLAMA_DEMO_MAX_SECONDS    longest clip accepted, in seconds (default 600)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

import mu_llama
from mu_llama.errors import AudioError, ConfigError

log = logging.getLogger("mu_llama.demo")

EXAMPLES_DIR = Path(mu_llama.__file__).parent / "assets" / "examples"
UPLOAD_TYPES = ("wav", "flac", "ogg", "mp3")
DISPLAY_SR = 24000  # the clip is decoded once at this rate for the plots; tasks resample to the model's rate
FALLBACK_MODEL = "untrained:smollm2"
QUANTIZE = {"none": "none", "8bit": "8bit", "4bit": "4bit", "int8": "int8-dynamic"}  # UI label -> LLMOptions
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    generator: str | None = None
    max_upload_mb: int = 25
    max_seconds: float = 600.0

    def __post_init__(self):
        if not (isinstance(self.max_upload_mb, int) and self.max_upload_mb >= 1):
            raise ConfigError(f"invalid MU_LLAMA_DEMO_MAX_UPLOAD_MB {self.max_upload_mb!r}; must be an integer >= 1")
        if not self.max_seconds > 0:
            raise ConfigError(f"invalid MU_LLAMA_DEMO_MAX_SECONDS {self.max_seconds!r}; must be > 0")

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        try:
            mb = int(env.get("MU_LLAMA_DEMO_MAX_UPLOAD_MB", cls.max_upload_mb))
            seconds = float(env.get("MU_LLAMA_DEMO_MAX_SECONDS", cls.max_seconds))
        except ValueError as e:
            raise ConfigError(f"invalid demo limit in the environment: {e}") from None
        return cls(env.get("MU_LLAMA_DEMO_MODEL") or None, env.get("MU_LLAMA_DEMO_GENERATOR") or None, mb, seconds)


# --- clips ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoClip:
    key: str             # first 16 hex digits of the SHA-256 of the file's bytes: identity for every cache
    name: str
    data: bytes          # the file as given (played back by st.audio)
    wave: np.ndarray = field(repr=False)  # (n,) mono float32 at DISPLAY_SR
    sample_rate: int     # of the file
    channels: int
    format: str

    @property
    def duration(self) -> float:
        return len(self.wave) / DISPLAY_SR

    @property
    def mime(self) -> str:
        return {"mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}.get(self.format, "audio/wav")


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def examples() -> dict[str, str]:
    """Bundled example file name -> a title for the picker (from the examples' manifest)."""
    titles = {}
    manifest = EXAMPLES_DIR / "manifest.json"
    if manifest.is_file():
        for c in json.loads(manifest.read_text()).get("clips", []):
            src = c.get("source", {})
            titles[c["file"]] = f"{src.get('composer', '')}: {src.get('title', c['file'])}".strip(": ")
    files = sorted(p.name for p in EXAMPLES_DIR.glob("*") if p.suffix.lstrip(".").lower() in UPLOAD_TYPES)
    return {f: titles.get(f, f) for f in files}


def read_clip(name: str, data: bytes, settings: Settings) -> DemoClip:
    """Check size, then decode (AudioError with a one-line reason on anything unreadable or too long)."""
    limit = settings.max_upload_mb * 1024 * 1024
    if len(data) > limit:
        raise AudioError(name, "too_long", f"{len(data) / 2**20:.1f} MB is over the demo's "
                                           f"{settings.max_upload_mb} MB upload limit")
    if len(data) == 0:
        raise AudioError(name, "empty", "the upload has no bytes")
    return _decode(content_key(data), name, settings.max_seconds, data)


@st.cache_resource(max_entries=8, show_spinner=False)  # shared, not copied per rerun: clips can be large
def _decode(key: str, name: str, max_seconds: float, _data: bytes) -> DemoClip:
    import soundfile as sf

    from mu_llama.audio import decode_bytes

    wave = decode_bytes(_data, DISPLAY_SR, name, max_duration=max_seconds)
    try:  # header facts for display only; decode_bytes above already validated the data
        info = sf.info(io.BytesIO(_data))
        sr, channels, fmt = int(info.samplerate), int(info.channels), str(info.format).lower()
    except Exception:  # noqa: BLE001 - a header libsndfile decodes but cannot describe: show what we know
        sr, channels, fmt = DISPLAY_SR, 1, Path(name).suffix.lstrip(".").lower()
    return DemoClip(key, name, _data, wave, sr, channels, fmt)


def example_bytes(file_name: str) -> bytes:
    path = EXAMPLES_DIR / Path(file_name).name  # a bare name: never a path out of the examples folder
    if not path.is_file():
        raise AudioError(file_name, "missing", f"not one of the bundled examples ({', '.join(examples())})")
    return path.read_bytes()


# --- figures (mu_llama.plots), remembered as PNG bytes so reruns do not redraw them ----------------------
@st.cache_data(max_entries=32, show_spinner=False)
def waveform_png(clip_key: str, title: str, _wave: np.ndarray) -> bytes:
    from mu_llama import plots

    return plots.figure_png(plots.waveform_figure(_wave, DISPLAY_SR, title=title))


@st.cache_data(max_entries=128, show_spinner=False)
def va_png(points: tuple[tuple[str, float, float, float], ...], title: str) -> bytes:
    from mu_llama import plots

    return plots.figure_png(plots.va_plane_figure(points, size=3.8, title=title))


def va_points(points: dict) -> tuple[tuple[str, float, float, float], ...]:
    """{label: VAD} -> hashable (label, valence, arousal, dominance) rows for va_png."""
    return tuple((label, p.valence, p.arousal, p.dominance) for label, p in points.items())


# --- the understanding model ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRequest:
    spec: str
    quantize: str = "none"   # a QUANTIZE key
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"{self.spec}|{self.quantize}|{self.device}"


@dataclass
class LoadedModel:
    model: object
    lock: threading.Lock   # one generate() at a time per model: the injection layer holds per-call state
    request: ModelRequest


@st.cache_resource(max_entries=2, show_spinner=False)
def load_model(spec: str, quantize: str, device: str) -> LoadedModel:
    """Loads once per process and (spec, quantize, device); failures are not cached, so a retry reloads."""
    from mu_llama.llm import LLMOptions
    from mu_llama.model import load_model as load

    if quantize not in QUANTIZE:
        raise ConfigError(f"invalid quantization {quantize!r}; valid choices: {', '.join(QUANTIZE)}")
    model = load(spec, LLMOptions(device=device, quantize=QUANTIZE[quantize]))
    return LoadedModel(model, threading.Lock(), ModelRequest(spec, quantize, device))


def decoding_options(max_new_tokens: int, temperature: float, repetition_penalty: float = 1.0):
    """The sidebar's (max_new_tokens, temperature, repetition_penalty) -> DecodingOptions."""
    from mu_llama.decoding import DecodingOptions

    return DecodingOptions(max_new_tokens=max_new_tokens, temperature=temperature,
                           repetition_penalty=repetition_penalty)


@st.cache_data(max_entries=256, show_spinner=False)
def caption(clip_key: str, model_key: str, decoding: tuple, _loaded: LoadedModel,
            _wave: np.ndarray) -> tuple[str, float]:
    """(caption, seconds it took) of a clip, remembered per (content hash, model, decoding options)."""
    from mu_llama.tasks import caption as run_caption

    with _loaded.lock:
        start = time.perf_counter()
        text = run_caption(_loaded.model, (_wave, DISPLAY_SR), decoding_options(*decoding))
        return text, time.perf_counter() - start


def answer(loaded: LoadedModel, wave: np.ndarray, question: str, history: list[tuple[str, str]],
           decoding: tuple) -> str:
    from mu_llama.tasks import ask

    with loaded.lock:
        return ask(loaded.model, (wave, DISPLAY_SR), question, history=[list(history)],
                   options=decoding_options(*decoding))


# --- emotion ---------------------------------------------------------------------------------------------
@st.cache_data(max_entries=64, show_spinner=False)
def audio_vad(clip_key: str, _wave: np.ndarray):
    """Derived VAD of the audio (mu_llama.emotion's regressor); CheckpointError when it is not installed."""
    from mu_llama.audio import decode_array
    from mu_llama.emotion.audio import SR, vad_from_wave

    return vad_from_wave(decode_array(_wave, DISPLAY_SR, SR), SR)


@st.cache_data(max_entries=256, show_spinner=False)
def text_vad(text: str):
    from mu_llama.emotion import vad_from_text

    return vad_from_text(text)


# --- generation ------------------------------------------------------------------------------------------
@st.cache_resource(max_entries=1, show_spinner=False)
def load_generator(path: str | None):
    from mu_llama.generate import EmbeddedGenerator

    return EmbeddedGenerator.load(path)


@dataclass(frozen=True)
class Generated:
    key: str           # content hash of the WAV
    wav: bytes
    midi: bytes
    wave: np.ndarray = field(repr=False)  # (n,) mono float32 at DISPLAY_SR, for re-captioning and plots
    text: str
    vad: object        # the requested mu_llama.emotion.VAD
    duration: float
    seed: int


def generate(path: str | None, text: str, vad, duration: float, seed: int) -> Generated:
    """Text + VAD -> WAV and MIDI bytes through the embedded generator (rendered with fluidsynth)."""
    from mu_llama.audio import load_audio
    from mu_llama.generate import Conditioning, SamplingOptions

    gen = load_generator(path)
    out = gen.generate(Conditioning(text.strip() or None, vad), duration=duration, options=SamplingOptions(seed=seed))
    with tempfile.TemporaryDirectory(prefix="mu_llama_demo_") as tmp:
        wav_path, mid_path = out.save(Path(tmp) / "generated.wav")
        wav, midi = wav_path.read_bytes(), mid_path.read_bytes()
        wave = load_audio(wav_path, DISPLAY_SR)
    return Generated(content_key(wav), wav, midi, wave, text, vad, duration, seed)


# --- status ---------------------------------------------------------------------------------------------
def memory_status() -> dict[str, str]:
    """Resident memory of this server process and, when CUDA is present, allocated / reserved GPU memory."""
    out = {}
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:  # Linux without psutil
        try:
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            rss = None
    if rss is not None:
        out["RSS"] = f"{rss / 2**30:.2f} GiB"
    import torch

    if torch.cuda.is_available():
        out["CUDA"] = (f"{torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated, "
                       f"{torch.cuda.memory_reserved() / 2**30:.2f} GiB reserved")
    return out
