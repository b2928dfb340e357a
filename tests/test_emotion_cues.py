"""The v3 audio VAD estimator: boosted trees as arrays (parity with scikit-learn), the cue estimator (cues -> rules),
its checkpoint, and the v3 tempo / key-view features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mu_llama.emotion.audio import CUES, CueVAD, RidgeVAD, cues_to_vad, load_estimator
from mu_llama.emotion.features import FEATURE_NAMES, SR, audio_features
from mu_llama.emotion.targets import MusicCues, vad_from_cues
from mu_llama.emotion.trees import TreeEnsemble
from mu_llama.errors import CheckpointError

IDX = {n: k for k, n in enumerate(FEATURE_NAMES)}


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, len(FEATURE_NAMES)))
    y = np.sin(2 * X[:, 0]) + np.where(X[:, 1] > 0, X[:, 2], -1.0) + 0.05 * rng.standard_normal(n)
    return X, y


# ------------------------------------------------------------------------------------------------------ trees
def test_tree_arrays_predict_exactly_what_sklearn_predicts_including_missing_values():
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y = _data()
    X[::9, 1] = np.nan                                              # trains a missing-value direction
    est = HistGradientBoostingRegressor(max_iter=40, learning_rate=0.1, max_leaf_nodes=15, early_stopping=False,
                                        random_state=0).fit(X, y)
    trees = TreeEnsemble.from_sklearn(est)
    Xt, _ = _data(150, seed=1)
    Xt[::4, 1] = np.nan
    np.testing.assert_allclose(trees.predict(Xt), est.predict(Xt), rtol=0, atol=1e-12)
    back = TreeEnsemble.from_tensors(trees.to_tensors("t"), "t")
    np.testing.assert_array_equal(back.predict(Xt), trees.predict(Xt))
    assert np.corrcoef(TreeEnsemble.fit(X, y, max_iter=40).predict(Xt[:, :]), est.predict(Xt))[0, 1] > 0.99


@pytest.mark.parametrize("n_classes", [2, 3])
def test_tree_arrays_equal_sklearn_decision_function_for_classifiers(n_classes):
    """The tagger's use: one export per output of a HistGradientBoostingClassifier (binary: a single log-odds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _data()
    X[::7, 2] = np.nan
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1]))
    est = HistGradientBoostingClassifier(max_iter=25, learning_rate=0.1, l2_regularization=1.0, early_stopping=False,
                                         random_state=0).fit(X, labels)
    Xt, _ = _data(150, seed=1)
    Xt[::5, 2] = np.nan
    ref = est.decision_function(Xt).reshape(len(Xt), -1)                  # (n, 1) binary, (n, K) multi-class
    assert ref.shape[1] == (1 if n_classes == 2 else n_classes)
    for j in range(ref.shape[1]):
        np.testing.assert_allclose(TreeEnsemble.from_sklearn(est, tree=j, check=X).predict(Xt), ref[:, j],
                                   rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        TreeEnsemble.from_sklearn(est, tree=ref.shape[1])


def test_tree_export_refuses_what_it_cannot_represent():
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y = _data(200)
    with pytest.raises(ValueError, match="not fitted"):
        TreeEnsemble.from_sklearn(HistGradientBoostingRegressor())
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=3).fit(X, np.exp(y))
    with pytest.raises(ValueError, match="link function"):                # predict() = exp(raw): not the tree sum
        TreeEnsemble.from_sklearn(poisson)
    Xc = X.copy()
    Xc[:, 0] = np.arange(len(Xc)) % 4
    cat = HistGradientBoostingRegressor(categorical_features=[0], max_iter=3).fit(Xc, y)
    with pytest.raises(ValueError, match="categorical"):
        TreeEnsemble.from_sklearn(cat)


