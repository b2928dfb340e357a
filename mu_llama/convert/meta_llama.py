"""LLaMA weights: Meta's consolidated layout <-> transformers (HF) LlamaForCausalLM layout.

Meta layout (what LLaMA-2's download and MU-LLaMA's `llama_dir/7B/` hold):
    params.json          {"dim", "n_layers", "n_heads", ["n_kv_heads"], "multiple_of", ["ffn_dim_multiplier"],
                          "norm_eps", ["rope_theta"], "vocab_size": -1}
    consolidated.NN.pth  model-parallel shards of {"tok_embeddings.weight", "layers.{i}.attention.wq.weight", ...}
    tokenizer.model      SentencePiece (next to params.json, or one folder up as in MU-LLaMA's llama_dir)

Rotary embeddings: Meta rotates interleaved pairs (2j, 2j+1) of each head as complex numbers; transformers
rotates halves (j, j + d/2) (`rotate_half`). The conversion therefore permutes the ROWS of wq and wk within
each head (HF's convert_llama_weights_to_hf `permute`):
    w_hf = w_meta.view(n_heads, d/2, 2, in).transpose(1, 2).reshape(out, in)
Anything added to the wq / wk outputs must be permuted the same way: their biases and the B (up) matrices
of LoRA deltas (delta = B @ A: rows of B are output rows; A is unchanged). wv / wo and the FFN are not touched.

Names are mapped through META_TO_HF, kept as data; unknown or missing keys raise CheckpointError.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from mu_llama.errors import CheckpointError, ConfigError, choice_error

from .io import DEFAULT_SHARD_BYTES, load_pth, save_sharded, tensor_dict

# Meta name -> (HF name, rotary permutation: "" | "q" | "k"); "{i}" is the layer index.
META_TO_HF: dict[str, tuple[str, str]] = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", ""),
    "norm.weight": ("model.norm.weight", ""),
    "output.weight": ("lm_head.weight", ""),
    "layers.{i}.attention.wq.weight": ("model.layers.{i}.self_attn.q_proj.weight", "q"),
    "layers.{i}.attention.wk.weight": ("model.layers.{i}.self_attn.k_proj.weight", "k"),
    "layers.{i}.attention.wv.weight": ("model.layers.{i}.self_attn.v_proj.weight", ""),
    "layers.{i}.attention.wo.weight": ("model.layers.{i}.self_attn.o_proj.weight", ""),
    "layers.{i}.feed_forward.w1.weight": ("model.layers.{i}.mlp.gate_proj.weight", ""),
    "layers.{i}.feed_forward.w2.weight": ("model.layers.{i}.mlp.down_proj.weight", ""),
    "layers.{i}.feed_forward.w3.weight": ("model.layers.{i}.mlp.up_proj.weight", ""),
    "layers.{i}.attention_norm.weight": ("model.layers.{i}.input_layernorm.weight", ""),
    "layers.{i}.ffn_norm.weight": ("model.layers.{i}.post_attention_layernorm.weight", ""),
}
META_IGNORED = ("rope.freqs",)  # precomputed rotary frequencies: transformers recomputes them from rope_theta
# Model-parallel shards (consolidated.00.pth, .01, ...): the dimension each weight is split along (None: replicated).
SHARD_DIM: dict[str, int | None] = {"tok_embeddings": 1, "output": 0, "wq": 0, "wk": 0, "wv": 0, "wo": 1,
                                    "w1": 0, "w2": 1, "w3": 0, "attention_norm": None, "ffn_norm": None, "norm": None}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MARKER = "mu_llama_source.json"


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


_META_RULES = [(_pattern(m), m, h, p) for m, (h, p) in META_TO_HF.items()]
_HF_RULES = [(_pattern(h), m, h, p) for m, (h, p) in META_TO_HF.items()]


# --- rotary permutation ---------------------------------------------------------------------------
def permute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """Meta -> HF row order of a q/k projection output: (n_heads * d, ...) weight, bias or LoRA B."""
    d = w.shape[0] // n_heads
    if d * n_heads != w.shape[0] or d % 2:
        raise ConfigError(f"cannot permute {tuple(w.shape)} for {n_heads} heads: rows must be n_heads * even head_dim")
    return w.reshape(n_heads, d // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """HF -> Meta row order (inverse of permute_rotary)."""
    d = w.shape[0] // n_heads
    if d * n_heads != w.shape[0] or d % 2:
        raise ConfigError(f"cannot permute {tuple(w.shape)} for {n_heads} heads: rows must be n_heads * even head_dim")
    return w.reshape(n_heads, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# --- shapes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LlamaShape:
    """What conversions need to know about a LLaMA, from either layout."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    vocab_size: int = -1  # -1: from the tokenizer / embedding matrix
    intermediate_size: int | None = None  # HF config's FFN width (Meta: derived, see ffn_dim)

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"invalid LLaMA {name} {v!r}; must be a positive integer")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ConfigError(f"LLaMA dim {self.dim} is not n_heads {self.n_heads} x an even head size")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """FFN width: HF's intermediate_size, or Meta's SwiGLU rule (4 * dim * 2/3, times ffn_dim_multiplier,
        rounded up to multiple_of)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @classmethod
    def from_params(cls, path: Path) -> LlamaShape:
        """Meta params.json."""
        raw = _read_json(path)
        known = {"dim", "n_layers", "n_heads", "n_kv_heads", "norm_eps", "rope_theta", "multiple_of",
                 "ffn_dim_multiplier", "vocab_size"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(path, f"unsupported params.json field(s) {', '.join(unknown)} "
                                        "(e.g. scaled rope); supported: " + ", ".join(sorted(known)))
        try:
            return cls(dim=raw["dim"], n_layers=raw["n_layers"], n_heads=raw["n_heads"],
                       n_kv_heads=raw.get("n_kv_heads") or raw["n_heads"], norm_eps=float(raw.get("norm_eps", 1e-5)),
                       rope_theta=float(raw.get("rope_theta", 10000.0)), multiple_of=raw.get("multiple_of", 256),
                       ffn_dim_multiplier=raw.get("ffn_dim_multiplier"), vocab_size=raw.get("vocab_size", -1))
        except KeyError as e:
            raise CheckpointError(path, f"missing field {e.args[0]!r}") from None

    @classmethod
    def from_hf_config(cls, path: Path) -> LlamaShape:
        """transformers config.json of a LlamaForCausalLM."""
        raw = _read_json(path)
        if raw.get("model_type") != "llama":
            raise CheckpointError(path, f"model_type is {raw.get('model_type')!r}, expected 'llama'")
        if raw.get("head_dim") not in (None, raw["hidden_size"] // raw["num_attention_heads"]):
            raise CheckpointError(path, "head_dim != hidden_size / num_attention_heads is not supported")
        rope = raw.get("rope_parameters") or {}
        try:
            return cls(dim=raw["hidden_size"], n_layers=raw["num_hidden_layers"], n_heads=raw["num_attention_heads"],
                       n_kv_heads=raw.get("num_key_value_heads") or raw["num_attention_heads"],
                       norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                       rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
                       vocab_size=raw.get("vocab_size", -1), intermediate_size=raw["intermediate_size"])
        except KeyError as e:
            raise CheckpointError(path, f"missing field {e.args[0]!r}") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(path, "missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"invalid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(path, "expected a JSON object")
    return raw


# --- locating a LLaMA -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LlamaSource:
    layout: str  # "meta" | "hf"
    directory: Path  # the folder holding params.json (meta) or config.json (hf)
    shape: LlamaShape
    tokenizer: Path | None = None  # meta: tokenizer.model found next to it / one folder up


def find_llama(path: str | Path, llama_type: str | None = None) -> LlamaSource:
    """A LLaMA directory in either layout: HF (config.json), Meta (params.json + consolidated.*.pth), or MU-LLaMA's
    llama_dir (tokenizer.model + a sub-folder such as 7B/ holding the Meta files; `llama_type` picks one)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(root, "missing" if not root.exists() else "not a directory")
    if (root / "config.json").is_file():
        return LlamaSource("hf", root, LlamaShape.from_hf_config(root / "config.json"))
    if llama_type is not None:
        candidates = [root / llama_type]
    elif (root / "params.json").is_file():
        candidates = [root]
    else:
        candidates = sorted(p.parent for p in root.glob("*/params.json"))
    if len(candidates) != 1 or not (candidates[0] / "params.json").is_file():
        found = ", ".join(p.name for p in candidates) or "none"
        raise CheckpointError(root, f"not a LLaMA directory: no config.json (HF layout) or params.json (Meta layout); "
                                    f"sub-folders with params.json: {found}" + (" (pick one with llama_type)"
                                                                                 if len(candidates) > 1 else ""))
    meta = candidates[0]
    if not sorted(meta.glob("consolidated.*.pth")):
        raise CheckpointError(meta, "params.json but no consolidated.*.pth")
    tok = next((p for p in (meta / "tokenizer.model", meta.parent / "tokenizer.model") if p.is_file()), None)
    return LlamaSource("meta", meta, LlamaShape.from_params(meta / "params.json"), tok)


