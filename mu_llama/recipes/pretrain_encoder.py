"""Recipe: pretrain the default model's small MERT-architecture encoder ("mu-llama-mini") on the corpus, on CPU.

The encoder is transformers' HubertModel with MERT's conv geometry (24 kHz, stride 320 = 75 Hz frames, receptive
field 400) and narrow widths, so the exported folder loads through mu_llama.encoders.load_mert like MERT itself.
Losses, all on one forward pass of a randomly cropped, span-masked batch:
- masked prediction (HuBERT/MERT-v0 style): at masked frames, classify the frame's k-means cluster of standardised
  log-mel (the acoustic teacher, fitted on train frames) and regress the log-mel itself (MERT's CQT reconstruction);
- frame supervision the scores give for free: pitch-class chroma (12 multi-label) and onsets [pitched, drums];
- clip supervision from the fact sheet: families (multi-label) and every CLIP_HEADS field, from a learned softmax mix of
  all hidden states mean-pooled over time (the way MU-LLaMA aggregates MERT's layers).
Only the train split trains; validation picks the best checkpoint; test is never read.

Resumable: every `checkpoint_every` steps the run folder gets model + optimizer safetensors and a JSON trainer state
(step, torch RNG, history, best score). Everything random in a step (data order, crops, masks) is derived from
(seed, step), and dropout's RNG state is restored, so a resumed run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mu_llama.encoders import MertConfig, MertEncoder, load_mert, normalize_clips, save_mert
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.recipes.targets import CLIP_HEADS, N_MELS, TargetCache, build_cache, fit_teacher, scan_corpus

# The default model's encoder: MERT's conv geometry, narrow conv channels (the 24 kHz layers dominate CPU time),
# 4 post-LN layers x 256 (post-LN like MERT-95M: every hidden state is layer-normed, so layer mixing sees one scale).
MINI_ARCH: dict = {
    "model_type": "mert_model", "sample_rate": 24000, "hidden_size": 256, "num_hidden_layers": 4,
    "num_attention_heads": 4, "intermediate_size": 1024, "hidden_act": "gelu", "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "conv_dim": [32, 64, 96, 128, 128, 128, 128],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False,
    "num_conv_pos_embeddings": 64, "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True, "layer_norm_eps": 1e-5, "feature_extractor_cqt": False, "deepnorm": False,
}
EXPORT_DTYPES = ("float32", "float16")
AMP_MODES = ("none", "bf16")
LOSSES = ("cluster", "mel", "chroma", "onset", "clip", "distill")


def arch_config(arch: str) -> MertConfig:
    """"mu-llama-mini", a built-in encoders name ("tiny", ...), or a config.json path."""
    from mu_llama.encoders import BUILTIN_CONFIGS, builtin_config

    if arch == "mu-llama-mini":
        return MertConfig.from_dict(MINI_ARCH, "mu-llama-mini")
    if arch in BUILTIN_CONFIGS:
        return builtin_config(arch)
    if Path(arch).is_file():
        return MertConfig.from_file(arch)
    raise ConfigError(f"invalid encoder arch {arch!r}; valid choices: mu-llama-mini, {', '.join(BUILTIN_CONFIGS)}, "
                      "or a config.json path")


@dataclass(frozen=True)
class PretrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/encoder"                  # run folder: cache/, checkpoints/, best/, train log, curves
    arch: str = "mu-llama-mini"
    steps: int = 500
    batch_size: int = 8
    crop_seconds: float = 5.0
    lr: float = 5e-4
    warmup: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dropout: float = 0.1
    mask_prob: float = 0.05                    # per-frame span-start probability; span 8 -> ~34% of frames masked
    mask_span: int = 8
    clusters: int = 64
    kmeans_frames: int = 100_000
    kmeans_iters: int = 20
    loss_weights: dict = field(default_factory=lambda: {"cluster": 1.0, "mel": 1.0, "chroma": 1.0, "onset": 1.0,
                                                        "clip": 1.0, "distill": 1.0})
    distill: bool = False                      # musicnn MTT tag probabilities as soft clip targets (needs musicnn)
    distill_patches: int = 2                   # 3-s teacher patches per clip (from its start)
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    val_clips: int = 256
    val_crop_seconds: float = 8.0
    max_clips: int | None = None               # cap on the snapshot (tests, smoke runs)
    seed: int = 0
    threads: int = 1
    stop_after: int | None = None              # end this process after this step (checkpointed); rerun to resume
    export: str | None = None                  # folder for the best encoder (config.json + model.safetensors)
    export_dtype: str = "float16"
    amp: str = "none"                          # "bf16": CPU autocast for training steps (fast on AVX512-BF16/AMX)
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "warmup", "mask_span", "clusters", "kmeans_frames", "kmeans_iters",
                     "checkpoint_every", "keep_checkpoints", "val_clips", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name in ("crop_seconds", "val_crop_seconds", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.mask_prob < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"mask_prob and dropout must be in [0, 1), got {self.mask_prob}, {self.dropout}")
        unknown = set(self.loss_weights) - set(LOSSES)
        if unknown:
            raise ConfigError(f"unknown loss weight(s) {sorted(unknown)}; valid choices: {', '.join(LOSSES)}")
        if self.distill_patches < 1:
            raise ConfigError(f"distill_patches must be >= 1, got {self.distill_patches}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"invalid amp {self.amp!r}; valid choices: {', '.join(AMP_MODES)}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ConfigError(f"invalid export_dtype {self.export_dtype!r}; valid choices: {', '.join(EXPORT_DTYPES)}")
        arch_config(self.arch)

    def weight(self, name: str) -> float:
        return float(self.loss_weights.get(name, 1.0))


# ---------------------------------------------------------------------------------------------------- the model


class PretrainModel(nn.Module):
    """The encoder (HubertModel, `hubert`) plus everything that exists only for pretraining: mask vector and heads."""

    def __init__(self, config: MertConfig, *, dropout: float = 0.1, clusters: int = 64, n_mels: int = N_MELS,
                 tags: int = 0):
        super().__init__()
        self.config = config
        hc = config.to_hubert("sdpa")
        # Training-only dropout (the exported config carries none). Residual dropout only: attention dropout makes CPU
        # sdpa fall back to the math kernel and draw a (B, H, T, T) Bernoulli mask, ~2x the attention cost.
        hc.hidden_dropout = dropout
        from transformers import HubertModel

        self.hubert = HubertModel(hc)
        D, L = config.hidden_size, config.num_hidden_layers + 1
        self.mask_emb = nn.Parameter(torch.rand(D))  # HuBERT's masked_spec_embed init
        self.cluster_head = nn.Linear(D, clusters)
        self.mel_head = nn.Linear(D, n_mels)
        self.chroma_head = nn.Linear(D, 12)
        self.onset_head = nn.Linear(D, 2)
        self.layer_logits = nn.Parameter(torch.zeros(L))  # softmax layer mix for clip heads
        self.clip_heads = nn.ModuleDict({name: nn.Linear(D, len(v)) for name, v in CLIP_HEADS.items()})
        self.families_head = nn.Linear(D, 12)
        self.tags_head = nn.Linear(D, tags) if tags else None  # distillation: the teacher's tag probabilities

    def encode(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, N) equal-length crops -> hidden states (L, B, T, D), MertEncoder's semantics (index 0 = embeddings).
        mask (B, T) bool: frames whose projected features are replaced by the mask vector (before the pos conv)."""
        B, N = wave.shape
        x = normalize_clips(wave.float(), torch.full((B,), N, dtype=torch.long))
        h = self.hubert.feature_projection(self.hubert.feature_extractor(x).transpose(1, 2))  # (B, T, D)
        if mask is not None:
            h = torch.where(mask[..., None], self.mask_emb.to(h.dtype), h)
        enc = self.hubert.encoder
        h = h + enc.pos_conv_embed(h)
        stable = self.config.do_stable_layer_norm
        if not stable:
            h = enc.layer_norm(h)
        h = enc.dropout(h)
        states = [h]
        for i, layer in enumerate(enc.layers, start=1):
            h = layer(h)
            states.append(enc.layer_norm(h) if (stable and i == len(enc.layers)) else h)
        return torch.stack(states)

    def pooled(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(L, B, T, D) -> (B, D): softmax-weighted layer mix, mean over valid frames."""
        mixed = torch.einsum("l,lbtd->btd", torch.softmax(self.layer_logits, 0), states)
        w = valid.to(mixed.dtype)[..., None]
        return (mixed * w).sum(1) / w.sum(1).clamp_min(1.0)

    def encoder_copy(self) -> MertEncoder:
        """A frozen MertEncoder holding a copy of the current encoder weights (dropout config is irrelevant in eval)."""
        return MertEncoder(self.config, copy.deepcopy(self.hubert), name="mu-llama-mini")


# ---------------------------------------------------------------------------------------------------- batches


@dataclass
class Batch:
    wave: torch.Tensor       # (B, N)
    valid: torch.Tensor      # (B, T) bool: frames inside the clip (crops of short clips are zero-padded)
    mask: torch.Tensor       # (B, T) bool: masked frames (all False in evaluation)
    chroma: torch.Tensor     # (B, T, 12)
    onsets: torch.Tensor     # (B, T, 2)
    mel: torch.Tensor        # (B, T, M) standardised
    clusters: torch.Tensor   # (B, T) long
    single: torch.Tensor     # (B, H) long
    families: torch.Tensor   # (B, 12)
    tags: torch.Tensor | None = None   # (B, 50) teacher tag probabilities (distillation)


def span_mask(rng: np.random.Generator, T: int, prob: float, span: int) -> np.ndarray:
    """(T,) bool: each of the T - span + 1 start positions opens a span with probability prob; at least one span."""
    starts = np.flatnonzero(rng.random(max(1, T - span + 1)) < prob)
    if len(starts) == 0:
        starts = rng.integers(0, max(1, T - span + 1), size=1)
    m = np.zeros(T, dtype=bool)
    for s in starts:
        m[s: s + span] = True
    return m


def make_batch(cache: TargetCache, clips: np.ndarray, starts: list[int], T: int, stats: dict,
               masks: np.ndarray | None = None) -> Batch:
    """Crops of T frames starting at frame starts[b] of clip clips[b]; targets sliced from the cache."""
    S, R = 320, 400
    N = (T - 1) * S + R
    B = len(clips)
    wave = np.zeros((B, N), np.float32)
    valid = np.zeros((B, T), bool)
    chroma = np.zeros((B, T, 12), np.float32)
    onsets = np.zeros((B, T, 2), np.float32)
    mel = np.zeros((B, T, cache.mel.shape[1]), np.float32)
    clusters = np.zeros((B, T), np.int64)
    for b, (i, s) in enumerate(zip(clips, starts)):
        a0 = int(cache.audio_offset[i]) + s * S
        n = min(N, int(cache.audio_len[i]) - s * S)
        wave[b, :n] = cache.audio[a0: a0 + n].astype(np.float32) / 32768.0
        t = min(T, int(cache.frames[i]) - s)
        f0 = int(cache.frame_offset[i]) + s
        valid[b, :t] = True
        chroma[b, :t] = cache.chroma[f0: f0 + t]
        onsets[b, :t] = cache.onsets[f0: f0 + t]
        mel[b, :t] = (cache.mel[f0: f0 + t].astype(np.float32) - stats["mean"]) / stats["std"]
        clusters[b, :t] = stats["labels"][f0: f0 + t]
    mask = np.zeros((B, T), bool) if masks is None else masks & valid
    tags = torch.from_numpy(stats["tags"][clips]) if "tags" in stats else None
    return Batch(torch.from_numpy(wave), torch.from_numpy(valid), torch.from_numpy(mask), torch.from_numpy(chroma),
                 torch.from_numpy(onsets), torch.from_numpy(mel), torch.from_numpy(clusters),
                 torch.from_numpy(cache.single[clips]), torch.from_numpy(cache.families[clips]), tags)


class Sampler:
    """Step -> (clip indices, crop starts, masks), a pure function of (seed, step): resuming needs only the step."""

    def __init__(self, cache: TargetCache, train: np.ndarray, cfg: PretrainConfig):
        self.cache, self.train, self.cfg = cache, train, cfg
        self.T = int(round(cfg.crop_seconds * 75))
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.cfg.seed, 3, epoch])
            self._orders = {epoch: self.train[rng.permutation(len(self.train))]}  # keep one epoch's order
        return self._orders[epoch]

    def __call__(self, step: int) -> tuple[np.ndarray, list[int], np.ndarray]:
        B, n = self.cfg.batch_size, len(self.train)
        g = np.arange(step * B, (step + 1) * B)
        clips = np.array([self.order(int(k // n))[int(k % n)] for k in g])
        rng = np.random.default_rng([self.cfg.seed, 7, step])
        starts = [int(rng.integers(0, max(0, int(self.cache.frames[i]) - self.T) + 1)) for i in clips]
        masks = np.stack([span_mask(rng, self.T, self.cfg.mask_prob, self.cfg.mask_span) for _ in clips])
        return clips, starts, masks


# ---------------------------------------------------------------------------------------------------- losses


def losses(model: PretrainModel, batch: Batch, cfg: PretrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    states = model.encode(batch.wave, batch.mask)                      # (L, B, T, D)
    last = states[-1]
    v, m = batch.valid, batch.mask & batch.valid
    parts: dict[str, torch.Tensor] = {}
    if bool(m.any()):
        parts["cluster"] = F.cross_entropy(model.cluster_head(last[m]), batch.clusters[m])
        parts["mel"] = F.mse_loss(model.mel_head(last[m]), batch.mel[m])
    parts["chroma"] = F.binary_cross_entropy_with_logits(model.chroma_head(last[v]), batch.chroma[v])
    parts["onset"] = F.binary_cross_entropy_with_logits(model.onset_head(last[v]), batch.onsets[v],
                                                        pos_weight=torch.tensor([4.0, 4.0]))
    pooled = model.pooled(states, v)
    clip = [F.cross_entropy(head(pooled), batch.single[:, k]) for k, head in enumerate(model.clip_heads.values())]
    clip.append(F.binary_cross_entropy_with_logits(model.families_head(pooled), batch.families))
    parts["clip"] = torch.stack(clip).mean()
    if model.tags_head is not None and batch.tags is not None:
        parts["distill"] = F.binary_cross_entropy_with_logits(model.tags_head(pooled), batch.tags)
    total = sum(cfg.weight(k) * p for k, p in parts.items())
    return total, {k: float(p.detach()) for k, p in parts.items()}


@torch.no_grad()
def evaluate(model: PretrainModel, cache: TargetCache, val: np.ndarray, stats: dict, cfg: PretrainConfig) -> dict:
    """Per-head validation accuracy on the first val_crop_seconds of each validation clip (no masking)."""
    was = model.training
    model.eval()
    T = int(round(cfg.val_crop_seconds * 75))
    hits = {k: 0 for k in CLIP_HEADS}
    tag_err = 0.0
    tp = np.zeros(3)
    fp = np.zeros(3)
    fn = np.zeros(3)  # families, chroma, pitched onsets
    for lo in range(0, len(val), cfg.batch_size):
        clips = val[lo: lo + cfg.batch_size]
        b = make_batch(cache, clips, [0] * len(clips), T, stats)
        states = model.encode(b.wave)
        pooled = model.pooled(states, b.valid)
        for k, (name, head) in enumerate(model.clip_heads.items()):
            hits[name] += int((head(pooled).argmax(-1) == b.single[:, k]).sum())
        if model.tags_head is not None and b.tags is not None:
            tag_err += float((torch.sigmoid(model.tags_head(pooled)) - b.tags).abs().mean(1).sum())
        last = states[-1][b.valid]
        pairs = ((model.families_head(pooled) > 0, b.families > 0.5),
                 (model.chroma_head(last) > 0, b.chroma[b.valid] > 0.5),
                 (model.onset_head(last)[:, 0] > 0, b.onsets[b.valid][:, 0] > 0.5))
        for j, (p, t) in enumerate(pairs):
            tp[j] += int((p & t).sum())
            fp[j] += int((p & ~t).sum())
            fn[j] += int((~p & t).sum())
    model.train(was)
    n = max(1, len(val))
    out = {f"acc_{k}": hits[k] / n for k in CLIP_HEADS}
    for j, name in enumerate(("families", "chroma", "onset")):
        out[f"f1_{name}"] = float(2 * tp[j] / max(1.0, 2 * tp[j] + fp[j] + fn[j]))
    if model.tags_head is not None:
        out["mae_musicnn"] = tag_err / n
    out["score"] = float(np.mean([out[f"acc_{k}"] for k in CLIP_HEADS] + [out["f1_families"], out["f1_chroma"]]))
    return out


# ---------------------------------------------------------------------------------------------------- checkpoints


def _rng_b64() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def _set_rng_b64(s: str) -> None:
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy()))


def save_checkpoint(folder: Path, model: PretrainModel, opt: torch.optim.Optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    osd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in osd["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({**state, "param_groups": osd["param_groups"]}, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def load_checkpoint(folder: Path, model: PretrainModel, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        state = json.loads((folder / "trainer_state.json").read_text())
        flat = load_file(str(folder / "optimizer.safetensors"))
    except (OSError, RuntimeError, json.JSONDecodeError) as e:
        raise CheckpointError(folder, f"unreadable training checkpoint ({type(e).__name__}: {e})") from None
    per: dict[int, dict] = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        per.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": per, "param_groups": state.pop("param_groups")})
    return state


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / "checkpoints").glob("step_*[0-9]"))
    return found[-1] if found else None


def export_encoder(model: PretrainModel, folder: str | Path, dtype: str = "float16", info: dict | None = None) -> Path:
    """Write the encoder alone in MERT's layout (config.json, preprocessor_config.json, model.safetensors)."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    save_mert(model.encoder_copy(), folder)
    if dtype == "float16":  # halves the file; load_mert upcasts to float32
        st = folder / "model.safetensors"
        save_file({k: v.half() for k, v in load_file(str(st)).items()}, str(st), metadata={"format": "pt"})
    if info is not None:
        (folder / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------------- the loop


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _snapshot(cfg: PretrainConfig, run: Path) -> TargetCache:
    """The clip list is fixed at the first start (the corpus may still be growing) and reused on resume."""
    snap = run / "clips.json"
    if snap.is_file():
        wanted = json.loads(snap.read_text())["ids"]
        records = {r.clip_id: r for r in scan_corpus(cfg.corpus)}
        missing = [i for i in wanted if i not in records]
        if missing:
            raise ConfigError(f"{snap}: {len(missing)} snapshot clip(s) are gone from {cfg.corpus}, e.g. {missing[0]}")
        records = [records[i] for i in wanted]
    else:
        records = scan_corpus(cfg.corpus)
        if cfg.max_clips is not None:
            records = records[: cfg.max_clips]
        run.mkdir(parents=True, exist_ok=True)
        snap.write_text(json.dumps({"ids": [r.clip_id for r in records]}))
    if not any(r.split == "train" for r in records):
        raise ConfigError(f"{cfg.corpus}: no finished train clips yet")
    return build_cache(records, run / "cache", progress=cfg.progress)


def _teacher(cache: TargetCache, train: np.ndarray, cfg: PretrainConfig, run: Path) -> dict:
    from safetensors.numpy import load_file, save_file

    path = run / "teacher.safetensors"
    if path.is_file():
        return load_file(str(path))
    t = fit_teacher(cache, train, clusters=cfg.clusters, frames=cfg.kmeans_frames, iters=cfg.kmeans_iters,
                    seed=cfg.seed)
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, str(path))
    return t


def musicnn_targets(cache: TargetCache, folder: Path, patches: int = 2, *, progress: bool = False) -> np.ndarray:
    """(C, 50) musicnn MTT tag probabilities per cached clip; one .npy per clip id in `folder` (computed once)."""
    from mu_llama.recipes.musicnn import MTT_TAGS, clip_tags, load_musicnn

    folder.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(cache.ids), len(MTT_TAGS)), np.float32)
    teacher = None
    for i, cid in enumerate(cache.ids):
        path = folder / f"{cid}.p{patches}.npy"
        if not path.is_file():
            teacher = teacher or load_musicnn()
            tmp = path.with_name(f".{path.stem}.tmp.npy")
            np.save(tmp, clip_tags(teacher, cache.wave(i), max_patches=patches))
            os.replace(tmp, path)
            if progress and i % 100 == 0:
                _log(f"musicnn teacher: clip {i + 1}/{len(cache.ids)}")
        out[i] = np.load(path)
    return out


