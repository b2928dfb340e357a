"""A plain render of a real work: pick an excerpt (5-15 s), tempo, transposition, ensemble and dynamics, and
produce the exact Performance plus the facts the score contributes (composer, era, genre, Roman numerals).
All choices come from the clip's own seeded generator, so a clip is the same whichever worker builds it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mu_llama.corpus.analyze import SourceMeta
from mu_llama.corpus.perf import Performance
from mu_llama.corpus.render import (
    DYNAMIC_LEVELS,
    ENSEMBLE_WEIGHTS,
    ENSEMBLES,
    SOLO_WEIGHTS,
    assign_programs,
    fits,
    make_track,
    velocities,
    weighted_choice,
)
from mu_llama.corpus.scores import ScoreData, ScoreNote, load_score, score_meta
from mu_llama.corpus.sources import COLLECTIONS, WorkRef

MIN_SECONDS, MAX_SECONDS = 5.0, 15.0
TAIL = 0.6                                    # seconds of release kept after the excerpt's last note-off


class ExcerptError(ValueError):
    """This work cannot give a usable excerpt (too short, empty, unparsable): the builder tries another work."""


@dataclass(frozen=True)
class Excerpt:
    start: float                               # quarter lengths
    end: float
    parts: tuple[tuple[ScoreNote, ...], ...]   # notes overlapping the window, clipped, offsets relative to start


def ensemble_kind(collection: str) -> str:
    return {"bach_chorales": "chorale", "palestrina": "vocal polyphony", "monteverdi": "vocal polyphony",
            "trecento": "vocal polyphony", "quartets": "string quartet"}.get(collection, "keyboard and song")


def choose_tempo(rng: np.random.Generator, data: ScoreData, offset: float, coll_range: tuple[int, int]) -> float:
    num, den = data.time_sig_at(offset)
    mark = data.tempo_at(offset)
    if mark is not None and rng.random() < 0.7:
        bpm = mark * rng.uniform(0.92, 1.08)
    else:
        bpm = rng.uniform(*coll_range) * (1.5 if den == 8 and num % 3 == 0 else 1.0)
    return float(np.clip(round(bpm, 1), 40.0, 200.0))


def cut(data: ScoreData, start: float, end: float) -> Excerpt:
    parts = []
    for part in data.parts:
        notes = []
        for n in part:
            if n.offset >= end - 1e-6 or n.offset + n.dur <= start + 1e-6 or n.offset < start - 1e-6:
                continue                                   # notes tied in from before the window are dropped
            notes.append(ScoreNote(n.offset - start, min(n.offset + n.dur, end) - n.offset, n.pitches))
        if notes:
            parts.append(tuple(notes))
    return Excerpt(start, end, tuple(parts))


def pick_excerpt(rng: np.random.Generator, data: ScoreData, bpm: float, seconds: float) -> Excerpt:
    """A window starting on a bar line (or the first note after it) lasting `seconds` at `bpm`, with notes in it."""
    span = seconds * bpm / 60.0
    starts = [o for o, _ in data.measures if o + min(span, MIN_SECONDS * bpm / 60.0) <= data.length + 1e-6] or [0.0]
    for _ in range(6):
        s = float(starts[int(rng.integers(len(starts)))])
        first = min((n.offset for p in data.parts for n in p if n.offset >= s - 1e-6), default=None)
        if first is None:
            continue
        s = first
        e = min(s + span, data.length)
        if (e - s) * 60.0 / bpm < MIN_SECONDS - TAIL:
            continue
        ex = cut(data, s, e)
        if sum(len(p) for p in ex.parts) >= 6:
            return ex
    raise ExcerptError(f"{data.rel_path}: no excerpt of {seconds:.1f} s with enough notes")


def render_work(rng: np.random.Generator, work: WorkRef) -> tuple[Performance, SourceMeta, dict]:
    """Performance + source facts for one clip of `work`. Extra dict records the choices (for captions/QA)."""
    coll = COLLECTIONS[work.collection]
    rel, tune = work.files[int(rng.integers(len(work.files)))]
    try:
        data = load_score(rel, tune)
    except ExcerptError:
        raise
    except Exception as e:
        raise ExcerptError(f"{rel}: cannot parse ({type(e).__name__}: {e})") from e
    if not data.parts or data.length <= 0:
        raise ExcerptError(f"{rel}: no notes")
    probe_start = data.measures[int(rng.integers(len(data.measures)))][0] if data.measures else 0.0
    bpm = choose_tempo(rng, data, probe_start, coll.tempo)
    seconds = float(rng.uniform(MIN_SECONDS + 0.5, MAX_SECONDS - TAIL - 0.4))
    ex = pick_excerpt(rng, data, bpm, seconds)
    num, den = data.time_sig_at(ex.start)
    if den < 1 or den & (den - 1):                  # e.g. an encoding's 3/3: MIDI cannot store it
        raise ExcerptError(f"{rel}: time signature {num}/{den} has no MIDI form")

    ranges = [(min(min(n.pitches) for n in p), max(max(n.pitches) for n in p)) for p in ex.parts]
    transpositions = [int(t) for t in rng.permutation(np.arange(-5, 7))]
    transpositions.sort(key=lambda t: abs(t) > 4)           # prefer small shifts, in a random order
    if len(ex.parts) == 1 and len({n.offset for n in ex.parts[0]}) == len(ex.parts[0]):
        ens_name = "solo"                                  # a single melody: one solo instrument that can play it
        first = weighted_choice(rng, SOLO_WEIGHTS)
        order = [first] + [int(p) for p in rng.permutation(list(SOLO_WEIGHTS)) if p != first]
        (lo, hi), pick = ranges[0], None
        for t in transpositions:
            pick = next(((p, t) for p in order if fits(p, lo + t, hi + t)), None)
            if pick:
                break
        programs, trans = ([pick[0]], pick[1]) if pick else ([0], 0)
    else:
        ens_name = weighted_choice(rng, ENSEMBLE_WEIGHTS[ensemble_kind(work.collection)])
        programs, trans = assign_programs(ranges, ENSEMBLES[ens_name], rng, transpositions)

    level = weighted_choice(rng, {"soft": 0.3, "medium": 0.45, "loud": 0.25})
    shape = float(rng.uniform(-1, 1))
    sec_per_q = 60.0 / bpm
    bar_q = num * 4.0 / den
    tracks = []
    for part, prog in zip(ex.parts, programs):
        flat = [(n.offset, n.dur, p) for n in part for p in n.pitches]
        on = np.array([f[0] for f in flat])
        vel = velocities(rng, on + (ex.start % bar_q), bar_q, level, shape)
        jitter = rng.uniform(-0.004, 0.004, size=len(flat))
        notes = []
        for (o, d, p), v, j in zip(flat, vel, jitter):
            s = max(0.0, o * sec_per_q + j)
            e = max(s + 0.03, (o + d) * sec_per_q - 0.01)    # a hair of articulation between repeated notes
            notes.append((s, e, p + trans, int(v)))
        tracks.append(make_track("part", prog, notes))
    music_end = max(n.end for t in tracks for n in t.notes)
    perf = Performance(tracks, round(music_end + TAIL, 3), bpm, (num, den))

    composer, era, genre = score_meta(work.collection, data)
    harmony = tuple(fig for off, fig, _key in data.roman if ex.start - 1e-6 <= off < ex.end - 1e-6)
    title = work.title if coll.abc_tunes or not data.title else data.title
    meta = SourceMeta(composer, era, genre, work.work_id, work.collection, title, harmony)
    extra = {"ensemble": ens_name, "transpose": trans, "dynamics_level": level, "file": rel, "tune": tune,
             "excerpt_quarters": [round(ex.start, 3), round(ex.end, 3)], "style": coll.style,
             "top_instrument": tracks[0].name, "title": title}
    return perf, meta, extra


__all__ = ["DYNAMIC_LEVELS", "ExcerptError", "choose_tempo", "cut", "pick_excerpt", "render_work"]