# --- state dict conversion ------------------------------------------------------------------------
def _map(state: dict[str, Tensor], rules, to_hf: bool, shape: LlamaShape, where) -> dict[str, Tensor]:
    out, unknown = {}, []
    for name, t in state.items():
        if to_hf and name in META_IGNORED:
            continue
        for pattern, meta_t, hf_t, rot in rules:
            m = pattern.fullmatch(name)
            if m is not None:
                i = m.groupdict().get("i")
                target = (hf_t if to_hf else meta_t).replace("{i}", i or "")
                if rot:
                    heads = shape.n_heads if rot == "q" else shape.n_kv_heads
                    t = permute_rotary(t, heads) if to_hf else unpermute_rotary(t, heads)
                out[target] = t
                break
        else:
            unknown.append(name)
    expected = {(h if to_hf else m).replace("{i}", str(i))
                for m, (h, _) in META_TO_HF.items() for i in (range(shape.n_layers) if "{i}" in m else [0])}
    missing = sorted(expected - set(out))
    extra = sorted(set(out) - expected)  # e.g. layer indices beyond n_layers
    if unknown or missing or extra:
        parts = [f"{len(unknown)} unknown key(s): {', '.join(sorted(unknown)[:8])}" if unknown else "",
                 f"{len(missing)} missing key(s): {', '.join(missing[:8])}" if missing else "",
                 f"{len(extra)} unexpected key(s): {', '.join(extra[:8])}" if extra else ""]
        raise CheckpointError(where, "; ".join(p for p in parts if p))
    return out