def pretrain_encoder(cfg: PretrainConfig) -> Path:
    """Train (or resume) in cfg.out; returns the folder of the best encoder (cfg.export when given, else out/best)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(old_threads)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _run(cfg: PretrainConfig) -> Path:
    run = Path(cfg.out)
    cache = _snapshot(cfg, run)
    train, val = cache.indices("train"), cache.indices("validation")[: cfg.val_clips]
    _log(f"snapshot: {len(train)} train clips, {len(val)} validation clips")
    stats = _teacher(cache, train, cfg, run)
    if cfg.distill:
        stats["tags"] = musicnn_targets(cache, run / "musicnn", cfg.distill_patches, progress=cfg.progress)
    torch.manual_seed(cfg.seed)
    model = PretrainModel(arch_config(cfg.arch), dropout=cfg.dropout, clusters=len(stats["centroids"]),
                          tags=stats["tags"].shape[1] if cfg.distill else 0)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "mask_emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "mask_emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    state = {"step": 0, "history": [], "evals": [], "best": None, "config": asdict(cfg), "seconds": 0.0}
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt)
        _check_same_run(state["config"], asdict(cfg), ckpt)
        _set_rng_b64(state.pop("torch_rng"))
        _log(f"resumed from {ckpt} at step {state['step']}")
    sampler = Sampler(cache, train, cfg)
    model.train()
    t0 = time.time() - state["seconds"]
    while state["step"] < cfg.steps:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        clips, starts, masks = sampler(step)
        batch = make_batch(cache, clips, starts, sampler.T, stats, masks)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            total, parts = losses(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        state["step"] = step = step + 1
        state["history"].append({"step": step, "loss": float(total.detach()), **parts, "grad_norm": gnorm})
        if step % 10 == 0 or step == 1:
            _log(f"step {step}/{cfg.steps} loss {float(total.detach()):.4f} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                 + f" lr {lr_at(step - 1, cfg):.2e} {time.time() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            state["seconds"] = time.time() - t0
            metrics = {"step": step, **evaluate(model, cache, val, stats, cfg)} if len(val) else {"step": step, "score": 0.0}
            state["evals"].append(metrics)
            _log("validation " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "step"))
            if state["best"] is None or metrics["score"] > state["best"]["score"]:
                state["best"] = metrics
                export_encoder(model, run / "best", "float32", {"step": step, "validation": metrics})
            save_checkpoint(run / "checkpoints" / f"step_{step:06d}", model, opt, {**state, "torch_rng": _rng_b64()})
            for old in sorted((run / "checkpoints").glob("step_*[0-9]"))[: -cfg.keep_checkpoints]:
                shutil.rmtree(old)
            plot_curves(state, run / "loss_curve.png")
        elif step == cfg.stop_after:
            state["seconds"] = time.time() - t0
            save_checkpoint(run / "checkpoints" / f"step_{step:06d}", model, opt, {**state, "torch_rng": _rng_b64()})
        if cfg.stop_after is not None and step >= cfg.stop_after:
            _log(f"stopping after step {step} as asked (stop_after); run again to resume")
            break
    best = run / "best"
    if cfg.export and best.is_dir():  # the best validated encoder so far (also when stopped early)
        info = {"recipe": "mu_llama.recipes.pretrain_encoder", "config": asdict(cfg), "train_clips": len(train),
                "validation_clips": len(val), "best": state["best"], "wall_seconds": round(state["seconds"], 1)}
        return export_encoder(_load_best(model, best), cfg.export, cfg.export_dtype, info)
    return best


RUN_ONLY_FIELDS = ("threads", "progress", "stop_after", "export", "export_dtype", "amp")  # may change between resumes


def _check_same_run(saved: dict, now: dict, ckpt: Path) -> None:
    diff = sorted(k for k in set(saved) | set(now) if k not in RUN_ONLY_FIELDS and saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"{ckpt}: this run was started with other settings ({', '.join(diff)}); "
                          "use the same settings to resume, or a new out folder")


def _load_best(model: PretrainModel, best: Path) -> PretrainModel:
    enc = load_mert(best)
    out = copy.deepcopy(model)
    out.hubert.load_state_dict(enc.model.state_dict())
    return out


def plot_curves(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = state["history"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in h]
    for key in ("loss", *LOSSES):
        ys = [r.get(key, np.nan) for r in h]
        if not np.isfinite(ys).any():
            continue
        k = max(1, len(ys) // 50)  # moving average for readability
        sm = np.convolve(np.nan_to_num(ys), np.ones(k) / k, mode="valid")
        axes[0].plot(steps[k - 1:], sm, label=key)
    axes[0].set_xlabel("step"), axes[0].set_ylabel("train loss"), axes[0].legend(), axes[0].set_yscale("log")
    ev = state["evals"]
    for key in ("acc_mode", "acc_meter", "acc_tempo_class", "acc_texture", "acc_style", "f1_families", "f1_chroma"):
        axes[1].plot([e["step"] for e in ev], [e.get(key, np.nan) for e in ev], marker="o", label=key)
    axes[1].set_xlabel("step"), axes[1].set_ylabel("validation"), axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["MINI_ARCH", "PretrainConfig", "PretrainModel", "arch_config", "pretrain_encoder", "export_encoder",
           "evaluate", "losses", "make_batch", "Sampler", "span_mask", "lr_at", "musicnn_targets"]
