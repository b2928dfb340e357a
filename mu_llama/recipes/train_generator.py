"""Train the embedded generator on CPU: resumable, deterministic given the seed, checkpoints as safetensors.

Batches are a pure function of (seed, step), so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would. Crops keep BOS + the header and continue from a random BAR (or from the start), so every
training window starts the way generation does. Conditioning dropout (classifier-free guidance): per example the text
is dropped with p_drop_text, the VAD with p_drop_vad, both with p_drop_both.

    mu-llama train-generator --data data/generator/v1 --out runs/generator/v1 --steps 1500
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mu_llama.errors import ConfigError
from mu_llama.generate.model import GeneratorConfig, MusicTokenLM, load_generator, save_generator
from mu_llama.generate.tokenizer import HEADER_KINDS, Tokenizer

N_HEADER = 1 + len(HEADER_KINDS)   # BOS + header tokens


@dataclass(frozen=True)
class GeneratorTrainConfig:
    data: str
    out: str
    steps: int = 1500
    batch_size: int = 16
    seq_len: int = 384
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.05
    p_drop_text: float = 0.2
    p_drop_vad: float = 0.2
    p_drop_both: float = 0.15
    header_weight: float = 3.0       # loss weight of header (control) tokens: few per sequence, they carry the control
    p_from_start: float = 0.4        # crops that start at the first bar
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 100
    eval_every: int = 250
    stop_after: int | None = None    # stop (with a checkpoint) at this step, as an interrupted run would
    model: dict = field(default_factory=dict)   # GeneratorConfig overrides

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < N_HEADER + 2:
            raise ConfigError("steps, batch_size must be >= 1 and seq_len > header length")
        if not 0 <= self.p_drop_text + self.p_drop_vad + self.p_drop_both <= 1:
            raise ConfigError("condition dropout probabilities must sum to at most 1")


class TokenData:
    """Rows of a data split as arrays: token sequences, caption embeddings (cached on disk), VAD labels."""

    def __init__(self, path: Path, embedder=None, cache: Path | None = None):
        rows = [json.loads(line) for line in open(path)]
        self.tokens = [np.asarray(r["tokens"], np.int64) for r in rows]
        self.vad = np.array([[r["vad"]["valence"], r["vad"]["arousal"], r["vad"]["dominance"]] for r in rows], np.float32)
        captions = [r["caption"] for r in rows]
        cache = cache or path.with_suffix(".captions.npy")
        if cache.exists():
            emb = np.load(cache)
        else:
            if embedder is None:
                from mu_llama.generate.conditioning import default_text_embedder

                embedder = default_text_embedder()
            uniq = sorted(set(captions))
            u_emb = embedder(uniq)
            idx = {c: i for i, c in enumerate(uniq)}
            emb = u_emb[[idx[c] for c in captions]]
            np.save(cache, emb)
        self.text = emb.astype(np.float32)
        tok = Tokenizer()
        self.bar_idx = [np.flatnonzero(t == tok.bar) for t in self.tokens]
        self.pad = tok.pad

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, rng: np.random.Generator, cfg: GeneratorTrainConfig, idx: np.ndarray | None = None):
        """(x (B, L), y (B, L), w (B, L) loss weights, text (B, 384), vad (B, 3), text_on (B,), vad_on (B,))."""
        B, L = cfg.batch_size, cfg.seq_len
        idx = rng.integers(0, len(self), B) if idx is None else idx
        seqs = np.full((len(idx), L + 1), self.pad, np.int64)
        w = np.zeros((len(idx), L), np.float32)
        for b, i in enumerate(idx):
            t, bars = self.tokens[i], self.bar_idx[i]
            if len(bars) and rng.random() >= cfg.p_from_start:
                start = int(bars[rng.integers(0, len(bars))])
                s = np.concatenate([t[:N_HEADER], t[start:]])
            else:
                s = t
            s = s[: L + 1]
            seqs[b, : len(s)] = s
            w[b, : len(s) - 1] = 1.0
            w[b, : N_HEADER - 1] = cfg.header_weight     # predictions of header tokens 1..8
        u = rng.random(len(idx))
        both = u < cfg.p_drop_both
        text_on = ~(both | ((u >= cfg.p_drop_both) & (u < cfg.p_drop_both + cfg.p_drop_text)))
        lo = cfg.p_drop_both + cfg.p_drop_text
        vad_on = ~(both | ((u >= lo) & (u < lo + cfg.p_drop_vad)))
        return (torch.from_numpy(seqs[:, :-1]), torch.from_numpy(seqs[:, 1:]), torch.from_numpy(w),
                torch.from_numpy(self.text[idx]), torch.from_numpy(self.vad[idx]),
                torch.from_numpy(text_on), torch.from_numpy(vad_on))


def loss_on(model: MusicTokenLM, batch) -> torch.Tensor:
    x, y, w, text, vad, text_on, vad_on = batch
    logits = model(x, model.prefix(text, vad, text_on, vad_on))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view_as(w)
    return (ce * w).sum() / w.sum()


def lr_at(step: int, cfg: GeneratorTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, p)))


def _save_state(out: Path, model, opt, step: int, cfg: GeneratorTrainConfig, log: list[dict]):
    from safetensors.torch import save_file

    ck = out / "last"
    save_generator(model, ck)
    flat = {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            flat[f"{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_file(flat, str(ck / "optimizer.safetensors"))
    (ck / "state.json").write_text(json.dumps({"step": step, "train_config": asdict(cfg), "log": log}))


def _load_state(out: Path, model, opt) -> tuple[int, list[dict]]:
    from safetensors.torch import load_file

    ck = out / "last"
    if not (ck / "state.json").exists():
        return 0, []
    st = json.loads((ck / "state.json").read_text())
    model.load_state_dict(load_generator(ck).state_dict())
    flat = load_file(str(ck / "optimizer.safetensors"))
    sd = opt.state_dict()
    for key, v in flat.items():
        pid, k = key.split(".", 1)
        sd["state"].setdefault(int(pid), {})[k] = v
    opt.load_state_dict(sd)
    return st["step"], st["log"]


@torch.no_grad()
def evaluate(model: MusicTokenLM, data: TokenData, cfg: GeneratorTrainConfig, n: int = 64) -> float:
    model.eval()
    rng = np.random.default_rng(12345)
    idx = np.arange(min(n, len(data)))
    b = data.batch(rng, GeneratorTrainConfig(**{**asdict(cfg), "p_drop_text": 0, "p_drop_vad": 0, "p_drop_both": 0,
                                       "batch_size": len(idx)}), idx)
    loss = loss_on(model, b).item()
    model.train()
    return loss


def train_generator(cfg: GeneratorTrainConfig, *, embedder=None, progress: bool = True) -> MusicTokenLM:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = TokenData(Path(cfg.data) / "train.jsonl", embedder)
    held = Path(cfg.data) / "heldout.jsonl"
    heldout = TokenData(held, embedder) if held.exists() and held.stat().st_size else None
    tok = Tokenizer()
    torch.manual_seed(cfg.seed)
    mcfg = GeneratorConfig(vocab_size=len(tok), **cfg.model)
    mcfg.info = {"data": str(cfg.data), "train_rows": len(data), "steps": cfg.steps, "seq_len": cfg.seq_len,
                 "batch_size": cfg.batch_size, "tokenizer_vocab": len(tok)}
    model = MusicTokenLM(mcfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "null" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "null" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    step, log = _load_state(out, model, opt)
    model.train()
    t0 = time.time()
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])            # batch = f(seed, step): resumable exactly
        torch.manual_seed(cfg.seed * 1_000_003 + step)             # dropout masks too
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = loss_on(model, data.batch(rng, cfg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        rec = {"step": step, "loss": round(loss.item(), 4), "lr": round(lr_at(step - 1, cfg), 6),
               "elapsed_s": round(time.time() - t0, 1)}
        if heldout is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            rec["heldout_loss"] = round(evaluate(model, heldout, cfg), 4)
        log.append(rec)
        if progress and (step % 10 == 0 or "heldout_loss" in rec):
            print(json.dumps(rec), flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or step == cfg.stop_after:
            _save_state(out, model, opt, step, cfg, log)
        if step == cfg.stop_after:
            model.eval()
            return model
    model.config.info["final_log"] = log[-1] if log else {}
    save_generator(model, out / "final")
    model.eval()
    return model
