"""In-process FluidSynth through ctypes: load the soundfont once per process, render each clip from its MIDI file.

The CLI (`fluidsynth -F`) reloads the 148 MB FluidR3 soundfont for every clip, which was half of a clip's build time.
Here each process loads the soundfont once into a *template* synth that never plays. A synth that has played keeps
state no reset clears (the reverb/chorus modulation phases, voice slots: re-rendering a clip on a used synth gave
differences up to 1.0), so every render runs in a forked child on the pristine template (copy-on-write, a few ms) and
sends the float samples back through a pipe. Float output avoids dither (another carried state). A clip thus renders
identically whichever clips, and how many, the process rendered before it.
Events come from the clip's .mid file (read with pretty_midi), so the audio is exactly what the MIDI file says.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import numpy as np

BLOCK = 64                      # samples per write between events: events land on a 64-sample grid (2.7 ms at 24 kHz)


class FluidSynthMissing(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise FluidSynthMissing(f"libfluidsynth not found ({e}); install Debian libfluidsynth3") from e
    vp, ci, cd, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    sig = {"new_fluid_settings": ([], vp), "fluid_settings_setnum": ([vp, cs, cd], ci),
           "fluid_settings_setint": ([vp, cs, ci], ci), "new_fluid_synth": ([vp], vp),
           "fluid_synth_sfload": ([vp, cs, ci], ci), "fluid_synth_program_select": ([vp, ci, ci, ci, ci], ci),
           "fluid_synth_noteon": ([vp, ci, ci, ci], ci), "fluid_synth_noteoff": ([vp, ci, ci], ci),
           "fluid_synth_system_reset": ([vp], ci),
           "fluid_synth_write_float": ([vp, ci, vp, ci, ci, vp, ci, ci], ci)}
    for fn, (args, res) in sig.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


class Synth:
    """One FluidSynth instance with one soundfont loaded."""

    def __init__(self, soundfont: str, sample_rate: int, gain: float):
        lib = _lib()
        self.lib, self.sample_rate = lib, sample_rate
        self.settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self.settings, b"synth.sample-rate", float(sample_rate))
        lib.fluid_settings_setnum(self.settings, b"synth.gain", float(gain))
        lib.fluid_settings_setint(self.settings, b"synth.cpu-cores", 1)
        self.synth = lib.new_fluid_synth(self.settings)
        self.sfid = lib.fluid_synth_sfload(self.synth, str(soundfont).encode(), 1)
        if self.sfid < 0:
            raise FluidSynthMissing(f"{soundfont}: FluidSynth could not load this soundfont")

    def _write(self, n: int, left: np.ndarray, right: np.ndarray, pos: int) -> None:
        if n <= 0:
            return
        lp = left.ctypes.data + 4 * pos
        rp = right.ctypes.data + 4 * pos
        self.lib.fluid_synth_write_float(self.synth, n, lp, 0, 1, rp, 0, 1)

    def render_midi(self, midi_path: str | Path, seconds: float) -> np.ndarray:
        """float32 stereo (n, 2) of `seconds` rendered from a MIDI file on this synth (which then holds state:
        use `render_isolated` for reproducible output)."""
        import pretty_midi

        lib, sr = self.lib, self.sample_rate
        pm = pretty_midi.PrettyMIDI(str(midi_path))
        events = []                                   # (sample, order, kind, channel, key, velocity)
        chan = 0
        for inst in pm.instruments:
            if inst.is_drum:
                ch = 9
                lib.fluid_synth_program_select(self.synth, 9, self.sfid, 128, 0)
            else:
                ch = chan if chan < 9 else chan + 1
                chan += 1
                if ch > 15:
                    raise ValueError(f"{midi_path}: more than 15 pitched tracks")
                lib.fluid_synth_program_select(self.synth, ch, self.sfid, 0, inst.program)
            for n in inst.notes:
                events.append((int(round(n.start * sr)), 1, 1, ch, n.pitch, n.velocity))
                events.append((int(round(n.end * sr)), 0, 0, ch, n.pitch, 0))
        events.sort()
        total = int(round(seconds * sr))
        left = np.zeros(total + BLOCK, dtype=np.float32)
        right = np.zeros(total + BLOCK, dtype=np.float32)
        pos = 0
        for sample, _, kind, ch, key, vel in events:
            target = min((sample // BLOCK) * BLOCK, total)
            if target > pos:
                self._write(target - pos, left, right, pos)
                pos = target
            if pos >= total:
                break
            if kind:
                lib.fluid_synth_noteon(self.synth, ch, key, vel)
            else:
                lib.fluid_synth_noteoff(self.synth, ch, key)
        if total > pos:
            self._write(total - pos, left, right, pos)
        return np.stack([left[:total], right[:total]], axis=1)

    def reset(self) -> None:
        self.lib.fluid_synth_system_reset(self.synth)

    def render_isolated(self, midi_path: str | Path, seconds: float) -> np.ndarray:
        """`render_midi` in a forked child, so this synth stays pristine: deterministic for every call."""
        import os

        n = int(round(seconds * self.sample_rate))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # child: render, send raw float32 bytes, exit without cleanup
            code = 0
            try:
                os.close(r)
                data = np.ascontiguousarray(self.render_midi(midi_path, seconds), dtype=np.float32).tobytes()
                view = memoryview(data)
                while view:
                    k = os.write(w, view)
                    view = view[k:]
            except BaseException:  # noqa: BLE001 - any failure shows up as a short read in the parent
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        chunks, want = [], n * 2 * 4
        got = 0
        while got < want:
            b = os.read(r, min(1 << 20, want - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if got != want or status != 0:
            raise RuntimeError(f"{midi_path}: FluidSynth render in child process failed (status {status})")
        return np.frombuffer(b"".join(chunks), dtype=np.float32).reshape(n, 2)


@functools.lru_cache(maxsize=2)
def shared_synth(soundfont: str, sample_rate: int, gain: float) -> Synth:
    """The process's template synth for this soundfont (forked workers each build their own on first use)."""
    return Synth(soundfont, sample_rate, gain)
