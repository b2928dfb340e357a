"""Read musical facts back out of generated text (captions, answers) with synonym lexicons.

`parse_facts(text)` finds every lexicon phrase, keeps the longest where phrases overlap ("bass clarinet" beats
"bass"), marks the ones inside a negation scope ("no drums", "without bass or guitar", "not in a major key"), and
returns, per fact, the first value the text asserts. Negated mentions assert nothing, except for drums and bass
("no drums" -> drums False, "no bass" -> bass_type "none"). A fact the text never states is None.

Scope of a negation: from the negating word ("no", "not", "without", "never", "lacking", "n't", ...) to the end of its
clause; clauses end at . ; : ! ? and at commas, and a contrast or positive word ("but", "instead", "with",
"only", "just", "while", ...) ends it early. So "no drums or bass" negates both, "no drums, just piano" only drums.

The vocabularies are those of mu_llama.facts. Family words follow General MIDI's program groups (saxophone and
English horn are woodwind, harp and timpani strings, accordion and harmonica organ, celesta mallet percussion), except
that "fiddle" reads as a violin (strings) and "double bass" as strings. Bare "voice(s)" is not a family mention
(music-theory voices, voice leading); singers, choir, vocals, "soprano", ... are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mu_llama.facts import PITCH_CLASSES, tempo_class

# ------------------------------------------------------------------ lexicons: (regex, ((fact, value), ...))
# Regexes are matched case-insensitively on the raw text, as whole words (not right after a letter or hyphen).
_S = r"(?:e?s)?"        # optional plural
_SEP = r"[\s-]+"         # space or hyphen between words

def _bass_role(instrument: str) -> str:
    line = rf"bass(?:{_SEP}?line)?"
    verb = r"(?:carries|carry|plays|play|provides|provide|holds|hold|takes|take)"
    return (rf"(?:{instrument}){_SEP}{line}|(?:{instrument})\s+{verb}\s+(?:the\s+|a\s+)?{line}"
            rf"|{line}\s+(?:is\s+)?(?:played\s+)?(?:on|by)\s+(?:the\s+|a\s+)?(?:{instrument})")


_NOT_BASS_NEXT = (r"(?![\s-]*(?:clarinet|drum|voice|singer|part|line|clef|note|register|trombone|viol|flute|range"
                  r"|end|frequenc|heav|boost|saxophone|sax|recorder|oboe|tuba|horn|trumpet|pedal))")
_INSTRUMENT_LEXICON: list[tuple[str, tuple[tuple[str, object], ...]]] = [
    # bass, with its type when the text names it (these also set the bass family)
    (rf"(?:picked|plectrum|pick{_SEP}played){_SEP}(?:electric{_SEP})?bass{_S}(?:{_SEP}guitar{_S})?",
     (("family", "bass"), ("bass_type", "picked bass"))),
    (rf"finger(?:ed|style|picked|{_SEP}style|{_SEP}picked)?{_SEP}(?:electric{_SEP})?bass{_S}(?:{_SEP}guitar{_S})?",
     (("family", "bass"), ("bass_type", "fingered bass"))),
    (rf"slap(?:ped|ping)?{_SEP}bass{_S}", (("family", "bass"), ("bass_type", "slap bass"))),
    (rf"synth(?:esizer|esized)?{_SEP}bass{_S}", (("family", "bass"), ("bass_type", "synth bass"))),
    (rf"(?:acoustic|upright){_SEP}bass{_S}", (("family", "bass"), ("bass_type", "acoustic bass"))),
    (rf"fretless{_SEP}bass{_S}", (("family", "bass"), ("bass_type", "other"))),
    (rf"(?:electric{_SEP}bass{_S}(?:{_SEP}guitar{_S})?|bass{_SEP}guitar{_S}|bassist{_S})", (("family", "bass"),)),
    (rf"(?:double|string|contra){_SEP}?bass{_S}|contrabass{_S}", (("family", "strings"),)),
    (rf"(?:soprano|alto|tenor){_S},?\s+(?:and\s+)?bass{_S}\b", (("family", "voice"),)),     # S-A-T-B voices
    (rf"bass{_SEP}(?:voice|singer|vocal)s?", (("family", "voice"),)),
    (rf"bass(?:es)?{_NOT_BASS_NEXT}", (("family", "bass"),)),
    (rf"(?:bass|kick){_SEP}drums?", (("family", "drums"),)),
    # keyboard
    (rf"(?:grand{_SEP}|electric{_SEP}|acoustic{_SEP}|upright{_SEP})?piano(?:forte)?s?|pianists?|fortepianos?|keyboards?"
     rf"|keyboardists?|harpsichords?|clavinets?|clavichords?|rhodes|honky{_SEP}tonk", (("family", "keyboard"),)),
    # mallet percussion
    (rf"mallet{_SEP}(?:percussion|instruments?)|mallets|celestas?|glockenspiels?|music{_SEP}box(?:es)?|vibraphones?"
     rf"|marimbas?|xylophones?|tubular{_SEP}bells|dulcimers?|chimes", (("family", "mallet percussion"),)),
    # organ
    (r"organs?|organists?|harmoniums?|accordions?|harmonicas?|bandoneons?|hammond", (("family", "organ"),)),
    # guitar
    (r"guitars?|guitarists?", (("family", "guitar"),)),
    # strings
    (rf"violins?|violinists?|fiddles?|fiddlers?|violas?|violists?|cellos?|violoncellos?|cellists?|harps?|harpists?"
     rf"|strings|string{_SEP}(?:quartet|quintet|trio|section|ensemble|orchestra|instrument|part|player|pad)s?"
     rf"|stringed{_SEP}instruments?|bowed{_SEP}strings?|pizzicato|timpani", (("family", "strings"),)),
    # voice
    (rf"vocals?|vocalists?|singers?|singing|sung|choirs?|chorus(?:es)?|choral|a{_SEP}cappella|chanted|chant"
     rf"|(?:human|solo|lead|male|female|sung|singing|choral)\s+voices?"
     rf"|(?:soprano|alto|tenor|baritone)s?(?![\s-]*(?:sax|saxophone|flute|recorder|clarinet|horn|trombone|ukulele))",
     (("family", "voice"),)),
    # brass
    (rf"trumpets?|trumpeters?|trombones?|tubas?|sousaphones?|(?:french{_SEP})?horns?|cornets?|flugelhorns?"
     rf"|euphoniums?|bugles?|brass", (("family", "brass"),)),
    # woodwind (longer than "horn", so "english horn" wins)
    (rf"flutes?|flautists?|flutists?|piccolos?|oboes?|clarinets?|bassoons?|contrabassoons?|recorders?"
     rf"|(?:soprano{_SEP}|alto{_SEP}|tenor{_SEP}|baritone{_SEP})?(?:saxophones?|sax(?:es)?)|english{_SEP}horns?"
     rf"|cor{_SEP}anglais|pan{_SEP}?(?:flute|pipe)s?|shakuhachi|ocarinas?|(?:tin{_SEP})?whistles?|woodwinds?"
     rf"|reed{_SEP}instruments?", (("family", "woodwind"),)),
    # synth
    (rf"synth(?:esizer|esiser)?s?|synth{_SEP}(?:pad|lead)s?", (("family", "synth"),)),
    # drums
    (rf"drums?|drummers?|drum{_SEP}(?:kit|set|machine|loop|beat)s?|percussion|percussionists?|hi{_SEP}?hats?|snares?"
     rf"|cymbals?|tom{_SEP}?toms?", (("family", "drums"),)),
    (r"drumless|drum-free", (("drums", False),)),
    # other (GM "ethnic" and sound-effect groups)
    (rf"banjos?|sitars?|shamisens?|kotos?|kalimbas?|bagpipes?|steel{_SEP}drums?|steel{_SEP}pans?|woodblocks?|taiko",
     (("family", "other"),)),
]

_KEY_RE = re.compile(r"\b([A-Ga-g])(?:(♯|♭|#|b(?=[\s-]*(?:major|minor)))|[\s-]+(sharp|flat))?[\s-]*(major|minor)\b")

_OTHER_LEXICON: list[tuple[str, tuple[tuple[str, object], ...]]] = [
    # mode without a tonic
    (rf"(?:major|minor)(?={_SEP}(?:key|mode|tonalit|scale|feel|tonal|sound|harmon|quality|character))",
     (("mode", "@"),)),
    (r"(?<=\bin\s)(?:a\s+|the\s+)?(?:major|minor)\b(?![\s-]*(?:third|sixth|seventh|second|chord|role|way|part))",
     (("mode", "@"),)),
    (r"(?<=\bin\s)(?:major|minor)\b", (("mode", "@"),)),
    (r"(?<=\bkey\sof\s)(?:major|minor)\b", (("mode", "@"),)),
    (r"(?:key|mode|tonality)\s+(?:is|was|of)\s+(?:a\s+)?(?:major|minor)\b", (("mode", "@"),)),
    (r"ionian", (("mode", "major"),)), (r"aeolian", (("mode", "minor"),)),
    # meter
    (r"(?:[2-9]|1[0-6])\s*/\s*\d{1,2}(?:[\s-]*(?:time|meter|metre|signature))?(?![\d/])", (("meter", "@"),)),
    (rf"common{_SEP}time|four{_SEP}four|quadruple{_SEP}(?:meter|metre|time)"
     rf"|four{_SEP}beats{_SEP}(?:per|to\s+a|to\s+the|in\s+a|in\s+each|a)\s+(?:bar|measure)", (("meter", "4/4"),)),
    (rf"cut{_SEP}time|alla{_SEP}breve", (("meter", "2/2"),)),
    (rf"waltz{_SEP}(?:time|meter|metre|rhythm)|three{_SEP}four|triple{_SEP}(?:meter|metre|time)"
     rf"|three{_SEP}beats{_SEP}(?:per|to\s+a|to\s+the|in\s+a|in\s+each|a)\s+(?:bar|measure)", (("meter", "3/4"),)),
    (rf"two{_SEP}four|duple{_SEP}(?:meter|metre|time)|two{_SEP}beats{_SEP}(?:per|to\s+a|in\s+a|a)\s+(?:bar|measure)",
     (("meter", "2/4"),)),
    (rf"six{_SEP}eight|compound{_SEP}duple", (("meter", "6/8"),)),
    (rf"nine{_SEP}eight|compound{_SEP}triple", (("meter", "9/8"),)),
    (rf"twelve{_SEP}eight|compound{_SEP}quadruple", (("meter", "12/8"),)),
    (rf"three{_SEP}eight", (("meter", "3/8"),)),
    (rf"(?:irregular|odd|asymmetric|unusual|complex){_SEP}(?:meter|metre|time{_SEP}signature)", (("meter", "other"),)),
    # tempo (numbers first: "at 96 bpm")
    (r"\d{2,3}(?:\s*(?:-|–|to)\s*\d{2,3})?\s*(?:bpm|beats\s+(?:per|a)\s+minute)", (("tempo_class", "@"),)),
    (r"(?:♩|quarter[\s-]note)\s*=\s*\d{2,3}"
     r"|tempo\s+(?:of|around|about|is|near)\s+(?:about\s+|around\s+|roughly\s+)?\d{2,3}", (("tempo_class", "@"),)),
    (rf"slow(?:ly|er|est)?(?:{_SEP}(?:paced|moving|tempo))?|adagio|adagietto|largo|larghetto|lento|leisurely|unhurried"
     rf"|languid(?:ly)?|down{_SEP}?tempo", (("tempo_class", "slow"),)),
    (rf"moderato|andante|andantino|allegretto|moderate(?:ly)?{_SEP}(?:tempo|pace|paced|speed|bpm)"
     rf"|medium{_SEP}(?:tempo|pace|paced|speed)|mid{_SEP}?tempo|walking{_SEP}(?:pace|tempo)"
     rf"|(?:tempo|pace)\s+is\s+(?:rather\s+|quite\s+|fairly\s+)?(?:medium|moderate)",
     (("tempo_class", "moderate"),)),
    (rf"fast(?:er|est)?(?:{_SEP}paced|{_SEP}tempo)?|quick(?:ly|er)?|rapid(?:ly)?|brisk(?:ly)?|allegro|presto"
     rf"|prestissimo|vivace|vivo|up{_SEP}?tempo|upbeat|lively|speedy|hurried", (("tempo_class", "fast"),)),
    # texture
    (rf"monophon(?:ic|y)|single{_SEP}(?:melodic{_SEP})?line|one{_SEP}melodic{_SEP}line|in{_SEP}unison"
     rf"|unaccompanied{_SEP}(?:single{_SEP}|solo{_SEP})?(?:melody|melodic{_SEP}line|line|tune)",
     (("texture", "monophonic"),)),
    (rf"homophon(?:ic|y)|chordal|block{_SEP}chords?"
     rf"|melody{_SEP}(?:and|with|over){_SEP}(?:an?{_SEP})?(?:accompaniment|chords)"
     rf"|accompanied{_SEP}melody|chorale{_SEP}(?:style|texture|like)|hymn{_SEP}like", (("texture", "homophonic"),)),
    (rf"polyphon(?:ic|y)|contrapuntal(?:ly)?|counterpoint|interweav(?:ing|es|e)|interwoven|intertwin(?:ing|ed|e)"
     rf"|imitative|fugal|fugues?|fugato|canonic|independent{_SEP}(?:melodic{_SEP})?(?:lines|voices|parts)",
     (("texture", "polyphonic"),)),
    # style (scored for arrangements)
    (r"classical", (("style", "classical"),)),
    (rf"folk(?:{_SEP}(?:song|tune|music|dance)s?)?|celtic|hornpipes?|reels?", (("style", "folk"),)),
    (r"jigs?", (("style", "folk"), ("meter", "6/8"))),
    (rf"rock(?:{_SEP}(?:and|n|'n'|&){_SEP}roll)?", (("style", "rock"),)),
    (rf"(?:pop{_SEP}|power{_SEP})?ballads?|pop", (("style", "pop ballad"),)),
    (r"funk(?:y)?", (("style", "funk"),)),
    (r"reggae|ska", (("style", "reggae"),)),
    (rf"swing(?:ing)?|swung|big{_SEP}band|jazz(?:y)?", (("style", "swing"),)),
    (rf"bossa(?:{_SEP}nova)?", (("style", "bossa nova"),)),
    (r"waltz(?:es)?", (("style", "waltz"), ("meter", "3/4"))),
    (r"march(?:es|ing)?", (("style", "march"),)),
    (rf"electronic(?:{_SEP}dance)?|edm|dance{_SEP}(?:music|track|beat)|house{_SEP}music|techno|trance"
     rf"|four{_SEP}on{_SEP}the{_SEP}floor", (("style", "electronic dance"),)),
    (rf"(?:for{_SEP})?solo(?={_SEP}(?:piano|guitar|violin|cello|flute|instrument|performance|rendition|arrangement"
     rf"|version))", (("style", "solo"),)),   # lookahead: the instrument word stays a family mention
    # bass played by a named instrument: "a tuba bass", "the cello carries the bass line", "bass played by a tuba"
    (_bass_role("tubas?|sousaphones?"), (("bass_type", "tuba"), ("family", "brass"))),
    (_bass_role("cellos?"), (("bass_type", "cello"), ("family", "strings"))),
]

_NEGATOR = re.compile(r"\b(?:no|not|without|never|lacks?|lacking|absent|absence\s+of|free\s+of|devoid\s+of|neither|nor"
                      r"|none|zero)\b(?!\s+(?:only|just|doubt)\b)|n't\b", re.IGNORECASE)
_SCOPE_END = re.compile(r"[.;:!?,]|\b(?:but|instead|rather|with|only|just|while|whereas|although|though|yet|except"
                        r"|apart|plus|alongside|featuring|however)\b", re.IGNORECASE)


def _compile(lexicon):
    return [(re.compile(rf"(?<![\w-])(?:{pat})(?![\w])", re.IGNORECASE), out) for pat, out in lexicon]


_COMPILED = _compile(_INSTRUMENT_LEXICON) + _compile(_OTHER_LEXICON)


@dataclass(frozen=True)
class Mention:
    fact: str
    value: object
    start: int
    end: int
    negated: bool
    text: str


@dataclass(frozen=True)
class ParsedFacts:
    """What a text asserts. Single-valued facts hold the first asserted value or None."""

    families: tuple[str, ...] = ()              # asserted families, in order of first mention
    negated_families: tuple[str, ...] = ()      # families the text says are absent
    mode: str | None = None
    key: str | None = None                      # "F# minor" (tonic spelled as in PITCH_CLASSES)
    meter: str | None = None
    tempo_class: str | None = None
    texture: str | None = None
    style: str | None = None
    drums: bool | None = None
    bass_type: str | None = None
    mentions: tuple[Mention, ...] = field(default=(), repr=False)

    def get(self, fact: str):
        if fact == "family":
            return self.families[0] if self.families else None
        return getattr(self, fact)


def parse_facts(text: str) -> ParsedFacts:
    """Parse a caption or answer into the facts it states."""
    spans: list[tuple[int, int, tuple]] = list(_key_spans(text))  # first: a key wins ties ("A minor")
    for rx, outputs in _COMPILED:
        for m in rx.finditer(text):
            spans.append((m.start(), m.end(), outputs))
    # longest match wins on overlap; ties keep lexicon order (sort is stable)
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    chosen: list[tuple[int, int, tuple]] = []
    for s in spans:
        if not chosen or s[0] >= chosen[-1][1]:
            chosen.append(s)
        elif s[1] - s[0] > chosen[-1][1] - chosen[-1][0]:
            chosen[-1] = s  # a longer phrase starting inside the previous one replaces it
    negated = _negation_mask(text)
    mentions = []
    for start, end, outputs in chosen:
        phrase = text[start:end]
        for fact, value in outputs:
            if value == "@":
                value = _resolve(fact, phrase)
                if value is None:
                    continue
            mentions.append(Mention(fact, value, start, end, any(negated[start:end]), phrase))
    return _collect(mentions)


def _collect(mentions: list[Mention]) -> ParsedFacts:
    fams, neg_fams = [], []
    values: dict[str, object] = {}
    drums: bool | None = None
    for m in mentions:
        if m.fact == "family":
            target = neg_fams if m.negated else fams
            if m.value not in target:
                target.append(m.value)
            if m.value == "drums" and drums is None:
                drums = not m.negated
            if m.value == "bass" and m.negated and "bass_type" not in values:
                values["bass_type"] = "none"
        elif m.fact == "drums":
            if drums is None:
                drums = bool(m.value) != m.negated
        elif not m.negated and m.fact not in values:
            values[m.fact] = m.value
            if m.fact == "key" and "mode" not in values:
                values["mode"] = m.value.split()[1]
    return ParsedFacts(families=tuple(fams), negated_families=tuple(f for f in neg_fams if f not in fams),
                       drums=drums, mentions=tuple(mentions), **values)


def _negation_mask(text: str) -> list[bool]:
    """Per character: inside the scope of a negating word."""
    mask = [False] * len(text)
    for neg in _NEGATOR.finditer(text):
        end = _SCOPE_END.search(text, neg.end())
        stop = end.start() if end else len(text)
        for i in range(neg.end(), stop):
            mask[i] = True
    return mask


_NOTE_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _key_spans(text: str):
    """'F# minor', 'B-flat major', 'Eb major', 'c minor' -> key (and mode). A lower-case or sentence-initial 'a'
    followed by another word ('a minor key', 'A major feature') is an article, not a tonic."""
    for m in _KEY_RE.finditer(text):
        letter, sym, word, mode = m.group(1), m.group(2), m.group(3), m.group(4).lower()
        if letter in "aA" and not (sym or word):
            after = text[m.end():]
            sentence_start = m.start() == 0 or re.search(r"[.!?]\s*$", text[:m.start()]) is not None
            followed_by_word = re.match(r"[\s-]+[a-z]", after) is not None
            if letter == "a" or (sentence_start and followed_by_word):
                continue
        shift = 0
        if sym in ("#", "♯") or word == "sharp":
            shift = 1
        elif sym in ("b", "♭") or word == "flat":
            shift = -1
        tonic = PITCH_CLASSES[(_NOTE_PC[letter.upper()] + shift) % 12]
        yield m.start(), m.end(), (("key", f"{tonic} {mode}"),)


_METER_VOCAB = ("2/4", "3/4", "4/4", "2/2", "3/8", "6/8", "9/8", "12/8")


def _resolve(fact: str, phrase: str):
    """Values read from the matched phrase itself ('@' in the lexicon)."""
    low = phrase.lower()
    if fact == "mode":
        return "major" if "major" in low else "minor"
    if fact == "meter":
        num, den = (int(x) for x in re.findall(r"\d+", low)[:2])
        if f"{num}/{den}" in _METER_VOCAB:
            return f"{num}/{den}"
        return "other" if den in (2, 4, 8, 16) and 1 <= num <= 16 else None
    if fact == "tempo_class":
        nums = [int(x) for x in re.findall(r"\d+", low)]
        bpm = sum(nums[:2]) / len(nums[:2])
        return tempo_class(bpm) if 20 <= bpm <= 400 else None
    raise ValueError(f"no resolver for {fact}")


def parse_yes_no(answer: str) -> bool | None:
    """Leading yes/no of an answer ('Yes, ...' -> True, 'No.' -> False), for yes/no questions."""
    m = re.match(r"\s*(yes|yeah|yep|correct|indeed|certainly|definitely|no|nope|not)\b", answer, re.IGNORECASE)
    if not m:
        return None
    return m.group(1).lower() not in ("no", "nope", "not")
