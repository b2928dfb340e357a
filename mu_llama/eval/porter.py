"""Porter stemmer (Porter 1980) with the NLTK_EXTENSIONS variant that nltk's PorterStemmer uses by default,
and therefore nltk's METEOR and rouge_score. Reimplemented so the metrics need neither nltk nor its slow import;
tests/test_eval.py checks it word for word against nltk when nltk is installed.

The NLTK variant differs from the 1980 paper in: a small pool of irregular forms ("dying" -> "die"), words of
<= 2 letters left alone, "ies"/"ied" of 4-letter words -> "ie", "y" -> "i" only after a consonant in stems longer
than one letter, "bli" -> "ble" (not "abli" -> "able"), an extra "alli" pass, "fulli" -> "ful", "logi" -> "log",
and a two-letter vowel-consonant stem counting as CVC.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

_VOWELS = frozenset("aeiou")
_IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
              "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
              "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
              "exceed": "exceed", "succeed": "succeed"}


def _cons(word: str) -> list[bool]:
    """Per letter: is it a consonant? 'y' is a consonant at the start or after a vowel, a vowel after a consonant."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(False if ch in _VOWELS else (i == 0 or not flags[-1]) if ch == "y" else True)
    return flags


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-run -> consonant-run transitions."""
    f = _cons(stem)
    return sum(1 for a, b in pairwise(f) if not a and b)


def _has_vowel(stem: str) -> bool:
    return not all(_cons(stem))


def _double_cons(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _cons(word)[-1]


def _cvc(word: str) -> bool:
    f = _cons(word)
    if len(word) >= 3 and f[-3] and not f[-2] and f[-1] and word[-1] not in "wxy":
        return True
    return len(word) == 2 and not f[0] and f[1]


Rule = tuple[str, str, Callable[[str], bool] | None]


def _rules(word: str, rules: list[Rule]) -> str:
    """The first rule whose suffix the word ends with decides: replace when its condition holds on the stem,
    else leave the word. Suffix "*d" means 'ends in a double consonant' (drop one of them)."""
    for suffix, repl, cond in rules:
        if suffix == "*d":
            if _double_cons(word):
                stem = word[:-2]
                return stem + repl if cond is None or cond(stem) else word
            continue
        if word.endswith(suffix):
            stem = word[:len(word) - len(suffix)]
            return stem + repl if cond is None or cond(stem) else word
    return word


def _m_pos(stem: str) -> bool:
    return _measure(stem) > 0


def _m_gt1(stem: str) -> bool:
    return _measure(stem) > 1


def _step1a(w: str) -> str:
    if w.endswith("ies") and len(w) == 4:
        return w[:-3] + "ie"
    return _rules(w, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])


def _step1b(w: str) -> str:
    if w.endswith("ied"):
        return w[:-3] + ("ie" if len(w) == 4 else "i")
    if w.endswith("eed"):
        return w[:-3] + "ee" if _measure(w[:-3]) > 0 else w
    for suffix in ("ed", "ing"):
        if w.endswith(suffix) and _has_vowel(w[:-len(suffix)]):
            s = w[:-len(suffix)]
            break
    else:
        return w
    return _rules(s, [("at", "ate", None), ("bl", "ble", None), ("iz", "ize", None),
                      ("*d", s[-1], lambda _: s[-1] not in "lsz"),
                      ("", "e", lambda stem: _measure(stem) == 1 and _cvc(stem))])


def _step1c(w: str) -> str:
    return _rules(w, [("y", "i", lambda stem: len(stem) > 1 and _cons(stem)[-1])])


_STEP2 = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
          ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
          ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("fulli", "ful")]


def _step2(w: str) -> str:
    if w.endswith("alli") and _m_pos(w[:-4]):
        return _step2(w[:-4] + "al")
    rules: list[Rule] = [(s, r, _m_pos) for s, r in _STEP2]
    rules.append(("logi", "log", lambda _: _m_pos(w[:-3])))
    return _rules(w, rules)


def _step3(w: str) -> str:
    return _rules(w, [(s, r, _m_pos) for s, r in (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"),
                                                  ("ical", "ic"), ("ful", ""), ("ness", ""))])


_STEP4 = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate",
          "iti", "ous", "ive", "ize")


def _step4(w: str) -> str:
    return _rules(w, [(s, "", (lambda st: _m_gt1(st) and st[-1:] in ("s", "t")) if s == "ion" else _m_gt1)
                      for s in _STEP4])


def _step5(w: str) -> str:
    if w.endswith("e"):
        s = w[:-1]
        m = _measure(s)
        if m > 1 or (m == 1 and not _cvc(s)):
            w = s
    if w.endswith("ll") and _measure(w[:-1]) > 1:
        w = w[:-1]
    return w


def porter_stem(word: str) -> str:
    """Stem of a word (lower-cased first), identical to nltk's PorterStemmer().stem(word)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(word) <= 2:
        return w
    for step in (_step1a, _step1b, _step1c, _step2, _step3, _step4, _step5):
        w = step(w)
    return w
