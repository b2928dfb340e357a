"""Word-level caption metrics as coco-caption (pycocoevalcap) defines them, in plain Python, offline.

Every function takes already tokenised text (see `tokenize.ptb_tokenize`): one token list per candidate and a list
of token lists (its references) per candidate. Each returns the corpus figure and the per-item figures.

- BLEU-1..4: pycocoevalcap's BleuScorer with option "closest": clipped n-gram counts summed over the corpus,
  BLEU-n the geometric mean of p_1..p_n, brevity penalty from the summed closest reference lengths (ties -> shorter),
  and its tiny smoothing constants (numerator + 1e-15, denominator + 1e-9).
- METEOR: the original METEOR formula (Banerjee & Lavie 2005; also nltk's): Fmean = PR / (alpha P + (1-alpha) R)
  with alpha 0.9, penalty = gamma (chunks / matches)^beta with beta 3, gamma 0.5; best over references; the corpus
  figure is the mean of sentence scores. Matching modules: exact and Porter-stem only (porter.py, nltk's variant).
  WordNet synonyms (nltk) and paraphrase tables (METEOR 1.5, used by coco) are not available offline, so this METEOR
  is lower than theirs for texts that differ by synonyms. The alignment is the maximum matching with the fewest
  chunks (METEOR's rule); `alignment="nltk"` instead reproduces nltk's greedy alignment.
- ROUGE-L: pycocoevalcap's Rouge: LCS precision and recall, each maximised over the references separately, then
  F with beta 1.2; corpus figure = mean.
- CIDEr-D: pycocoevalcap's CiderScorer (which is CIDEr-D): tf-idf n-gram vectors (n = 1..4) with document frequency
  over the reference sets of the evaluated corpus, clipped candidate weights, Gaussian length penalty (sigma 6),
  averaged over n and references, x10. Its "length" is the number of bigrams (a quirk we keep for comparability).
  A corpus of one item scores 0 (idf = log 1 - log df = 0), as in coco.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from mu_llama.eval.tokenize import stem

Tokens = list[str]


@dataclass(frozen=True)
class MetricResult:
    """A corpus figure plus one figure per item (same order as the inputs)."""

    value: float
    per_item: list[float]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    """All k-grams for k = 1..n, counted."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i:i + k])] += 1
    return counts


# ---------------------------------------------------------------- BLEU

def bleu(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], n: int = 4) -> dict[str, MetricResult]:
    """Corpus BLEU-1..n (coco-caption): {"bleu_1": MetricResult, ..., "bleu_n": ...}."""
    _check_lengths(candidates, references)
    tiny, small = 1e-15, 1e-9
    total_guess, total_correct = [0] * n, [0] * n
    total_test = total_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    for cand, refs in zip(candidates, references):
        maxref: dict[tuple, int] = {}
        for ref in refs:
            for g, c in _ngrams(ref, n).items():
                maxref[g] = max(maxref.get(g, 0), c)
        test_len = len(cand)
        ref_len = min((abs(len(r) - test_len), len(r)) for r in refs)[1]  # closest; ties -> shorter
        guess = [max(0, test_len - k) for k in range(n)]
        correct = [0] * n
        for g, c in _ngrams(cand, n).items():
            correct[len(g) - 1] += min(maxref.get(g, 0), c)
        total_test += test_len
        total_ref += ref_len
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
        for k, s in enumerate(_bleu_from_counts(correct, guess, test_len, ref_len, tiny, small)):
            per_item[k].append(s)
    corpus = _bleu_from_counts(total_correct, total_guess, total_test, total_ref, tiny, small)
    return {f"bleu_{k + 1}": MetricResult(corpus[k], per_item[k]) for k in range(n)}


def _bleu_from_counts(correct, guess, test_len, ref_len, tiny, small) -> list[float]:
    scores, prod = [], 1.0
    for k in range(len(correct)):
        prod *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ---------------------------------------------------------------- METEOR

def meteor(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], *, alpha: float = 0.9,
           beta: float = 3.0, gamma: float = 0.5, alignment: str = "min_chunks") -> MetricResult:
    """Mean sentence METEOR (exact + stem), each the best over its references."""
    _check_lengths(candidates, references)
    per = [max(meteor_sentence(c, r, alpha=alpha, beta=beta, gamma=gamma, alignment=alignment) for r in refs)
           for c, refs in zip(candidates, references)]
    return MetricResult(sum(per) / len(per) if per else 0.0, per)


def meteor_sentence(hyp: Tokens, ref: Tokens, *, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5,
                    alignment: str = "min_chunks") -> float:
    """METEOR of one lower-cased hypothesis against one reference."""
    if alignment == "min_chunks":
        matches, chunks = _align_min_chunks(hyp, ref)
    elif alignment == "nltk":
        pairs = _align_nltk(hyp, ref)
        matches, chunks = len(pairs), _count_chunks(pairs)
    else:
        from mu_llama.errors import choice_error

        raise choice_error("METEOR alignment", alignment, ("min_chunks", "nltk"))
    if matches == 0:
        return 0.0
    p, r = matches / len(hyp), matches / len(ref)
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    return (1 - gamma * (chunks / matches) ** beta) * fmean


def _count_chunks(pairs: list[tuple[int, int]]) -> int:
    """Chunks in an alignment sorted by hypothesis index: runs adjacent in both sentences."""
    if not pairs:
        return 0
    return 1 + sum(1 for (i0, j0), (i1, j1) in pairwise(pairs) if not (i1 == i0 + 1 and j1 == j0 + 1))