def test_tree_export_fails_loudly_when_sklearns_private_layout_changes():
    """The export reads est._predictors and est._baseline_prediction: each simulated drift names the version."""
    import sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor

    from mu_llama.errors import DependencyError

    X, y = _data(200)
    def fresh():
        return HistGradientBoostingRegressor(max_iter=5, early_stopping=False, random_state=0).fit(X, y)

    version = rf"scikit-learn {sklearn.__version__}: HistGradientBoostingRegressor\."
    est = fresh()
    del est._predictors                                                   # renamed upstream
    with pytest.raises(DependencyError, match=version + "_predictors"):
        TreeEnsemble.from_sklearn(est)
    est = fresh()
    nodes = est._predictors[0][0].nodes
    renamed = nodes.astype([(n if n != "missing_go_to_left" else "missing_left", t) for n, t in nodes.dtype.descr])
    est._predictors[0][0].nodes = renamed                                 # a node field renamed upstream
    with pytest.raises(DependencyError, match="missing_go_to_left"):
        TreeEnsemble.from_sklearn(est)
    est = fresh()
    est._baseline_prediction = np.zeros((2, 1))                           # another shape
    with pytest.raises(DependencyError, match="_baseline_prediction"):
        TreeEnsemble.from_sklearn(est)
    est = fresh()                                                         # same layout, but scikit-learn's own score
    est.predict = lambda X: HistGradientBoostingRegressor.predict(est, X) + 0.5   # has a term the tables lack
    TreeEnsemble.from_sklearn(est)                                        # structure alone cannot tell ...
    with pytest.raises(DependencyError, match=r"disagree .* by 0\.5 on 200 rows"):   # ... the check on rows does
        TreeEnsemble.from_sklearn(est, check=X)


def test_tree_arrays_refuse_out_of_range_children():
    X, y = _data(100)
    t = TreeEnsemble.fit(X, y, max_iter=3).to_tensors("t")
    inner = np.flatnonzero(t["t.feature"] >= 0)
    t["t.left"] = t["t.left"].copy()
    t["t.left"][inner[0]] = 0                                        # a cycle back to the root
    with pytest.raises(ValueError, match="left child"):
        TreeEnsemble.from_tensors(t, "t")


# ------------------------------------------------------------------------------------------------- CueVAD
def _cue_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, len(FEATURE_NAMES)))
    C = np.stack([np.log2(100) + 0.8 * X[:, 0], np.log2(4) + X[:, 1], 78 + 20 * X[:, 2], 64 + 8 * X[:, 3],
                  (X[:, 4] > 0).astype(float), np.tanh(X[:, 5]), np.tanh(X[:, 6])], 1)
    trees = {c: TreeEnsemble.fit(X, C[:, j], max_iter=30) for j, c in enumerate(CUES)}
    text = RidgeVAD.fit(X, np.clip(0.3 * X[:, 7:10], -1, 1), alpha=1.0)
    return CueVAD(tuple(FEATURE_NAMES), trees, text, {"note": "test"}), X


def test_cue_estimator_is_the_rules_applied_to_its_cues_plus_the_text_part():
    m, X = _cue_model()
    C = m.predict_cues(X[:5])
    for row, cues, text in zip(m.predict(X[:5]), C, m.text.predict(X[:5])):
        rule = vad_from_cues(MusicCues(major_share=float(np.clip(cues[4], 0, 1)), tempo_bpm=2 ** cues[0],
                                       notes_per_second=2 ** cues[1], mean_velocity=cues[2], mean_pitch=cues[3],
                                       texture=float(np.clip(cues[5], -1, 1)), family_power=float(np.clip(cues[6], -1, 1))))
        np.testing.assert_allclose(row, np.clip(0.8 * np.array(rule.as_tuple()) + 0.2 * text, -1, 1), atol=1e-9)
    fast, slow = cues_to_vad([[np.log2(180), 3, 100, 64, 1, 0, 0], [np.log2(60), 1, 50, 64, 0, 0, 0]])
    assert fast[0] > slow[0] and fast[1] > slow[1]                  # major + fast + loud: brighter and more aroused


