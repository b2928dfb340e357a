"""Python API of the embedded generator (the CLI `mu-llama generate` mirrors it).

    from mu_llama.generate import EmbeddedGenerator, Conditioning, SamplingOptions
    from mu_llama.emotion import VAD
    gen = EmbeddedGenerator.load()                     # mu_llama/assets/generator
    out = gen.generate(Conditioning("a calm piece for piano", VAD(0.5, -0.6, -0.3)), duration=10,
                       options=SamplingOptions(seed=1))
    out.save("calm.wav")                               # also writes calm.mid
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mu_llama.emotion.vad import VAD
from mu_llama.errors import ConfigError
from mu_llama.generate.conditioning import Conditioning
from mu_llama.generate.model import MusicTokenLM, load_generator
from mu_llama.generate.performance import PerformanceOptions, perform
from mu_llama.generate.sampling import SamplingOptions, sample_tokens
from mu_llama.generate.symbolic import Note, Piece, piece_to_midi
from mu_llama.generate.tokenizer import Tokenizer

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "generator"
MAX_DURATION = 600.0
MIN_DURATION = 0.5  # shorter than one note at the fastest tempo: nothing would sound


def check_duration(duration) -> float:
    """The requested duration in seconds, or a ConfigError naming the valid range."""
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
            or not MIN_DURATION <= duration <= MAX_DURATION:
        raise ConfigError(f"duration must be a number of seconds in [{MIN_DURATION:g}, {MAX_DURATION:g}] "
                          f"(shorter cannot hold a note), got {duration!r}")
    return float(duration)
DEFAULT_PERFORMANCE = PerformanceOptions()


@dataclass
class Generation:
    tokens: list[int]
    piece: Piece                   # notes cut at `duration`
    duration: float
    conditioning: Conditioning
    options: SamplingOptions
    performance: PerformanceOptions | None = None

    def midi(self):
        return piece_to_midi(self.piece)

    def audio(self, sample_rate: int = 22050, soundfont: str | None = None) -> np.ndarray:
        """Rendered mono float32, exactly `duration` seconds."""
        from mu_llama.generate.render import render_piece

        return render_piece(self.piece, sample_rate=sample_rate, soundfont=soundfont, duration=self.duration)

    def save(self, wav_path: str | Path, sample_rate: int = 22050, soundfont: str | None = None) -> tuple[Path, Path]:
        """Write WAV and the MIDI beside it (same name, .mid)."""
        from mu_llama.audio import write_audio

        wav = Path(wav_path)
        wav.parent.mkdir(parents=True, exist_ok=True)
        mid = wav.with_suffix(".mid")
        self.midi().write(str(mid))
        write_audio(wav, self.audio(sample_rate, soundfont), sample_rate, subtype="PCM_16")
        return wav, mid


def cut_piece(piece: Piece, seconds: float) -> Piece:
    """Notes starting before `seconds`, shortened to end by then."""
    end = seconds * piece.bpm / 60.0
    min_beats = 1.0 / 32                   # a sliver of a note would share its on/off tick in MIDI (a stuck note)
    notes = [Note(n.onset, min(n.duration, end - n.onset), n.pitch, n.velocity) for n in piece.notes
             if n.onset < end - min_beats]
    return Piece(notes, bpm=piece.bpm, meter=piece.meter, program=piece.program, key_tonic=piece.key_tonic,
                 mode=piece.mode)


class EmbeddedGenerator:
    """Token LM + tokenizer + text embedder. `text_embedder`: callable list[str] -> (N, text_dim) array."""

    def __init__(self, model: MusicTokenLM, text_embedder=None):
        self.model = model.eval()
        self.tok = Tokenizer()
        if model.config.vocab_size != len(self.tok):
            raise ConfigError(f"model vocabulary {model.config.vocab_size} != tokenizer vocabulary {len(self.tok)}")
        self._embedder = text_embedder

    @classmethod
    def load(cls, path: str | Path | None = None, text_embedder=None) -> "EmbeddedGenerator":
        return cls(load_generator(path or ASSET_DIR), text_embedder)

    @property
    def embedder(self):
        if self._embedder is None:
            from mu_llama.generate.conditioning import default_text_embedder

            self._embedder = default_text_embedder()
        return self._embedder

    def prefixes(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional prefix, unconditional prefix), each (1, P, D). Blank text / None parts -> null vectors."""
        m = self.model
        with torch.no_grad():
            text = torch.from_numpy(np.asarray(self.embedder([cond.text]), np.float32)) if cond.has_text else None
            vad = torch.tensor([cond.vad.as_tuple()], dtype=torch.float32) if cond.has_vad else None
            return m.prefix(text, vad), m.prefix(None, None, batch=1)

    def generate(self, cond: Conditioning, duration: float = 10.0, options: SamplingOptions | None = None,
                 performance: PerformanceOptions | None = DEFAULT_PERFORMANCE) -> Generation:
        """Sample a score, cut it at `duration`, and play it with the arousal performance rules (None: as written)."""
        check_duration(duration)
        opts = options or SamplingOptions()
        pc, pu = self.prefixes(cond)
        torch.manual_seed(opts.seed)   # nothing else is random, but keep global state predictable too
        vad = cond.vad.as_tuple() if cond.has_vad else None
        # the planner plans *played* loudness: tell it what the performance layer below will add per unit arousal
        shift = 0.0 if performance is None else performance.strength * performance.velocity_per_arousal
        ids = sample_tokens(self.model, self.tok, pc, None if cond.unconditional else pu, duration, opts,
                            control_vad=vad, velocity_shift=shift, text=cond.text)
        piece = cut_piece(self.tok.decode(ids), duration)
        if performance is not None and vad is not None:
            piece = perform(piece, vad[1], performance)
        return Generation(ids, piece, duration, cond, opts, performance)


def vad_and_caption_from_audio(path: str | Path, *, shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
                               caption_model: str | None = None) -> tuple[VAD, str | None]:
    """Estimate VAD from an audio file and shift it; caption it with the understanding model when one is named
    (optional: without `caption_model`, or if it cannot load, the caption is None)."""
    from mu_llama.emotion.audio import vad_from_audio

    vad = vad_from_audio(path).shifted(*shift)
    text = None
    if caption_model:
        from mu_llama.model import load_model
        from mu_llama.tasks import caption

        text = caption(load_model(caption_model), str(path))
    return vad, text
