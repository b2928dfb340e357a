"""Fit the audio fact tagger (mu_llama.tagger) on the corpus clips and the generator's rendered training excerpts.

Features are cached per source in <cache>/<source>.npz (resumable: a re-run featurises only what is missing; `--shard
K/N` lets N processes featurise disjoint slices, each into its own file). Labels:
- corpus clips (data/corpus, splits train / validation / test): FactSheet.families[0], tempo_class, mode;
- generator excerpts (data/generator/all/audio_clips_train{,_perf}.npz, rendered for the emotion estimator): the
  header's program family, tempo class and mode. Excerpts of works that are in the corpus validation or test split are
  left out, so the reported corpus figures are on unseen works.
The tagger is fitted on corpus train + generator excerpts and scored on corpus validation (and, with --test, test) and
on the generator's held-out works; the scores go into the checkpoint's info.

    mu-llama train-tagger --featurize-only --shard 0/2 &   # optional: two featurising processes
    mu-llama train-tagger --featurize-only --shard 1/2
    mu-llama train-tagger --out mu_llama/assets/tagger [--test]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mu_llama.errors import ConfigError
from mu_llama.tagger import SR, TAG_FACTS, TAGGER_FEATURES, FactTagger, tagger_features


def _norm_work(work_id: str) -> str:
    """Corpus and generator spell work ids differently ('bach/bwv77.6' vs 'bach/bwv77.6.mxl#0')."""
    return re.sub(r"\.(mxl|abc|krn|xml|musicxml|mid)(?=#|$)", "", work_id).removesuffix("#0")


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    z = np.load(path, allow_pickle=False)
    return dict(zip(z["keys"].tolist(), z["X"]))


def _cached(keys: list[str], compute, cache: Path, shard: tuple[int, int], desc: str) -> dict[str, np.ndarray]:
    """Featurise keys[i] (compute(i) -> wave at SR) for this shard's slice, saving every 200 clips."""
    from tqdm import tqdm

    k, n = shard
    path = cache.with_name(f"{cache.stem}.{k}of{n}.npz") if n > 1 else cache
    done = _load_cache(path)
    todo = [i for i, key in enumerate(keys) if i % n == k and key not in done]
    for m, i in enumerate(tqdm(todo, desc=desc)):
        done[keys[i]] = tagger_features(compute(i), SR)
        if (m + 1) % 200 == 0 or m + 1 == len(todo):
            np.savez(path, keys=np.array(list(done)), X=np.stack(list(done.values())))
    return done


def _merged(cache: Path) -> dict[str, np.ndarray]:
    out = _load_cache(cache)
    for part in sorted(cache.parent.glob(f"{cache.stem}.*of*.npz")):
        out.update(_load_cache(part))
    return out


def _jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def corpus_rows(corpus: Path, split: str) -> list[dict]:
    return _jsonl(corpus / "manifests" / f"{split}.jsonl")


def corpus_labels(row: dict) -> dict[str, str]:
    from mu_llama.facts import tempo_class

    f = row["facts"]
    return {"family": f["families"][0], "tempo_class": tempo_class(f["tempo_bpm"]), "mode": f["mode"]}


def featurize_corpus(corpus: Path, split: str, cache_dir: Path, shard=(0, 1)) -> dict[str, np.ndarray]:
    from mu_llama.audio import load_audio

    rows = corpus_rows(corpus, split)
    return _cached([r["id"] for r in rows], lambda i: load_audio(corpus / rows[i]["audio"], sample_rate=SR),
                   cache_dir / f"corpus_{split}.npz", shard, f"corpus {split}")


def _rows_by_key(data: Path, name: str, seed: int = 0) -> dict[str, dict]:
    """Render-cache key -> generator row. The emotion recipe keys a clip by its index in the rows it picked
    (mu_llama.recipes.train_emotion: seed 0, a permutation's first n rows, sorted); the cache holds its picks with
    --n-train 900 and 2000 and --n-heldout 142. A key that two picks give different rows is left out."""
    from mu_llama.recipes.train_emotion import row_key

    train, heldout = (_jsonl(data / f"{name}.jsonl") for name in ("train", "heldout"))
    out: dict[str, dict] = {}
    clash: set[str] = set()
    for n_train, n_heldout in ((900, 142), (2000, 142)):
        rng = np.random.default_rng(seed)
        first, second = rng.permutation(len(train)), rng.permutation(len(heldout))
        rows = train if name.startswith("train") else heldout
        idx = first[:n_train] if name.startswith("train") else second[:n_heldout]
        for i, r in enumerate(rows[j] for j in sorted(idx)):
            key = row_key(r, i)
            if key in out and out[key] is not r:
                clash.add(key)
            out[key] = r
    return {k: r for k, r in out.items() if k not in clash}


