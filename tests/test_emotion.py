"""Emotion (VAD): the type's validation, the derived text / facts / audio estimators, and the CLI verb."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mu_llama.emotion import VAD, estimate, estimate_text, looks_like_audio, vad_from_cues, vad_from_facts, vad_from_text
from mu_llama.emotion.audio import RidgeVAD
from mu_llama.emotion.features import FEATURE_NAMES, N_FEATURES_V2, SR, audio_features
from mu_llama.emotion.targets import MusicCues
from mu_llama.emotion.text import category_pad, music_terms
from mu_llama.errors import CheckpointError, ConfigError

# ------------------------------------------------------------------------------------------------------ VAD type


@pytest.mark.parametrize("bad", [1.5, -1.01, math.nan, math.inf, "0.3", True, None])
def test_vad_out_of_range_or_not_a_number_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="arousal"):
        VAD(0.0, bad, 0.0)


def test_vad_bounds_inclusive_and_round_trip():
    v = VAD(-1, 1, 0.25, source="user")
    assert v.as_tuple() == (-1.0, 1.0, 0.25)
    assert VAD.from_dict(v.to_dict()) == v
    with pytest.raises(ConfigError, match="dominance"):
        VAD.from_dict({"valence": 0, "arousal": 0})


def test_shift_clips_to_range_and_clipped_constructor():
    v = VAD(0.8, -0.9, 0.0).shifted(valence=0.5, arousal=-0.5)
    assert v.as_tuple() == (1.0, -1.0, 0.0)
    assert VAD.clipped(3, -7, 0.1).as_tuple() == (1.0, -1.0, 0.1)


# ------------------------------------------------------------------------------------------------------ from text


def test_text_lexicon_sanity():
    happy, sad = vad_from_text("a happy, joyful song"), vad_from_text("a sad, gloomy song")
    assert happy.valence > 0.3 > -0.3 > sad.valence
    calm, excited = vad_from_text("calm and peaceful"), vad_from_text("energetic, fast and lively")
    assert excited.arousal > 0.3 > -0.3 > calm.arousal
    power, gentle = vad_from_text("loud, powerful and majestic"), vad_from_text("soft, delicate and intimate")
    assert power.dominance > 0.3 > -0.3 > gentle.dominance
    assert vad_from_text("a minor key").valence < 0 < vad_from_text("a major key").valence
    assert vad_from_text("angry").arousal > 0 and vad_from_text("angry").valence < 0      # via NRC + PAD table


def test_empty_or_emotionless_text_is_neutral_and_negation_skips_terms():
    for t in ("", "   ", "a piece for piano"):
        assert vad_from_text(t).as_tuple() == (0.0, 0.0, 0.0)
    est = estimate_text("not slow")
    assert est.music_terms == () and est.vad.arousal == 0.0


def test_nrc_lexicon_is_read_from_nrclex_and_checked(monkeypatch):
    """The NRC lexicon is nrclex's data file: its layout and format are checked, and a change is one clear error."""
    from mu_llama.emotion import text
    from mu_llama.errors import DependencyError

    lex = text.nrc_lexicon()
    assert len(lex) >= text.NRC_MIN_WORDS and set(category_pad()) <= {c for cs in lex.values() for c in cs}
    assert set(lex["abandon"]) == {"fear", "negative", "sadness"}          # a word from EmoLex itself
    good = json.dumps(lex)
    assert text.parse_nrc(good) == lex
    no_joy = {w: [c for c in cs if c != "joy"] for w, cs in lex.items()}
    drifts = {"not JSON": good[:-1], "word: \\[category": json.dumps([[w, c] for w, c in lex.items()]),
              "outside NRC EmoLex": json.dumps({**lex, "abandon": ["fear", "dread"]}),
              "no word in categories \\['joy'\\]": json.dumps(no_joy),
              "has 3000 words": json.dumps(dict(list(lex.items())[:3000]))}
    for needle, bad in drifts.items():
        with pytest.raises(DependencyError, match=rf"nrclex \S+: nrclex/data/nrc_en.json .*{needle}"):
            text.parse_nrc(bad)

    def gone(package):                                                    # nrclex absent, or its 3.x layout
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(text.resources, "files", gone)
    text.nrc_lexicon.cache_clear()
    try:
        with pytest.raises(DependencyError, match=r"no nrclex/data/nrc_en.json .*mu-llama\[emotion\].*nrclex>=4\.1"):
            text.nrc_lexicon()
    finally:
        monkeypatch.undo()
        text.nrc_lexicon.cache_clear()
    assert text.nrc_lexicon() == lex


