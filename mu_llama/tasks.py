"""Batched captioning and question answering over audio: the Python API behind `mu-llama caption` / `ask`.

    caption(model, ["a.wav", wave_array, ...], options)          -> ["A slow organ chorale ...", ...]
    ask(model, audios, ["What instrument leads?", ...], history)  -> answers
    Conversation(model, "a.wav").ask("...")                       multi-turn, the audio encoded once

Audio inputs: a path, a 1-D float array already at model.sample_rate, or (array, sample_rate) to resample.
Batches are left-padded and decoded with the KV cache; a row's greedy output does not depend on what else
is in its batch. Long audio is heard in full (model.config.max_audio_seconds can cap it).
With more than one input, DECODE_WORKERS threads decode audio up to two batches ahead of the model (soundfile and
soxr release the GIL), so decoding overlaps the model instead of stalling it between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from mu_llama.decoding import DecodingOptions
from mu_llama.errors import AudioError, ConfigError, MuLlamaError
from mu_llama.prompts import Turn, default_question, encode_prompt

AudioInput = str | Path | np.ndarray | torch.Tensor | tuple
DECODE_WORKERS = 2  # audio decode threads per ask() call with several inputs (0 = decode inline, one by one)
PREFETCH_BATCHES = 2  # batches decoded ahead of the one the model is on (bounds the audio held in memory)


def load_input(model, audio: AudioInput) -> np.ndarray:
    """One audio input -> mono float32 at model.sample_rate (AudioError on unreadable / too short input)."""
    from mu_llama.audio import decode_array, load_audio

    sr = model.sample_rate
    limit = model.config.max_audio_seconds
    if isinstance(audio, (str, Path)):
        wave, name = load_audio(audio, sr, duration=limit), str(audio)
    elif _is_array_with_rate(audio):
        samples, orig_sr = audio
        wave, name = decode_array(np.asarray(samples), int(orig_sr), sr), "<array>"
    else:
        wave = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if wave.ndim != 1 or wave.dtype.kind != "f":
            raise ConfigError(f"audio arrays must be 1-D float mono at {sr} Hz (pass (array, sample_rate) to "
                              f"resample); got {wave.dtype} {wave.shape}")
        wave, name = wave.astype(np.float32, copy=False), "<array>"
    if model.encoder.frames_for(len(wave)) == 0:
        raise AudioError(name, "zero_length", f"{len(wave)} samples is shorter than one encoder frame")
    return wave


def _is_array_with_rate(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], (int, np.integer)) and not isinstance(x[0], str)


def _as_list(x) -> tuple[list, bool]:
    single = isinstance(x, (str, Path, np.ndarray, torch.Tensor)) or _is_array_with_rate(x)
    return ([x] if single else list(x)), single


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _load_one(model, audio: AudioInput, keep_errors: bool):
    try:
        return load_input(model, audio)
    except MuLlamaError as e:
        if keep_errors:
            return e
        raise


def _load_batch(model, jobs: list, keep_errors: bool = False) -> list:
    """One batch's audio, in input order, on the model's thread: waits for prefetched clips (Futures) or decodes
    inline. Its time is the model's wait for audio (the benchmark suite times this function)."""
    return [j.result() if isinstance(j, Future) else _load_one(model, j, keep_errors) for j in jobs]


def audio_batches(model, audios: list, batch_size: int, *,
                  keep_errors: bool = False) -> Iterator[tuple[range, list]]:
    """(rows, waves) per batch of `audios`. Several inputs: a thread pool decodes clip by clip up to PREFETCH_BATCHES
    batches ahead, so the first batch is decoded in parallel and later ones while the model works. A bad input raises
    its MuLlamaError when its batch is reached, as inline decoding would; with keep_errors=True the error takes the
    wave's place in the list instead (collection jobs record it and go on)."""
    n = len(audios)
    # only files are worth a thread: in-memory arrays (e.g. `mu-llama caption` handing over decoded batches) load inline
    if DECODE_WORKERS < 1 or n < 2 or not any(isinstance(a, str | Path) for a in audios):
        for rows in _batches(n, batch_size):
            yield rows, _load_batch(model, [audios[i] for i in rows], keep_errors)
        return
    pool = ThreadPoolExecutor(min(DECODE_WORKERS, n), thread_name_prefix="mu-llama-decode")
    jobs: dict[int, Future] = {}  # input index -> decode, submitted and not yet handed to the model
    submitted = 0
    try:
        for rows in _batches(n, batch_size):
            for i in range(submitted, min(n, rows.stop + PREFETCH_BATCHES * batch_size)):
                jobs[i] = pool.submit(_load_one, model, audios[i], keep_errors)
            submitted = max(submitted, min(n, rows.stop + PREFETCH_BATCHES * batch_size))
            yield rows, _load_batch(model, [jobs.pop(i) for i in rows])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode(model, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=True).strip()


def ask(model, audios, questions, history: Sequence[Sequence[Turn]] | None = None,
        options: DecodingOptions | None = None, *, batch_size: int = 8,
        progress: Callable[[int], None] | None = None):
    """Answer questions[i] about audios[i] (history[i]: earlier (question, answer) turns). Lists in, list out;
    a single audio with a single question returns a single string."""
    audios, single = _as_list(audios)
    questions = [questions] if isinstance(questions, str) else list(questions)
    if len(questions) == 1 and len(audios) > 1:
        questions = questions * len(audios)
    if len(questions) != len(audios):
        raise ConfigError(f"{len(audios)} audio inputs but {len(questions)} questions")
    history = [()] * len(audios) if history is None else list(history)
    if single and history and history[0] and isinstance(history[0][0], str):
        history = [history]  # a single conversation's turns
    if len(history) != len(audios):
        raise ConfigError(f"{len(audios)} audio inputs but {len(history)} histories")
    if batch_size < 1:
        raise ConfigError(f"invalid batch_size {batch_size}; must be >= 1")
    answers: list[str] = []
    with closing(audio_batches(model, audios, batch_size)) as batches:
        for rows, waves in batches:
            with torch.inference_mode():
                music = model.encode_music(waves)
            prompts = [encode_prompt(model.template, model.tokenizer, questions[i], history[i]) for i in rows]
            fusion = model.fact_fusion(waves, options)
            answers += [_decode(model, ids) for ids in model.generate(music, prompts, options, fusion=fusion)]
            if progress:
                progress(len(rows))
    return answers[0] if single else answers


def caption(model, audios, options: DecodingOptions | None = None, *, prompt: str | None = None,
            batch_size: int = 8, progress: Callable[[int], None] | None = None):
    """Describe each audio (the template's caption question unless `prompt` is given)."""
    question = prompt or default_question(model.template)
    audios, single = _as_list(audios)
    out = ask(model, audios, [question] * len(audios), None, options, batch_size=batch_size, progress=progress)
    return out[0] if single else out


class Conversation:
    """Multi-turn questions about one recording; the audio is encoded once."""

    def __init__(self, model, audio: AudioInput, options: DecodingOptions | None = None):
        self.model = model
        self.options = options
        wave = load_input(model, audio)
        with torch.inference_mode():
            self.music = model.encode_music([wave])
        self.fusion = model.fact_fusion([wave], options)
        self.history: list[Turn] = []

    def ask(self, question: str) -> str:
        prompt = encode_prompt(self.model.template, self.model.tokenizer, question, self.history)
        answer = _decode(self.model, self.model.generate(self.music, [prompt], self.options, fusion=self.fusion)[0])
        self.history.append((question, answer))
        return answer

    def reset(self) -> None:
        self.history = []
