"""Gradient-boosted regression trees kept as flat arrays: fitted by scikit-learn, stored as safetensors, read by numpy.

Why trees: the audio cues behind the emotion rules are non-linear in the features. Notated tempo, for one, shows up in
the onset periodicity at 1/2, 2 or 3 times the beat, and a linear read of the tempo profile cannot pick the right one
(held-out tempo cue: ridge 0.74, boosted trees 0.84 Spearman).

Fitting uses `sklearn.ensemble.HistGradientBoostingRegressor` (training only). The fitted trees are exported node by
node, so a checkpoint is tensors plus JSON (never a pickle) and prediction needs only numpy. `predict` equals
scikit-learn's own `predict` (classifier: `decision_function`): checked at export on the training rows, and by
tests/test_emotion_cues.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.errors import CheckpointError, DependencyError

FIELDS = ("feature", "threshold", "missing_left", "left", "right", "value", "roots")


@dataclass
class TreeEnsemble:
    """N nodes of all trees, concatenated. Node i: a leaf when feature[i] < 0 (its output is value[i]); otherwise it
    sends x to left[i] when x[feature[i]] <= threshold[i] (NaN: left when missing_left[i]) and to right[i] otherwise.
    roots (n_trees,) indexes the first node of each tree; the prediction is baseline + the sum of the leaves reached."""

    baseline: float
    feature: np.ndarray       # (N,) int32, -1 on leaves
    threshold: np.ndarray     # (N,) float64
    missing_left: np.ndarray  # (N,) bool
    left: np.ndarray          # (N,) int32, absolute node indices
    right: np.ndarray         # (N,) int32
    value: np.ndarray         # (N,) float64, leaf outputs (the learning rate already applied)
    roots: np.ndarray         # (n_trees,) int32

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, max_iter: int = 300, learning_rate: float = 0.05,
            max_leaf_nodes: int = 15, seed: int = 0) -> "TreeEnsemble":
        """X (n, F), y (n,). Squared error, no early stopping (the round count is fixed, so fits are reproducible)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        est = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=learning_rate,
                                            max_leaf_nodes=max_leaf_nodes, early_stopping=False, random_state=seed)
        X = np.asarray(X, np.float64)
        est.fit(X, np.asarray(y, np.float64))
        return cls.from_sklearn(est, check=X)

    @classmethod
    def from_sklearn(cls, est, tree: int = 0, *, check: np.ndarray | None = None) -> TreeEnsemble:
        """Export a fitted HistGradientBoostingRegressor (identity-link loss), or the trees of one output of a
        HistGradientBoostingClassifier (`tree`: the class index; a binary classifier has one output, its log-odds).
        The export predicts that output's raw score: predict() for a regressor, decision_function() for a classifier.

        scikit-learn has no public tree export for these estimators, so this reads two private attributes (see
        _sklearn_trees); an unexpected layout raises DependencyError naming scikit-learn's version. `check` (n, F):
        rows on which the export must reproduce scikit-learn's own score, else DependencyError (fit passes its X)."""
        predictors, baseline = _sklearn_trees(est, tree)
        parts, roots, offset = [], [], 0
        for nodes in predictors:
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            leaf = nodes["is_leaf"].astype(bool)
            parts.append((np.where(leaf, -1, nodes["feature_idx"]).astype(np.int32), nodes["num_threshold"],
                          nodes["missing_go_to_left"].astype(bool), (nodes["left"] + offset).astype(np.int32),
                          (nodes["right"] + offset).astype(np.int32), nodes["value"]))
            roots.append(offset)
            offset += len(nodes)
        cat = [np.concatenate(col) for col in zip(*parts)]
        out = cls(baseline, cat[0], cat[1].astype(np.float64), cat[2], cat[3], cat[4], cat[5].astype(np.float64),
                  np.array(roots, np.int32))
        if check is not None:
            X = np.asarray(check, np.float64)
            ref = est.predict(X) if _is_regressor(est) else est.decision_function(X)
            ref = ref if ref.ndim == 1 else ref[:, tree]                   # (n,) or multi-class (n, K)
            err = float(np.max(np.abs(out.predict(X) - ref), initial=0.0))
            if not err <= 1e-9 * max(1.0, float(np.max(np.abs(ref), initial=0.0))):  # NaN fails too
                raise DependencyError("scikit-learn", SKLEARN_SUPPORTED, f"the exported trees disagree with "
                                      f"{type(est).__name__}'s own scores by {err:.3g} on {len(X)} rows")
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, F) -> (n,). All trees descend together, one level per step."""
        X = np.asarray(X, np.float64)
        node = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()    # (n, n_trees)
        rows = np.arange(len(X))[:, None]
        while True:
            f = self.feature[node]
            inner = f >= 0
            if not inner.any():
                break
            x = X[rows, np.maximum(f, 0)]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.baseline + self.value[node].sum(1)

    # --- flat storage ----------------------------------------------------------------------------------------------
    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{k}": np.ascontiguousarray(getattr(self, k)) for k in FIELDS}
        out[f"{prefix}.missing_left"] = out[f"{prefix}.missing_left"].astype(np.uint8)
        out[f"{prefix}.baseline"] = np.array([self.baseline], np.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "TreeEnsemble":
        """Raises KeyError / ValueError on a missing or inconsistent array (the loader turns that into a
        CheckpointError naming the file)."""
        t = {k: tensors[f"{prefix}.{k}"] for k in FIELDS}
        n = len(t["feature"])
        if any(len(t[k]) != n for k in FIELDS if k != "roots") or not len(t["roots"]):
            raise ValueError(f"{prefix}: node arrays of different lengths")
        inner = t["feature"] >= 0
        for k in ("left", "right"):
            if ((t[k][inner] <= np.flatnonzero(inner)) | (t[k][inner] >= n)).any():   # children come after parents
                raise ValueError(f"{prefix}: {k} child index out of range")
        if ((t["roots"] < 0) | (t["roots"] >= n)).any():
            raise ValueError(f"{prefix}: root index out of range")
        return cls(float(tensors[f"{prefix}.baseline"][0]), t["feature"].astype(np.int32),
                   t["threshold"].astype(np.float64), t["missing_left"].astype(bool), t["left"].astype(np.int32),
                   t["right"].astype(np.int32), t["value"].astype(np.float64), t["roots"].astype(np.int32))


# --- the one place that reads scikit-learn's private tree tables -----------------------------------------------------
SKLEARN_SUPPORTED = ">=1.3,<1.10"  # read against 1.9.1; only fitting needs scikit-learn (prediction is numpy)
IDENTITY_LINK_LOSSES = ("squared_error", "absolute_error", "quantile")  # regressor losses whose predict() = raw score
NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf",
               "is_categorical")


def _is_regressor(est) -> bool:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return isinstance(est, HistGradientBoostingRegressor)


def _sklearn_trees(est, tree: int) -> tuple[list[np.ndarray], float]:
    """A fitted HistGradientBoosting* -> (one node table per boosting round for output `tree`, that output's baseline).

    Private layout read (scikit-learn 1.x): est._predictors, one list per boosting round of n_trees_per_iteration_ = K
    TreePredictor, each with .nodes, a structured array carrying NODE_FIELDS; est._baseline_prediction, K values
    (shape (1, K) in 1.9). Bad input is a ValueError; a layout other than that is a DependencyError."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if not isinstance(est, (HistGradientBoostingRegressor, HistGradientBoostingClassifier)):
        raise ValueError(f"expected a HistGradientBoostingRegressor or -Classifier, got {type(est).__name__}")
    if not hasattr(est, "n_trees_per_iteration_"):
        raise ValueError(f"{type(est).__name__} is not fitted")
    if _is_regressor(est) and est.loss not in IDENTITY_LINK_LOSSES:
        raise ValueError(f"loss {est.loss!r} predicts through a link function; exportable losses: "
                         f"{', '.join(IDENTITY_LINK_LOSSES)}")
    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise ValueError("categorical features are not supported (they are re-ordered before the trees see them)")
    k = int(est.n_trees_per_iteration_)
    if not 0 <= tree < k:
        raise ValueError(f"tree {tree} out of range: the estimator has {k} output(s)")

    def moved(what: str) -> DependencyError:
        return DependencyError("scikit-learn", SKLEARN_SUPPORTED,
                               f"{type(est).__name__}.{what} (mu_llama.emotion.trees exports the fitted trees from it)")

    rounds, baseline = getattr(est, "_predictors", None), getattr(est, "_baseline_prediction", None)
    if not isinstance(rounds, list) or not rounds:
        raise moved("_predictors is not a non-empty list of boosting rounds")
    if baseline is None or np.size(baseline) != k:
        raise moved(f"_baseline_prediction does not hold n_trees_per_iteration_ = {k} values")
    tables = []
    for r in rounds:
        nodes = getattr(r[tree], "nodes", None) if isinstance(r, list | tuple) and len(r) == k else None
        names = getattr(getattr(nodes, "dtype", None), "names", None) or ()
        if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or not len(nodes) or not set(NODE_FIELDS) <= set(names):
            raise moved(f"_predictors[i][{tree}].nodes is not a structured array with fields {', '.join(NODE_FIELDS)}")
        tables.append(nodes)
    return tables, float(np.ravel(baseline)[tree])


def read_tree_checkpoint(directory: str | Path, name: str, what: str, known_features: tuple[str, ...],
                         train_command: str) -> tuple[dict, tuple[str, ...], dict, Path]:
    """<name>.json + <name>.safetensors -> (metadata, feature names, tensors, safetensors path). The feature names
    must be a prefix of `known_features` (this version's feature set; older checkpoints used its first columns).
    Every problem is a CheckpointError naming the file; a missing checkpoint names `train_command`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    d = Path(directory)
    st, js = d / f"{name}.safetensors", d / f"{name}.json"
    if not st.is_file() or not js.is_file():
        raise CheckpointError(d, f"no {what} ({name}.json + {name}.safetensors); train one with `{train_command}`")
    try:
        meta = json.loads(js.read_text())
        names = tuple(meta["feature_names"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(js, f"unreadable {what} metadata ({e})") from None
    if names != known_features[: len(names)]:
        raise CheckpointError(js, f"feature set {names} does not match this version's {known_features}")
    try:
        return meta, names, load_file(str(st)), st
    except (OSError, SafetensorError) as e:
        raise CheckpointError(st, f"malformed {what} tensors ({e})") from None
