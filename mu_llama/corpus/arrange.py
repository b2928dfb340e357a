"""Popular-music arrangements of real melodies (folk tunes, chorale sopranos): lead + chords + bass + drum kit.

Harmony comes from the corpus's Roman-numeral analysis when the work has one (Bach chorales with rntxt), else from
a Viterbi harmonisation of the melody (harmony.py). Layers follow the style's patterns (styles.py) with a seeded
variant, phrase-end fills, an optional one-bar intro, swing where the style swings, and humanised timing and
velocity. The recipe knows its layers, so the facts it returns (lead instrument, bass type, drums) are exact; the
rest of the fact sheet is measured on the resulting Performance like any other clip.
"""

from __future__ import annotations

import numpy as np

from mu_llama.corpus.analyze import SourceMeta, bass_type_for
from mu_llama.corpus.excerpt import ExcerptError
from mu_llama.corpus.harmony import Chord, bass_note, chord_from_roman, diatonic_chord, harmonise, voicing
from mu_llama.corpus.perf import Performance
from mu_llama.corpus.render import RANGES, make_track, weighted_choice
from mu_llama.corpus.scores import ScoreNote, load_score, score_meta
from mu_llama.corpus.sources import WorkRef
from mu_llama.corpus.styles import CRASH, EXTRA_RANGES, SELF_ACCOMPANYING, SNARE, STYLES, TOM_HI, TOM_LO, TOM_MID, Style
from mu_llama.facts import PITCH_CLASSES

LEVEL = {"soft": 0.72, "medium": 0.92, "loud": 1.12}      # velocity scale per dynamic level
CHORD_RANGE = {24: (52, 71), 25: (52, 71), 26: (52, 71), 27: (52, 71), 28: (52, 69), 29: (45, 64), 30: (45, 64),
               7: (55, 74), 21: (55, 74), 61: (53, 72), 57: (48, 67), 60: (50, 69), 46: (53, 74)}


def _range(program: int) -> tuple[int, int]:
    return EXTRA_RANGES.get(program) or RANGES.get(program, (36, 96))


def _melody(part: tuple[ScoreNote, ...]) -> list[ScoreNote]:
    """The top line: at each onset keep the highest pitch (chorale sopranos and tunes are single lines anyway)."""
    top: dict[float, ScoreNote] = {}
    for n in part:
        if n.offset not in top or n.pitches[0] > top[n.offset].pitches[0]:
            top[n.offset] = n
    return [top[o] for o in sorted(top)]


def _meter_factor(style: Style, num: int, den: int) -> tuple[float, tuple[int, int], float]:
    """(source quarter lengths -> arrangement beats, time signature of the arrangement, quarter BPM per beat BPM)."""
    src = f"{num}/{den}"
    if src not in style.meters:
        raise ExcerptError(f"{style.name} does not take melodies in {src}")
    compound = den == 8 and num % 3 == 0 and num > 3
    if style.name == "solo":
        return 1.0, (num, den), 1.0
    if src == "3/8":
        return 2.0, (3, 4), 1.0
    if compound:                                   # dotted quarter -> one (triplet-subdivided) beat
        return 2.0 / 3.0, ((6, 8) if style.name == "march" else (4, 4)), (1.5 if style.name == "march" else 1.0)
    return 1.0, ((2, 4) if style.name == "march" else (3, 4) if style.bar_beats == 3 else (4, 4)), 1.0


def _key_of_melody(notes: list[ScoreNote]) -> tuple[int, str]:
    from music21 import note, stream

    s = stream.Stream()
    for n in notes:
        m = note.Note(n.pitches[0])
        m.quarterLength = max(n.dur, 0.125)
        s.insert(n.offset, m)
    k = s.analyze("key")
    return k.tonic.pitchClass, ("minor" if k.mode == "minor" else "major")


