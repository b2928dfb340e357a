"""VAD from text (captions, prompts): a derived estimate, not a human-annotated lexicon.

No VAD lexicon ships with this toolkit (NRC-VAD and Warriner norms are not in any package here), so three shipped
sources are combined, axis by axis:

1. Music terms (data/music_terms.tsv): tempo, mode, dynamics and mood words with hand-set VAD evidence whose
   directions follow the music-emotion cue literature. Most specific, so a word found here is not also counted below.
2. NRC EmoLex categories (read straight from the JSON that the `nrclex` package bundles; no TextBlob, no download):
   each category hit contributes the published PAD centroid of that category (data/category_pad.tsv).
3. VADER's compound score (vaderSentiment's bundled lexicon, with its negation and intensifier rules): valence only.

Per axis the estimate is the weighted mean of the sources that have evidence on that axis; with no evidence an axis
is 0 (neutral). Weights: music terms 1.0 per term; NRC 0.6 x min(1, hits / 3); VADER 0.8 when |compound| >= 0.05.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mu_llama.emotion.vad import AXES, VAD
from mu_llama.errors import DependencyError

DATA = Path(__file__).parent / "data"
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")
_NEGATORS = {"not", "no", "never", "without", "hardly", "nor", "isn't", "isnt", "lacking"}
# NRC tags these frequent caption words with emotions that say nothing about a clip's mood.
_NRC_STOP = {"music", "musical", "piece", "song", "play", "playing", "played", "sound", "instrument", "band",
             "score", "art", "chord", "tune", "melody", "harmony", "organ", "piano", "key", "bass", "voice", "choir",
             "orchestra", "string", "strings", "brass", "recording", "public", "church", "god", "lord", "holy",
             "mode", "tempo", "time", "beat", "rhythm", "note", "notes", "feeling", "feel", "mood"}

W_MUSIC, W_NRC, W_VADER = 1.0, 0.6, 0.8


@dataclass(frozen=True)
class TextEstimate:
    vad: VAD
    music_terms: tuple[str, ...] = ()          # matched music-term phrases
    nrc_hits: tuple[str, ...] = ()             # "word:category" pairs counted
    vader_compound: float = 0.0
    weights: dict = field(default_factory=dict)  # axis -> total evidence weight (0 = no evidence, value is 0)


def _read_tsv(name: str) -> list[dict]:
    lines = [ln for ln in (DATA / name).read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


@functools.lru_cache(maxsize=1)
def category_pad() -> dict[str, tuple[float, float, float]]:
    """NRC category -> (valence, arousal, dominance), from data/category_pad.tsv (with its sources)."""
    return {r["category"]: (float(r["valence"]), float(r["arousal"]), float(r["dominance"]))
            for r in _read_tsv("category_pad.tsv")}


@functools.lru_cache(maxsize=1)
def music_terms() -> dict[tuple[str, ...], tuple[float | None, float | None, float | None]]:
    """Phrase (tuple of words) -> per-axis evidence (None = no evidence on that axis)."""
    f = lambda s: float(s) if s not in (None, "") else None  # noqa: E731
    return {tuple(r["term"].split()): (f(r["valence"]), f(r["arousal"]), f(r["dominance"]))
            for r in _read_tsv("music_terms.tsv")}


# The NRC lexicon is a data file inside the nrclex package (its 4.x layout); nothing of nrclex's code is used.
NRCLEX_SUPPORTED = ">=4.1,<5"  # read against 4.1.0; 3.x kept nrc_en.json outside a nrclex.data package
NRC_FILE = "nrclex/data/nrc_en.json"
NRC_CATEGORIES = frozenset({"anger", "anticipation", "disgust", "fear", "joy", "negative", "positive", "sadness",
                            "surprise", "trust"})
NRC_MIN_WORDS = 5000  # EmoLex has ~6,400 words with at least one category (6,468 in nrclex 4.1.0)


@functools.lru_cache(maxsize=1)
def nrc_lexicon() -> dict[str, list[str]]:
    """word -> NRC EmoLex categories, read from the file nrclex bundles (NRC_FILE).
    A missing package or file, or another format, is a DependencyError naming nrclex's version."""
    try:
        text = resources.files("nrclex.data").joinpath("nrc_en.json").read_text(encoding="utf-8")
    except ImportError:  # nrclex absent, or a layout without the nrclex.data package
        raise DependencyError("nrclex", NRCLEX_SUPPORTED, f"no {NRC_FILE} to read the NRC lexicon from (install "
                              "the emotion extra: pip install 'mu-llama[emotion]')") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DependencyError("nrclex", NRCLEX_SUPPORTED, f"cannot read {NRC_FILE} ({e})") from None
    return parse_nrc(text)


