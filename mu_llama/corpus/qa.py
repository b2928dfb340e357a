"""MusicQA-style question/answer pairs from a FactSheet.

Every clip gets MusicQA's four open description questions (answered with long captions) plus a seeded subset of
factual questions about its sheet, each asked in one of several wordings and answered in a full sentence.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mu_llama.corpus import phrases as ph
from mu_llama.corpus.phrases import article, friendly, join, pick
from mu_llama.facts import FactSheet

# MusicQA's (MU-LLaMA) open-ended description prompts, verbatim
DESCRIPTION_QUESTIONS = ("Describe the audio", "Describe the audio in detail", "What do you hear in the audio",
                         "What can be inferred from the audio")

METER_WORDS = {"2/4": "two quarter-note beats per bar", "3/4": "three quarter-note beats per bar",
               "4/4": "four quarter-note beats per bar", "2/2": "two half-note beats per bar",
               "3/8": "three eighth notes per bar", "6/8": "two dotted-quarter beats per bar, each split in three",
               "9/8": "three dotted-quarter beats per bar", "12/8": "four dotted-quarter beats per bar"}


def _instruments(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What instruments are playing?", "Which instruments can you hear?",
                   "What instruments are used in this piece?", "Name the instruments in this recording.",
                   "What is the instrumentation?"])
    names = join([friendly(n) for n in fs.instruments])
    if len(fs.instruments) == 1 and not ph.plural(names):
        names = article(names)
    fams = [f for f in fs.families if f != "other"]
    opts = [f"The music is played by {names}.", f"I can hear {names}.", f"It is performed on {names}."]
    if fams:
        opts.append(f"The instrumentation is {names}, from the {join(fams)} {'family' if len(fams) == 1 else 'families'}.")
    a = pick(rng, opts)
    return q, a


def _mode(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Is this in a major or minor key?", "Is the piece major or minor?", "Does this sound major or minor?"])
    a = pick(rng, [f"It is in a {fs.mode} key, {fs.key}.", f"The music is in {fs.mode}: the key is {fs.key}.",
                   f"{fs.mode.capitalize()}. The piece is in {fs.key}."])
    return q, a


def _key(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What key is this piece in?", "What is the key of the music?", "Which key is it played in?"])
    return q, pick(rng, [f"The piece is in {fs.key}.", f"It is in {fs.key}.", f"The key is {fs.key}."])


def _meter(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What is the time signature?", "What meter is the music in?", "How many beats are in each bar?"])
    return q, pick(rng, [f"The music is in {fs.meter} time, with {METER_WORDS[fs.meter]}.",
                         f"It is in {fs.meter}: {METER_WORDS[fs.meter]}.",
                         f"The time signature is {fs.meter}, so there are {METER_WORDS[fs.meter]}."])


def _tempo(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["How fast is the tempo?", "What is the tempo of the music?", "Is the music fast or slow?",
                   "How fast is this played?"])
    bpm = int(round(fs.tempo_bpm))
    return q, pick(rng, [f"The tempo is {fs.tempo_class}, about {bpm} beats per minute.",
                         f"It is played at a {fs.tempo_class} tempo of roughly {bpm} BPM.",
                         f"The music moves at around {bpm} BPM, which is a {fs.tempo_class} tempo."])


def _texture(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Is the texture monophonic, homophonic or polyphonic?", "What kind of texture does the music have?",
                   "Is this a single melody, melody with chords, or independent lines?"])
    expl = {"monophonic": "a single melodic line without accompaniment",
            "homophonic": "a melody supported by chords that move together rhythmically",
            "polyphonic": "several independent melodic lines sounding at once"}[fs.texture]
    return q, pick(rng, [f"The texture is {fs.texture}: {expl}.", f"It is {fs.texture}, meaning {expl}.",
                         f"{fs.texture.capitalize()} - {expl}."])


def _voices(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["How many parts are playing?", "How many voices or parts can you hear?",
                   "How many independent parts does the music have?"])
    n = ph.NUMBER.get(fs.voices, str(fs.voices))
    return q, ("There is just one part, a single line." if fs.voices == 1 else
               pick(rng, [f"There are {n} parts.", f"I can hear {n} separate parts.", f"The music is in {n} parts."]))


def _dynamics(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Is it played loudly or softly?", "How loud is the music?", "What are the dynamics like?"])
    word = {"soft": "softly", "medium": "at a medium volume", "loud": "loudly"}[fs.dynamics]
    overall = {"soft": "quiet", "medium": "moderate", "loud": "loud"}[fs.dynamics]
    return q, pick(rng, [f"It is played {word}.", f"The dynamics are {overall}: it is played {word}.",
                         f"The performance is {overall} overall."])


def _register(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Is the music high or low in pitch?", "What register is the music in?"])
    return q, pick(rng, [f"It sits mostly in the {fs.register} register.", f"The music is mostly {fs.register} in pitch."
                         if fs.register != "middle" else "The music sits mostly in the middle of the pitch range."])


def _origin(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What period does this music come from?", "Who might have composed this?",
                   "What is the historical style of this music?"])
    era = ph.ERA_WORD[fs.era]
    if fs.style not in ph.ARRANGED and fs.style != "solo":
        tune = (f"a traditional {fs.genre}" if fs.era == "traditional"
                else f"{article(era)} {fs.genre} by {fs.composer}")
        return q, pick(rng, [f"The arrangement is modern, in {article(fs.style)} style, but the melody is {tune}.",
                             f"It is {article(fs.style)} arrangement of {tune}."])
    if fs.era == "traditional":
        return q, pick(rng, [f"It is a traditional {fs.genre}, not the work of a known composer.",
                             f"This is a traditional melody: a {fs.genre}."])
    who = "an anonymous composer" if fs.composer in ("anonymous", "") else fs.composer
    return q, pick(rng, [f"It is {article(era)} {fs.genre} by {who}.",
                         f"The music comes from the {era} period; it is a {fs.genre} by {who}."])


def _genre(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What kind of piece is this?", "What genre is this music?", "What type of music is this?"])
    if fs.style not in ("classical", "folk"):
        return q, f"It is {article(fs.style)} arrangement of {article(fs.genre)}."
    return q, pick(rng, [f"It is {article(fs.genre)}.", f"This is {article(fs.genre)}, {ph.ERA_WORD[fs.era]} in style."])


def _harmony(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What chords are used?", "Can you describe the harmony?", "What is the chord progression?"])
    prog = ph.progression(fs, 8)
    return q, pick(rng, [f"In Roman numerals the harmony runs {' - '.join(prog)}.",
                         f"The chords follow the progression {' - '.join(prog)}."])


def _style(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What style is this?", "What musical style is this arrangement in?", "Which style is this played in?"])
    return q, pick(rng, [f"It is in {article(fs.style)} style.", f"This is {article(fs.style)} arrangement.",
                         f"The style is {fs.style}."])


def _drums(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Is there a drum kit?", "Are there drums in this?", "Does the music include percussion?"])
    if fs.drums:
        return q, pick(rng, [f"Yes, a drum kit plays {article(fs.style)} pattern.",
                             f"Yes, there are drums keeping {article(fs.style)} beat."])
    return q, pick(rng, ["No, there are no drums.", "No, the music has no drum kit or percussion."])


def _bass(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["What plays the bass line?", "Which instrument plays the bass?", "What is the bass instrument?"])
    if fs.bass_type == "none":
        return q, "There is no separate bass line."
    return q, pick(rng, [f"The bass line is played by {article(fs.bass_type)}.", f"{ph.cap(article(fs.bass_type))} plays the bass."])


def _lead(rng, fs: FactSheet) -> tuple[str, str]:
    q = pick(rng, ["Which instrument plays the melody?", "What instrument carries the tune?", "What is the lead instrument?"])
    lead = friendly(fs.lead_instrument)
    return q, pick(rng, [f"The melody is played by the {lead}.", f"The {lead} carries the tune."])


def factual_askers(fs: FactSheet) -> list[Callable]:
    askers: list[Callable] = [_instruments, _mode, _key, _tempo, _texture, _voices, _dynamics, _register, _origin,
                              _genre]
    if fs.meter in METER_WORDS:
        askers.append(_meter)
    if len(ph.progression(fs, 8)) >= 2:
        askers.append(_harmony)
    if fs.style not in ("classical", "folk"):
        askers += [_style, _drums]
        if fs.bass_type != "other":
            askers.append(_bass)
    elif fs.bass_type in ("cello", "tuba", "acoustic bass"):
        askers.append(_bass)
    if fs.lead_instrument:
        askers.append(_lead)
    return askers


def qa_pairs(rng: np.random.Generator, fs: FactSheet, long_captions: list[str], n_factual: int = 6) -> list[dict]:
    """The four description questions (answered by `long_captions`, cycled) + n_factual factual questions."""
    out = [{"question": q, "answer": long_captions[i % len(long_captions)], "kind": "description"}
           for i, q in enumerate(DESCRIPTION_QUESTIONS)]
    askers = factual_askers(fs)
    must = [a for a in askers if a in (_style, _drums, _bass)]          # arrangements always ask about their layers
    rest = [a for a in askers if a not in must]
    chosen = must + [rest[int(i)] for i in rng.permutation(len(rest))[:max(0, n_factual - len(must))]]
    for ask in chosen:
        q, a = ask(rng, fs)
        out.append({"question": q, "answer": a, "kind": ask.__name__.lstrip("_")})
    return out
