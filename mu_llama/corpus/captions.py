"""Captions from a FactSheet: several per clip, in varied phrasing, never stating anything the sheet does not hold.

A caption is a head sentence (one of many templates that combine character, genre and instruments) followed by a
random subset of detail phrases (key, tempo, meter, texture, register, density, dynamics, origin, harmony and, for
arrangements, style, drums, bass and lead) grouped into sentences with varied openers and joins. Short captions keep
one or two details, long ones most of them, so no fixed template shows in every caption.
"""

from __future__ import annotations

import numpy as np

from mu_llama.corpus import phrases as ph
from mu_llama.corpus.phrases import article, cap, friendly, join, pick
from mu_llama.facts import FactSheet

STYLE_WORDS = {
    "rock": ["rock", "driving rock", "straight-ahead rock"], "pop ballad": ["pop ballad", "soft pop ballad"],
    "funk": ["funk", "funky"], "reggae": ["reggae", "laid-back reggae"], "swing": ["swing", "jazzy swing"],
    "bossa nova": ["bossa nova", "breezy bossa nova"], "waltz": ["waltz", "lilting waltz"],
    "march": ["march", "brisk march"], "electronic dance": ["electronic dance", "dance-club"],
}
DRUM_WORDS = {
    "rock": ["a drum kit pounds out a steady backbeat", "the drums keep a solid rock beat with snare on two and four"],
    "pop ballad": ["soft drums mark the backbeat", "a gentle drum kit keeps time"],
    "funk": ["tight, syncopated drums drive the groove", "a busy funk drum pattern with crisp hi-hats drives it"],
    "reggae": ["the drums play a one-drop reggae beat", "laid-back drums accent the third beat"],
    "swing": ["the drums swing on the ride cymbal", "the drummer keeps a swinging ride-cymbal pattern"],
    "bossa nova": ["light bossa nova percussion clicks on the rim", "soft drums play a bossa nova pattern"],
    "waltz": ["drums mark the three beats of the waltz", "light drums stress the first beat of each bar"],
    "march": ["a snare drum drives the march beat", "march drums keep a crisp two-step pulse"],
    "electronic dance": ["a four-on-the-floor kick drives it", "a thumping four-on-the-floor beat with open hi-hats drives it"],
}
GENRE_WORDS = {
    "chorale": ["chorale", "four-part chorale", "hymn-like chorale"], "mass": ["mass movement", "sacred mass setting",
    "piece of sacred polyphony"], "madrigal": ["madrigal", "Renaissance madrigal"], "medieval song":
    ["medieval piece", "fourteenth-century piece"], "string quartet": ["string quartet movement", "chamber piece",
    "quartet excerpt"], "folk song": ["folk song", "folk melody", "folk tune"], "fiddle tune": ["fiddle tune", "dance tune"],
    "Irish folk tune": ["Irish tune", "Irish folk melody"], "Scottish air": ["Scottish air", "Scottish melody"],
    "folk tune": ["folk tune", "traditional tune"],
}


def genre_word(rng: np.random.Generator, fs: FactSheet) -> str:
    words = GENRE_WORDS.get(fs.genre, [fs.genre])
    return pick(rng, words)


def _arrangement_details(rng: np.random.Generator, fs: FactSheet) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if fs.drums:
        out.append(("clause", pick(rng, DRUM_WORDS.get(fs.style, ["a drum kit keeps time"]))))
    elif fs.style != "solo":
        out.append(("clause", pick(rng, ["there are no drums", "no percussion is used", "it has no drum kit"])))
    if fs.bass_type not in ("none", "other"):
        b = fs.bass_type
        out.append(("clause", pick(rng, [f"{article(b)} holds down the bass line", f"the bass line is played on {article(b)}",
                                          f"{article(b)} walks underneath" if fs.style == "swing" else f"{article(b)} anchors the low end"])))
    if fs.lead_instrument:
        lead = friendly(fs.lead_instrument)
        out.append(("clause", pick(rng, [f"the melody is carried by the {lead}",
                                          f"the {lead} {ph.verb(lead, 'takes', 'take')} the tune",
                                          f"the {lead} {ph.verb(lead, 'plays', 'play')} the lead melody"])))
    return out


