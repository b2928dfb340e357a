"""The MuLlama model as a labeler: one encoder pass per clip, then the caption question and every job question
decoded together in one batched generate (clip-major rows: clip 0's questions, clip 1's, ...).

Identity: model_id is the registry name (or the checkpoint directory's name); model_revision is a content hash of
the checkpoint's config and weight files, its fact tagger included (for registry entries built from a config: of that
config), so a retrained checkpoint at the same path never reuses cached labels. VAD (optional, derived estimates, named in `extra["vad"]`):
mu_llama.emotion's audio regressor on the heard audio when its checkpoint is installed, else its text estimator on
the generated caption and answers.

`MuLlamaLabeler` is LabelerSpec's default factory. Its model and torch imports stand inside functions, so importing
this module stays light: decode workers and the fakes' tests never load a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from mu_llama.label.labelers import DEFAULT_QUESTIONS, Clip, LabelerInfo

_WEIGHT_FILES = ("config.json", "adapter.safetensors", "adapter_model.safetensors", "adapter_config.json",
                 "fact_tagger.json", "fact_tagger.safetensors")      # the tagger steers the captions too


def _checkpoint_dir(spec: str) -> Path | None:
    from mu_llama.model import CONFIG_FILE, MODELS, cache_dir, models_dir

    path = Path(spec).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    entry = MODELS.get(spec)
    if entry is not None and entry.checkpoint:
        for root in (models_dir(), cache_dir() / "models"):
            cand = Path(entry.checkpoint) if Path(entry.checkpoint).is_absolute() else root / entry.checkpoint
            if (cand / CONFIG_FILE).is_file():
                return cand
    return None


def identify(spec: str) -> tuple[str, str, dict]:
    """(model_id, revision, config dict) without loading any weights."""
    from mu_llama.errors import ConfigError
    from mu_llama.model import MODELS, read_config

    ckpt = _checkpoint_dir(spec)
    if ckpt is not None:
        h = hashlib.sha256()
        for name in _WEIGHT_FILES:
            if (ckpt / name).is_file():
                h.update(name.encode() + b"\0" + (ckpt / name).read_bytes())
        model_id = spec if spec in MODELS else ckpt.resolve().name
        return model_id, h.hexdigest()[:12], read_config(ckpt).to_dict()
    entry = MODELS.get(spec)
    if entry is None or entry.config is None:
        from mu_llama.model import load_model

        load_model(spec)  # raises the registry's own "unknown / not installed" ConfigError
        raise ConfigError(f"cannot identify model {spec!r}")
    config = entry.config.to_dict()
    blob = json.dumps(config, sort_keys=True).encode()
    return spec, "config-" + hashlib.sha256(blob).hexdigest()[:12], config


def describe(model: str | None = None, *, questions: dict, decoding: dict, device: str | None = None,
             dtype: str = "auto", quantize: str = "none", vad: bool = True) -> LabelerInfo:
    from mu_llama.decoding import DecodingOptions
    from mu_llama.model import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    model_id, revision, config = identify(model)
    options = DecodingOptions(**decoding)
    device = device or _default_device()
    dt = dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    return LabelerInfo(model_id=model_id, model_revision=revision, sample_rate=int(config.get("sample_rate", 24000)),
                       decoding=options.to_dict(), questions=dict(questions),
                       extra={"dtype": dt, "quantize": quantize, "template": config.get("template", "auto"),
                              "vad": _vad_method() if vad else None})


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _vad_method() -> str | None:
    """"audio:<hash>" when mu_llama.emotion's audio regressor is installed (VAD of the heard audio), else "text"
    (VAD of the generated caption and answers), else None. Both are derived estimates (see mu_llama.emotion)."""
    try:
        from mu_llama.emotion.audio import ASSET_DIR, default_regressor

        default_regressor()
        h = hashlib.sha256()
        for f in sorted(Path(ASSET_DIR).glob("audio_vad*")):
            h.update(f.read_bytes())
        return f"audio:{h.hexdigest()[:12]}"
    except Exception:  # noqa: BLE001 - package, features or checkpoint missing: fall back
        pass
    try:
        import mu_llama.emotion.text  # noqa: F401
    except ImportError:
        return None
    return "text"


class MuLlamaImpl:
    def __init__(self, model: str | None, *, questions: dict, decoding: dict, device: str | None,
                 dtype: str = "auto", quantize: str = "none", vad: bool = True):
        from mu_llama.decoding import DecodingOptions
        from mu_llama.llm import LLMOptions
        from mu_llama.model import DEFAULT_MODEL, load_model

        device = device or _default_device()
        self.info = describe(model, questions=questions, decoding=decoding, device=device, dtype=dtype,
                             quantize=quantize, vad=vad)
        options = LLMOptions(device=device, dtype=dtype, quantize=quantize)
        options.check_available()
        self.model = load_model(model or DEFAULT_MODEL, options)
        self.options = DecodingOptions(**decoding)
        if self.model.sample_rate != self.info.sample_rate:
            self.info = LabelerInfo(**{**self.info.__dict__, "sample_rate": self.model.sample_rate})
        self.vad = self.info.extra.get("vad")

    def __call__(self, clips: Sequence[Clip]) -> list[dict]:
        from mu_llama.prompts import default_question, encode_prompt
        from mu_llama.tasks import load_input

        m = self.model
        waves = [load_input(m, c.audio) for c in clips]   # checks each clip (too short for one frame -> AudioError)
        questions = [default_question(m.template), *self.info.questions.values()]
        music = m.encode_music(waves).expand(len(questions))            # (B * Q, M, H), clip-major
        prompt_ids = [encode_prompt(m.template, m.tokenizer, q) for q in questions]
        fusion = m.fact_fusion(waves, self.options, repeat=len(questions))
        texts = [m.tokenizer.decode(ids, skip_special_tokens=True).strip()
                 for ids in m.generate(music, prompt_ids * len(clips), self.options, fusion=fusion)]
        out = []
        names = list(self.info.questions)
        for b in range(len(clips)):
            row = texts[b * len(questions):(b + 1) * len(questions)]
            fields = {"caption": row[0], "answers": dict(zip(names, row[1:]))}
            if self.vad:
                fields.update(self._vad(clips[b].audio, row))
            out.append(fields)
        return out

    def _vad(self, audio, texts: list[str]) -> dict:
        """Derived VAD of one clip; None values if the estimator cannot handle it (the labels still count)."""
        try:
            if self.vad.startswith("audio"):
                from mu_llama.emotion.audio import vad_from_wave

                v = vad_from_wave(audio, self.model.sample_rate)
            else:
                from mu_llama.emotion.text import vad_from_text

                v = vad_from_text(" ".join(texts))
        except Exception:  # noqa: BLE001
            return {"valence": None, "arousal": None, "dominance": None}
        return {"valence": round(v.valence, 4), "arousal": round(v.arousal, 4), "dominance": round(v.dominance, 4)}


class MuLlamaLabeler:
    """The real labeler: a MuLlama model (registry name or checkpoint dir; None = the registry default), the caption
    plus one answer per question, decoded in one batched generate per clip batch (MuLlamaImpl);
    VAD columns from mu_llama.emotion's text estimator when that package is present."""

    def __init__(self, model: str | None = None, *, questions: dict[str, str] | None = None,
                 decoding: dict | None = None, device: str | None = None, dtype: str = "auto",
                 quantize: str = "none", vad: bool = True):
        self._impl = MuLlamaImpl(model, questions=DEFAULT_QUESTIONS if questions is None else questions,
                                decoding=decoding or {}, device=device, dtype=dtype, quantize=quantize, vad=vad)
        self.info: LabelerInfo = self._impl.info

    @staticmethod
    def describe(model: str | None = None, *, questions: dict[str, str] | None = None, decoding: dict | None = None,
                 device: str | None = None, dtype: str = "auto", quantize: str = "none", vad: bool = True) -> LabelerInfo:
        """The identity (fingerprint inputs) without loading weights: what a Ray driver needs."""
        return describe(model, questions=DEFAULT_QUESTIONS if questions is None else questions,
                        decoding=decoding or {}, device=device, dtype=dtype, quantize=quantize, vad=vad)

    def __call__(self, clips: Sequence[Clip]) -> list[dict]:
        return self._impl(clips)