def test_cue_estimator_round_trips_and_malformed_checkpoints_fail_naming_the_file(tmp_path):
    m, X = _cue_model()
    m.save(tmp_path)
    back = load_estimator(tmp_path)
    assert isinstance(back, CueVAD)
    np.testing.assert_allclose(back.predict(X), m.predict(X), atol=1e-6)
    js = tmp_path / "audio_vad_cues.json"
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "cues": ["tempo_log2"]}))
    with pytest.raises(CheckpointError, match="audio_vad_cues.json.*cues"):
        CueVAD.load(tmp_path)
    js.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        CueVAD.load(tmp_path)
    js.write_text(json.dumps(meta))
    st = tmp_path / "audio_vad_cues.safetensors"
    st.write_bytes(st.read_bytes()[:200])                           # truncated
    with pytest.raises(CheckpointError, match="audio_vad_cues.safetensors"):
        CueVAD.load(tmp_path)
    with pytest.raises(CheckpointError, match="no cue VAD estimator"):
        CueVAD.load(tmp_path / "nowhere")


def test_load_estimator_falls_back_to_the_ridge_checkpoint(tmp_path):
    X, _ = _data(100)
    RidgeVAD.fit(X, np.clip(0.1 * X[:, :3], -1, 1), alpha=1.0).save(tmp_path)
    assert isinstance(load_estimator(tmp_path), RidgeVAD)


def test_bundled_estimator_reports_cues_in_their_units(tmp_path):
    from mu_llama.emotion.audio import ASSET_DIR, default_regressor

    if not (ASSET_DIR / "audio_vad_cues.json").exists():
        pytest.skip("cue estimator not bundled")
    reg = default_regressor()
    t = np.arange(int(SR * 6)) / SR
    x = (0.2 * np.exp(-3 * ((t * 2) % 1.0)) * np.sin(2 * np.pi * 261.6 * t)).astype(np.float32)
    cues = reg.predict_cues(audio_features(x)[None, : len(reg.feature_names)])[0]
    assert 30 < 2 ** cues[0] < 300 and 0.1 < 2 ** cues[1] < 40 and 0 < cues[2] < 128 and 20 < cues[3] < 110


# ------------------------------------------------------------------------------------------------ v3 features
def _clicks(per_second: float, seconds: float = 8.0, pitch: float = 440.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.exp(-30 * ((t * per_second) % 1.0) / per_second) * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def test_tempo_profile_follows_the_onset_rate():
    f2, f4 = audio_features(_clicks(2.0)), audio_features(_clicks(4.0))
    assert f2[IDX["ioi_median_log2"]] == pytest.approx(-1.0, abs=0.1)    # 0.5 s between onsets
    assert f4[IDX["ioi_median_log2"]] == pytest.approx(-2.0, abs=0.1)
    near_240 = [IDX["tg_17"], IDX["tg_18"]]                           # 214-240 and 240-269 BPM
    assert max(f4[near_240]) > 0.8 > 0.1 > max(f2[near_240])         # 4 onsets/s repeat at 240 BPM, 2/s do not
    ioi = [IDX[f"ioi_{i}"] for i in range(12)]
    assert f2[ioi].sum() == pytest.approx(1.0)


def test_key_views_are_transposition_invariant_and_see_the_opening():
    def piece(shift):   # I - ii - iii - IV - I, 2 s each: the opening and the cadence on the tonic triad
        t = np.arange(int(SR * 2)) / SR
        chords = [sum(np.sin(2 * np.pi * 440 * 2 ** ((q + shift - 69) / 12) * t) for q in ch) / 3
                  for ch in ((60, 64, 67), (62, 65, 69), (64, 67, 71), (65, 69, 72), (60, 64, 67))]
        return (0.2 * np.concatenate(chords)).astype(np.float32)

    views = [IDX[f"{w}_deg_{i}"] for w in ("open", "close", "bass") for i in range(12)]
    a, b = audio_features(piece(0))[views], audio_features(piece(5))[views]
    assert np.abs(a - b).max() < 0.05
    assert a[:12][[0, 4, 7]].sum() > 0.8 and a[12:24][[0, 4, 7]].sum() > 0.8   # opening / closing: the tonic triad
    assert a[24:].sum() == pytest.approx(1.0, abs=1e-6)
