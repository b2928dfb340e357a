"""Render the bundled example clips (mu_llama/assets/examples/) from music21 corpus scores.

    python scripts/make_examples.py [--out mu_llama/assets/examples] [--soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2]

Each clip: a fixed excerpt of a corpus work -> MIDI (pretty_midi, explicit GM programs and velocities) -> the
fluidsynth CLI at 44.1 kHz -> cut after the last note's release, fade, peak-normalise to -1 dBFS -> a small lossy
or lossless file in one of the formats mu_llama.audio reads (ogg, mp3, flac; one stereo, one at 22.05 kHz, so the
examples also exercise down-mixing and resampling). The same inputs give the same bytes (checked by --check).
manifest.json records each clip's source, excerpt, rendering and facts (mu_llama.facts.FactSheet vocabulary):
key and meter come from the score, tempo is the rendering tempo chosen here (these scores carry no metronome mark).
Needs: music21, pretty_midi, Debian `fluidsynth` and `fluid-soundfont-gm`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
import soxr
from music21 import corpus, key, meter

from mu_llama.facts import FactSheet, dynamics_class, gm_family, register_class

RENDER_SR = 44100
TAIL_S = 1.2           # let the last notes ring (release + reverb) before the fade
FADE_S = 0.3
PEAK = 10 ** (-1 / 20)  # -1 dBFS


@dataclass(frozen=True)
class ExampleSpec:
    file: str
    work: str                   # corpus path, as corpus.parse() takes it
    opus_number: int | None     # tune number inside a multi-tune ABC file
    title: str
    composer: str
    excerpt: str                # human description of the window
    end_ql: float               # window [0, end_ql) in quarter lengths from the start (pickup included)
    bpm: float                  # rendering tempo, quarter-note beats per minute
    programs: tuple[int, ...]   # GM program per score part
    velocities: tuple[int, ...]
    transpose: int              # semitones applied to every note
    sample_rate: int
    channels: int
    fmt: dict                   # keyword arguments for soundfile.write
    era: str
    genre: str
    texture: str                # judged from the score (FactSheet vocabulary)
    bass_type: str
    lead_instrument: str
    licence: str
    notes: str = ""


ESSEN_LICENCE = ("Essen Folksong Collection (EsAC; ABC encoding by Seymour Shlien) distributed with music21 by "
                 "permission for non-commercial use: see music21/corpus/essenFolksong/license.txt")
CORPUS_LICENCE = ("music21 corpus encoding; the composition is in the public domain; music21 distributes its corpus "
                  "under music21/corpus/license.txt (encodings used by permission, commercial use may be restricted)")

CLIPS = (
    ExampleSpec("bach_bwv66.6_organ.ogg", "bach/bwv66.6", None,
         "Chorale BWV 66.6 (closing chorale of cantata BWV 66)", "Johann Sebastian Bach",
         "pickup and bars 1-3, to the third fermata", 12.0, 72.0, (19, 19, 19, 19), (80, 72, 72, 80), 0,
         24000, 1, dict(format="OGG", subtype="VORBIS", compression_level=0.5),
         "baroque", "chorale", "homophonic", "none", "Church Organ", CORPUS_LICENCE,
         "all four voices (soprano, alto, tenor, bass) on one organ; fermatas not lengthened"),
    ExampleSpec("essen_tanhuser_flute.mp3", "essenFolksong/altdeu10.abc", 20,
         "Tanhuser (Essen A0022; Switzerland, noted 1830)", "traditional",
         "the whole tune", 24.0, 138.0, (73,), (92,), 12,
         24000, 1, dict(format="MP3", subtype="MPEG_LAYER_III", compression_level=0.3),
         "traditional", "folk song", "monophonic", "none", "Flute", ESSEN_LICENCE,
         "played an octave above the written pitch so the melody (G3-G4) sits in the flute's range"),
    ExampleSpec("mozart_k458_strings.ogg", "mozart/k458/movement1", None,
         "String Quartet No. 17 in B-flat major, K. 458 'The Hunt', I. Allegro vivace assai",
         "Wolfgang Amadeus Mozart", "pickup and bars 1-8 (the opening 'hunting-call' theme)", 24.5, 150.0,
         (40, 40, 41, 42), (96, 80, 78, 84), 0,
         44100, 2, dict(format="OGG", subtype="VORBIS", compression_level=0.6),
         "classical", "string quartet", "homophonic", "cello", "Violin", CORPUS_LICENCE,
         "6/8 at dotted quarter = 100; grace notes omitted; stereo (fluidsynth's GM panning)"),
    ExampleSpec("mozart_k545_piano.flac", "mozart/k545/movement1_exposition", None,
         "Piano Sonata No. 16 in C major, K. 545, I. Allegro", "Wolfgang Amadeus Mozart",
         "bars 1-4 (the opening theme over an Alberti bass)", 16.0, 112.0, (0, 0), (88, 64), 0,
         22050, 1, dict(format="FLAC", subtype="PCM_16", compression_level=1.0),
         "classical", "piano sonata", "homophonic", "none", "Acoustic Grand Piano", CORPUS_LICENCE,
         "right and left hand on one piano"),
)


def score_notes(clip: ExampleSpec):
    """-> (score, [(part index, midi pitch, start s, end s)]) for the excerpt window, ties merged, graces dropped."""
    s = corpus.parse(clip.work, number=clip.opus_number) if clip.opus_number else corpus.parse(clip.work)
    if len(s.parts) != len(clip.programs):
        raise SystemExit(f"{clip.work}: {len(s.parts)} parts but {len(clip.programs)} programs")
    sec = 60.0 / clip.bpm
    notes = []
    for i, part in enumerate(s.parts):
        for n in part.stripTies().flatten().notes:
            start, ql = float(n.offset), float(n.quarterLength)
            if ql <= 0 or start >= clip.end_ql:
                continue
            end = min(start + ql, clip.end_ql)
            notes += [(i, p.midi + clip.transpose, start * sec, end * sec) for p in n.pitches]
    return s, sorted(notes, key=lambda t: (t[2], t[0], t[1]))


def to_midi(clip: ExampleSpec, notes) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=clip.bpm)
    insts = [pretty_midi.Instrument(program=p, name=f"part{i}") for i, p in enumerate(clip.programs)]
    for part, pitch, start, end in notes:
        # a hair of detache between repeated notes so the synth re-attacks them
        insts[part].notes.append(pretty_midi.Note(clip.velocities[part], pitch, start, max(start + 0.05, end - 0.01)))
    pm.instruments.extend(insts)
    return pm


def render(clip: ExampleSpec, notes, soundfont: Path, tmp: Path) -> np.ndarray:
    mid, wav = tmp / "clip.mid", tmp / "clip.wav"
    to_midi(clip, notes).write(str(mid))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(RENDER_SR), "-F", str(wav), str(soundfont),
                    str(mid)], check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)     # (n, 2) at 44.1 kHz
    end = round((max(n[3] for n in notes) + TAIL_S) * sr)
    x = x[:end]
    fade = round(FADE_S * sr)
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    if clip.channels == 1:
        x = x.mean(axis=1, keepdims=True)
    if clip.sample_rate != sr:
        x = soxr.resample(x, sr, clip.sample_rate, quality="VHQ")
    return (x * (PEAK / np.abs(x).max())).astype(np.float32)


def _ogg_crc(data: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, MSB first, initial value 0, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def fix_ogg_serial(path: Path, serial: int = 0x6D754C4C) -> None:
    """libsndfile gives every Ogg stream a random serial number; pin it (and redo each page's CRC) so that
    the same audio always gives the same bytes."""
    data, pos = bytearray(path.read_bytes()), 0
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS":
            raise SystemExit(f"{path}: not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        end = pos + 27 + nseg + sum(data[pos + 27:pos + 27 + nseg])
        data[pos + 14:pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22:pos + 26] = bytes(4)
        data[pos + 22:pos + 26] = _ogg_crc(bytes(data[pos:end])).to_bytes(4, "little")
        pos = end
    path.write_bytes(bytes(data))


def score_facts(clip: ExampleSpec, s, notes, duration: float) -> dict:
    ts = s.recurse().getElementsByClass(meter.TimeSignature).first()
    ks = s.recurse().getElementsByClass(key.KeySignature).first()
    k = s.analyze("key")
    tonic = k.tonic.name.replace("-", "b")
    instruments = list(dict.fromkeys(pretty_midi.program_to_instrument_name(p) for p in clip.programs))
    mean_vel = float(np.mean([clip.velocities[n[0]] for n in notes]))
    facts = FactSheet(
        instruments=instruments, families=list(dict.fromkeys(gm_family(p) for p in clip.programs)),
        key_tonic=tonic, mode=k.mode, meter=ts.ratioString, tempo_bpm=clip.bpm, texture=clip.texture,
        voices=len(clip.programs), register=register_class(float(np.mean([n[1] for n in notes]))),
        note_density=round(len(notes) / duration, 2), dynamics=dynamics_class(mean_vel), composer=clip.composer,
        era=clip.era, genre=clip.genre, bass_type=clip.bass_type, lead_instrument=clip.lead_instrument,
        work_id=clip.work + (f"#{clip.opus_number}" if clip.opus_number else ""), collection=clip.work.split("/")[0])
    return {"facts": facts.to_dict(), "key_signature": ks.sharps if ks else None,
            "key_source": f"music21 key analysis of the whole score ({k.name}, "
                          f"correlation {k.correlationCoefficient:.2f})"}


def build(out: Path, soundfont: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in CLIPS:
            s, notes = score_notes(clip)
            audio = render(clip, notes, soundfont, Path(tmp))
            path = out / clip.file
            sf.write(path, audio if clip.channels > 1 else audio[:, 0], clip.sample_rate, **clip.fmt)
            if clip.fmt["format"] == "OGG":
                fix_ogg_serial(path)
            duration = len(audio) / clip.sample_rate
            entries.append({
                "file": clip.file, "format": clip.fmt["format"].lower(), "sample_rate": clip.sample_rate,
                "channels": clip.channels, "duration_s": round(duration, 3), "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "source": {"corpus": "music21", "work": clip.work, "opus_number": clip.opus_number,
                           "title": clip.title, "composer": clip.composer, "excerpt": clip.excerpt,
                           "excerpt_quarter_lengths": [0.0, clip.end_ql], "licence": clip.licence},
                "rendering": {"tempo_bpm_quarter": clip.bpm, "tempo_source": "chosen for rendering (no metronome mark "
                              "in the score)", "gm_programs": list(clip.programs), "velocities": list(clip.velocities),
                              "transpose_semitones": clip.transpose, "notes": len(notes),
                              "synth": "FluidSynth 2.3 CLI, FluidR3_GM.sf2 (MIT), gain 0.5, default reverb/chorus"},
                **score_facts(clip, s, notes, max(n[3] for n in notes)),
                "remarks": clip.notes,
            })
            print(f"{clip.file}: {duration:.1f} s, {path.stat().st_size / 1024:.0f} KB", file=sys.stderr)
    manifest = {"description": "Example clips rendered by scripts/make_examples.py from music21 corpus scores.",
                "clips": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "mu_llama/assets/examples")
    ap.add_argument("--soundfont", type=Path, default=Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"))
    ap.add_argument("--check", action="store_true", help="render twice into temp dirs and compare the bytes")
    args = ap.parse_args(argv)
    if not args.soundfont.is_file():
        raise SystemExit(f"{args.soundfont}: soundfont missing (apt-get install fluid-soundfont-gm)")
    if args.check:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ha = [c["sha256"] for c in build(Path(a), args.soundfont)["clips"]]
            hb = [c["sha256"] for c in build(Path(b), args.soundfont)["clips"]]
        print("deterministic" if ha == hb else "NOT deterministic")
        return 0 if ha == hb else 1
    build(args.out, args.soundfont)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