def arrange_work(rng: np.random.Generator, work: WorkRef, style_name: str):
    """(Performance, SourceMeta, extra, layer facts) for an arrangement of `work`'s melody in `style_name`."""
    style = STYLES[style_name]
    rel, tune = work.files[int(rng.integers(len(work.files)))]
    try:
        data = load_score(rel, tune)
    except Exception as e:
        raise ExcerptError(f"{rel}: cannot parse ({type(e).__name__})") from e
    if not data.parts:
        raise ExcerptError(f"{rel}: no notes")
    full = [o for (o, _), (nxt, _) in zip(data.measures, data.measures[1:])
            if abs((nxt - o) - data.time_sig_at(o)[0] * 4.0 / data.time_sig_at(o)[1]) < 1e-6] or [0.0]
    start = float(full[int(rng.integers(len(full)))])
    num, den = data.time_sig_at(start)
    f, ts, q_per_beat = _meter_factor(style, num, den)
    melody_all = _melody(data.parts[0])

    lo_t, hi_t = (style.tempo[0] * 1.5, style.tempo[1] * 1.5) if style.name == "solo" and den == 8 else style.tempo
    beat_bpm = float(round(rng.uniform(lo_t, hi_t), 1))
    spb = 60.0 / beat_bpm                                          # seconds per arrangement beat
    bar_beats = style.bar_beats or num * 4.0 / den
    if style.name == "march" and ts == (6, 8):
        bar_beats = 2
    bar_sec = bar_beats * spb
    intro = int(style.name != "solo" and rng.random() < 0.35)
    target = float(rng.uniform(8.0, 13.5))
    n_bars = max(2, int(target // bar_sec) - intro)
    while (n_bars + intro) * bar_sec > 14.2 and n_bars > 2:
        n_bars -= 1
    span_q = n_bars * bar_beats / f                                # source quarter lengths used
    if start + span_q > data.length + 1e-6:
        start = max(0.0, data.length - span_q)
    mel = [n for n in melody_all if start - 1e-6 <= n.offset < start + span_q - 1e-6]
    if len(mel) < 4:
        raise ExcerptError(f"{rel}: too few melody notes for a {n_bars}-bar arrangement")

    tonic, mode = _key_of_melody(mel)
    lead_prog = int(weighted_choice(rng, style.leads))
    lo, hi = _range(lead_prog)
    m_lo, m_hi = min(n.pitches[0] for n in mel), max(n.pitches[0] for n in mel)
    shifts = sorted(range(-17, 18), key=lambda t: (abs(t) > 6, rng.random()))
    trans = next((t for t in shifts if lo <= m_lo + t and m_hi + t <= hi), None)
    if trans is None:
        raise ExcerptError(f"{rel}: melody range {m_lo}-{m_hi} does not fit program {lead_prog}")
    key_pc = (tonic + trans) % 12

    # --- harmony: one chord per segment, on the arrangement's beat grid -------------------------------------------
    off0 = intro * bar_beats                                       # melody starts after the intro bar
    seg = int(rng.choice(style.chord_change_beats)) if style.chord_change_beats else bar_beats
    seg = min(seg, bar_beats) if bar_beats < 4 else seg
    n_seg = int(np.ceil(n_bars * bar_beats / seg))
    chords: list[tuple[float, Chord]]                              # (beat, chord), sorted
    harmony_source = "derived"
    romans = [(o, fig, k) for o, fig, k in data.roman if start - 1e-6 <= o < start + span_q - 1e-6]
    if romans and style.name != "solo":
        harmony_source = "analysis"
        chords = [(off0 + (o - start) * f, chord_from_roman(fig, k, trans)) for o, fig, k in romans]
        if chords[0][0] > off0 + 1e-6:
            chords.insert(0, (off0, chords[0][1]))
    else:
        segments = [[] for _ in range(n_seg)]
        for n in mel:
            b = (n.offset - start) * f
            i = min(int(b // seg), n_seg - 1)
            strong = 1.5 if abs(b % seg) < 1e-6 else 1.0
            segments[i].append(((n.pitches[0] + trans) % 12, n.dur * f * strong))
        sevenths = {0, 1, 3, 4, 5} if style.sevenths else ({4} if rng.random() < 0.4 else set())
        seq = harmonise(key_pc, mode, segments, sevenths)
        chords = [(off0 + i * seg, c) for i, c in enumerate(seq)]
    if intro:
        chords.insert(0, (0.0, chords[0][1] if harmony_source == "analysis" else diatonic_chord(key_pc, mode, 0,
                                                                                                 style.sevenths)))
    total_beats = (n_bars + intro) * bar_beats

    def chord_at(beat: float) -> Chord:
        cur = chords[0][1]
        for b, c in chords:
            if b <= beat + 1e-6:
                cur = c
        return cur

    level = weighted_choice(rng, {"soft": 0.25, "medium": 0.5, "loud": 0.25})
    scale = LEVEL[level]

    def t(beat: float, jitter: float = 0.006) -> float:
        if style.swing and abs(beat % 1.0 - 0.5) < 1e-6:
            beat += style.swing
        return max(0.0, beat * spb + float(rng.normal(0.0, jitter)))

    def vel(base: float) -> int:
        return int(np.clip(round(base * scale + rng.normal(0, 5)), 15, 127))

    tracks = []
    # lead melody
    lead_notes = []
    for n in mel:
        b = off0 + (n.offset - start) * f
        e = b + n.dur * f
        accent = 8 if abs(b % bar_beats) < 1e-6 else 0
        s_ = t(b)
        lead_notes.append((s_, max(s_ + 0.05, e * spb - 0.02), n.pitches[0] + trans, vel(84 + accent)))
    tracks.append(make_track("melody", lead_prog, lead_notes))

    chord_prog = bass_prog = None
    if style.name == "solo":
        if lead_prog in SELF_ACCOMPANYING and rng.random() < 0.6:   # one player: melody plus chords below it
            chord_prog = lead_prog
            lo_c = max(_range(lead_prog)[0], min(n[2] for n in lead_notes) - 19)
            acc = []
            for b, c in chords:
                end = next((b2 for b2, _ in chords if b2 > b + 1e-6), total_beats)
                for p in voicing(c, lo_c, lo_c + 14):
                    acc.append((t(b), end * spb - 0.03, p, vel(58)))
            tracks.append(make_track("chords", chord_prog, acc))
    else:
        chord_prog = int(weighted_choice(rng, style.chords))
        clo, chi = CHORD_RANGE.get(chord_prog, (55, 76))
        rhythm = style.chord_rhythms[int(rng.integers(len(style.chord_rhythms)))]
        size = 4 if style.sevenths else (2 if chord_prog in (29, 30) else 3)   # overdriven guitars: power chords
        acc = []
        for bar in range(n_bars + intro):
            for beat, length in rhythm:
                b = bar * bar_beats + beat
                if b >= total_beats - 1e-6:
                    continue
                c = chord_at(b)
                pitches = voicing(c, clo, chi, size) if size != 2 else [clo + ((c.root - clo) % 12)]
                if size == 2:
                    pitches.append(pitches[0] + 7)
                s_ = t(b, 0.004)
                for p in pitches:
                    acc.append((s_, max(s_ + 0.05, (b + length) * spb - 0.02), p, vel(70 if length < 1 else 62)))
        tracks.append(make_track("chords", chord_prog, acc))
        bass_prog = int(weighted_choice(rng, style.basses))
        tracks.append(make_track("bass", bass_prog, _bass_line(rng, style, chords, chord_at, total_beats, bar_beats,
                                                               t, vel, spb, bass_prog)))
    has_drums = style.drum_variants and rng.random() < style.drum_prob
    if has_drums:
        tracks.append(make_track("drums", 0, _drums(rng, style, n_bars + intro, bar_beats, intro, t, vel, spb),
                                 is_drum=True))

    end = max(n.end for tr in tracks for n in tr.notes)
    perf = Performance(tracks, round(min(total_beats * spb, end) + 0.8, 3), round(beat_bpm * q_per_beat, 2), ts)
    composer, era, genre = score_meta(work.collection, data)
    figures: list[str] = []
    for b, c in chords:
        if b < total_beats - 1e-6 and (not figures or figures[-1] != c.figure):
            figures.append(c.figure)
    has_chords = any(tr.role == "chords" for tr in tracks)
    harmony = tuple(figures) if has_chords else ()                # an unaccompanied melody states no chords
    title = work.title if not data.title else data.title
    meta = SourceMeta(composer, era, genre, work.work_id, work.collection, title, harmony)
    extra = {"file": rel, "tune": tune, "title": title, "excerpt_quarters": [round(start, 3), round(start + span_q, 3)],
             "transpose": trans, "dynamics_level": level, "harmony_source": harmony_source, "intro_bars": intro,
             "bars": n_bars, "arrangement_key": f"{PITCH_CLASSES[key_pc]} {mode}",
             "layers": {"melody": lead_prog, "chords": chord_prog, "bass": bass_prog, "drums": bool(has_drums)}}
    layer_facts = {"lead_instrument": tracks[0].name, "key": (PITCH_CLASSES[key_pc], mode),
                   "bass_type": bass_type_for(bass_prog) if bass_prog is not None else "none",
                   "texture": "homophonic" if len([tr for tr in tracks if not tr.is_drum]) > 1 else None}
    return perf, meta, extra, layer_facts


def _bass_line(rng, style: Style, chords, chord_at, total_beats, bar_beats, t, vel, spb, program):
    lo, hi = (28, 50) if program != 58 else (29, 50)
    notes = []

    def add(beat, length, pitch, v):
        while pitch > 55:                                          # fold into the bass's range (E1 .. G3)
            pitch -= 12
        while pitch < 28:
            pitch += 12
        if beat < total_beats - 1e-6:
            s_ = t(beat, 0.004)
            notes.append((s_, max(s_ + 0.05, (beat + length) * spb - 0.03), pitch, vel(v)))

    kind = style.bass_rhythm
    n_bars = int(round(total_beats / bar_beats))
    for bar in range(n_bars):
        b0 = bar * bar_beats
        c = chord_at(b0)
        root = bass_note(c.root, lo, hi - 7)
        fifth = root + 7
        if kind == "eighths":
            for i in range(int(bar_beats * 2)):
                add(b0 + i * 0.5, 0.45, bass_note(chord_at(b0 + i * 0.5).root, lo, hi - 7), 88 if i % 2 == 0 else 76)
        elif kind == "roots":
            add(b0, bar_beats / 2, root, 84)
            add(b0 + bar_beats / 2, bar_beats / 2, bass_note(chord_at(b0 + bar_beats / 2).root, lo, hi - 7)
                if rng.random() < 0.6 else fifth, 78)
        elif kind == "funk":
            for beat, p, v in ((0, root, 100), (0.75, root + 12, 80), (1.5, fifth, 85), (2.5, root, 95),
                               (3.25, root + 12, 78), (3.5, fifth, 82)):
                add(b0 + beat, 0.22, p, v)
        elif kind == "reggae":
            third = bass_note(c.tones[1], lo, hi)
            for beat, length, p, v in ((0, 0.9, root, 90), (1.5, 0.5, third, 78), (2, 0.9, fifth, 88),
                                       (3, 0.5, root, 80)):
                add(b0 + beat, length, p, v)
        elif kind == "walking":
            nxt = bass_note(chord_at(b0 + bar_beats).root, lo, hi - 7)
            tones = [root, bass_note(c.tones[1], root, root + 12), fifth]
            approach = nxt + (1 if rng.random() < 0.5 else -1)
            for i, p in enumerate(tones + [approach]):
                add(b0 + i, 0.9, p, 80 if i % 2 == 0 else 72)
        elif kind == "bossa":
            for beat, length, p in ((0, 1.4, root), (1.5, 0.5, fifth), (2, 1.4, fifth), (3.5, 0.5, root)):
                add(b0 + beat, length, bass_note(chord_at(b0 + beat).root, lo, hi - 7) if p == root else p, 80)
        elif kind == "waltz":
            add(b0, 0.9, root if bar % 2 == 0 else fifth - 12 if fifth - 12 >= lo else fifth, 88)
        elif kind == "march":
            add(b0, 0.45, root, 92)
            add(b0 + 1, 0.45, fifth if fifth <= hi else fifth - 12, 85)
        elif kind == "offbeat":
            for i in range(int(bar_beats)):
                add(b0 + i + 0.5, 0.35, root + (12 if i == 3 else 0), 96)
    return notes


def _drums(rng, style: Style, bars: int, bar_beats: float, intro: int, t, vel, spb):
    pattern = style.drum_variants[int(rng.integers(len(style.drum_variants)))]
    fills = rng.random() < 0.75
    notes = []
    for bar in range(bars):
        b0 = bar * bar_beats
        last_of_phrase = fills and (bar == bars - 1 or (bar - intro) % 4 == 3) and bar_beats >= 3
        for beat, key, v in pattern:
            if last_of_phrase and beat >= bar_beats - 1:
                continue
            s_ = t(b0 + beat, 0.003)
            notes.append((s_, s_ + 0.1, key, vel(v)))
        if last_of_phrase:
            toms = (SNARE, TOM_HI, TOM_MID, TOM_LO)
            for i in range(4):
                s_ = t(b0 + bar_beats - 1 + i * 0.25, 0.003)
                notes.append((s_, s_ + 0.1, toms[i] if style.name in ("rock", "funk", "electronic dance") else SNARE,
                              vel(88 + 4 * i)))
        if bar == intro and style.name != "swing":
            s_ = t(b0, 0.0)
            notes.append((s_, s_ + 0.5, CRASH, vel(95)))
    return notes
