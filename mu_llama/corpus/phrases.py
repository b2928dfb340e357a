"""Words for facts: friendly instrument names, and several ways to say each fact value (captions and QA share them).

Every function takes the clip's generator and returns one phrasing, so two captions of the same clip rarely share
wording. Nothing here adds information the FactSheet does not hold.
"""

from __future__ import annotations

import numpy as np

from mu_llama.facts import FactSheet

FRIENDLY = {
    "Acoustic Grand Piano": "piano", "Bright Acoustic Piano": "bright piano", "Electric Piano 1": "electric piano",
    "Electric Piano 2": "electric piano", "Harpsichord": "harpsichord", "Clavinet": "clavinet", "Celesta": "celesta",
    "Glockenspiel": "glockenspiel", "Vibraphone": "vibraphone", "Marimba": "marimba", "Xylophone": "xylophone",
    "Drawbar Organ": "drawbar organ", "Percussive Organ": "percussive organ", "Rock Organ": "rock organ",
    "Church Organ": "pipe organ", "Reed Organ": "reed organ", "Accordion": "accordion", "Harmonica": "harmonica",
    "Acoustic Guitar (nylon)": "nylon-string guitar", "Acoustic Guitar (steel)": "steel-string acoustic guitar",
    "Electric Guitar (jazz)": "jazz guitar", "Electric Guitar (clean)": "clean electric guitar",
    "Electric Guitar (muted)": "muted electric guitar", "Overdriven Guitar": "overdriven guitar",
    "Distortion Guitar": "distorted guitar", "Acoustic Bass": "upright bass", "Electric Bass (finger)": "electric bass",
    "Electric Bass (pick)": "picked electric bass", "Fretless Bass": "fretless bass", "Slap Bass 1": "slap bass",
    "Slap Bass 2": "slap bass", "Synth Bass 1": "synth bass", "Synth Bass 2": "synth bass", "Violin": "violin",
    "Viola": "viola", "Cello": "cello", "Contrabass": "double bass", "Pizzicato Strings": "pizzicato strings",
    "Orchestral Harp": "harp", "String Ensemble 1": "string ensemble", "String Ensemble 2": "slow strings",
    "Synth Strings 1": "synth strings", "Choir Aahs": "choir", "Voice Oohs": "wordless voices",
    "Trumpet": "trumpet", "Trombone": "trombone", "Tuba": "tuba", "French Horn": "French horn",
    "Brass Section": "brass section", "Soprano Sax": "soprano saxophone", "Alto Sax": "alto saxophone",
    "Tenor Sax": "tenor saxophone", "Baritone Sax": "baritone saxophone", "Oboe": "oboe", "English Horn": "cor anglais",
    "Bassoon": "bassoon", "Clarinet": "clarinet", "Piccolo": "piccolo", "Flute": "flute", "Recorder": "recorder",
    "Pan Flute": "pan flute", "Whistle": "tin whistle", "Ocarina": "ocarina", "Lead 1 (square)": "square-wave synth lead",
    "Lead 2 (sawtooth)": "sawtooth synth lead", "Lead 8 (bass + lead)": "synth lead", "Pad 1 (new age)": "synth pad",
    "Pad 2 (warm)": "warm synth pad", "Pad 3 (polysynth)": "polysynth", "Pad 4 (choir)": "choir-like synth pad",
    "Banjo": "banjo", "Fiddle": "fiddle", "Drum Kit": "drum kit", "Steel Drums": "steel drums",
}

MOOD = {  # (mode, tempo class) -> adjectives
    ("major", "slow"): ["calm", "serene", "gentle", "peaceful", "tender", "warm"],
    ("major", "moderate"): ["pleasant", "flowing", "graceful", "sunny", "relaxed", "good-natured"],
    ("major", "fast"): ["lively", "bright", "cheerful", "spirited", "joyful", "bouncy"],
    ("minor", "slow"): ["sombre", "melancholy", "mournful", "plaintive", "wistful", "solemn"],
    ("minor", "moderate"): ["pensive", "dark", "brooding", "bittersweet", "earnest", "wistful"],
    ("minor", "fast"): ["restless", "urgent", "driving", "agitated", "fiery", "dramatic"],
}
ERA_WORD = {"medieval": "medieval", "renaissance": "Renaissance", "baroque": "Baroque", "classical": "Classical-era",
            "romantic": "Romantic", "modern": "early twentieth-century", "traditional": "traditional"}