def meta_to_hf_state(state: dict[str, Tensor], shape: LlamaShape, where: str | Path = "<meta state>"):
    """Meta consolidated names -> transformers names, q/k rows permuted for rotate_half."""
    return _map(state, _META_RULES, True, shape, where)


def hf_to_meta_state(state: dict[str, Tensor], shape: LlamaShape, where: str | Path = "<hf state>"):
    """transformers names -> Meta consolidated names (inverse of meta_to_hf_state)."""
    return _map(state, _HF_RULES, False, shape, where)


def load_meta_state(directory: Path) -> dict[str, Tensor]:
    """Merge consolidated.NN.pth model-parallel shards into one state dict (split dims from SHARD_DIM)."""
    files = sorted(Path(directory).glob("consolidated.*.pth"))
    if not files:
        raise CheckpointError(directory, "no consolidated.*.pth")
    shards = [tensor_dict(load_pth(f), f) for f in files]
    if len(shards) == 1:
        return shards[0]
    merged = {}
    for name, first in shards[0].items():
        kind = name.split(".")[-2]  # "layers.3.attention.wq.weight" -> "wq", "norm.weight" -> "norm"
        if name in META_IGNORED or SHARD_DIM.get(kind, "?") is None:
            merged[name] = first
        elif kind in SHARD_DIM:
            merged[name] = torch.cat([s[name] for s in shards], dim=SHARD_DIM[kind])
        else:
            raise CheckpointError(files[0], f"unknown key {name!r}: cannot merge model-parallel shards")
    return merged


# --- whole-directory conversion -------------------------------------------------------------------
def convert_meta_to_hf(source: str | Path | LlamaSource, out_dir: str | Path, *, tokenizer: str | Path | None = None,
                       dtype: str | None = None, max_position_embeddings: int = 4096,
                       max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = False) -> Path:
    """Write a transformers LlamaForCausalLM directory (config, safetensors, tokenizer) from Meta weights.

    tokenizer: a SentencePiece tokenizer.model (needs the `sentencepiece` package) or a transformers tokenizer
    directory; default: the tokenizer.model found with the weights. dtype: keep the weights' dtype (None) or
    cast ("float32" / "bfloat16" / "float16"). Written to a temporary sibling and renamed into place; an
    out_dir already converted from the same files is reused.
    """
    src = source if isinstance(source, LlamaSource) else find_llama(source)
    if src.layout != "meta":
        raise ConfigError(f"{src.directory} is already in the transformers layout")
    if dtype is not None and dtype not in DTYPES:
        raise choice_error("dtype", dtype, DTYPES)
    tok_src = Path(tokenizer).expanduser() if tokenizer is not None else src.tokenizer
    if tok_src is None:
        raise CheckpointError(src.directory, "no tokenizer.model next to the weights or one folder up; "
                                             "pass the tokenizer (tokenizer.model or a transformers tokenizer folder)")
    _check_tokenizer_source(tok_src)
    out_dir = Path(out_dir).expanduser()
    fingerprint = _fingerprint(src, tok_src, dtype)
    if is_conversion(out_dir) and _read_json(out_dir / MARKER).get("fingerprint") == fingerprint:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(out_dir, "exists and is not a conversion of these weights; remove it or choose another")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = meta_to_hf_state(load_meta_state(src.directory), src.shape, src.directory)
        if dtype is not None:
            state = {k: v.to(DTYPES[dtype]) for k, v in state.items()}
        tok = write_tokenizer(tok_src, tmp)
        config = hf_config(src.shape, state, tok, max_position_embeddings)
        config.save_pretrained(tmp)
        bar = _progress(progress, "writing LLaMA shards")
        save_sharded(state, tmp, max_shard_bytes=max_shard_bytes, progress=bar)
        if bar is not None:
            bar.close()
        (tmp / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "converted_by":
                                              "mu_llama.convert.meta_llama.convert_meta_to_hf"}, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def is_conversion(out_dir: str | Path) -> bool:
    """out_dir was written by convert_meta_to_hf (it carries MARKER), whichever weights it came from."""
    return (Path(out_dir).expanduser() / MARKER).is_file()


