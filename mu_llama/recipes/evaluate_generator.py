"""Measure the embedded generator: emotion control, diversity / copying, speed. Plots + JSON under docs/generate/.

    OMP_NUM_THREADS=1 mu-llama eval-generator --out docs/generate [--checkpoint DIR] [--levels 5]

Emotion control: a grid of requested VAD (text fixed), one piece per cell (seed = cell index). Measured per piece:
  - VAD by the audio estimator on the rendered WAV (mu_llama.emotion.audio), and
  - musical facts that do not depend on any estimator: major share (Krumhansl-Kessler key windows on the notes),
    tempo (BPM), mean MIDI velocity, RMS loudness of the audio, mean pitch, notes per second.
  Spearman correlations between requested and measured values. `--vad-control plan|priors` picks how the VAD steers
  the header (mu_llama.generate.planner: the rule-inverting planner, or one axis per header slot); each row also
  records the sampled header tokens.
Diversity: several seeds for one condition: distinct sequences, pairwise note 4-gram overlap. Copying: longest run of
  notes (transposition-invariant: pitch interval + duration) shared with any training sequence, next to the same
  measure for held-out real excerpts (the natural level of shared figures in this music).
Speed: seconds of music generated per wall second on 1 thread (sampling only, and with rendering).
Text adherence (needs an understanding model): `--text-adherence MODEL` (e.g. mu-llama-mini); not run by default.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from mu_llama.emotion.vad import VAD
from mu_llama.errors import ConfigError, choice_error
from mu_llama.generate.api import DEFAULT_PERFORMANCE, EmbeddedGenerator
from mu_llama.generate.conditioning import Conditioning
from mu_llama.generate.performance import PerformanceOptions
from mu_llama.generate.sampling import SamplingOptions
from mu_llama.generate.symbolic import PITCH_NAMES, piece_stats
from mu_llama.generate.tokenizer import HEADER_KINDS

GRID_TEXT = "A short instrumental piece."


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def emotion_grid(gen: EmbeddedGenerator, levels: int = 5, duration: float = 12.0, text: str | None = GRID_TEXT,
                 opts: SamplingOptions = SamplingOptions(), progress: bool = True,
                 performance: PerformanceOptions | None = DEFAULT_PERFORMANCE, seed_offset: int = 0) -> list[dict]:
    from tqdm import tqdm

    from mu_llama.emotion.audio import CueVAD, default_regressor
    from mu_llama.emotion.features import SR, audio_features

    reg = default_regressor()
    nf = len(reg.feature_names)
    vals = np.linspace(-0.8, 0.8, levels)
    rows = []
    for i, (v, a, d) in enumerate(tqdm(list(itertools.product(vals, vals, vals)), disable=not progress, desc="grid")):
        req = VAD(float(v), float(a), float(d))
        out = gen.generate(Conditioning(text, req), duration, SamplingOptions(**{**opts.__dict__, "seed": seed_offset + i}),
                           performance)
        wave = out.audio(SR)
        feats = audio_features(wave, SR)                                 # (F,)
        if isinstance(reg, CueVAD):
            measured, cues = (x[0] for x in reg.predict_with_cues(feats[None, :nf]))
        else:
            measured, cues = reg.predict(feats[None, :nf])[0], None
        st = piece_stats(out.piece)
        rows.append({"requested": req.as_tuple(), "measured": [float(x) for x in measured],
                     "audio_cues": None if cues is None else cues.tolist(),
                     "features": [float(x) for x in feats],     # lets other estimators be scored on the same audio
                     "rms_db": float(feats[0]), "major_share": st["major_share"], "bpm": st["bpm"],
                     "mean_velocity": st["mean_velocity"], "mean_pitch": st["mean_pitch"],
                     "notes_per_second": st["notes_per_second"], "program": st["program"], "n_notes": st["n_notes"],
                     "header_major": float(out.piece.mode == "major"),
                     "header": [gen.tok.vocab[t] for t in out.tokens[1:1 + len(HEADER_KINDS)]],
                     "legato": legato_ratio(out.piece)})
    return rows


def legato_ratio(piece) -> float:
    """Median of note duration / time to the next onset (1 = legato, < 1 detached, > 1 overlapping)."""
    onsets = sorted({n.onset for n in piece.notes})
    nxt = {a: b for a, b in zip(onsets, onsets[1:])}
    r = [n.duration / (nxt[n.onset] - n.onset) for n in piece.notes if n.onset in nxt]
    return float(np.median(r)) if r else 1.0


def control_metrics(rows: list[dict]) -> dict:
    R = np.array([r["requested"] for r in rows])
    M = np.array([r["measured"] for r in rows])
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    out = {"n": len(rows),
           "spearman_audio_estimator": {ax: round(_spearman(R[:, i], M[:, i]), 3)
                                        for i, ax in enumerate(("valence", "arousal", "dominance"))},
           "spearman_facts": {
               "valence~major_share": round(_spearman(R[:, 0], col("major_share")), 3),
               "valence~header_major": round(_spearman(R[:, 0], col("header_major")), 3),
               "arousal~mean_velocity": round(_spearman(R[:, 1], col("mean_velocity")), 3),
               "arousal~legato": round(_spearman(R[:, 1], col("legato")), 3),
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
             ("arousal", 1, "mean_velocity", "mean MIDI velocity"), ("arousal", 1, "legato", "legato ratio"),
             ("arousal", 1, "rms_db", "RMS loudness (dB)"), ("dominance", 2, "mean_velocity", "mean MIDI velocity"),
             ("dominance", 2, "mean_pitch", "mean MIDI pitch"))
    fig, axes = plt.subplots(1, len(facts), figsize=(3.6 * len(facts), 3.8))
    for ax, (name, i, key, label) in zip(axes, facts):
        y = np.array([r.get(key, np.nan) for r in rows], float)
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
        # the score as sampled (performance=None): articulation would move durations off the training grid and
        # hide copies from the (interval, duration) n-gram check
        seqs = [gen.generate(c, duration, SamplingOptions(seed=s), performance=None) for s in range(n_seeds)]
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


ADHERENCE_PROMPTS = (
    "A slow, sad piano piece in a minor key.",
    "A fast, cheerful folk dance for violin in a major key.",
    "A calm, slow melody for flute in a major key.",
    "A fast, dark piece for strings in a minor key.",
    "A moderate hymn for church organ in a major key.",
    "A slow lament for cello in a minor key.",
    "A lively, fast tune for trumpet in a major key.",
    "A gentle, moderate piece for nylon guitar in a minor key.",
    "A fast, bright piece for clarinet in a major key.",
    "A slow, mournful choir piece in a minor key.",
)
ADHERENCE_FACTS = ("family", "tempo_class", "mode")


def fact_agreement(prompt: str, text: str) -> dict[str, bool | None]:
    """Per fact in ADHERENCE_FACTS: does `text` state the prompt's value (None: the prompt states none)."""
    from mu_llama.eval.facts_parse import parse_facts

    want, got = parse_facts(prompt), parse_facts(text)
    out: dict[str, bool | None] = {}
    for f in ADHERENCE_FACTS:
        w = want.get(f)
        out[f] = None if w is None else (w in got.families if f == "family" else got.get(f) == w)
    return out


