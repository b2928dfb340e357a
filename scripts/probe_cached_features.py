"""How much of each fact is linearly decodable from the clip features the music adapter reads?

    python scripts/probe_cached_features.py runs/mini2/features [--corpus data/corpus]

Reads a training feature cache (mu_llama.recipes.features: per-clip per-layer time sums + frame counts), averages over
time (the adapter's clip mode: 5 hidden states x 256 -> 1280 numbers per clip) and fits a logistic-regression probe per
fact, scored by 4-fold cross-validation grouped by source work (as the corpus splits), so no work sits on both sides. The probe
is an upper-bound estimate of what the LLM can say about the audio through this encoder.
"""

from __future__ import annotations

import argparse
import glob
import json
import warnings
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache_root")
    ap.add_argument("--corpus", default="data/corpus")
    a = ap.parse_args(argv)
    from safetensors.numpy import load_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore")
    (folder,) = [Path(p) for p in glob.glob(f"{a.cache_root}/*/") if (Path(p) / "spec.json").exists()][:1]
    X, ids = [], []
    for f in sorted(folder.glob("shard-*.safetensors")):
        t = load_file(str(f))
        for k in (k for k in t if k.endswith("/sums")):
            cid = k[:-5]
            X.append((t[k].sum(0) / t[cid + "/counts"].sum()).reshape(-1))
            ids.append(cid)
    rows = {}
    for split in ("train", "validation", "test"):
        path = Path(a.corpus) / "manifests" / f"{split}.jsonl"
        if path.exists():
            rows.update({r["id"]: r for r in map(json.loads, path.read_text().splitlines())})
    X, facts = np.array(X), [rows[i]["facts"] for i in ids]
    groups = [f["work_id"].split("#")[0] for f in facts]  # a work (its arrangements share it)
    print(f"{len(ids)} clips, {X.shape[1]} features; probe accuracy vs majority class")

    def probe(y) -> tuple[float, float]:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5))
        _, counts = np.unique(y, return_counts=True)
        return cross_val_score(clf, X, y, cv=GroupKFold(4), groups=groups).mean(), counts.max() / len(y)

    for key in ("mode", "meter", "tempo_class", "texture", "style", "drums"):
        print("%-18s %.3f  %.3f" % (key, *probe(np.array([str(f[key]) for f in facts]))))
    for fam in sorted({x for f in facts for x in f["families"]}):
        y = np.array([fam in f["families"] for f in facts])
        if 0.03 < y.mean() < 0.97:
            print("%-18s %.3f  %.3f" % (f"family {fam}", *probe(y)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
