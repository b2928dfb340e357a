"""Models for the benchmark suite: the default registry model, or MU-LLaMA-shaped random models built in code.

    build_model("untrained:smollm2", role="ours", quantize="4bit", device="cpu")
    build_model("random:7b", role="reference", quantize="none", device="cuda")   # MERT-330M + LLaMA-2-7B shape

"random:<shape>" specs need no hub: the LLaMA weights are drawn once (seeded, on the target device, in fp16) and
saved under $MU_LLAMA_CACHE/bench/llama-<shape>/, then every variant loads that directory through the normal
loading path (load_llm -> bitsandbytes quantizes on load), so all variants share the same weights.
Roles: "ours" = bf16 encoder + bf16 LLM on CUDA (fp32 on CPU) with the requested quantization;
"reference" = MU-LLaMA's setup: fp32 encoder, fp16 (CUDA) / fp32 (CPU) LLM, no quantization.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

# LLaMA shapes (vocab 32000 like LLaMA-2; the byte tokenizer only ever emits ids < 260, decode drops the rest)
LLAMA_SHAPES: dict[str, dict] = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "max_position_embeddings": 4096, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 1024, "vocab_size": 260},
}
# encoder paired with each random shape: MU-LLaMA pairs MERT-330M with LLaMA-2-7B
ENCODER_FOR = {"7b": "random:mert-330m", "tiny": "random:tiny"}
ROLES = ("ours", "reference")


def random_llama_dir(shape: str, device: str = "cpu", seed: int = 0) -> Path:
    """Directory with a random LLaMA of `shape` (fp16 safetensors + byte tokenizer); built once, atomically."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mu_llama.llm import byte_tokenizer, cache_dir

    out = cache_dir() / "bench" / f"llama-{shape}-seed{seed}"
    if (out / "config.json").is_file():
        return out
    tok = byte_tokenizer()
    config = LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False, **LLAMA_SHAPES[shape])
    # Draw the weights on the target device (a 7B fp32 init on 2 CPU cores would take many minutes).
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        if dev.type == "cuda":
            torch.cuda.manual_seed(seed)
        with dev:
            model = LlamaForCausalLM._from_config(config, dtype=torch.float16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".llama-{shape}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def llm_options(role: str, quantize: str, device: str):
    from mu_llama.llm import LLMOptions

    cuda = torch.device(device).type == "cuda"
    if role == "reference":
        return LLMOptions(dtype="float16" if cuda else "float32", device=device, quantize="none")
    return LLMOptions(dtype="bfloat16" if cuda else "float32", device=device, quantize=quantize)


def model_config(spec: str, role: str, device: str):
    """MuLlamaConfig for a registry name with a fresh adapter or a random:<shape> spec; None for checkpoints."""
    from mu_llama.model import MODELS, MuLlamaConfig

    cuda = torch.device(device).type == "cuda"
    enc_dtype = "bfloat16" if (cuda and role == "ours") else "float32"
    if spec.startswith("random:"):
        shape = spec.split(":", 1)[1]
        if shape not in LLAMA_SHAPES:
            raise SystemExit(f"unknown model {spec!r}; random shapes: {', '.join('random:' + s for s in LLAMA_SHAPES)}")
        return MuLlamaConfig(encoder=ENCODER_FOR[shape], llm=str(random_llama_dir(shape, device)),
                             injection_layers=min(20, LLAMA_SHAPES[shape]["num_hidden_layers"]),
                             encoder_dtype=enc_dtype)
    entry = MODELS.get(spec)
    if entry is not None and entry.config is not None:
        return MuLlamaConfig.from_dict({**entry.config.to_dict(), "encoder_dtype": enc_dtype})
    return None


def build_model(spec: str, *, role: str, quantize: str, device: str):
    """A MuLlama in eval mode for one benchmark configuration."""
    from mu_llama.model import MuLlama, load_model

    if role not in ROLES:
        raise SystemExit(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    options = llm_options(role, quantize, device)
    config = model_config(spec, role, device)
    model = load_model(spec, options) if config is None else MuLlama.build(config, options)
    return model.eval()


def weights_mb(model) -> float:
    """Bytes of parameters + buffers (+ torch dynamic-int8 packed weights), tied tensors counted once."""
    from bench_llm import _weights_mb  # sibling script (bench/ is on sys.path when the suite runs)

    return _weights_mb(model)
