"""Training data for the embedded generator: music21 corpus excerpts, augmented, captioned and VAD-labelled.

Each excerpt (up to 16 bars of one work) becomes one or more *variants*: transposed (key and octave), given a tempo,
a dynamic level with accents, and a General MIDI instrument, so that the control factors (mode, tempo, dynamics,
register, density, instrument) vary independently across the data. Every variant carries:
  tokens   the Tokenizer ids (header measured from the variant's notes),
  facts    its musical facts (tempo, mode, key, velocity, pitch, density, texture, family),
  caption  a templated description (instrument, tempo, key, dynamics and mood words picked from its facts),
  vad      the derived label: 0.8 x vad_from_cues(facts) + 0.2 x vad_from_text(caption)
           (mu_llama.emotion.targets and .text; derived, not annotated).
Works are split by a hash of their file path and index (5% held out), so no work is in both splits.

    mu-llama generator-data data/generator/all [--limit N]
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.emotion.targets import FAMILY_POWER, TEXTURE_OF, MusicCues, blend, vad_from_cues
from mu_llama.emotion.text import vad_from_text
from mu_llama.facts import PITCH_CLASSES, dynamics_class, gm_family, register_class, tempo_class
from mu_llama.generate.symbolic import Note, Piece, major_share, monophonic_per_pitch
from mu_llama.generate.tokenizer import PITCH_HI, PITCH_LO, TOKEN_METERS, Tokenizer


@dataclass(frozen=True)
class Source:
    name: str
    pattern: str          # substring of the music21 corpus path
    texture: str          # facts TEXTURES
    genre: str            # words for captions
    max_files: int
    variants: int         # augmented variants per excerpt
    max_excerpts: int     # per score


SOURCES = (
    Source("bach_chorales", "/bach/bwv", "homophonic", "chorale", 450, 4, 1),
    Source("essen", "/essenFolksong/", "monophonic", "folk song", 20, 1, 1),
    Source("ryans_mammoth", "/ryansMammoth/", "monophonic", "fiddle tune", 700, 1, 1),
    Source("oneills", "/oneills1850/", "monophonic", "Irish tune", 16, 1, 1),
    Source("quartets", "/mozart/|/haydn/|/beethoven/", "polyphonic", "string quartet movement", 50, 2, 6),
    Source("palestrina", "/palestrina/", "polyphonic", "Renaissance motet", 120, 1, 1),
)
MAX_OPUS_SCORES = 120          # per opus file (Essen / O'Neill's files hold hundreds of tunes)
EXCERPT_BARS = 16

# Instruments that variants are rendered with, by texture (program, caption name).
POLY_PROGRAMS = ((0, "piano"), (6, "harpsichord"), (19, "church organ"), (48, "string ensemble"), (52, "choir"),
                 (61, "brass section"), (46, "harp"), (24, "nylon guitar"), (11, "vibraphone"), (89, "warm synth pad"))
MONO_PROGRAMS = ((73, "flute"), (40, "violin"), (71, "clarinet"), (68, "oboe"), (56, "trumpet"), (0, "piano"),
                 (42, "cello"), (22, "harmonica"), (65, "alto saxophone"), (60, "french horn"), (13, "xylophone"),
                 (24, "nylon guitar"), (57, "trombone"), (19, "church organ"))


# ---------------------------------------------------------------------------------------------------- extraction

def _score_notes(sc) -> tuple[list[Note], str] | None:
    """music21 score -> (notes in beats with bar lines at multiples of the bar length, meter) or None if unusable."""
    from music21 import meter, stream

    tss = list(sc.recurse().getElementsByClass(meter.TimeSignature))
    if not tss or tss[0].ratioString not in TOKEN_METERS:
        return None
    ratio = tss[0].ratioString
    bar_len = tss[0].barDuration.quarterLength
    parts = list(sc.parts) or [sc]
    m1 = parts[0].getElementsByClass(stream.Measure).first()
    shift = float(m1.paddingLeft) if m1 is not None and m1.paddingLeft else 0.0
    # stop at the first meter change (bar lines after it would not line up)
    change = next((float(t.getOffsetInHierarchy(sc)) for t in tss[1:] if t.ratioString != ratio), math.inf)
    notes: list[Note] = []
    for p in parts:
        open_ties: dict[int, int] = {}          # midi pitch -> index in notes of a tie still open (faster than stripTies)
        for el in p.flatten().notes:
            on, dur = float(el.offset), float(el.quarterLength)
            if dur <= 0 or on >= change:
                continue
            tie = el.tie.type if el.tie is not None else None
            for pt in el.pitches:
                m = int(pt.midi)
                j = open_ties.get(m)
                if j is not None and tie in ("stop", "continue") and abs(notes[j].onset + notes[j].duration - on - shift) < 1e-6:
                    notes[j] = Note(notes[j].onset, notes[j].duration + dur, m, 80)
                    if tie == "stop":
                        del open_ties[m]
                    continue
                notes.append(Note(on + shift, dur, m, 80))
                if tie == "start":
                    open_ties[m] = len(notes) - 1
    if len(notes) < 8 or bar_len <= 0:
        return None
    return monophonic_per_pitch(notes), ratio


def _windows(notes: list[Note], bar_beats: float, max_excerpts: int, rng: random.Random) -> list[list[Note]]:
    """Cut up to `max_excerpts` windows of EXCERPT_BARS bars (re-based to start at 0)."""
    n_bars = int(max(n.onset for n in notes) // bar_beats) + 1
    win = EXCERPT_BARS
    starts = list(range(0, max(1, n_bars - win // 2), win))
    if len(starts) > max_excerpts:
        starts = sorted(rng.sample(starts, max_excerpts))
    out = []
    for s in starts:
        lo, hi = s * bar_beats, (s + win) * bar_beats
        sub = [Note(n.onset - lo, min(n.duration, hi - n.onset), n.pitch, n.velocity) for n in notes if lo <= n.onset < hi]
        if len(sub) >= 8:
            out.append(sub)
    return out


# -------------------------------------------------------------------------------------------------- augmentation

def _augment(notes: list[Note], meter: str, texture: str, rng: random.Random) -> Piece | None:
    """Random key/octave, tempo, dynamics (with metric accents) and instrument."""
    bar_beats = Piece([], meter=meter).bar_beats
    shift = rng.randint(-6, 6) + (rng.choice((-12, 12)) if rng.random() < 0.35 else 0)
    lo, hi = min(n.pitch for n in notes), max(n.pitch for n in notes)
    if lo + shift < PITCH_LO or hi + shift > PITCH_HI:
        shift = rng.randint(-6, 6)
        if lo + shift < PITCH_LO or hi + shift > PITCH_HI:
            return None
    bpm = math.exp(rng.uniform(math.log(48), math.log(196)))
    base = rng.uniform(38, 116)
    out = []
    for n in notes:
        accent = 8 if abs(n.onset / bar_beats - round(n.onset / bar_beats)) < 1e-6 else 0
        v = int(round(min(127, max(1, base + accent + rng.gauss(0, 5)))))
        out.append(Note(n.onset, n.duration, n.pitch + shift, v))
    program, _ = rng.choice(MONO_PROGRAMS if texture == "monophonic" else POLY_PROGRAMS)
    return Piece(out, bpm=bpm, meter=meter, program=program)


def program_name(program: int) -> str:
    for p, name in POLY_PROGRAMS + MONO_PROGRAMS:
        if p == program:
            return name
    import pretty_midi

    return pretty_midi.program_to_instrument_name(program).lower()


def facts_of(piece: Piece, texture: str) -> dict:
    """Musical facts of a variant (continuous and categorical), read from its notes."""
    from mu_llama.generate.symbolic import estimate_key

    secs = max(piece.seconds, 1e-6)
    tonic, mode, _ = estimate_key(piece.notes)
    mean_v = float(np.mean([n.velocity for n in piece.notes]))
    mean_p = float(np.mean([n.pitch for n in piece.notes]))
    fam = gm_family(piece.program)
    return {"tempo_bpm": round(piece.bpm, 2), "tempo_class": tempo_class(piece.bpm), "mode": mode,
            "key_tonic": PITCH_CLASSES[tonic], "major_share": round(major_share(piece), 3),
            "mean_velocity": round(mean_v, 2), "dynamics": dynamics_class(mean_v), "mean_pitch": round(mean_p, 2),
            "register": register_class(mean_p), "notes_per_second": round(len(piece.notes) / secs, 3),
            "texture": texture, "family": fam, "program": piece.program, "instrument": program_name(piece.program),
            "meter": piece.meter}


def cues_of(f: dict) -> MusicCues:
    return MusicCues(major_share=f["major_share"], tempo_bpm=f["tempo_bpm"], notes_per_second=f["notes_per_second"],
                     mean_velocity=f["mean_velocity"], mean_pitch=f["mean_pitch"], texture=TEXTURE_OF[f["texture"]],
                     family_power=FAMILY_POWER.get(f["family"], 0.0))


# ------------------------------------------------------------------------------------------------------- captions

MOODS = {  # (valence sign, arousal sign) -> words
    (1, 1): ("joyful", "cheerful", "bright", "lively", "playful", "upbeat"),
    (1, -1): ("peaceful", "serene", "tender", "calm", "gentle", "soothing"),
    (-1, -1): ("melancholic", "somber", "mournful", "gloomy", "wistful", "sad"),
    (-1, 1): ("tense", "agitated", "restless", "dramatic", "anxious", "stormy"),
}
POWER = {1: ("majestic", "powerful", "grand", "stately"), -1: ("delicate", "intimate", "fragile", "soft")}
TEMPO_WORDS = {"slow": ("slow", "unhurried", "slow-moving"), "moderate": ("moderately paced", "walking-pace", ""),
               "fast": ("fast", "quick", "brisk")}
DYN_WORDS = {"soft": ("softly", "quietly", "gently"), "medium": ("", "", "evenly"), "loud": ("loudly", "boldly", "forcefully")}


def make_caption(f: dict, vad_facts, genre: str, rng: random.Random) -> str:
    """A templated caption; fields are dropped at random so text alone never pins down every fact."""
    def pick(xs):
        return rng.choice(xs)

    mood = ""
    if abs(vad_facts.valence) > 0.15 or abs(vad_facts.arousal) > 0.15:
        mood = pick(MOODS[(1 if vad_facts.valence >= 0 else -1, 1 if vad_facts.arousal >= 0 else -1)])
    if abs(vad_facts.dominance) > 0.35 and rng.random() < 0.6:
        mood = f"{mood} and {pick(POWER[1 if vad_facts.dominance > 0 else -1])}" if mood else pick(POWER[1 if vad_facts.dominance > 0 else -1])
    tempo = pick(TEMPO_WORDS[f["tempo_class"]])
    key = f"in {f['key_tonic']} {f['mode']}" if rng.random() < 0.5 else f"in a {f['mode']} key"
    dyn = pick(DYN_WORDS[f["dynamics"]])
    inst = f["instrument"]
    r = rng.random()
    if r < 0.15:                                        # instrument only
        s = pick((f"A {genre} played on {inst}.", f"{inst.capitalize()} music.", f"A piece for {inst}."))
        return re.sub(r"\bA ([aeiouAEIOU])", r"An \1", s)
    if r < 0.3:                                         # mood only
        s = f"A {mood or 'plain'} {genre} for {inst}." if rng.random() < 0.5 else f"{(mood or 'calm').capitalize()} music."
        return re.sub(r"\bA ([aeiouAEIOU])", r"An \1", s)
    parts = [w for w in (tempo if rng.random() < 0.8 else "", mood if rng.random() < 0.8 else "") if w]
    head = ", ".join(parts)
    s = f"A {head + ' ' if head else ''}{genre} {key if rng.random() < 0.8 else ''}".strip()
    s += f", played {dyn} on {inst}" if dyn and rng.random() < 0.7 else f" for {inst}"
    s = s.replace("  ", " ") + "."
    return re.sub(r"\bA ([aeiouAEIOU])", r"An \1", s)


# ------------------------------------------------------------------------------------------------------ building

def _paths(src: Source) -> list[Path]:
    from music21 import corpus

    pats = src.pattern.split("|")
    paths = sorted(p for p in corpus.getCorePaths() if any(x in str(p) for x in pats))
    return paths[: src.max_files]


def is_heldout(work_id: str) -> bool:
    return int(hashlib.sha1(work_id.encode()).hexdigest(), 16) % 20 == 0


def build(out: str | Path, *, seed: int = 0, sources=SOURCES, limit_per_source: int | None = None,
          progress: bool = True) -> dict:
    """Write <out>/train.jsonl and <out>/heldout.jsonl (one variant per line). Returns counts."""
    from music21 import converter, stream
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer()
    rng = random.Random(seed)
    counts = {"train": 0, "heldout": 0}
    files = {k: open(out / f"{k}.jsonl", "w") for k in counts}
    try:
        for src in sources:
            paths = _paths(src)[: limit_per_source or None]
            for path in tqdm(paths, desc=src.name, disable=not progress):
                try:
                    s = converter.parse(path)
                except Exception:                       # noqa: BLE001 - a few corpus files do not parse; skip them
                    continue
                scores = list(s.scores)[:MAX_OPUS_SCORES] if isinstance(s, stream.Opus) else [s]
                for si, sc in enumerate(scores):
                    got = _score_notes(sc)
                    if got is None:
                        continue
                    notes, meter = got
                    work_id = f"{path.relative_to(path.parents[1])}#{si}"
                    split = "heldout" if is_heldout(work_id) else "train"
                    bar_beats = Piece([], meter=meter).bar_beats
                    for xi, ex in enumerate(_windows(notes, bar_beats, src.max_excerpts, rng)):
                        for _ in range(src.variants):
                            piece = _augment(ex, meter, src.texture, rng)
                            if piece is None:
                                continue
                            f = facts_of(piece, src.texture)
                            v_facts = vad_from_cues(cues_of(f))
                            caption = make_caption(f, v_facts, src.genre, rng)
                            vad = blend((v_facts, 0.8), (vad_from_text(caption), 0.2), source="facts+text")
                            row = {"work_id": work_id, "collection": src.name, "excerpt": xi,
                                   "tokens": tok.encode(piece), "facts": f, "caption": caption,
                                   "vad": vad.to_dict(), "vad_facts": v_facts.to_dict()}
                            files[split].write(json.dumps(row) + "\n")
                            counts[split] += 1
    finally:
        for fh in files.values():
            fh.close()
    (out / "meta.json").write_text(json.dumps({"counts": counts, "seed": seed, "sources": [s.__dict__ for s in sources],
                                               "vocab_size": len(tok)}, indent=1))
    return counts