def _details(rng: np.random.Generator, fs: FactSheet) -> list[tuple[str, str]]:
    """(kind, phrase): 'adv' phrases attach to 'It is ...'/'played ...'; 'clause' phrases are full clauses."""
    d = [("adv", ph.key_phrase(rng, fs)), ("adv", ph.tempo_phrase(rng, fs)), ("adv", ph.register_phrase(rng, fs)),
         ("adv", ph.density_phrase(rng, fs)), ("adv", ph.dynamics_phrase(rng, fs))]
    meter = ph.meter_phrase(rng, fs)
    if meter:
        d.append(("adv", meter))
    tex = ph.texture_phrase(rng, fs)
    d.append(("clause", pick(rng, [f"the texture is {fs.texture}", f"we hear {tex}", f"you can hear {tex}",
                                   f"it features {tex}"])))
    if rng.random() < 0.5 or fs.style not in ("classical", "folk"):
        d.append(("clause", ph.origin_clause(rng, fs)))
    h = ph.harmony_clause(rng, fs)
    if h:
        d.append(("clause", h))
    if fs.style not in ("classical", "folk"):
        d += _arrangement_details(rng, fs)
    return d


def _head(rng: np.random.Generator, fs: FactSheet) -> str:
    g, m, ins = genre_word(rng, fs), ph.mood(rng, fs), ph.instruments_phrase(rng, fs)
    if fs.style in STYLE_WORDS:
        sw = pick(rng, STYLE_WORDS[fs.style])
        src = pick(rng, [g, "melody", "tune"])
        return pick(rng, [
            f"{cap(article(sw))} arrangement of {article(src)}, played by {ins}",
            f"{cap(article(m))} {fs.style} take on {article(src)} with {ins}",
            f"{cap(ins)} {ph.verb(ins, 'plays', 'play')} {article(src)} in {article(sw)} style",
            f"This is {article(src)} arranged as {article(sw)} number for {ins}",
            f"{cap(article(sw))} groove built around {article(src)}; the band is {ins}",
            f"{cap(article(src))} reworked in {article(sw)} style for {ins}",
        ])
    if fs.style == "solo" and fs.genre not in GENRE_WORDS:
        g = pick(rng, ["melody", "tune"])
    big = cap(ins)
    return pick(rng, [
        f"{cap(article(m))} {g} played by {ins}",
        f"{cap(article(m))} {g} for {ins}",
        f"{big} {ph.verb(ins, 'performs', 'perform')} {article(m)} {g}",
        f"This recording presents {article(g)} on {ins}, {m} in character",
        f"The clip features {ins} playing {article(m)} {g}",
        f"Here {ins} {ph.verb(ins, 'plays', 'play')} {article(g)} with {article(m)} character",
        f"You hear {article(m)} {g}, rendered by {ins}",
        f"{cap(article(g))} in {article(m)} mood, voiced by {ins}",
        f"{big} {ph.verb(ins, 'gives', 'give')} {article(m)} reading of {article(g)}",
    ])


_OPENERS_ADV = ["It is played", "It unfolds", "The music moves", "It proceeds", "It is performed", "The music runs",
                "It goes", "The performance unfolds"]


def _sentences(rng: np.random.Generator, items: list[tuple[str, str]]) -> list[str]:
    out, i = [], 0
    while i < len(items):
        kind, p = items[i]
        if kind == "adv":
            group = [p]
            while i + 1 < len(items) and items[i + 1][0] == "adv" and len(group) < int(rng.integers(1, 4)):
                i += 1
                group.append(items[i][1])
            opener = pick(rng, _OPENERS_ADV)
            out.append(f"{opener} {join(group) if len(group) < 3 or rng.random() < 0.5 else ', '.join(group)}")
        else:
            if out and rng.random() < 0.35:
                out[-1] += pick(rng, ["; ", ", and ", ", while "]) + p
            else:
                out.append(cap(p))
        i += 1
    return out


def caption(rng: np.random.Generator, fs: FactSheet, n_details: int) -> str:
    details = _details(rng, fs)
    order = rng.permutation(len(details))[:max(0, min(n_details, len(details)))]
    chosen = [details[int(k)] for k in order]
    head = _head(rng, fs)
    if chosen and chosen[0][0] == "adv" and rng.random() < 0.5:      # fold the first detail into the head
        head += ", " + chosen.pop(0)[1]
    sents = [head] + _sentences(rng, chosen)
    return " ".join(s.rstrip(".") + "." for s in sents)


def captions(rng: np.random.Generator, fs: FactSheet, n: int = 4) -> list[str]:
    """n captions: one short (1-2 details), one medium (3-4), the rest long (6+). Duplicates are re-drawn."""
    sizes = [int(rng.integers(1, 3)), int(rng.integers(3, 5))] + [int(rng.integers(6, 11)) for _ in range(max(0, n - 2))]
    out: list[str] = []
    for size in sizes[:n]:
        for _ in range(5):
            c = caption(rng, fs, size)
            if c not in out:
                break
        out.append(c)
    return out
