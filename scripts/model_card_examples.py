"""Unedited question/answer examples of a trained model on corpus test clips, as markdown (for the model card).

    python scripts/model_card_examples.py [--model mu-llama-mini] [--corpus data/corpus] [--n 10] [--out FILE.md]

Clips: n evenly spaced test-split clips (works never seen in training). Each gets one free question, cycling through
MU-LLaMA's open description prompts and questions about mood, instruments, genre and what can be inferred, plus the
default caption; greedy decoding, so the output is reproducible. The reference facts are shown next to each answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

QUESTIONS = ["Describe the audio in detail", "What is the mood of this music?",
             "Which instruments can be heard in this music?", "What can be inferred from the audio",
             "What is the genre of this music?", "What do you hear in the audio",
             "Is this piece in a major or a minor key, and how can you tell?", "What is the tempo of this music?",
             "Would this music suit a dance? Why?", "Describe the rhythm of this piece."]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mu-llama-mini")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import torch

    import mu_llama
    from mu_llama.decoding import DecodingOptions

    torch.set_num_threads(1)
    rows = sorted((json.loads(x) for x in (Path(a.corpus) / "manifests" / "test.jsonl").read_text().splitlines()
                   if x.strip()), key=lambda r: r["id"])
    picked = [rows[round(i * (len(rows) - 1) / max(1, a.n - 1))] for i in range(a.n)]
    model = mu_llama.load_model(a.model)
    opts = DecodingOptions(max_new_tokens=120)
    paths = [str(Path(a.corpus) / r["audio"]) for r in picked]
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(a.n)]
    answers = mu_llama.ask(model, paths, questions, options=opts, batch_size=5)
    captions = mu_llama.caption(model, paths, opts, batch_size=5)
    out = [f"Model `{a.model}`, greedy decoding, {a.n} evenly spaced clips of the test split; unedited. "
           f"Reproduce: `python scripts/model_card_examples.py --n {a.n}`.", ""]
    for r, q, ans, cap in zip(picked, questions, answers, captions):
        f = r["facts"]
        ref = (f"{', '.join(f['instruments'])}; {f['key_tonic']} {f['mode']}; {f['meter']}; {f['tempo_class']} "
               f"({f['tempo_bpm']:.0f} BPM); {f['texture']}; {f['style']}")
        out += [f"**{r['id']}** ({r['duration']:.1f} s; reference: {ref})", "",
                f"- *Q: {q}*  ", f"  A: {ans}", f"- *Caption:* {cap}", ""]
    text = "\n".join(out)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