def test_lexicon_tables_are_in_range_and_cite_sources():
    pad = category_pad()
    assert set(pad) == {"anger", "disgust", "fear", "joy", "sadness", "surprise", "trust", "anticipation"}
    assert pad["anger"] == (-0.51, 0.59, 0.25)
    for vals in list(pad.values()) + list(music_terms().values()):
        assert all(v is None or -1 <= v <= 1 for v in vals)


# ------------------------------------------------------------------------------------------------ from facts


def _cues(**kw):
    base = dict(major_share=0.5, tempo_bpm=100, notes_per_second=4, mean_velocity=78, mean_pitch=64)
    return MusicCues(**{**base, **kw})


def test_fact_rules_move_each_axis_the_documented_way():
    assert vad_from_cues(_cues(major_share=1)).valence > vad_from_cues(_cues(major_share=0)).valence
    assert vad_from_cues(_cues(tempo_bpm=180)).arousal > vad_from_cues(_cues(tempo_bpm=60)).arousal
    assert vad_from_cues(_cues(mean_velocity=110)).dominance > vad_from_cues(_cues(mean_velocity=45)).dominance
    assert vad_from_cues(_cues(mean_pitch=48)).dominance > vad_from_cues(_cues(mean_pitch=80)).dominance
    neutral = vad_from_cues(_cues())
    assert max(abs(x) for x in neutral.as_tuple()) < 1e-9


def test_vad_from_factsheet():
    from mu_llama.facts import FactSheet

    f = FactSheet(instruments=["Trumpet"], families=["brass"], key_tonic="C", mode="major", meter="4/4",
                  tempo_bpm=160, texture="homophonic", voices=3, register="low", note_density=9, dynamics="loud",
                  composer="traditional", era="modern", genre="march")
    g = FactSheet(instruments=["Flute"], families=["woodwind"], key_tonic="A", mode="minor", meter="3/4",
                  tempo_bpm=60, texture="monophonic", voices=1, register="high", note_density=1.5, dynamics="soft",
                  composer="traditional", era="modern", genre="lament")
    a, b = vad_from_facts(f), vad_from_facts(g)
    assert a.valence > b.valence and a.arousal > b.arousal and a.dominance > b.dominance
    assert a.source == "facts"


# ------------------------------------------------------------------------------------------------ from audio


def _tones(pitches, seconds=3.0, amp=0.2, onsets_per_s=2.0):
    t = np.arange(int(SR * seconds)) / SR
    env = np.exp(-3 * ((t * onsets_per_s) % 1.0))                 # re-struck notes
    x = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) for p in pitches)
    return (amp * env * x / len(pitches)).astype(np.float32)


def test_audio_features_track_mode_loudness_and_onsets():
    i = {n: k for k, n in enumerate(FEATURE_NAMES)}
    major = audio_features(_tones([60, 64, 67, 72]))
    minor = audio_features(_tones([60, 63, 67, 72]))
    assert major[i["mode_diff"]] > minor[i["mode_diff"]]
    loud = audio_features(_tones([60, 64, 67], amp=0.6))
    soft = audio_features(_tones([60, 64, 67], amp=0.05))
    assert loud[i["rms_db_mean"]] > soft[i["rms_db_mean"]] + 15
    busy = audio_features(_tones([60, 64, 67], onsets_per_s=6.0))
    assert busy[i["onset_rate"]] > audio_features(_tones([60, 64, 67], onsets_per_s=1.0))[i["onset_rate"]]
    assert audio_features(np.zeros(100, np.float32)).shape == (len(FEATURE_NAMES),)    # shorter than a frame


