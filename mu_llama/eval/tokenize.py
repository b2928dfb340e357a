"""Text normalisation shared by the caption metrics.

`ptb_tokenize` approximates what coco-caption does before every metric: Stanford's PTBTokenizer run with
`-preserveLines -lowerCase`, then the tokens in its PUNCTUATIONS list are dropped. We do it in Python (no Java),
reproducing the behaviours that matter for captions:

- lower-casing; clitics split off ("it's" -> "it 's", "don't" -> "do n't", "can't" -> "ca n't");
- hyphenated words, slashes and inner periods stay whole ("well-known", "3/4", "6/8-time", "3.5", "e.g.", "j.s.");
- known abbreviations keep their period ("mr.", "ca. 1750"; "op." and "no." only before a number) except at the end;
- "c#" and "f#" stay whole (PTBLexer knows them as language names); other sharps split ("g # minor"), as in coco;
- symbols become tokens ("50%" -> "50 %", "#1" -> "# 1"); "!?" and "!!" stay single tokens (coco keeps them);
- quotes, dashes, ".", ",", ":", ";", "?", "!" and "..." are removed;
- brackets become "-lrb-", "-rrb-", "-lsb-", ... and are KEPT: coco's PUNCTUATIONS list holds the upper-case
  forms but the tokenizer lower-cases, so coco scores them as words. Kept here for comparability.

tests/test_eval.py checks this against the real PTBTokenizer on typical caption sentences when Java and
pycocoevalcap are present. Known rare deviations: odd period runs ("x..y"), "rock'n'roll", "@home"; and coco feeds
all captions to one Java process joined by newlines, so a final single-letter "D." is kept as an initial there when
the NEXT caption starts with a capital: a dependence on neighbouring captions we do not reproduce.
"""

from __future__ import annotations

import re
from functools import lru_cache

from mu_llama.eval.porter import porter_stem

# coco-caption's list (pycocoevalcap/tokenizer/ptbtokenizer.py), in the lower case our tokens are in.
_REMOVED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "vs", "ca", "jr", "sr", "prof", "etc", "approx", "op", "no",
                  "nos", "vol", "feat", "inc", "ltd", "co", "mt", "jan", "feb", "mar", "apr", "aug", "sept", "oct",
                  "nov", "dec"}
_UNICODE = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2032": "'",
                          "\u2014": " -- ", "\u2013": " -- ", "\u2026": "...", "\u00a0": " "})
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'m|'d|'ll|'re|'ve)\b")
_FUSED = re.compile(r"\b(can)(not)\b|\b(gon|got|wan)(na|ta)\b")
_TOKEN = re.compile(
    r"""n't|'(?:s|m|d|ll|re|ve)\b           # clitics split off above
      | (?:[^\W_]\.){2,}                     # initialisms: e.g.  u.s.a.  j.s.
      | [cf]\#(?![\w#])                      # PTBLexer keeps "c#" and "f#" whole (the language names)
      | \w+(?:(?:[-/.&']|(?<=\d)[,:](?=\d))\w+)*\.?   # words, numbers, hyphenated / slashed compounds
      | \.{2,} | [?!]+ | -{2,}               # runs kept as one token
      | \S                                   # any other symbol on its own""",
    re.VERBOSE,
)


def ptb_tokenize(text: str) -> list[str]:
    """Caption text -> coco-style tokens (lower-cased, punctuation removed)."""
    text = text.translate(_UNICODE).lower()
    text = "".join(ch for ch in text if ord(ch) <= 0xFFFF)  # PTBLexer drops non-BMP symbols (emoji) as untokenizable
    text = _CLITIC.sub(r" \1", text)
    text = _FUSED.sub(lambda m: " ".join(g for g in m.groups() if g), text)
    raw = _TOKEN.findall(text)
    out: list[str] = []
    for i, tok in enumerate(raw):
        if tok.endswith(".") and len(tok) > 1 and not re.fullmatch(r"(?:[^\W_]\.){2,}|\.+", tok):
            # A word swallowed a following period: abbreviations keep it (unless last), others split it off.
            stem = tok[:-1]
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            keep = stem in _ABBREVIATIONS and nxt != "" and (stem not in ("no", "nos", "op") or nxt[0].isdigit())
            out.append(tok if keep else stem)
            continue
        tok = _BRACKETS.get(tok, tok)
        if tok in _REMOVED or tok == '"' or re.fullmatch(r"\.{2,}|-{2,}", tok):
            continue
        out.append(tok)
    return out


def ptb_join(text: str) -> str:
    """The space-joined form coco's scorers split on."""
    return " ".join(ptb_tokenize(text))


_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")


def wordpunct_tokenize(text: str) -> list[str]:
    """nltk's wordpunct_tokenize (runs of word characters, runs of other non-space characters)."""
    return _WORDPUNCT.findall(text)


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Porter stem (nltk's default variant) of a lower-cased word, memoised: captions repeat a small vocabulary."""
    return porter_stem(word)
