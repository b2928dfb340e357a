"""Frozen-encoder feature cache: what the music adapter reads, computed once per clip and stored as safetensors.

LLM-side training never re-runs the encoder. Per clip the cache stores the adapter's input, PooledMusic for one
recording: `sums` (W, L, D) float32 = each encoder layer's hidden states summed over the valid frames of each window
(W = 1 in clip mode, one window per `window_seconds` in time mode) and `counts` (W,) = valid frames per window. Their
ratio is the per-layer time-mean MU-LLaMA's adapter averages; sums + counts (instead of means) make the cached
value bit-identical to `MuLlama.encode_audio` and keep long recordings exact. Clip mode with a 5 x 256 encoder is
5 kB per clip (not the (L, T, D) frame features: ~1.5 MB for a 6-s clip).

Layout of a cache folder (one per key):
    <root>/<key>/spec.json                  FeatureSpec: encoder id + weights hash + pooling / window options
    <root>/<key>/shard-00000.safetensors   "<clip id>/sums" (W, L, D), "<clip id>/counts" (W,)
    <root>/<key>/index.json                 {"shards": {file: [clip ids]}}, rewritten atomically after each shard
The key hashes the FeatureSpec, so another encoder (or changed weights) or other window options get another folder.
Caching is resumable at shard granularity: a rerun skips clips already listed in index.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mu_llama.adapters import PooledMusic
from mu_llama.errors import CheckpointError

INDEX, SPEC = "index.json", "spec.json"


@dataclass(frozen=True)
class FeatureSpec:
    """Everything the cached PooledMusic depends on."""

    encoder: str  # the model config's encoder spec (informational; the hash decides)
    encoder_hash: str  # sha256 over the encoder's config and weights
    mode: str  # adapter mode: "clip" | "time"
    window_frames: int | None  # time mode: encoder frames per window
    seconds_per_window: float | None  # time mode: window_frames / encoder frame rate
    sample_rate: int
    encoder_window_seconds: float
    encoder_hop_seconds: float
    max_audio_seconds: float | None
    encoder_dtype: str

    @property
    def key(self) -> str:
        d = asdict(self)
        d.pop("encoder")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def for_model(cls, model) -> FeatureSpec:
        c = model.config
        return cls(encoder=str(c.encoder), encoder_hash=encoder_fingerprint(model.encoder), mode=c.adapter_mode,
                   window_frames=model.music_adapter.config.window_frames,
                   seconds_per_window=seconds_per_window(model), sample_rate=c.sample_rate,
                   encoder_window_seconds=float(c.encoder_window_seconds),
                   encoder_hop_seconds=float(c.encoder_hop_seconds),
                   max_audio_seconds=None if c.max_audio_seconds is None else float(c.max_audio_seconds),
                   encoder_dtype=c.encoder_dtype)


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 of the encoder's class, config and every tensor of its state dict (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256(type(encoder).__name__.encode())
    config = getattr(encoder, "config", None)
    if config is not None:
        to_dict = getattr(config, "to_mert_dict", None) or getattr(config, "to_dict", None)
        h.update(json.dumps(to_dict() if to_dict else repr(config), sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class FeatureCache:
    """One cache folder (one FeatureSpec). `build` fills it (resumably), `load` reads PooledMusic back."""

    def __init__(self, root: str | Path, spec: FeatureSpec):
        self.spec = spec
        self.dir = Path(root) / spec.key
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_path = self.dir / SPEC
        if spec_path.is_file():
            saved = json.loads(spec_path.read_text())
            mine = asdict(spec)
            if {k: v for k, v in saved.items() if k != "encoder"} != {k: v for k, v in mine.items() if k != "encoder"}:
                raise CheckpointError(spec_path, "feature spec does not match its key (a corrupted cache?)")
        else:
            _atomic_write_text(spec_path, json.dumps(asdict(spec), indent=1) + "\n")

    # --- index -----------------------------------------------------------------------------------
    def index(self) -> dict[str, list[str]]:
        path = self.dir / INDEX
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())["shards"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(path, f"unreadable feature index ({e})") from None

    def cached_ids(self) -> set[str]:
        return {i for ids in self.index().values() for i in ids}

    # --- build -----------------------------------------------------------------------------------
    def build(self, model, clips: Sequence[tuple[str, str | Path]], *, batch_size: int = 8, shard_size: int = 128,
              load: Callable[[str | Path], object] | None = None, progress: bool = True) -> int:
        """Encode every (clip id, audio path) not yet cached; returns how many were added.

        `load(path) -> mono float32 array at model.sample_rate` (default: mu_llama.audio.load_audio).
        """
        from tqdm import tqdm

        if load is None:
            from mu_llama.audio import load_audio

            def load(path):
                return load_audio(path, model.sample_rate, duration=model.config.max_audio_seconds)

        done = self.cached_ids()
        todo = [(cid, path) for cid, path in clips if cid not in done]
        if not todo:
            return 0
        shards = self.index()
        next_no = 1 + max((int(Path(f).stem.split("-")[1]) for f in shards), default=-1)
        with tqdm(total=len(todo), desc="features", unit="clip", disable=not progress) as bar:
            for start in range(0, len(todo), shard_size):
                chunk = todo[start:start + shard_size]
                tensors: dict[str, torch.Tensor] = {}
                for b in range(0, len(chunk), batch_size):
                    rows = chunk[b:b + batch_size]
                    pooled = model.encode_audio([load(path) for _, path in rows])
                    for r, (cid, _) in enumerate(rows):
                        one = pooled.select(r)
                        tensors[f"{cid}/sums"] = one.sums[0].float().cpu().contiguous()
                        tensors[f"{cid}/counts"] = one.counts[0].float().cpu().contiguous()
                    bar.update(len(rows))
                name = f"shard-{next_no:05d}.safetensors"
                next_no += 1
                self._write_shard(name, tensors)
                shards[name] = [cid for cid, _ in chunk]
                _atomic_write_text(self.dir / INDEX, json.dumps({"shards": shards}) + "\n")
        return len(todo)

    def _write_shard(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt", "key": self.spec.key})
        os.replace(tmp, self.dir / name)

    # --- read ------------------------------------------------------------------------------------
    def load(self, ids: Sequence[str] | None = None) -> dict[str, PooledMusic]:
        """{clip id: PooledMusic (B=1)} for `ids` (None: everything cached). Missing ids raise CheckpointError."""
        from safetensors.torch import load_file

        want = None if ids is None else set(ids)
        spw = self.spec.seconds_per_window
        out: dict[str, PooledMusic] = {}
        for name, shard_ids in self.index().items():
            if want is not None and not want.intersection(shard_ids):
                continue
            data = load_file(str(self.dir / name))
            for cid in shard_ids:
                if want is None or cid in want:
                    out[cid] = PooledMusic(data[f"{cid}/sums"][None], data[f"{cid}/counts"][None], spw)
        if want is not None and len(out) < len(want):
            missing = sorted(want - set(out))
            raise CheckpointError(self.dir, f"{len(missing)} clip(s) not in the feature cache, e.g. {missing[:3]}")
        return out


def seconds_per_window(model) -> float | None:
    """Seconds per cached window (time mode) for rebuilding PooledMusic.seconds_per_window."""
    wf = model.music_adapter.config.window_frames
    return None if wf is None else wf / model.encoder.frame_rate


def open_cache(model, root: str | Path) -> FeatureCache:
    return FeatureCache(root, FeatureSpec.for_model(model))