def test_v2_features_key_profile_is_transposition_invariant_and_tempo_follows_onsets():
    i = {n: k for k, n in enumerate(FEATURE_NAMES)}
    deg = [i[f"deg_{k}"] for k in range(12)]
    c = audio_features(_tones([60, 64, 67, 72]))[deg]
    d = audio_features(_tones([62, 66, 69, 74]))[deg]
    assert np.abs(c - d).max() < 0.05 and c.sum() == pytest.approx(1.0, abs=1e-3)
    assert c[[0, 4, 7]].sum() > 0.8                                   # C major triad on degrees 0 / 4 / 7
    slow = audio_features(_tones([60, 64, 67], onsets_per_s=1.0, seconds=8.0))
    fast = audio_features(_tones([60, 64, 67], onsets_per_s=3.0, seconds=8.0))
    assert fast[i["tempo_centroid"]] > slow[i["tempo_centroid"]]
    tg = [i[f"tgram_{k}"] for k in range(1, 6)]
    assert fast[tg].sum() == pytest.approx(1.0, abs=1e-3)


def test_ridge_regressor_fits_saves_and_refuses_a_mismatched_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    names = FEATURE_NAMES[:N_FEATURES_V2]                              # the ridge (v2) estimator's feature set
    X = rng.standard_normal((200, len(names))).astype(np.float32)
    W = rng.standard_normal((len(names), 3)) * 0.1
    Y = np.clip(X @ W, -1, 1).astype(np.float32)
    m = RidgeVAD.fit(X, Y, alpha=0.1, feature_names=names)
    assert np.abs(m.predict(X) - Y).mean() < 0.05
    m.save(tmp_path)
    m2 = RidgeVAD.load(tmp_path)
    np.testing.assert_allclose(m2.predict(X), m.predict(X), atol=1e-6)
    with pytest.raises(CheckpointError, match="no audio VAD regressor"):
        RidgeVAD.load(tmp_path / "nowhere")
    meta = json.loads((tmp_path / "audio_vad.json").read_text())
    meta["feature_names"] = ["something_else"] + meta["feature_names"][1:]
    (tmp_path / "audio_vad.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="feature set"):
        RidgeVAD.load(tmp_path)


def test_bundled_audio_estimator_reads_a_file(tmp_path):
    import soundfile as sf

    from mu_llama.emotion.audio import ASSET_DIR

    if not (ASSET_DIR / "audio_vad.safetensors").exists():
        pytest.skip("audio VAD regressor not bundled yet")
    p = tmp_path / "x.wav"
    sf.write(p, _tones([60, 64, 67], seconds=4.0), SR)
    v = estimate(str(p))
    assert v.source == "audio" and all(-1 <= x <= 1 for x in v.as_tuple())


def test_dispatch_text_vs_audio(tmp_path):
    assert looks_like_audio("song.wav") and looks_like_audio("x.MP3")
    assert not looks_like_audio("a sad song")
    assert estimate("a sad song").source == "text"


def test_cli_emotion_text_json(capsys):
    from mu_llama.cli.main import main

    assert main(["emotion", "a happy cheerful dance", "--json", "--explain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_kind"] == "text" and out["valence"] > 0.3 and "cheerful" in out["music_terms"]


def test_cli_emotion_missing_audio_file_is_one_clear_error(capsys):
    from mu_llama.cli.main import main

    assert main(["emotion", "/no/such/file.wav"]) == 2
    err = capsys.readouterr().err
    assert "file.wav" in err and "Traceback" not in err
