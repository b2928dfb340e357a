"""Corpus statistics: clips, hours and works per split, the distribution of every fact, bar charts, and spectrogram
examples per style. `corpus_stats(dir)` writes docs/corpus/stats.md plus PNGs and returns the markdown path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from mu_llama import signal
from mu_llama.corpus.splits import SPLITS

CATEGORICAL = ("style", "collection", "era", "genre", "families", "mode", "key_tonic", "meter", "tempo_class",
               "texture", "voices", "register", "density_class", "dynamics", "drums", "bass_type", "lead_instrument",
               "instruments")
CHARTED = ("style", "collection", "families", "mode", "meter", "tempo_class", "texture", "register", "density_class",
           "dynamics", "bass_type", "era")


def load_records(corpus_dir: str | Path) -> list[dict]:
    """Records from the manifests when assembled, else from the finished per-clip JSON files."""
    d = Path(corpus_dir)
    recs: list[dict] = []
    if all((d / "manifests" / f"{s}.jsonl").exists() for s in SPLITS):
        for s in SPLITS:
            recs += [json.loads(line) for line in (d / "manifests" / f"{s}.jsonl").read_text().splitlines() if line]
    else:
        from mu_llama.corpus.build import finished_records

        recs = finished_records(d)
    return recs


def distributions(recs: list[dict]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for name in CATEGORICAL:
        c: Counter = Counter()
        for r in recs:
            v = r["facts"].get(name)
            for x in (v if isinstance(v, list) else [v]):
                c[str(x) if x != "" else "(none)"] += 1
        out[name] = c
    return out


def summary(recs: list[dict]) -> dict:
    s = {}
    for split in SPLITS:
        rows = [r for r in recs if r["split"] == split]
        s[split] = {"clips": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 3),
                    "works": len({r["facts"]["work_id"] for r in rows}),
                    "arrangements": sum(r["kind"] == "arrange" for r in rows),
                    "qa_pairs": sum(len(r["qa"]) for r in rows), "captions": sum(len(r["captions"]) for r in rows)}
    return s


def _bar_chart(counter: Counter, title: str, path: Path, top: int = 25) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = counter.most_common(top)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.2))
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#4a7ab5")
    ax.set_title(title)
    ax.set_xlabel("clips")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def log_mel(audio: np.ndarray, sr: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    """(n_mels, frames) log-mel power spectrogram in dB (numpy only, for plots): HTK mel 30 Hz .. sr / 2."""
    power = signal.spectrogram(audio, n_fft, hop, power=2)                    # (F, frames)
    return 10 * np.log10(signal.mel_filterbank(sr, n_fft, n_mels, 30.0) @ power + 1e-10)


def example_plots(corpus_dir: Path, recs: list[dict], docs: Path, per_style: int = 3) -> list[Path]:
    """One PNG per style with `per_style` log-mel spectrograms of its clips (first clips by id: deterministic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    out = []
    styles = sorted({r["facts"]["style"] for r in recs})
    for style in styles:
        rows = sorted((r for r in recs if r["facts"]["style"] == style), key=lambda r: r["id"])[:per_style]
        fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.2), squeeze=False)
        for ax, r in zip(axes[0], rows):
            x, sr = sf.read(str(corpus_dir / r["audio"]), dtype="float32")
            m = log_mel(x, sr)
            ax.imshow(m, origin="lower", aspect="auto", cmap="magma", vmin=m.max() - 80, vmax=m.max(),
                      extent=(0, len(x) / sr, 0, m.shape[0]))
            f = r["facts"]
            inst = ", ".join(i.split(" (")[0] for i in f["instruments"][:3])
            ax.set_title(f"{r['id']}: {f['key_tonic']} {f['mode']}, {f['meter']}, {round(f['tempo_bpm'])} BPM\n{inst}",
                         fontsize=8)
            ax.set_xlabel("seconds")
            ax.set_ylabel("mel band")
        fig.suptitle(f"style: {style}")
        fig.tight_layout()
        path = docs / f"examples_{style.replace(' ', '_')}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        out.append(path)
    return out


def corpus_stats(corpus_dir: str | Path, docs: str | Path = "docs/corpus", examples: int = 3) -> Path:
    corpus_dir, docs = Path(corpus_dir), Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    recs = load_records(corpus_dir)
    summ = summary(recs)
    dist = distributions(recs)
    hours = sum(r["duration"] for r in recs) / 3600
    works = len({r["facts"]["work_id"] for r in recs})
    lines = ["# Corpus statistics", "", f"Corpus folder: `{corpus_dir}`; {len(recs)} clips, {hours:.2f} hours, {works} works.",
             "", "| split | clips | hours | works | arrangements | captions | QA pairs |", "|---|---|---|---|---|---|---|"]
    for s, v in summ.items():
        lines.append(f"| {s} | {v['clips']} | {v['hours']} | {v['works']} | {v['arrangements']} | {v['captions']} | "
                     f"{v['qa_pairs']} |")
    durs = np.array([r["duration"] for r in recs]) if recs else np.zeros(1)
    lines += ["", f"Clip duration: min {durs.min():.1f} s, median {np.median(durs):.1f} s, max {durs.max():.1f} s.",
              "", "Every clip's work is in exactly one split (split = SHA-256 of the work id)."]
    lines += ["", "## Fact distributions", ""]
    for name, c in dist.items():
        total = sum(c.values()) or 1
        items = c.most_common(30)
        lines.append(f"**{name}** ({len(c)} values): " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in items))
        lines.append("")
    for name in CHARTED:
        path = docs / f"dist_{name}.png"
        _bar_chart(dist[name], f"{name} ({len(recs)} clips)", path)
        lines.append(f"![{name}]({path.name})")
    if examples:
        lines += ["", "## Examples per style (log-mel spectrograms)", ""]
        for p in example_plots(corpus_dir, recs, docs, examples):
            lines.append(f"![{p.stem}]({p.name})")
    md = docs / "stats.md"
    md.write_text("\n".join(lines) + "\n")
    (docs / "stats.json").write_text(json.dumps({"summary": summ, "distributions": {k: dict(v) for k, v in
                                                                                    dist.items()}}, indent=1))
    return md