def _align_nltk(hyp: Tokens, ref: Tokens) -> list[tuple[int, int]]:
    """nltk's greedy alignment: exact stage then stem stage, each walking the hypothesis from its end and taking
    the last still-free reference position holding the same word (stem)."""
    pairs: list[tuple[int, int]] = []
    free_h, free_r = list(range(len(hyp))), list(range(len(ref)))
    for key in (lambda w: w, stem):
        positions: dict[str, list[int]] = defaultdict(list)
        for j in free_r:
            positions[key(ref[j])].append(j)
        used_h, used_r = set(), set()
        for i in reversed(free_h):
            pos = positions.get(key(hyp[i]))
            if pos:
                j = pos.pop()
                pairs.append((i, j))
                used_h.add(i)
                used_r.add(j)
        free_h = [i for i in free_h if i not in used_h]
        free_r = [j for j in free_r if j not in used_r]
    return sorted(pairs)


def _align_min_chunks(hyp: Tokens, ref: Tokens, beam: int = 256) -> tuple[int, int]:
    """(matches, chunks) of the largest exact-or-stem matching with the fewest chunks.

    Exact matches are a subset of stem matches, so the matchable pairs are those with equal stems and the largest
    matching has sum_c min(#hyp_c, #ref_c) pairs per stem class c (the same count as exact-then-stem staging).
    Among those we search for the fewest chunks: a left-to-right beam over hypothesis positions whose states are
    (ref positions used, ref position matched at i-1); only repeated words branch, so the beam rarely prunes.
    """
    hs, rs = [stem(w) for w in hyp], [stem(w) for w in ref]
    ref_pos: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(rs):
        ref_pos[s].append(j)
    hcount = Counter(hs)
    need = {c: min(hcount[c], len(ref_pos[c])) for c in hcount if c in ref_pos}
    total = sum(need.values())
    if total == 0:
        return 0, 0
    remaining = Counter(hs)  # occurrences of each class at positions >= i
    # state: (used ref positions as a bitmask, ref pos matched at i-1 or -2) -> (chunks so far, matched per class)
    states: dict[tuple[int, int], tuple[int, dict[str, int]]] = {(0, -2): (0, {})}
    for i, c in enumerate(hs):
        remaining[c] -= 1
        options: list[tuple[tuple[int, int], int, dict[str, int]]] = []   # (state key, chunks, matched per class)
        for (used, last), (chunks, done) in states.items():
            got = done.get(c, 0)
            if c not in need or got + remaining[c] >= need[c]:
                options.append(((used, -2), chunks, done))            # leave hyp[i] unmatched
            if c in need and got < need[c]:
                for j in ref_pos[c]:
                    if not used >> j & 1:
                        options.append(((used | 1 << j, j), chunks + (0 if last == j - 1 else 1), {**done, c: got + 1}))
        nxt: dict[tuple[int, int], tuple[int, dict[str, int]]] = {}
        for key, chunks, done in options:                             # keep the fewest chunks per state
            if key not in nxt or chunks < nxt[key][0]:
                nxt[key] = (chunks, done)
        states = dict(sorted(nxt.items(), key=lambda kv: kv[1][0])[:beam])
    return total, min(ch for ch, _ in states.values())


# ---------------------------------------------------------------- ROUGE-L

def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) dynamic programme, one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], beta: float = 1.2) -> MetricResult:
    """coco ROUGE-L: F_beta of (max LCS precision, max LCS recall) over references, averaged over items."""
    _check_lengths(candidates, references)
    per = []
    for cand, refs in zip(candidates, references):
        if not cand:
            per.append(0.0)
            continue
        lcs = [lcs_length(r, cand) for r in refs]
        p = max(l / len(cand) for l in lcs)
        r = max(l / len(ref) if ref else 0.0 for l, ref in zip(lcs, refs))
        per.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p > 0 and r > 0 else 0.0)
    return MetricResult(sum(per) / len(per) if per else 0.0, per)


# ---------------------------------------------------------------- CIDEr-D

def cider_d(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], n: int = 4,
            sigma: float = 6.0) -> MetricResult:
    """coco CIDEr-D with document frequencies from this corpus's reference sets."""
    _check_lengths(candidates, references)
    ref_counts = [[_ngrams(r, n) for r in refs] for refs in references]
    df: Counter = Counter()
    for refs in ref_counts:
        df.update({g for counts in refs for g in counts})
    log_items = math.log(float(len(references))) if references else 0.0

    def vec(counts: Counter):
        # -> per-order {ngram: tf * idf}, per-order L2 norms, "length" (bigram count, as coco's counts2vec)
        v: list[dict[tuple, float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = tf * (log_items - math.log(max(1.0, df[g])))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    per = []
    for cand, refs in zip(candidates, ref_counts):
        vc, nc, lc = vec(_ngrams(cand, n))
        total = [0.0] * n
        for rc in refs:
            vr, nr, lr = vec(rc)
            penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
                if nc[k] != 0 and nr[k] != 0:
                    dot /= nc[k] * nr[k]
                total[k] += dot * penalty
        per.append(sum(total) / n / len(refs) * 10.0)
    return MetricResult(sum(per) / len(per) if per else 0.0, per)


def _check_lengths(candidates, references) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    for refs in references:
        if len(refs) == 0:
            raise ValueError("every candidate needs at least one reference")