NUMBER = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def cap(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case 'Renaissance' and 'D minor')."""
    return text[:1].upper() + text[1:]


def friendly(name: str) -> str:
    return FRIENDLY.get(name, name.lower())


def join(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" and not word.lower().startswith("eu") else "a ") + word


def plural(phrase: str) -> bool:
    return " and " in phrase or phrase.endswith(("s", "strings", "voices")) and not phrase.endswith(("bass", "glass"))


def verb(phrase: str, singular: str, plural_form: str) -> str:
    return plural_form if plural(phrase) else singular


def instruments_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    """'a string quartet' / 'a pipe organ' / 'flute, clarinet and bassoon' as a noun phrase."""
    names = [friendly(n) for n in fs.instruments]
    if sorted(set(names)) == ["cello", "viola", "violin"]:
        return pick(rng, ["a string quartet", "two violins, viola and cello", "a string quartet of violins, viola and cello"])
    if len(names) == 1:
        n = names[0]
        if plural(n):
            return n
        if fs.voices > 1:
            return pick(rng, [article(n), f"{article(n)} on its own"]) if n != "choir" else pick(rng, ["a choir", "a vocal ensemble"])
        return pick(rng, [article(n), f"a solo {n}", f"{article(n)} alone"])
    return join(names)


def mood(rng: np.random.Generator, fs: FactSheet) -> str:
    words = list(MOOD[(fs.mode, fs.tempo_class)])
    if fs.dynamics == "soft":
        words += ["quiet", "delicate", "hushed"]
    elif fs.dynamics == "loud":
        words += ["bold", "vigorous", "full-bodied"]
    return pick(rng, words)


def key_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    return pick(rng, [f"in {fs.key}", f"in the key of {fs.key}", f"in {fs.key}", f"in the {fs.key} key",
                      f"in a {fs.mode} key ({fs.key})"])


def meter_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    m = fs.meter
    opts = {
        "2/4": ["in 2/4 time", "in a duple 2/4 meter", "with two beats to the bar"],
        "3/4": ["in 3/4 time", "in triple meter", "with three beats to the bar", "in a waltz-like 3/4"],
        "4/4": ["in 4/4 time", "in common time", "with four beats to the bar"],
        "2/2": ["in cut time (2/2)", "in 2/2 time", "in alla breve, two half-note beats to the bar"],
        "3/8": ["in a quick 3/8", "in 3/8 time"],
        "6/8": ["in a lilting 6/8", "in 6/8 time", "in compound duple meter (6/8)"],
        "9/8": ["in 9/8 time", "in compound triple meter (9/8)"],
        "12/8": ["in 12/8 time", "with a rolling 12/8 feel"],
    }
    return pick(rng, opts[m]) if m in opts else ""


def tempo_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    bpm = int(round(fs.tempo_bpm))
    word = {"slow": ["slow", "unhurried", "leisurely", "stately"], "moderate": ["moderate", "walking", "steady", "medium"],
            "fast": ["fast", "brisk", "quick", "lively"]}[fs.tempo_class]
    w = pick(rng, word)
    return pick(rng, [f"at {article(w)} tempo", f"at {article(w)} tempo of about {bpm} BPM",
                      f"at around {bpm} beats per minute", f"at {article(w)} pace",
                      f"at {article(fs.tempo_class)} tempo (roughly {bpm} BPM)"])


def texture_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    n = NUMBER.get(fs.voices, str(fs.voices))
    if fs.texture == "monophonic":
        return pick(rng, ["a single unaccompanied melodic line", "one melody line with no accompaniment",
                          "a lone melody, monophonic throughout", "a single line of melody"])
    if fs.texture == "homophonic":
        if fs.style not in ("classical", "folk"):
            return pick(rng, ["a melody over chordal accompaniment", "a tune supported by chords",
                              "melody and accompaniment"])
        return pick(rng, [f"{n} voices moving together in block chords", "a chordal, homophonic texture",
                          f"{n}-part harmony with the parts moving mostly in step rhythmically",
                          "a melody supported by chords moving in the same rhythm"])
    return pick(rng, [f"{n} independent, interweaving lines", "a contrapuntal, polyphonic texture",
                      f"{n} voices weaving around each other", f"polyphonic writing in {n} parts"])


def register_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    return pick(rng, {"low": ["in a low register", "in a dark, low range", "mostly in the low range"],
                      "middle": ["in the middle register", "in a comfortable mid range", "in the middle range"],
                      "high": ["in a high register", "in a bright, high range", "mostly in the upper range"]}[fs.register])


def density_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    return pick(rng, {"sparse": ["with few notes and plenty of space", "with an unhurried, sparse note rhythm",
                                 "with long, sustained notes"],
                      "moderate": ["with a moderate flow of notes", "with a steady stream of notes"],
                      "dense": ["with busy, rapid figuration", "with a dense flurry of notes", "with many quick notes"]
                      }[fs.density_class])


def dynamics_phrase(rng: np.random.Generator, fs: FactSheet) -> str:
    return pick(rng, {"soft": ["at a soft dynamic", "at a quiet volume", "with a soft, gentle touch"],
                      "medium": ["at a medium volume", "at a moderate dynamic", "at a middling volume"],
                      "loud": ["at a loud dynamic", "at full volume", "with a full, loud sound"]}[fs.dynamics])


ARRANGED = ("classical", "folk")           # styles that are plain renders; anything else is an arrangement


def origin_clause(rng: np.random.Generator, fs: FactSheet) -> str:
    era = ERA_WORD[fs.era]
    if fs.style not in ARRANGED and fs.style != "solo":         # an arrangement: the *melody* has the origin
        if fs.era == "traditional":
            return pick(rng, [f"the tune is a traditional {fs.genre}", "the melody comes from the folk tradition",
                              f"the melody is borrowed from a traditional {fs.genre}"])
        return pick(rng, [f"the melody comes from {article(fs.genre)} by {fs.composer}",
                          f"the tune is borrowed from {fs.composer}'s {fs.genre}",
                          f"the melody is taken from {article(era)} {fs.genre} by {fs.composer}"])
    if fs.era == "traditional":
        return pick(rng, ["it is a traditional melody", "the tune is traditional", "this is an anonymous folk tune",
                          "the melody comes from the folk tradition"])
    if fs.composer in ("traditional", "anonymous", ""):
        return pick(rng, [f"it is {era} music by an unknown composer", f"this is an anonymous {era} piece"])
    period = "the twentieth century" if fs.era == "modern" else f"the {era} period"
    return pick(rng, [f"it was written by {fs.composer}", f"the composer is {fs.composer}",
                      f"it is {article(era)} work by {fs.composer}", f"it dates from {period}, by {fs.composer}",
                      f"the music is {era} in style, composed by {fs.composer}"])


def progression(fs: FactSheet, limit: int) -> list[str]:
    prog: list[str] = []
    for h in fs.harmony:
        if not prog or prog[-1] != h:
            prog.append(h)
    return prog[:limit]


def harmony_clause(rng: np.random.Generator, fs: FactSheet) -> str:
    """A clause naming the Roman-numeral progression (consecutive repeats merged), or '' when there is none."""
    prog = progression(fs, int(rng.integers(3, 7)))
    if len(prog) < 2:
        return ""
    dash, comma = " - ".join(prog), join(prog)
    return pick(rng, [f"the harmony follows the progression {dash}", f"the chords move through {comma}",
                      f"underneath, the harmony runs {dash} in Roman numerals", f"it uses a progression of {dash}",
                      f"the chord progression is {dash}"])
