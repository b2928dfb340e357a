"""Parsed scores reduced to what rendering needs: per-part note lists in quarter lengths, the measure grid, time
signatures, tempo marks and (where the corpus has one) the Roman-numeral analysis placed on the score's timeline.

Parsing is the slow part of a build (0.05 s for a folk tune, ~2 s for a quartet movement), so `load_score` keeps a
small per-process LRU cache and the builder hands each worker the clips of one work together.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass

from mu_llama.corpus.sources import COLLECTIONS, abc_tune_text, analysis_path, collection_meta, corpus_root


@dataclass(frozen=True)
class ScoreNote:
    offset: float             # quarter lengths from the score start
    dur: float                # quarter lengths (ties merged)
    pitches: tuple[int, ...]  # MIDI pitches (a chord has several)


@dataclass(frozen=True)
class ScoreData:
    rel_path: str
    tune: int                                  # ABC tune index, -1 for single-work files
    parts: tuple[tuple[ScoreNote, ...], ...]   # non-empty parts, top staff first
    measures: tuple[tuple[float, int], ...]    # (offset, measure number) of the first part's measures
    time_sigs: tuple[tuple[float, int, int], ...]  # (offset, numerator, denominator)
    tempo_marks: tuple[tuple[float, float], ...]   # (offset, quarter BPM)
    length: float                              # quarter lengths
    composer: str
    title: str
    roman: tuple[tuple[float, str, str], ...]  # (offset, figure, local key e.g. "g minor") from the rntxt; () when none

    def time_sig_at(self, offset: float) -> tuple[int, int]:
        cur = (self.time_sigs[0][1], self.time_sigs[0][2]) if self.time_sigs else (4, 4)
        for o, n, d in self.time_sigs:
            if o <= offset + 1e-6:
                cur = (n, d)
        return cur

    def tempo_at(self, offset: float) -> float | None:
        cur = None
        for o, bpm in self.tempo_marks:
            if o <= offset + 1e-6:
                cur = bpm
        return cur


def _clean_composer(text: str | None) -> str:
    if not text:
        return ""
    first = text.strip().splitlines()[0].strip()
    if "," in first:                                  # "Palestrina, Giovanni Perluigi da" -> given names first
        last, given = first.split(",", 1)
        first = f"{given.strip()} {last.strip()}"
    return re.sub(r"\s*\(.*?\)\s*", " ", first).strip()


def _part_notes(part) -> tuple[ScoreNote, ...]:
    """One ScoreNote per sounding pitch, tied notes merged (music21's stripTies is ~100x slower on long movements)."""
    out: list[list] = []                       # [offset, end, pitch]
    open_ties: dict[int, list] = {}
    for el in part.flatten().notes:
        ql = float(el.quarterLength)
        if ql <= 0:                            # grace notes carry no duration: skip them
            continue
        off = float(el.offset)
        members = list(el.notes) if hasattr(el, "notes") and el.isChord else [el]
        for m in members:
            if m.pitch is None:
                continue
            midi = int(m.pitch.midi)
            tie = m.tie if m.tie is not None else getattr(el, "tie", None)
            kind = tie.type if tie is not None else None
            if kind in ("stop", "continue") and midi in open_ties:
                open_ties[midi][1] = max(open_ties[midi][1], off + ql)
                if kind == "stop":
                    del open_ties[midi]
                continue
            entry = [off, off + ql, midi]
            out.append(entry)
            if kind == "start":
                open_ties[midi] = entry
    out.sort(key=lambda e: (e[0], e[2]))
    return tuple(ScoreNote(o, e - o, (p,)) for o, e, p in out)


@contextlib.contextmanager
def _no_beaming():
    """music21's ABC reader beams every part (2/3 of an ABC tune's parse time); beams never reach our notes."""
    from music21 import stream

    saved = stream.Stream.makeBeams
    stream.Stream.makeBeams = lambda self, *a, **k: self
    try:
        yield
    finally:
        stream.Stream.makeBeams = saved


@functools.lru_cache(maxsize=8)
def load_score(rel_path: str, tune: int = -1) -> ScoreData:
    """Parse one corpus file (one ABC tune when `tune` >= 0) into ScoreData."""
    from music21 import converter, tempo

    if tune >= 0:
        with _no_beaming():
            score = converter.parse(abc_tune_text(rel_path, tune), format="abc")
    else:
        # music21 would pickle every parsed file into its scratch folder: that dump cost more than the parse itself
        score = converter.parse(str(corpus_root() / rel_path), forceSource=True, storePickle=False)
    parts = list(getattr(score, "parts", [])) or [score]
    notes = tuple(pn for pn in (_part_notes(p) for p in parts) if pn)
    first = parts[0]
    measures = tuple((float(m.offset), int(m.number)) for m in first.getElementsByClass("Measure"))
    flat = first.flatten()
    ts = tuple((float(t.offset), int(t.numerator), int(t.denominator)) for t in flat.getElementsByClass("TimeSignature"))
    marks = []
    for mm in score.flatten().getElementsByClass(tempo.MetronomeMark):
        try:
            bpm = mm.getQuarterBPM()
        except Exception:   # noqa: BLE001 - malformed marks in old encodings; ignore them
            bpm = None
        if bpm and 20 <= bpm <= 260:
            marks.append((float(mm.offset), float(bpm)))
    md = score.metadata
    composer = _clean_composer(md.composer if md else None)
    title = (md.title if md and md.title else "") or ""
    data = ScoreData(rel_path, tune, notes, measures, ts, tuple(sorted(marks)), float(score.highestTime),
                     composer, title, ())
    ana = analysis_path(rel_path)
    if ana:
        data = ScoreData(**{**data.__dict__, "roman": _roman(ana, data)})
    return data


@functools.lru_cache(maxsize=4)
def _parse_rntxt(rel_path: str):
    from music21 import converter

    return converter.parse(str(corpus_root() / rel_path), format="romanText", forceSource=True, storePickle=False)


def _roman(ana_path: str, data: ScoreData) -> tuple[tuple[float, str, str], ...]:
    """Place each Roman numeral of the analysis on the score's timeline via (measure number, beat)."""
    try:
        rn_score = _parse_rntxt(ana_path)
    except Exception:   # noqa: BLE001 - an unparsable analysis only costs us the harmony fact
        return ()
    m_off = {num: off for off, num in data.measures}
    ends = {num: nxt for (_, num), (nxt, _) in zip(data.measures, data.measures[1:])}
    out = []
    for rn in rn_score.recurse().getElementsByClass("RomanNumeral"):
        if rn.measureNumber not in m_off:
            continue
        m0 = m_off[rn.measureNumber]
        num, den = data.time_sig_at(m0)
        compound = den == 8 and num % 3 == 0 and num > 3
        beat_ql = 4.0 / den * (3 if compound else 1)
        bar = num * 4.0 / den
        dur = ends.get(rn.measureNumber, m0 + bar) - m0
        shift = bar - dur if dur < bar - 1e-6 else 0.0   # pickup bar: beats count from the full bar's start
        key = f"{rn.key.tonic.name} {rn.key.mode}" if rn.key is not None else ""
        out.append((m0 + (float(rn.beat) - 1.0) * beat_ql - shift, str(rn.figure), key))
    return tuple(sorted(out))


def score_meta(coll_name: str, data: ScoreData) -> tuple[str, str, str]:
    """(composer, era, genre) of a parsed file: collection defaults, per-folder overrides, score metadata."""
    coll = COLLECTIONS[coll_name]
    composer, era, genre = collection_meta(coll, data.rel_path)
    return (composer or data.composer or "anonymous"), era, genre