def text_adherence(gen: EmbeddedGenerator, caption_model: str, prompts=ADHERENCE_PROMPTS, seeds: int = 2,
                   duration: float = 10.0, progress: bool = True) -> dict:
    """Caption generated audio with the understanding model and score fact agreement with the prompt.

    For each prompt x seed: generate (text only, no VAD), render, caption with `caption_model` (a registry name such as
    mu-llama-mini, or a saved model folder) with its default decoding, parse both texts with
    mu_llama.eval.facts_parse, and count, per fact the prompt states (instrument family, tempo class, mode), whether
    the caption states the same value (a caption that states none counts as a miss). Target: >= 70% overall on the
    captions. Also reported: the captions without the model's fact tagger (DecodingOptions.fact_fusion=0, when it has
    one), the generated *notes* (program family, tempo class, header mode: what the generator wrote, independent of
    the captioner) and shuffled prompt/caption pairs (chance level)."""
    import tempfile

    from tqdm import tqdm

    from mu_llama.decoding import DecodingOptions
    from mu_llama.facts import gm_family, tempo_class
    from mu_llama.model import load_model
    from mu_llama.tasks import caption

    model = load_model(caption_model)
    items = []
    with tempfile.TemporaryDirectory() as td:
        for i, p in enumerate(tqdm(prompts, desc="adherence", disable=not progress)):
            for s in range(seeds):
                g = gen.generate(Conditioning(p), duration, SamplingOptions(seed=s))
                wav = Path(td) / f"{i}_{s}.wav"
                g.save(wav)
                fam = {"voice": "choir"}.get(gm_family(g.piece.program), gm_family(g.piece.program))   # bare "voice" is not parsed
                notes_text = (f"{fam} {tempo_class(g.piece.bpm)} "
                              f"{g.piece.mode} key")
                items.append({"prompt": p, "seed": s, "wav": str(wav), "notes_facts": notes_text})
        wavs = [it.pop("wav") for it in items]
        for it, c in zip(items, caption(model, wavs, batch_size=8)):
            it["caption"] = c
        if model.tagger is not None:
            for it, c in zip(items, caption(model, wavs, DecodingOptions(fact_fusion=0.0), batch_size=8)):
                it["caption_no_fusion"] = c

    def score(pairs):
        per = {f: [] for f in ADHERENCE_FACTS}
        for prompt, text in pairs:
            for f, ok in fact_agreement(prompt, text).items():
                if ok is not None:
                    per[f].append(ok)
        allv = [x for v in per.values() for x in v]
        return {"overall": round(float(np.mean(allv)), 3) if allv else None,
                **{f: round(float(np.mean(v)), 3) if v else None for f, v in per.items()}}

    caps = [it["caption"] for it in items]
    prm = [it["prompt"] for it in items]
    out = {"caption_model": caption_model, "pairs": len(items), "fact_fusion": DecodingOptions().fact_fusion,
           "captions": score(zip(prm, caps))}
    if model.tagger is not None:
        out["captions_no_fusion"] = score(zip(prm, [it["caption_no_fusion"] for it in items]))
    return {**out, "generated_notes": score(zip(prm, [it["notes_facts"] for it in items])),
            "shuffled_captions": score(zip(prm, caps[len(caps) // 2:] + caps[: len(caps) // 2])), "items": items}


def plot_adherence(result: dict, out_dir: Path) -> Path:
    """Grouped bars: agreement with the prompt per fact (and overall) for each whose-facts row of `result`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, label) for k, label in (("captions", "captions (shipped decoding)"),
                                        ("captions_no_fusion", "captions, no fact tagger"),
                                        ("generated_notes", "the generated notes"),
                                        ("shuffled_captions", "chance (shuffled pairs)")) if k in result]
    cols = ("overall",) + ADHERENCE_FACTS
    fig, ax = plt.subplots(figsize=(10.5, 3.8))
    width = 0.8 / len(rows)
    for j, (k, label) in enumerate(rows):
        vals = [result[k][c] or 0.0 for c in cols]
        ax.bar(np.arange(len(cols)) + (j - (len(rows) - 1) / 2) * width, vals, width, label=label)
    ax.axhline(0.7, color="k", ls=":", lw=1, label="target 0.70 (overall)")
    ax.set_xticks(np.arange(len(cols)), [c.replace("_", " ") for c in cols])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("agreement with the prompt")
    ax.set_title(f"Text adherence: {result['caption_model']} hears {result['pairs']} generated pieces")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out_dir / "text_adherence.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SECTIONS = ("grid", "diversity", "speed", "examples")


@dataclass(frozen=True)
class GeneratorEvalConfig:
    checkpoint: str | None = None          # generator folder; None: the bundled one
    out: str = "docs/generate"
    levels: int = 5                        # grid levels per VAD axis (levels ** 3 pieces)
    seed_offset: int = 0                   # grid cell i uses seed offset + i (another draw)
    duration: float = 12.0
    data: str = "data/generator/all"       # training data (for the copying check)
    performance: bool = True               # False: the grid without the arousal performance layer
    sampling: dict = field(default_factory=dict)   # SamplingOptions overrides for the grid
    skip: tuple[str, ...] = ()             # sections of SECTIONS not to run
    examples_out: str = "examples/generated"
    text_adherence: str | None = None      # also caption generated audio with this understanding model
    adherence_seeds: int = 2               # text adherence: seeds per prompt

    def __post_init__(self):
        for name in self.skip:
            if name not in SECTIONS:
                raise choice_error("section to skip", name, SECTIONS)
        known = {f.name for f in fields(SamplingOptions)}
        for name in self.sampling:
            if name not in known:
                raise choice_error("SamplingOptions field", name, sorted(known))
        SamplingOptions(**self.sampling)   # checks the values
        if self.levels < 1 or self.duration <= 0 or self.adherence_seeds < 1:
            raise ConfigError("levels and adherence_seeds must be >= 1 and duration > 0")


def pool_grids(runs: list[str | Path], out: str | Path) -> dict:
    """Pool the grid_rows.json of earlier grid runs (other draws) into `out`: rows, control.json and the scatter
    plots. Returns the pooled control metrics."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for d in runs for r in json.loads((Path(d) / "grid_rows.json").read_text())]
    (out_dir / "grid_rows.json").write_text(json.dumps(rows))
    control = control_metrics(rows)
    (out_dir / "control.json").write_text(json.dumps(control, indent=1))
    plot_control(rows, out_dir)
    return control


def evaluate_generator(cfg: GeneratorEvalConfig) -> dict:
    """Every section not skipped, printed as it finishes and merged into <out>/results.json; returns the results."""
    import torch

    torch.set_num_threads(1)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = EmbeddedGenerator.load(cfg.checkpoint)
    res_path = out_dir / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    if "grid" not in cfg.skip:
        opts = SamplingOptions(**cfg.sampling)
        rows = emotion_grid(gen, cfg.levels, cfg.duration, opts=opts, seed_offset=cfg.seed_offset,
                            performance=PerformanceOptions() if cfg.performance else None)
        (out_dir / "grid_rows.json").write_text(json.dumps(rows))
        results["control"] = control_metrics(rows)
        plot_control(rows, out_dir)
        print(json.dumps(results["control"], indent=1))
    if "diversity" not in cfg.skip:
        d = Path(cfg.data)
        tr = [json.loads(x) for x in open(d / "train.jsonl")]
        he = [json.loads(x) for x in open(d / "heldout.jsonl")]
        results["diversity"] = diversity_and_copying(gen, tr, he)
        print(json.dumps(results["diversity"]["summary"]))
    if "speed" not in cfg.skip:
        results["speed"] = speed(gen)
        print(json.dumps(results["speed"]))
    if "examples" not in cfg.skip:
        write_examples(gen, Path(cfg.examples_out))
    if cfg.text_adherence:
        ta = text_adherence(gen, cfg.text_adherence, seeds=cfg.adherence_seeds)
        (out_dir / "adherence_items.json").write_text(json.dumps(ta.pop("items"), indent=1))
        results["text_adherence"] = ta
        plot_adherence(ta, out_dir)
        print(json.dumps(ta))
    results["checkpoint"] = str(cfg.checkpoint or "bundled")
    res_path.write_text(json.dumps(results, indent=1))
    return results
