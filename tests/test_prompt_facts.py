"""Prompt facts -> header constraints (mu_llama.generate.prompt_facts)."""

from __future__ import annotations

from mu_llama.facts import gm_family, tempo_class
from mu_llama.generate.prompt_facts import PromptFacts, masks_for
from mu_llama.generate.tokenizer import tempo_bins


def allowed(mask, tok) -> list[str]:
    return [tok.vocab[i] for i in mask.nonzero().flatten().tolist()]


def test_parse_states_family_tempo_mode_key_meter():
    f = PromptFacts.parse("A slow lament for cello in a minor key.")
    assert (f.family, f.tempo_class, f.mode) == ("strings", "slow", "minor")
    k = PromptFacts.parse("A chorale in F# minor, in 3/4.")
    assert (k.key_tonic, k.mode, k.meter) == (6, "minor", "3/4")
    assert PromptFacts.parse("").is_empty() and PromptFacts.parse("some music").is_empty()


def test_masks_allow_exactly_the_stated_values(tok):
    m = masks_for(PromptFacts.parse("A fast tune for trumpet in a major key."), tok)
    assert set(m) == {"PROG", "TEMPO", "MODE"}
    progs = [int(t[5:]) for t in allowed(m["PROG"], tok)]
    assert progs and all(gm_family(p) == "brass" for p in progs)
    assert len(progs) == sum(gm_family(p) == "brass" for p in range(128))
    bpms = [float(tempo_bins()[int(t[6:])]) for t in allowed(m["TEMPO"], tok)]
    assert bpms and all(tempo_class(b) == "fast" for b in bpms)
    assert allowed(m["MODE"], tok) == ["MODE_major"]


def test_requested_emotion_outranks_text_mode_and_tempo(tok):
    m = masks_for(PromptFacts.parse("A slow, sad piano piece in a minor key."), tok, vad_given=True)
    assert set(m) == {"PROG"}                 # the family still holds; VAD controls set MODE and TEMPO


def test_unstated_or_unexpressible_facts_constrain_nothing(tok):
    assert masks_for(PromptFacts(), tok) == {}
    assert masks_for(PromptFacts(family="drums"), tok) == {}     # no melodic GM program is "drums"


def test_generated_header_follows_the_prompt_and_none_restores_the_embedding_path(gen):
    """With the tiny random generator: stated facts are obeyed in every seed; text_facts="none" is the old path."""
    from mu_llama.emotion import VAD
    from mu_llama.generate import Conditioning, SamplingOptions
    from mu_llama.generate.prompt_facts import header_agreement

    text = "A fast tune for trumpet in a minor key."
    facts = PromptFacts.parse(text)
    for seed in range(3):
        g = gen.generate(Conditioning(text), 2.0, SamplingOptions(seed=seed, max_tokens=64))
        header = gen.tok.parse_header(g.tokens)
        assert all(header_agreement(facts, header).values())
    free = [gen.tok.parse_header(gen.generate(Conditioning(text), 2.0, SamplingOptions(
        seed=s, max_tokens=64, text_facts="none")).tokens) for s in range(6)]
    assert not all(all(header_agreement(facts, h).values()) for h in free)    # the random model ignores the text
    vad = gen.generate(Conditioning(text, VAD(0.9, 0.0, 0.0)), 2.0, SamplingOptions(seed=0, max_tokens=64))
    h = gen.tok.parse_header(vad.tokens)
    assert header_agreement(facts, h)["family"]                   # the family still holds with a VAD...
    assert h.mode == "major"                                      # ...but the requested valence sets the mode
