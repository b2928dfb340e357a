"""Measure the embedded generator: emotion control, diversity / copying, speed. Plots + JSON under docs/generate/.

    OMP_NUM_THREADS=1 python -m mu_llama.generate.evaluate --out docs/generate [--checkpoint DIR] [--levels 5]

Emotion control: a grid of requested VAD (text fixed), one piece per cell (seed = cell index). Measured per piece:
  - VAD by the audio estimator on the rendered WAV (mu_llama.emotion.audio), and
  - musical facts that do not depend on any estimator: major share (Krumhansl-Kessler key windows on the notes),
    tempo (BPM), mean MIDI velocity, RMS loudness of the audio, mean pitch, notes per second.
  Spearman correlations between requested and measured values.
Diversity: several seeds for one condition: distinct sequences, pairwise note 4-gram overlap. Copying: longest run of
  notes (transposition-invariant: pitch interval + duration) shared with any training sequence, next to the same
  measure for held-out real excerpts (the natural level of shared figures in this music).
Speed: seconds of music generated per wall second on 1 thread (sampling only, and with rendering).
Text adherence (needs an understanding model): `text_adherence()`; not run by default.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from mu_llama.emotion.vad import VAD
from mu_llama.generate.api import EmbeddedGenerator
from mu_llama.generate.conditioning import Conditioning
from mu_llama.generate.sampling import SamplingOptions
from mu_llama.generate.symbolic import PITCH_NAMES, piece_stats

GRID_TEXT = "A short instrumental piece."


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def emotion_grid(gen: EmbeddedGenerator, levels: int = 5, duration: float = 12.0, text: str | None = GRID_TEXT,
                 opts: SamplingOptions = SamplingOptions(), progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    from mu_llama.emotion.audio import default_regressor, vad_from_wave
    from mu_llama.emotion.features import SR, audio_features

    reg = default_regressor()
    vals = np.linspace(-0.8, 0.8, levels)
    rows = []
    for i, (v, a, d) in enumerate(tqdm(list(itertools.product(vals, vals, vals)), disable=not progress, desc="grid")):
        req = VAD(float(v), float(a), float(d))
        out = gen.generate(Conditioning(text, req), duration, SamplingOptions(**{**opts.__dict__, "seed": i}))
        wave = out.audio(SR)
        feats = audio_features(wave, SR)
        m = vad_from_wave(wave, SR, reg)
        st = piece_stats(out.piece)
        rows.append({"requested": req.as_tuple(), "measured": m.as_tuple(),
                     "rms_db": float(feats[0]), "major_share": st["major_share"], "bpm": st["bpm"],
                     "mean_velocity": st["mean_velocity"], "mean_pitch": st["mean_pitch"],
                     "notes_per_second": st["notes_per_second"], "program": st["program"], "n_notes": st["n_notes"]})
    return rows


def control_metrics(rows: list[dict]) -> dict:
    R = np.array([r["requested"] for r in rows])
    M = np.array([r["measured"] for r in rows])
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    out = {"n": len(rows),
           "spearman_audio_estimator": {ax: round(_spearman(R[:, i], M[:, i]), 3)
                                        for i, ax in enumerate(("valence", "arousal", "dominance"))},
           "spearman_facts": {
               "valence~major_share": round(_spearman(R[:, 0], col("major_share")), 3),
               "arousal~tempo_bpm": round(_spearman(R[:, 1], col("bpm")), 3),
               "arousal~notes_per_second": round(_spearman(R[:, 1], col("notes_per_second")), 3),
               "arousal~rms_db": round(_spearman(R[:, 1], col("rms_db")), 3),
               "dominance~mean_velocity": round(_spearman(R[:, 2], col("mean_velocity")), 3),
               "dominance~rms_db": round(_spearman(R[:, 2], col("rms_db")), 3),
               "dominance~mean_pitch": round(_spearman(R[:, 2], col("mean_pitch")), 3)},
           "cross_talk_audio_estimator": {f"req_{a}~meas_{b}": round(_spearman(R[:, i], M[:, j]), 3)
                                          for i, a in enumerate("VAD") for j, b in enumerate("VAD") if i != j}}
    for lvl in (-0.8, 0.8):
        sel = np.isclose(R[:, 0], lvl)
        out[f"major_share_at_valence_{lvl:+.1f}"] = round(float(col("major_share")[sel].mean()), 3)
        sel = np.isclose(R[:, 1], lvl)
        out[f"median_bpm_at_arousal_{lvl:+.1f}"] = round(float(np.median(col("bpm")[sel])), 1)
        sel = np.isclose(R[:, 2], lvl)
        out[f"mean_rms_db_at_dominance_{lvl:+.1f}"] = round(float(col("rms_db")[sel].mean()), 2)
    return out


def plot_control(rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = np.array([r["requested"] for r in rows])
    M = np.array([r["measured"] for r in rows])
    rng = np.random.default_rng(0)
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for i, ax_name in enumerate(("valence", "arousal", "dominance")):
        ax = axes[i]
        jit = R[:, i] + rng.uniform(-0.06, 0.06, len(R))
        ax.scatter(jit, M[:, i], s=12, alpha=0.6)
        lv = np.unique(R[:, i])
        ax.plot(lv, [np.median(M[np.isclose(R[:, i], x), i]) for x in lv], "r-o", label="median")
        ax.plot([-1, 1], [-1, 1], "k:", lw=0.8)
        ax.set_xlabel(f"requested {ax_name}")
        ax.set_ylabel(f"measured {ax_name} (audio estimator)")
        ax.set_title(f"{ax_name}: Spearman {_spearman(R[:, i], M[:, i]):.2f}")
        ax.legend(loc="upper left")
    fig.tight_layout()
    p = out_dir / "control_vad_scatter.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    facts = (("valence", 0, "major_share", "major share (KK key windows)"), ("arousal", 1, "bpm", "tempo (BPM)"),
             ("arousal", 1, "rms_db", "RMS loudness (dB)"), ("dominance", 2, "mean_velocity", "mean MIDI velocity"),
             ("dominance", 2, "mean_pitch", "mean MIDI pitch"))
    fig, axes = plt.subplots(1, len(facts), figsize=(4 * len(facts), 4))
    for ax, (name, i, key, label) in zip(axes, facts):
        y = np.array([r[key] for r in rows])
        ax.scatter(R[:, i] + rng.uniform(-0.06, 0.06, len(R)), y, s=12, alpha=0.6)
        lv = np.unique(R[:, i])
        ax.plot(lv, [np.median(y[np.isclose(R[:, i], x)]) for x in lv], "r-o")
        ax.set_xlabel(f"requested {name}")
        ax.set_ylabel(label)
        ax.set_title(f"Spearman {_spearman(R[:, i], y):.2f}")
    fig.tight_layout()
    p = out_dir / "control_facts_scatter.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------- diversity and copying

def note_signature(piece) -> list[tuple[int, float]]:
    """Transposition-invariant note stream: (interval to previous note, duration) in onset/pitch order."""
    notes = sorted(piece.notes, key=lambda n: (n.onset, n.pitch))
    return [(n.pitch - p.pitch, round(n.duration, 3)) for p, n in zip(notes, notes[1:])]


def _ngrams(seq, n):
    return {tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)}


def longest_shared_run(seq, index: dict[int, set], max_n: int = 64) -> int:
    """Largest n <= max_n such that some n-gram of seq is in index[n] (index built by build_ngram_index)."""
    best = 0
    for n in sorted(index):
        if n > max_n or n > len(seq):
            break
        if _ngrams(seq, n) & index[n]:
            best = n
        else:
            break
    return best


def build_ngram_index(seqs, sizes=tuple(range(4, 65, 2))) -> dict[int, set]:
    return {n: set().union(*(_ngrams(s, n) for s in seqs)) for n in sizes}


def diversity_and_copying(gen: EmbeddedGenerator, train_rows: list[dict], heldout_rows: list[dict], n_seeds: int = 8,
                          duration: float = 12.0) -> dict:
    tok = gen.tok
    train_sigs = [note_signature(tok.decode(r["tokens"])) for r in train_rows]
    index = build_ngram_index(train_sigs)
    conds = [Conditioning("A calm, slow piece for piano.", VAD(0.5, -0.6, -0.3)),
             Conditioning("An energetic, loud fast dance.", VAD(0.7, 0.8, 0.6)),
             Conditioning("A dark, mournful lament in a minor key.", VAD(-0.7, -0.4, -0.2))]
    out = {"conditions": [], "generated_longest_shared_run": [], "heldout_longest_shared_run": []}
    for c in conds:
        seqs = [gen.generate(c, duration, SamplingOptions(seed=s)) for s in range(n_seeds)]
        toks = [tuple(g.tokens) for g in seqs]
        sigs = [note_signature(g.piece) for g in seqs]
        grams = [_ngrams(s, 4) for s in sigs]
        overlaps = [len(a & b) / max(1, len(a | b)) for a, b in itertools.combinations(grams, 2)]
        runs = [longest_shared_run(s, index) for s in sigs]
        out["generated_longest_shared_run"] += runs
        out["conditions"].append({"text": c.text, "vad": c.vad.as_tuple(), "distinct_sequences": len(set(toks)),
                                  "of": n_seeds, "mean_pairwise_4gram_jaccard": round(float(np.mean(overlaps)), 3),
                                  "longest_shared_run_with_train_notes": runs,
                                  "notes": [len(g.piece.notes) for g in seqs]})
    out["heldout_longest_shared_run"] = [longest_shared_run(note_signature(tok.decode(r["tokens"])), index)
                                         for r in heldout_rows]
    g, h = np.array(out["generated_longest_shared_run"]), np.array(out["heldout_longest_shared_run"])
    out["summary"] = {"generated_median": float(np.median(g)), "generated_max": int(g.max()),
                      "heldout_real_median": float(np.median(h)), "heldout_real_max": int(h.max()),
                      "note": "runs in notes of (interval, duration); index sizes 4..64 step 2"}
    return out


# ----------------------------------------------------------------------------------------------------------- speed

def speed(gen: EmbeddedGenerator, duration: float = 20.0, runs: int = 3, guidance_scale: float = 3.0) -> dict:
    import torch

    torch.set_num_threads(1)
    cond = Conditioning("A lively piece for strings.", VAD(0.5, 0.5, 0.2))
    gen_t, tot_t, toks = [], [], []
    for s in range(runs):
        t0 = time.perf_counter()
        out = gen.generate(cond, duration, SamplingOptions(seed=100 + s, guidance_scale=guidance_scale))
        t1 = time.perf_counter()
        out.audio()
        t2 = time.perf_counter()
        gen_t.append(t1 - t0)
        tot_t.append(t2 - t0)
        toks.append(len(out.tokens))
    return {"duration_s": duration, "runs": runs, "guidance_scale": guidance_scale, "threads": 1,
            "median_sampling_s": round(float(np.median(gen_t)), 3),
            "music_seconds_per_second_sampling": round(duration / float(np.median(gen_t)), 2),
            "music_seconds_per_second_with_render": round(duration / float(np.median(tot_t)), 2),
            "tokens_per_second": round(float(np.median(toks)) / float(np.median(gen_t)), 1)}


EXAMPLES = (
    ("calm_major", "A calm, gentle piece for piano.", VAD(0.6, -0.6, -0.4), 1),
    ("dark_minor", "A dark, mournful lament in a minor key.", VAD(-0.7, -0.4, -0.1), 2),
    ("energetic", "An energetic, loud and triumphant fanfare.", VAD(0.7, 0.8, 0.7), 3),
)


def write_examples(gen: EmbeddedGenerator, out_dir: Path, duration: float = 8.0) -> list[dict]:
    """Three small WAV+MIDI examples and prompts.json (with the measured facts of each)."""
    from mu_llama.emotion.audio import vad_from_wave

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = []
    for name, text, vad, seed in EXAMPLES:
        g = gen.generate(Conditioning(text, vad), duration, SamplingOptions(seed=seed))
        wav, mid = g.save(out_dir / f"{name}.wav", sample_rate=16000)
        st = piece_stats(g.piece)
        meta.append({"name": name, "text": text, "vad": vad.to_dict(), "seed": seed, "duration": duration,
                     "command": (f"mu-llama generate --text \"{text}\" --valence {vad.valence} --arousal {vad.arousal} "
                                 f"--dominance {vad.dominance} --seed {seed} --duration {duration:g} --out {name}.wav"),
                     "measured": {"estimated_vad": vad_from_wave(g.audio(), 22050).to_dict(),
                                  "tempo_bpm": round(st["bpm"], 1), "key": f"{PITCH_NAMES[st['key_tonic']]} {st['mode']}",
                                  "major_share": st["major_share"], "mean_velocity": round(st["mean_velocity"], 1),
                                  "program": st["program"], "notes": st["n_notes"]}})
    (out_dir / "prompts.json").write_text(json.dumps(meta, indent=1))
    return meta


def text_adherence(gen: EmbeddedGenerator, caption_model: str, prompts: list[str], seeds: int = 2) -> dict:
    """Caption generated audio with the understanding model and compare with the prompt (MiniLM cosine).

    Needs a loadable understanding model (mu_llama.model.load_model); returns the mean prompt-caption similarity and
    the same for shuffled pairs (chance level)."""
    import tempfile

    from mu_llama.generate.conditioning import default_text_embedder
    from mu_llama.model import load_model
    from mu_llama.tasks import caption

    model = load_model(caption_model)
    caps, used = [], []
    with tempfile.TemporaryDirectory() as td:
        for i, p in enumerate(prompts):
            for s in range(seeds):
                wav = Path(td) / f"{i}_{s}.wav"
                gen.generate(Conditioning(p), 10.0, SamplingOptions(seed=s)).save(wav)
                caps.append(caption(model, str(wav)))
                used.append(p)
    emb = default_text_embedder()
    a, b = emb(used), emb(caps)
    sim = (a * b).sum(1)
    shuf = (a * np.roll(b, 1, axis=0)).sum(1)
    return {"mean_similarity": float(sim.mean()), "shuffled_similarity": float(shuf.mean()), "pairs": len(sim)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default="docs/generate")
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--data", default="data/generator/all", help="training data (for the copying check)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["grid", "diversity", "speed", "examples"])
    ap.add_argument("--examples-out", default="examples/generated")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = EmbeddedGenerator.load(a.checkpoint)
    res_path = out_dir / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    if "grid" not in a.skip:
        rows = emotion_grid(gen, a.levels, a.duration)
        (out_dir / "grid_rows.json").write_text(json.dumps(rows))
        results["control"] = control_metrics(rows)
        plot_control(rows, out_dir)
        print(json.dumps(results["control"], indent=1))
    if "diversity" not in a.skip:
        d = Path(a.data)
        tr = [json.loads(x) for x in open(d / "train.jsonl")]
        he = [json.loads(x) for x in open(d / "heldout.jsonl")]
        results["diversity"] = diversity_and_copying(gen, tr, he)
        print(json.dumps(results["diversity"]["summary"]))
    if "speed" not in a.skip:
        results["speed"] = speed(gen)
        print(json.dumps(results["speed"]))
    if "examples" not in a.skip:
        write_examples(gen, Path(a.examples_out))
    results["checkpoint"] = str(a.checkpoint or "bundled")
    res_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