def parse_nrc(text: str) -> dict[str, list[str]]:
    """The JSON text of NRC_FILE -> {word: [category, ...]}, checked: a DependencyError if its format changed."""
    def changed(problem: str) -> DependencyError:
        return DependencyError("nrclex", NRCLEX_SUPPORTED, f"{NRC_FILE} {problem}")

    try:
        lex = json.loads(text)
    except json.JSONDecodeError as e:
        raise changed(f"is not JSON ({e})") from None
    rows_ok = isinstance(lex, dict) and all(isinstance(w, str) and isinstance(cs, list) for w, cs in lex.items())
    if not rows_ok or not all(isinstance(c, str) for cs in lex.values() for c in cs):
        raise changed("is not a JSON object {word: [category, ...]}")
    seen = {c for cats in lex.values() for c in cats}
    if seen - NRC_CATEGORIES:
        raise changed(f"has categories {sorted(seen - NRC_CATEGORIES)} outside NRC EmoLex's {sorted(NRC_CATEGORIES)}")
    if set(category_pad()) - seen:
        raise changed(f"has no word in categories {sorted(set(category_pad()) - seen)}")
    if len(lex) < NRC_MIN_WORDS:
        raise changed(f"has {len(lex)} words; NRC EmoLex has more than {NRC_MIN_WORDS}")
    return lex


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # bundled lexicon file; no download

    return SentimentIntensityAnalyzer()


def _lemma(word: str, lex: dict) -> str:
    """Tiny lemmatiser for lexicon lookup (no corpora): plural / -ly / -ness fallbacks, only when the base exists."""
    if word in lex:
        return word
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ly", ""), ("ness", ""), ("ed", ""), ("ing", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and word[: -len(suffix)] + repl in lex:
            return word[: -len(suffix)] + repl
    return word


def estimate_text(text: str) -> TextEstimate:
    """Derived VAD of a text, with the evidence that produced it."""
    words = _WORD.findall((text or "").lower())
    terms, lex = music_terms(), nrc_lexicon()
    max_len = max(len(t) for t in terms)
    singles = {t[0]: None for t in terms if len(t) == 1}
    sums = [0.0, 0.0, 0.0]
    weights = [0.0, 0.0, 0.0]

    # 1. music-term phrases, longest first; a negated term is skipped (e.g. "not slow" says little about tempo).
    matched: list[str] = []
    used = [False] * len(words)
    i = 0
    while i < len(words):
        hit = None
        for n in range(min(max_len, len(words) - i), 0, -1):
            key = tuple(_lemma(w, singles) if n == 1 else w for w in words[i:i + n])
            if key in terms:
                hit = (key, n)
                break
        if hit is None:
            i += 1
            continue
        key, n = hit
        negated = i > 0 and words[i - 1] in _NEGATORS
        if not negated:
            matched.append(" ".join(key))
            for a, v in enumerate(terms[key]):
                if v is not None:
                    sums[a] += W_MUSIC * v
                    weights[a] += W_MUSIC
        for j in range(i, i + n):
            used[j] = True
        i += n

    # 2. NRC categories -> PAD centroids, averaged over hits; negated words are skipped.
    pad = category_pad()
    hits: list[str] = []
    nrc_sum = [0.0, 0.0, 0.0]
    for j, w in enumerate(words):
        if used[j] or w in _NRC_STOP or (j > 0 and words[j - 1] in _NEGATORS):
            continue
        for cat in lex.get(_lemma(w, lex), ()):
            if cat in pad:
                hits.append(f"{w}:{cat}")
                for a in range(3):
                    nrc_sum[a] += pad[cat][a]
    if hits:
        w_nrc = W_NRC * min(1.0, len(hits) / 3)
        for a in range(3):
            sums[a] += w_nrc * nrc_sum[a] / len(hits)
            weights[a] += w_nrc

    # 3. VADER compound -> valence.
    compound = _vader().polarity_scores(text or "")["compound"] if words else 0.0
    if abs(compound) >= 0.05:
        sums[0] += W_VADER * compound
        weights[0] += W_VADER

    vals = [s / w if w > 0 else 0.0 for s, w in zip(sums, weights)]
    return TextEstimate(VAD.clipped(*vals, source="text"), tuple(matched), tuple(hits), compound,
                        {ax: round(w, 3) for ax, w in zip(AXES, weights)})


def vad_from_text(text: str) -> VAD:
    """Derived VAD of a text (see module doc). Empty or emotion-free text -> neutral (0, 0, 0)."""
    return estimate_text(text).vad
