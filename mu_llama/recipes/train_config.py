"""Configuration of the LLM-side training recipe (`mu-llama train`): a frozen dataclass that checks itself.

Sources, lowest priority first: the dataclass defaults, an optional YAML file (`--config mini.yaml`), then CLI flags
(and `--set key=value` for any field; `model.<field>` / `model.lora.<field>` reach the model config). Unknown keys are
errors that name the valid ones. The `model` mapping holds MuLlamaConfig fields (encoder, llm, bridge sizes,
injection layers, LoRA options); it is validated by building a MuLlamaConfig from it.

Two stages run back to back on one global step counter (MU-LLaMA's split):
    steps [0, stage1_steps)                          stage 1: music adapter + prefix_query + gates
    steps [stage1_steps, stage1_steps+stage2_steps)  stage 2: LoRA (+ bias / norm tuning as model.lora says)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mu_llama.errors import ConfigError, choice_error

AMP_MODES = ("auto", "none", "bf16")  # auto: bf16 autocast on CUDA, fp32 on CPU
QUANTIZE = ("none", "8bit", "4bit")  # 4bit = QLoRA (bitsandbytes NF4 base weights)
QA_EVAL = ("none", "facts", "factual", "all")

# The default model's architecture (mu-llama-mini): SmolLM2-135M (hidden 576, 30 layers) with a 2-block bridge of
# width 576 (SwiGLU 1152) and LoRA rank 8 on the attention projections: ~4.2 M adapter + ~0.9 M LoRA parameters.
MINI_MODEL: dict = {
    "encoder": "mu_llama/assets/mu-llama-mini/encoder",
    "llm": "smollm2-135m-instruct",
    "bridge_blocks": 2,
    "bridge_hidden": 1152,
    "injection_layers": 10,
    "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
             "mlp": False, "bias_targets": [], "norm_tuning": True},
}


@dataclass(frozen=True)
class TrainConfig:
    corpus: str = "data/corpus"  # corpus folder (manifests/<split>.jsonl) or a folder of <split>.jsonl files
    out: str = "runs/mini"  # run folder: checkpoints/, final/, log.jsonl, curves.png
    model: dict = field(default_factory=lambda: json.loads(json.dumps(MINI_MODEL)))
    feature_cache: str | None = None  # None: <out>/../features (shared by runs over the same corpus + encoder)
    init_from: str | None = None  # a checkpoint / model folder of the same architecture: its trainable weights start
    #                               this run (fresh optimizer), e.g. stage 2 only (stage1_steps 0) after a stage-1 run
    train_split: str = "train"
    val_split: str = "validation"
    max_train_clips: int | None = None  # cap: this many clips evenly spaced over the sorted ids (smoke runs, tests)
    # stages and optimisation
    stage1_steps: int = 300
    stage2_steps: int = 100
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr1: float = 1e-3  # stage 1 peak learning rate
    lr2: float = 5e-4  # stage 2 peak learning rate
    warmup: int = 20  # linear warmup steps at the start of each stage, then cosine decay to min_lr_ratio * peak
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01  # on matrices only (not gates, norms, biases, prefix)
    grad_clip: float = 1.0
    # examples (see train.examples_for)
    caption_share: float = 0.5  # share of examples that are a caption under the default caption question
    description_share: float = 0.2  # ... a caption under another description question; the rest: factual QA
    complete_captions: bool = True  # default-question target += sentences for caption facts the caption omits
    max_answer_tokens: int = 128
    # checkpoints, evaluation, logging
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    val_examples: int = 64  # teacher-forced validation loss on this many fixed validation examples
    val_generate: int = 16  # greedy captions for this many validation clips, scored with mu_llama.eval
    val_qa: str = "facts"  # also answer the sample clips' questions: "none" | "facts" | "factual" | "all" (see predict)
    gen_max_new_tokens: int = 128
    # runtime
    device: str = "cpu"
    amp: str = "auto"
    quantize: str = "none"
    threads: int | None = None  # torch CPU threads (None: torch's default; 1 on a shared, oversubscribed CPU)
    encode_batch_size: int = 8  # clips per encoder call while caching features
    shard_size: int = 128  # clips per feature-cache shard (the unit of cache resumption)
    seed: int = 0
    stop_after: int | None = None  # end the process after this step (checkpointed); rerun to resume
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "model", dict(self.model))
        self.model_config()  # validates the model mapping
        ints = {"stage1_steps": 0, "stage2_steps": 0, "batch_size": 1, "grad_accum": 1, "warmup": 0,
                "max_answer_tokens": 8, "checkpoint_every": 1, "keep_checkpoints": 1, "val_examples": 0,
                "val_generate": 0, "gen_max_new_tokens": 1, "encode_batch_size": 1, "shard_size": 1, "seed": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"invalid {name} {v!r}; must be an integer >= {lo}")
        for name in ("max_train_clips", "threads", "stop_after"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"invalid {name} {v!r}; must be a positive integer or null")
        if self.stage1_steps + self.stage2_steps < 1:
            raise ConfigError("nothing to train: stage1_steps + stage2_steps is 0")
        if self.stage2_steps and self.model.get("lora") is None:
            raise ConfigError("stage2_steps > 0 needs model.lora options (stage 2 trains LoRA)")
        for name in ("lr1", "lr2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ConfigError(f"invalid {name} {v!r}; must be > 0")
        for name in ("min_lr_ratio", "caption_share", "description_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"invalid {name} {v!r}; must be in [0, 1]")
        if not isinstance(self.complete_captions, bool) or not isinstance(self.progress, bool):
            raise ConfigError("complete_captions and progress must be true or false")
        if self.caption_share + self.description_share > 1:
            raise ConfigError("caption_share + description_share must not exceed 1")
        if not (self.weight_decay >= 0 and self.grad_clip >= 0):
            raise ConfigError("weight_decay and grad_clip must be >= 0 (grad_clip 0 = off)")
        if self.amp not in AMP_MODES:
            raise choice_error("amp", self.amp, AMP_MODES)
        if self.quantize not in QUANTIZE:
            raise choice_error("quantize", self.quantize, QUANTIZE)
        if self.val_qa not in QA_EVAL:
            raise choice_error("val_qa", self.val_qa, QA_EVAL)
        if self.amp == "bf16" and not self.device.startswith("cuda"):
            raise ConfigError("amp 'bf16' is for CUDA; training on CPU runs in fp32 (amp 'auto' or 'none')")

    # --- derived ---------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps

    def stage_at(self, step: int) -> int:
        """1 or 2: the stage that optimizer step `step` (0-based) belongs to."""
        return 1 if step < self.stage1_steps else 2

    def lr_at(self, step: int) -> float:
        """Linear warmup then cosine decay, restarted at each stage."""
        stage = self.stage_at(step)
        start, n, peak = (0, self.stage1_steps, self.lr1) if stage == 1 else (self.stage1_steps, self.stage2_steps, self.lr2)
        i = step - start
        if self.warmup and i < self.warmup:
            return peak * (i + 1) / self.warmup
        span = max(1, n - min(self.warmup, n))
        progress = min(1.0, (i - min(self.warmup, n)) / span)
        return peak * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def model_config(self):
        """The MuLlamaConfig the `model` mapping describes (validated)."""
        from mu_llama.model import MuLlamaConfig

        try:
            return MuLlamaConfig.from_dict(json.loads(json.dumps(self.model)))
        except TypeError as e:
            raise ConfigError(f"invalid model options: {e}") from None

    @property
    def feature_dir(self) -> Path:
        return Path(self.feature_cache) if self.feature_cache else Path(self.out).parent / "features"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        valid = {f.name for f in fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}")
        model = d.get("model")
        if model is not None:
            d = {**d, "model": {**MINI_MODEL, **model}}
        return cls(**d)


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: training config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of option: value")
    return data


def parse_assignment(text: str) -> tuple[str, object]:
    """"a.b=VALUE" -> ("a.b", VALUE parsed as YAML: numbers, booleans, null, lists, else the string)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"invalid --set {text!r}; expected KEY=VALUE (e.g. lr1=2e-3, model.injection_layers=12)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        if d.get(p) is None:
            d[p] = {}
        if not isinstance(d[p], dict):
            raise ConfigError(f"invalid override {key!r}: {p!r} is not a mapping")
        d = d[p]
    d[parts[-1]] = value


def resolve_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """defaults < YAML file < overrides ({"lr1": 2e-3, "model.injection_layers": 12, ...}; None values ignored)."""
    d: dict = {"model": json.loads(json.dumps(MINI_MODEL))}
    if yaml_path is not None:
        data = load_yaml(yaml_path)
        model = data.pop("model", None) or {}
        if not isinstance(model, dict):
            raise ConfigError(f"{yaml_path}: 'model' must be a mapping of MuLlamaConfig fields")
        d["model"].update(model)
        d.update(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(d, key, value)
    return TrainConfig.from_dict(d)
