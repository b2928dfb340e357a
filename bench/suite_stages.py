"""Stage timing for the benchmark suite: where one caption batch spends its time, audio decode and encoder speed.

StageTimer instruments a MuLlama in place (forward hooks on the encoder, the music adapter and the LLM; wrappers
around mu_llama.tasks' batch-audio and tokenizer calls) and accumulates wall seconds per stage, counting only the
thread that runs the model (the one that made the timer): decode workers' own time is overlapped work, not a stage.
    audio      the model thread's time in mu_llama.tasks._load_batch: decode + resample done inline (the reference,
               one clip per call) or the wait for clips that the prefetch workers have not finished yet
    encoder    the frozen MERT forward
    adapter    MusicAdapter (pooled states -> music tokens)
    prefill    the first LLM forward of generate (the whole prompt)
    decode     every later LLM forward (one token per row)
    tokenizer  prompt encoding and answer decoding
    other      the rest of the wall time (pooling, padding, sampling, generate's own bookkeeping)
With sync=True each boundary waits for CUDA (exact per-stage GPU time, slightly slower overall).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

STAGES = ("audio", "encoder", "adapter", "prefill", "decode", "tokenizer", "other")


class StageTimer:
    def __init__(self, sync: bool = False):
        self.sync = sync and torch.cuda.is_available()
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)  # prefill_tokens, decode_tokens, decode_steps, ...
        self._open: dict[str, float] = {}
        self.audio_waits: list[float] = []  # each _load_batch call (the first one is the pipeline fill)
        self._thread = threading.get_ident()

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self, stage: str) -> None:
        if threading.get_ident() == self._thread:
            self._open[stage] = self._now()

    def stop(self, stage: str) -> None:
        t0 = self._open.pop(stage, None) if threading.get_ident() == self._thread else None
        if t0 is not None:
            dt = self._now() - t0
            self.seconds[stage] += dt
            if stage == "audio":
                self.audio_waits.append(dt)

    @contextmanager
    def stage(self, name: str):
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    @contextmanager
    def instrument(self, model):
        """Attach hooks / wrappers for the duration of the block."""
        from transformers import Cache

        from mu_llama import tasks

        handles = []

        def pre(name):
            return lambda *a, **k: self.start(name)

        def post(name):
            return lambda *a, **k: self.stop(name)

        for name, module in (("encoder", model.encoder), ("adapter", model.music_adapter)):
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))

        def llm_pre(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            b, s = (ids.shape[0], ids.shape[1]) if ids is not None else (0, 0)
            # the KV cache by type, not by argument name (transformers 5.24 renamed past_key_values to cache)
            past = next((v for v in kwargs.values() if isinstance(v, Cache)), None)
            first = past is None or past.get_seq_length() == 0
            stage = "prefill" if first else "decode"
            self.counts[f"{stage}_tokens"] += b * s
            self.counts[f"{stage}_steps"] += 1
            self._llm_stage = stage
            self.start(stage)

        def llm_post(module, args, kwargs, output):
            self.stop(self._llm_stage)

        # peft's generate calls the wrapped causal LM directly, so hook that one (the model itself without LoRA)
        lm = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
        handles.append(lm.register_forward_pre_hook(llm_pre, with_kwargs=True))
        handles.append(lm.register_forward_hook(llm_post, with_kwargs=True))
        saved = {k: getattr(tasks, k) for k in ("_load_batch", "encode_prompt", "_decode")}

        def timed(stage, fn):
            def wrapper(*a, **k):
                with self.stage(stage):
                    return fn(*a, **k)
            return wrapper

        tasks._load_batch = timed("audio", saved["_load_batch"])
        tasks.encode_prompt = timed("tokenizer", saved["encode_prompt"])
        tasks._decode = timed("tokenizer", saved["_decode"])
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for k, v in saved.items():
                setattr(tasks, k, v)

    def breakdown(self, wall: float) -> dict:
        """Seconds and share of wall time per stage (plus LLM token rates)."""
        known = {s: self.seconds.get(s, 0.0) for s in STAGES if s != "other"}
        secs = {**known, "other": max(0.0, wall - sum(known.values()))}
        out = {"wall_s": round(wall, 4),
               "seconds": {k: round(v, 4) for k, v in secs.items()},
               "share": {k: round(v / wall, 4) if wall > 0 else 0.0 for k, v in secs.items()},
               "counts": dict(self.counts),
               # audio wait after the first batch: the steady state, once the pipeline is full
               "audio_after_first_batch_s": round(sum(self.audio_waits[1:]), 4)}
        if secs["prefill"] > 0:
            out["prefill_tokens_per_s"] = round(self.counts["prefill_tokens"] / secs["prefill"], 2)
        if secs["decode"] > 0:
            out["decode_tokens_per_s"] = round(self.counts["decode_tokens"] / secs["decode"], 2)
        return out


# --- audio ---------------------------------------------------------------------------------------------
FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III"))
RATES = (44100, 48000)


def make_clips(folder: Path, count: int, seconds: float, seed: int = 0) -> list[Path]:
    """Synthetic music clips (bench_label.make_clip: harmonic voices + beat), stereo, 44.1/48 kHz, 4 formats."""
    import soundfile as sf
    from bench_label import make_clip

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ext, subtype = FORMATS[i % len(FORMATS)]
        sr = RATES[i % len(RATES)]
        path = folder / f"clip{i:03d}_{seconds:g}s.{ext}"
        if not path.is_file():
            rng = np.random.default_rng(seed + i)
            tmp = path.with_name(f".{os.getpid()}.{path.name}")  # atomic: concurrent runs never read half a file
            sf.write(tmp, make_clip(rng, seconds, sr, 2), sr, subtype=subtype, format=ext.upper())
            tmp.replace(path)
        paths.append(path)
    return paths


def reference_decode(path: Path, sample_rate: int) -> np.ndarray:
    """What a plain script does: read the whole file, average channels, resample once."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, sample_rate).astype(np.float32)