def is_conversion_of(out_dir: str | Path, source: str | Path | LlamaSource, *, tokenizer: str | Path | None = None,
                     dtype: str | None = None) -> bool:
    """out_dir is convert_meta_to_hf's output for exactly these weights, tokenizer and dtype (it would be reused)."""
    src = source if isinstance(source, LlamaSource) else find_llama(source)
    tok_src = Path(tokenizer).expanduser() if tokenizer is not None else src.tokenizer
    out_dir = Path(out_dir).expanduser()
    if src.layout != "meta" or tok_src is None or not is_conversion(out_dir):
        return False
    return _read_json(out_dir / MARKER).get("fingerprint") == _fingerprint(src, tok_src, dtype)


def hf_config(shape: LlamaShape, hf_state: dict[str, Tensor], tokenizer, max_position_embeddings: int):
    from transformers import LlamaConfig

    vocab, dim = hf_state["model.embed_tokens.weight"].shape
    inter = hf_state["model.layers.0.mlp.gate_proj.weight"].shape[0]
    if dim != shape.dim:
        raise CheckpointError("<llama>", f"embedding width {dim} != params dim {shape.dim}")
    if len(tokenizer) > vocab:
        raise CheckpointError("<tokenizer>", f"tokenizer has {len(tokenizer)} tokens, the embedding only {vocab}")
    dtype = str(hf_state["model.embed_tokens.weight"].dtype).replace("torch.", "")
    return LlamaConfig(vocab_size=vocab, hidden_size=shape.dim, intermediate_size=inter,
                       num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                       num_key_value_heads=shape.n_kv_heads, rms_norm_eps=shape.norm_eps, rope_theta=shape.rope_theta,
                       max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       architectures=["LlamaForCausalLM"], dtype=dtype)


def _check_tokenizer_source(path: Path) -> None:
    if path.is_dir():
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise CheckpointError(path, "not a tokenizer folder (no tokenizer.json / tokenizer_config.json)")
    elif path.is_file():
        import importlib.util

        if importlib.util.find_spec("sentencepiece") is None:
            raise ConfigError(f"{path}: converting a SentencePiece tokenizer.model needs the `sentencepiece` "
                              "package: pip install sentencepiece")
    else:
        raise CheckpointError(path, "missing")


def write_tokenizer(source: Path, out_dir: Path):
    """Save a transformers tokenizer into out_dir from a tokenizer folder or a SentencePiece tokenizer.model."""
    from transformers import AutoTokenizer

    _check_tokenizer_source(source)
    if source.is_dir():
        tok = AutoTokenizer.from_pretrained(source)
    else:
        shutil.copyfile(source, out_dir / "tokenizer.model")
        # LLaMA-2's published HF tokenizer settings: BOS added, no EOS, non-legacy handling after specials
        cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
               "add_bos_token": True, "add_eos_token": False, "legacy": False, "clean_up_tokenization_spaces": False}
        (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tok = AutoTokenizer.from_pretrained(out_dir)
    tok.save_pretrained(out_dir)  # writes tokenizer.json: later loads need no sentencepiece
    return tok


def _fingerprint(src: LlamaSource, tok: Path, dtype: str | None) -> dict:
    files = sorted(src.directory.glob("consolidated.*.pth")) + [src.directory / "params.json"]
    toks = sorted(tok.iterdir()) if tok.is_dir() else [tok]
    return {"files": {str(f.resolve()): [f.stat().st_size, int(f.stat().st_mtime)] for f in files + toks
                      if f.is_file()}, "dtype": dtype, "shape": asdict(src.shape)}


def _progress(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="shard")
