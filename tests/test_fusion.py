"""Fact fusion (mu_llama.fusion) and the audio fact tagger (mu_llama.tagger).

Invariants: every fusion word reads as its class to the caption parser; weight 0 is plain decoding; fusion keeps the
LM's mass on each fact's words and on every other token, and re-weights classes by exactly the tagger's probability;
the exported trees equal scikit-learn's classifier; a tagger round-trips through its checkpoint (and a malformed one is
a one-line error naming the file); a model saved with a tagger loads it and decodes batch == single."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mu_llama.errors import CheckpointError
from mu_llama.eval.facts_parse import parse_facts
from mu_llama.fusion import FACT_WORDS, FactFusion, fact_token_classes
from mu_llama.tagger import TAG_FACTS, TAGGER_FEATURES, FactTagger, tagger_features

TEMPLATES = {"family": "A piece for {} and nothing else.", "tempo_class": "The tempo is {}.",
             "mode": "It is in a {} key."}


@pytest.mark.parametrize("fact", list(FACT_WORDS))
def test_every_fusion_word_reads_as_its_class(fact):
    for cls, words in FACT_WORDS[fact].items():
        assert cls in TAG_FACTS[fact]
        for w in words:
            if fact == "tempo_class" and cls == "moderate":
                got = parse_facts(f"It moves at a {w} pace." if w == "moderate" else f"It is marked {w}.").tempo_class
            else:
                got = parse_facts(TEMPLATES[fact].format(w)).get(fact)
            assert got == cls, (fact, w, got)


class _Tok:
    """A word-level stand-in tokenizer: every distinct word (with its leading space) is one token."""

    def __init__(self, words):
        self.vocab = {}
        for w in words:
            for form in {w, w.capitalize()}:
                for text in (" " + form, form):
                    self.vocab.setdefault(text, len(self.vocab))

        self.text = {i: t for t, i in self.vocab.items()}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[text]]

    def decode(self, ids):
        return "".join(self.text[i] for i in ids)


def _fusion_setup(weight, probs=None):
    words = [w.split()[0] for f in FACT_WORDS.values() for ws in f.values() for w in ws] + ["the", "a", "music"]
    tok = _Tok(words)
    classes = fact_token_classes(tok)
    rng = np.random.default_rng(0)
    if probs is None:
        probs = {f: rng.dirichlet(np.ones(len(c)), size=2) for f, c in TAG_FACTS.items()}
    return tok, classes, FactFusion(classes, probs, TAG_FACTS, weight), probs


def test_weight_zero_is_plain_decoding_and_mass_is_kept():
    tok, classes, fusion0, probs = _fusion_setup(0.0)
    scores = torch.randn(2, len(tok.vocab) + 5)
    prompt = torch.zeros(2, 3, dtype=torch.long)                  # nothing generated yet
    assert torch.equal(fusion0.for_prompt(3)(prompt, scores), scores)
    _, _, fusion, _ = _fusion_setup(1.5, probs)
    out = fusion.for_prompt(3)(prompt, scores)
    p_in, p_out = scores.softmax(-1), out.softmax(-1)
    fact_ids = {t for by_class in classes.values() for ids in by_class.values() for t in ids}
    other = [i for i in range(scores.shape[1]) if i not in fact_ids]
    torch.testing.assert_close(p_out[:, other], p_in[:, other])            # non-fact tokens untouched
    for fact, by_class in classes.items():
        names = [c for c in TAG_FACTS[fact] if c in by_class]
        m_in = torch.stack([p_in[:, by_class[c]].sum(1) for c in names], 1)
        m_out = torch.stack([p_out[:, by_class[c]].sum(1) for c in names], 1)
        torch.testing.assert_close(m_out.sum(1), m_in.sum(1))              # the fact's total mass is the LM's
        p = torch.tensor(probs[fact][:, [TAG_FACTS[fact].index(c) for c in names]], dtype=torch.float32)
        want = m_in * p ** 1.5
        torch.testing.assert_close(m_out, want / want.sum(1, keepdim=True) * m_in.sum(1, keepdim=True))
        for c in names:                                                    # within a class: the LM's proportions
            ids = by_class[c]
            torch.testing.assert_close(p_out[:, ids] / p_out[:, ids].sum(1, keepdim=True),
                                       p_in[:, ids] / p_in[:, ids].sum(1, keepdim=True))


def test_a_class_the_lm_rules_out_stays_out():
    tok, classes, fusion, _ = _fusion_setup(3.0, {"mode": np.array([[0.01, 0.99]])})
    scores = torch.zeros(1, len(tok.vocab))
    scores[0, classes["mode"]["minor"]] = float("-inf")
    out = fusion.for_prompt(1)(torch.zeros(1, 1, dtype=torch.long), scores)
    assert torch.isinf(out[0, classes["mode"]["minor"]]).all()
    assert torch.isfinite(out[0, classes["mode"]["major"]]).all()


def test_names_and_the_first_family_mention_are_left_to_the_lm():
    tok, classes, fusion, _ = _fusion_setup(2.0)
    fusion = fusion.for_prompt(2)
    scores = torch.randn(2, len(tok.vocab))
    synth, bass, the = tok.vocab[" synth"], tok.vocab[" bass"], tok.vocab[" the"]
    major = tok.vocab[" major"]
    fam = [t for ids in classes["family"].values() for t in ids]
    mode = [t for ids in classes["mode"].values() for t in ids]
    # row 0: "... synth" (inside a name: nothing steered right after a family word)
    # row 1: "... synth the" (the family was named: it stays the LM's; the mode is still steered)
    ids = torch.tensor([[0, 0, the, synth], [0, 0, synth, the]])
    out = fusion(ids, scores)
    torch.testing.assert_close(out[:, fam], scores[:, fam])
    assert not torch.allclose(out[1, mode], scores[1, mode])
    # right after a mode word, the mode is not steered, and nothing stops the family being steered before it is named
    out = fusion(torch.tensor([[0, 0, the, major], [0, 0, the, bass]]), scores)
    torch.testing.assert_close(out[0, mode], scores[0, mode])
    assert not torch.allclose(out[0, fam], scores[0, fam])


def _fit_tiny(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(TAGGER_FEATURES)))
    fam = np.array(["keyboard", "strings", "brass"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    labels = {"family": list(fam), "tempo_class": list(np.array(["slow", "moderate", "fast"])[rng.integers(0, 3, n)]),
              "mode": list(np.where(X[:, 2] > 0, "major", "minor"))}
    return X, labels, FactTagger.fit(X, labels, max_iter=15)


def test_tagger_equals_sklearn_and_round_trips(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, labels, tagger = _fit_tiny()
    P = tagger.predict_proba(X)
    for fact in ("family", "mode"):                                         # multi-class and binary
        est = HistGradientBoostingClassifier(max_iter=15, learning_rate=0.1, l2_regularization=1.0,
                                             early_stopping=False, random_state=0)
        ref = est.fit(X, labels[fact]).predict_proba(X)
        cols = [TAG_FACTS[fact].index(c) for c in est.classes_]
        np.testing.assert_allclose(P[fact][:, cols], ref, atol=1e-9)
        assert P[fact].sum(1) == pytest.approx(1.0)
    tagger.save(tmp_path)
    again = FactTagger.load(tmp_path)
    for fact in TAG_FACTS:
        np.testing.assert_array_equal(again.predict_proba(X)[fact], P[fact])


def test_malformed_tagger_checkpoints_name_the_file(tmp_path):
    _, _, tagger = _fit_tiny()
    tagger.save(tmp_path)
    meta = json.loads((tmp_path / "fact_tagger.json").read_text())
    (tmp_path / "fact_tagger.json").write_text(json.dumps({**meta, "classes": {"family": ["kazoo", "piano"]}}))
    with pytest.raises(CheckpointError, match=r"fact_tagger\.json.*valid facts"):
        FactTagger.load(tmp_path)
    (tmp_path / "fact_tagger.json").write_text(json.dumps(meta))
    (tmp_path / "fact_tagger.safetensors").write_bytes(b"not tensors")
    with pytest.raises(CheckpointError, match=r"fact_tagger\.safetensors"):
        FactTagger.load(tmp_path)
    with pytest.raises(CheckpointError, match="no fact tagger"):
        FactTagger.load(tmp_path / "nowhere")


def test_features_are_finite_on_silence_and_short_audio():
    for wave in (np.zeros(24000, np.float32), np.random.default_rng(0).normal(size=3000).astype(np.float32)):
        f = tagger_features(wave, 24000)
        assert f.shape == (len(TAGGER_FEATURES),) and np.isfinite(f).all()


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """(a tiny random model with a tiny tagger, the folder it was saved to)."""
    from mu_llama.adapters import LoraOptions

    from mu_llama.model import MuLlama
    from tests.test_model import randomize, tiny_config

    model = randomize(MuLlama.build(tiny_config(lora=LoraOptions(rank=2, dropout=0.0))))
    model.tagger = _fit_tiny()[2]
    return model, model.save_pretrained(tmp_path_factory.mktemp("tagged") / "m")


def test_model_saved_with_a_tagger_loads_it_and_fused_batch_equals_single(tagged):
    from mu_llama.decoding import DecodingOptions
    from mu_llama.model import MuLlama
    from mu_llama.tasks import caption
    from tests.test_model import waves

    model, folder = tagged
    loaded = MuLlama.from_pretrained(folder)
    assert loaded.tagger is not None
    w = waves(1.2, 0.5, 0.9, seed=3)
    X = np.stack([tagger_features(x, loaded.sample_rate) for x in w])
    for fact in TAG_FACTS:
        np.testing.assert_array_equal(loaded.tagger.predict_proba(X)[fact], model.tagger.predict_proba(X)[fact])
    assert loaded.fact_fusion(w, DecodingOptions(fact_fusion=0)) is None
    # the byte-level test tokenizer has no whole words: let letters stand for the classes
    letters = [loaded.tokenizer.encode(ch, add_special_tokens=False)[0] for ch in "etaoinshrdlu"]
    loaded._fact_tokens = {"family": {"keyboard": letters[0:4], "strings": letters[4:8], "brass": letters[8:12]},
                           "mode": {"major": letters[:6], "minor": letters[6:]}}
    fused = DecodingOptions(max_new_tokens=8, min_new_tokens=8, fact_fusion=4.0)
    plain = DecodingOptions(max_new_tokens=8, min_new_tokens=8, fact_fusion=0.0)
    batched = caption(loaded, w, fused, batch_size=3)
    assert batched == [caption(loaded, x, fused) for x in w]           # each row fused with its own audio's tags
    assert batched != caption(loaded, w, plain, batch_size=3)          # and the tags do steer the words
    assert loaded.fact_fusion(w, fused, repeat=2).groups[0][3].shape[0] == 6   # rows per clip, clip-major


def test_text_adherence_scores_with_and_without_the_tagger_and_plots(tagged, gen, tmp_path):
    from mu_llama.recipes.evaluate_generator import (
        ADHERENCE_PROMPTS,
        plot_adherence,
        text_adherence,
    )

    res = text_adherence(gen, str(tagged[1]), prompts=ADHERENCE_PROMPTS[:2], seeds=1, duration=1.0, progress=False)
    assert res["pairs"] == 2 and len(res["items"]) == 2
    for key in ("captions", "captions_no_fusion", "generated_notes", "shuffled_captions"):
        assert set(res[key]) == {"overall", "family", "tempo_class", "mode"}
    assert all("caption_no_fusion" in it for it in res["items"])
    assert plot_adherence(res, tmp_path).stat().st_size > 0


def test_long_audio_is_tagged_from_evenly_spaced_excerpts():
    from mu_llama.tagger import MAX_SEGMENTS, SEGMENT_SECONDS, audio_segments

    sr = 8000
    _, _, tagger = _fit_tiny()
    short = np.random.default_rng(1).normal(size=sr * 20).astype(np.float32) * 0.1
    long = np.random.default_rng(2).normal(size=sr * 400).astype(np.float32) * 0.1
    segs = audio_segments(long, sr)
    assert len(segs) == MAX_SEGMENTS and all(len(s) == SEGMENT_SECONDS * sr for s in segs)
    assert np.array_equal(segs[0], long[: len(segs[0])]) and np.array_equal(segs[-1], long[-len(segs[-1]):])
    assert len(audio_segments(short, sr)) == 1
    both = tagger.tag_waves([short, long], sr)
    alone = tagger.tag_waves(segs, sr)
    for fact in TAG_FACTS:
        np.testing.assert_allclose(both[fact][1], alone[fact].mean(0))                 # mean over the excerpts
        np.testing.assert_allclose(both[fact][0], tagger.tag_waves([short], sr)[fact][0])   # batch == single

