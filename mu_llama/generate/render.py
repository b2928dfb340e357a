"""MIDI -> audio with the fluidsynth program and a General MIDI soundfont (both Debian packages here).

Rendering uses a fixed master gain and no normalisation, so MIDI velocity stays audible as loudness (the emotion
estimator reads loudness as an arousal/dominance cue).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from mu_llama.errors import ConfigError

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
RENDER_SR = 22050
GAIN = 0.5


def find_soundfont(path: str | Path | None = None) -> Path:
    for p in ([path] if path else []) + list(SOUNDFONTS):
        if p and Path(p).is_file():
            return Path(p)
    try:   # pretty_midi ships a small GM soundfont
        import pretty_midi

        p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if p.is_file():
            return p
    except ImportError:
        pass
    raise ConfigError("no General MIDI soundfont found: install Debian's fluid-soundfont-gm or pass --soundfont")


def render_midi(midi_path: str | Path, *, sample_rate: int = RENDER_SR, soundfont: str | Path | None = None,
                duration: float | None = None) -> np.ndarray:
    """Render a MIDI file -> mono float32 (n,) at sample_rate. `duration` trims (with a 50 ms fade) or pads."""
    import soundfile as sf

    exe = shutil.which("fluidsynth")
    if exe is None:
        raise ConfigError("rendering needs the `fluidsynth` program (Debian package fluidsynth)")
    sf2 = find_soundfont(soundfont)
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "out.wav"
        cmd = [exe, "-ni", "-q", "-g", str(GAIN), "-r", str(sample_rate), "-F", str(wav), "-T", "wav", str(sf2),
               str(midi_path)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not wav.exists():
            raise ConfigError(f"fluidsynth failed on {midi_path}: {r.stderr.strip()[:200]}")
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        import soxr

        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    if duration is not None:
        n = int(round(duration * sample_rate))
        if len(audio) >= n:
            audio = audio[:n].copy()
            fade = min(n, int(0.05 * sample_rate))
            if fade:
                audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        else:
            audio = np.pad(audio, (0, n - len(audio)))
    return audio


def render_piece(piece, **kw) -> np.ndarray:
    """Piece -> audio via a temporary MIDI file."""
    from mu_llama.generate.symbolic import piece_to_midi

    with tempfile.TemporaryDirectory() as td:
        mid = Path(td) / "p.mid"
        piece_to_midi(piece).write(str(mid))
        return render_midi(mid, **kw)
