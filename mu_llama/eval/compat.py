"""`mullama-compat`: MU-LLaMA's own metric definitions, so our figures can sit beside their published MusicQA table.

What their evaluation script does (crypto-code/MU-LLaMA, one reference answer per question, scores averaged over
pairs) and what we do:

| column      | theirs                                                    | here                                      |
|-------------|-----------------------------------------------------------|-------------------------------------------|
| BLEU (B-U)  | nltk sentence_bleu([ref], cand) on raw strings, i.e. on   | the same computation, reimplemented       |
|             | CHARACTERS, weights (.25,.25,.25,.25), no smoothing        | (parity with nltk is tested)              |
| BLEU-4      | the same with weights (0, 0, 0, 1)                        | same                                      |
| METEOR      | nltk meteor_score on wordpunct tokens, WordNet synonyms    | nltk's algorithm, exact + stem only (no   |
|             |                                                           | WordNet offline): a lower bound of theirs |
| ROUGE-L     | rouge_score RougeScorer(['rougeL'], use_stemmer=True),    | the same tokenizer (lower-case, a-z0-9    |
|             | RECALL                                                    | runs, Porter stem for words > 3 chars)    |
| BERTScore   | bert-score RECALL with roberta-large (layer 17)           | RECALL with all-MiniLM-L6-v2: NOT the     |
|             |                                                           | same model, labelled "MiniLM"             |

Character-level BLEU rewards shared letters, not shared words: these figures are not comparable with word-level
caption metrics, only with MU-LLaMA's table. Several references (our captions): each tool's own multi-reference
rule: nltk BLEU takes them all as references, METEOR the best, ROUGE the recall of the best-F reference
(rouge_score's score_multi), BERTScore the best recall (bert-score).
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Sequence

from mu_llama.eval.metrics import MetricResult, lcs_length, meteor_sentence
from mu_llama.eval.tokenize import stem, wordpunct_tokenize


def nltk_sentence_bleu(references: Sequence[Sequence], hypothesis: Sequence,
                       weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)) -> float:
    """nltk.translate.bleu_score.sentence_bleu without smoothing (method0), reimplemented.

    Works on any sequences; strings give character n-grams, as in MU-LLaMA's script. Clipped counts use the maximum
    over references, the denominator is max(1, n-gram count), the brevity penalty uses the closest reference length
    (ties -> shorter); no unigram match -> 0; a zero higher-order precision becomes sys.float_info.min (nltk's method0),
    which makes the score ~1e-77 rather than an error."""
    hyp_len = len(hypothesis)
    nums, dens = [], []
    for n in range(1, len(weights) + 1):
        counts = Counter(tuple(hypothesis[i:i + n]) for i in range(hyp_len - n + 1))
        max_ref: Counter = Counter()
        for ref in references:
            rc = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            for g in counts:
                max_ref[g] = max(max_ref[g], rc[g])
        nums.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
        dens.append(max(1, sum(counts.values())))
    if nums[0] == 0:
        return 0.0
    ref_len = min((abs(len(r) - hyp_len), len(r)) for r in references)[1]
    bp = 1.0 if hyp_len > ref_len else 0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len)
    p = [num / den if num else sys.float_info.min for num, den in zip(nums, dens)]
    return bp * math.exp(math.fsum(w * math.log(pi) for w, pi in zip(weights, p) if pi > 0))


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_score_tokenize(text: str) -> list[str]:
    """rouge_score's tokenizer with use_stemmer=True."""
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    return [stem(t) if len(t) > 3 else t for t in tokens]


def rouge_l_recall(candidate: str, references: Sequence[str]) -> float:
    """LCS recall against the reference with the best LCS F1 (rouge_score score_multi; first on ties)."""
    c = rouge_score_tokenize(candidate)
    best_f, best_r = -1.0, 0.0
    for ref in references:
        r = rouge_score_tokenize(ref)
        if not r or not c:
            p_, r_, f_ = 0.0, 0.0, 0.0
        else:
            lcs = lcs_length(r, c)
            p_, r_ = lcs / len(c), lcs / len(r)
            f_ = 2 * p_ * r_ / (p_ + r_) if p_ + r_ > 0 else 0.0
        if f_ > best_f:
            best_f, best_r = f_, r_
    return best_r


def compat_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                  embedding: bool = True, encoder=None) -> dict[str, MetricResult]:
    """MU-LLaMA-style figures, each the mean over items."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    per: dict[str, list[float]] = {k: [] for k in ("bleu_char", "bleu4_char", "meteor_nltk", "rouge_l_recall")}
    for cand, refs in zip(candidates, references):
        per["bleu_char"].append(nltk_sentence_bleu(list(refs), cand))
        per["bleu4_char"].append(nltk_sentence_bleu(list(refs), cand, weights=(0.0, 0.0, 0.0, 1.0)))
        hyp = [w.lower() for w in wordpunct_tokenize(cand)]
        per["meteor_nltk"].append(max(
            meteor_sentence(hyp, [w.lower() for w in wordpunct_tokenize(r)], alignment="nltk") for r in refs))
        per["rouge_l_recall"].append(rouge_l_recall(cand, refs))
    out = {k: MetricResult(sum(v) / len(v) if v else 0.0, v) for k, v in per.items()}
    if embedding:
        from mu_llama.eval.embedding import embedding_scores

        out["bertscore_recall_minilm"] = embedding_scores(candidates, references, encoder)["bertscore_r"]
    return out