def generator_clips(data: Path, name: str) -> tuple[list[str], dict[str, dict[str, str]], np.lib.npyio.NpzFile]:
    """Keys of the rendered excerpts in <data>/audio_clips_<name>.npz, their labels (from the row's header), the npz."""
    from mu_llama.facts import gm_family, tempo_class
    from mu_llama.generate.tokenizer import Tokenizer

    z = np.load(data / f"audio_clips_{name}.npz", allow_pickle=False)
    keys = z["keys"].tolist()
    tok, by_key = Tokenizer(), _rows_by_key(data, name)
    labels = {}
    for key in keys:
        r = by_key.get(key.split("|perf")[0])
        if r is None:
            continue
        h = tok.parse_header(r["tokens"])
        labels[key] = {"family": gm_family(h.program), "tempo_class": tempo_class(h.bpm), "mode": h.mode,
                       "work": _norm_work(r["work_id"])}
    return [k for k in keys if k in labels], labels, z


def featurize_generator(data: Path, name: str, cache_dir: Path, shard=(0, 1)) -> dict[str, np.ndarray]:
    keys, _, z = generator_clips(data, name)
    where = {k: i for i, k in enumerate(z["keys"].tolist())}
    return _cached(keys, lambda i: z[f"a{where[keys[i]]}"].astype(np.float32) / 32767,
                   cache_dir / f"generator_{name}.npz", shard, f"generator {name}")


def _accuracy(tagger: FactTagger, X: np.ndarray, labels: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    P = tagger.predict_proba(X)
    out = {}
    for fact, classes in TAG_FACTS.items():
        y = [lab[fact] for lab in labels]
        pred = [classes[j] for j in P[fact].argmax(1)]
        majority = max(y.count(c) for c in set(y)) / len(y)
        out[fact] = {"accuracy": round(float(np.mean([a == b for a, b in zip(pred, y)])), 3),
                     "majority": round(majority, 3), "n": len(y)}
    return out


@dataclass(frozen=True)
class TaggerTrainConfig:
    corpus: Path = Path("data/corpus")
    generator_data: Path = Path("data/generator/all")
    cache: Path = Path("data/tagger")
    out: Path | None = None            # save the fitted tagger here
    shard: tuple[int, int] = (0, 1)    # (K, N): featurise every N-th clip from K (parallel processes)
    featurize_only: bool = False
    test: bool = False                 # also score the corpus test split
    corpus_only: bool = False          # fit on the corpus train clips only (ablation)
    max_iter: int = 200
    learning_rate: float = 0.1
    l2: float = 1.0                    # leaf-value L2 regularisation (see FactTagger.fit)

    def __post_init__(self):
        k, n = self.shard
        if not 0 <= k < n:
            raise ConfigError(f"shard K/N needs 0 <= K < N, got {k}/{n}")
        if self.max_iter < 1 or self.learning_rate <= 0 or self.l2 < 0:
            raise ConfigError("max_iter must be >= 1, learning_rate > 0 and l2 >= 0")


def train_tagger(cfg: TaggerTrainConfig) -> dict | None:
    """Featurise what is missing, fit, score and (with `out`) save the tagger; returns the scores (None with
    featurize_only)."""
    cfg.cache.mkdir(parents=True, exist_ok=True)

    splits = ("train", "validation", "test") if cfg.test or cfg.featurize_only else ("train", "validation")
    gen_names = ("train", "train_perf", "heldout")
    for split in splits:
        featurize_corpus(cfg.corpus, split, cfg.cache, cfg.shard)
    for name in gen_names:
        featurize_generator(cfg.generator_data, name, cfg.cache, cfg.shard)
    if cfg.featurize_only:
        return None

    def corpus_xy(split):
        feats = _merged(cfg.cache / f"corpus_{split}.npz")
        rows = [r for r in corpus_rows(cfg.corpus, split) if r["id"] in feats]
        return np.stack([feats[r["id"]] for r in rows]), [corpus_labels(r) for r in rows]

    unseen = {_norm_work(r["facts"]["work_id"]) for s in ("validation", "test") for r in corpus_rows(cfg.corpus, s)}

    def generator_xy(name, exclude=frozenset()):
        feats = _merged(cfg.cache / f"generator_{name}.npz")
        keys, labels, _ = generator_clips(cfg.generator_data, name)
        keep = [k for k in keys if k in feats and labels[k]["work"] not in exclude]
        return np.stack([feats[k] for k in keep]), [labels[k] for k in keep]

    parts = [corpus_xy("train")]
    if not cfg.corpus_only:
        parts += [generator_xy("train", unseen), generator_xy("train_perf", unseen)]
    X = np.concatenate([p[0] for p in parts])
    labels = [lab for p in parts for lab in p[1]]
    tagger = FactTagger.fit(X, {f: [lab[f] for lab in labels] for f in TAG_FACTS}, max_iter=cfg.max_iter,
                            learning_rate=cfg.learning_rate, l2_regularization=cfg.l2)
    scores = {"corpus_validation": _accuracy(tagger, *corpus_xy("validation")),
              "generator_heldout": _accuracy(tagger, *generator_xy("heldout"))}
    if cfg.test:
        scores["corpus_test"] = _accuracy(tagger, *corpus_xy("test"))
    tagger.info = {"train_clips": dict(zip(("corpus_train", "generator_excerpts", "generator_performed"),
                                           (len(p[1]) for p in parts))),
                   "max_iter": cfg.max_iter, "learning_rate": cfg.learning_rate, "l2_regularization": cfg.l2,
                   "scores": scores,
                   "features": len(TAGGER_FEATURES)}
    if cfg.out:
        tagger.save(cfg.out)
    return scores