def audio_stage(paths: list[Path], runs: int, sample_rate: int = 24000) -> dict:
    """Decode + resample speed (audio seconds per wall second), ours (mu_llama.audio) vs the plain reference."""
    from mu_llama.audio import load_audio

    seconds = sum(len(load_audio(p, sample_rate)) for p in paths) / sample_rate  # also the warm-up
    t_ours, t_ref = [], []
    for _ in range(runs):  # interleaved: load drift hits both sides alike
        t0 = time.perf_counter()
        for p in paths:
            load_audio(p, sample_rate)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in paths:
            reference_decode(p, sample_rate)
        t_ref.append(time.perf_counter() - t0)
    ours, ref = seconds / statistics.median(t_ours), seconds / statistics.median(t_ref)
    return {"files": len(paths), "audio_seconds": round(seconds, 2), "formats": sorted({p.suffix[1:] for p in paths}),
            "ours_audio_s_per_s": round(ours, 1), "reference_audio_s_per_s": round(ref, 1),
            "ratio_to_reference": round(ours / ref, 3), "runs": runs,
            "reference": "soundfile.read whole file + channel mean + soxr.resample"}


# --- encoder ---------------------------------------------------------------------------------------------
def encoder_stage(configs: list[str], seconds: float, runs: int, device: str) -> dict:
    """Real-time factor (compute s / audio s, lower is faster) of random MERT-shaped encoders.
    Ours: bf16 + SDPA on CUDA, fp32 + SDPA on CPU. Reference (MU-LLaMA): fp32, eager attention."""
    from mu_llama.encoders import EncoderOptions, build_random

    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    result = {}
    for name in configs:
        sides = {"ours": EncoderOptions(device, "bfloat16" if cuda else "float32", "sdpa"),
                 "reference": EncoderOptions(device, "float32", "eager")}
        encoders = {k: build_random(name, seed=0, options=o) for k, o in sides.items()}
        enc = encoders["ours"]
        n = round(seconds * enc.sample_rate)
        wave = (0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(0))).to(device)
        lengths = torch.tensor([n])
        times = {k: [] for k in encoders}
        with torch.inference_mode():
            for e in encoders.values():  # warm-up
                e(wave, lengths)
            for _ in range(runs):
                for k, e in encoders.items():
                    sync()
                    t0 = time.perf_counter()
                    e(wave, lengths)
                    sync()
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        result[name] = {"clip_seconds": seconds, "hidden_states": enc.num_layers, "hidden_size": enc.hidden_size,
                        "ours_dtype": sides["ours"].dtype, "ours_rtf": round(med["ours"] / seconds, 4),
                        "reference_rtf": round(med["reference"] / seconds, 4),
                        "speedup_vs_reference": round(med["reference"] / med["ours"], 3),
                        "runs": {k: [round(x, 4) for x in v] for k, v in times.items()}}
        del encoders, enc
        if cuda:
            torch.cuda.empty_cache()
    return result
