"""Finding and reading MERT/HuBERT checkpoints, and mapping their keys onto HubertModel's, as data.

Sources: a local directory, or a Hugging Face Hub id (downloaded with huggingface_hub into its cache).
Weights: model.safetensors (optionally sharded with model.safetensors.index.json), or the legacy
pytorch_model.bin read with torch.load(weights_only=True). Every checkpoint key must end up either as a
model parameter or in IGNORABLE_KEYS; any missing, unexpected or mis-shaped key is a CheckpointError.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from mu_llama.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX = "model.safetensors.index.json"

# Keys MERT/HuBERT checkpoints carry that are not part of the frozen encoder: dropped on purpose.
IGNORABLE_KEYS = (
    "masked_spec_embed",  # SpecAugment's learned mask vector: training only (we build HubertModel without it)
    "label_embs_concat",  # HuBERT/MERT pretraining: embeddings of the k-means / codec target labels
    "final_proj.*",  # HuBERT/MERT pretraining: projection head onto the label embeddings
)
# Prefixes under which wrapper classes store the encoder (MERTModel.base_model_prefix, Hubert* heads, generic).
KEY_PREFIXES = ("mert_model.", "hubert.", "model.")
# Old torch weight_norm names -> torch.nn.utils.parametrizations names HubertModel uses today.
RENAMES = (
    (re.compile(r"^(encoder\.pos_conv_embed\.conv)\.weight_g$"), r"\1.parametrizations.weight.original0"),
    (re.compile(r"^(encoder\.pos_conv_embed\.conv)\.weight_v$"), r"\1.parametrizations.weight.original1"),
)
_POS_CONV = "encoder.pos_conv_embed.conv"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name


def resolve_source(source: str | Path, *, revision: str | None = None) -> Path:
    """A local model directory, or a hub id fetched into the Hugging Face cache (config + one weights file)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(path, "not a directory (expected a folder with config.json and model weights)")
        return path
    if not HUB_ID.match(str(source)):
        raise CheckpointError(source, "no such directory, and not a Hugging Face Hub id (owner/name)")
    return _download(str(source), revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError  # remote "no such file" and offline "not cached" alike

    def fetch(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=revision))

    try:
        config = fetch("config.json")
        try:
            fetch("preprocessor_config.json")
        except EntryNotFoundError:  # absent remotely, or not cached when offline: do_normalize defaults to True
            pass
        last: Exception | None = None
        for name in WEIGHT_FILES:  # prefer safetensors; MERT repos ship both, so fetch only one
            try:
                fetch(name)
                break
            except EntryNotFoundError as e:  # remote: not in the repo; offline: not in the cache
                last = e
        else:
            raise CheckpointError(repo_id, f"no {' or '.join(WEIGHT_FILES)} available ({type(last).__name__})")
    except CheckpointError:
        raise
    except Exception as e:  # network, auth, offline mode: one clear line
        raise CheckpointError(repo_id, f"could not fetch from the Hugging Face Hub ({type(e).__name__}: {e})") from None
    return config.parent


def read_state_dict(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Load the raw tensors of the checkpoint in `directory`; returns (tensors, file read)."""
    from safetensors.torch import load_file

    index = directory / SHARD_INDEX
    try:
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(load_file(directory / shard))
            return tensors, index
        st = directory / "model.safetensors"
        if st.is_file():
            return load_file(st), st
        pt = directory / "pytorch_model.bin"
        if pt.is_file():
            raw = torch.load(pt, map_location="cpu", weights_only=True)
            if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
                raise CheckpointError(pt, "not a flat state dict of tensors")
            return dict(raw), pt
    except CheckpointError:
        raise
    except Exception as e:  # truncated file, bad header, pickle refused by weights_only, ...
        raise CheckpointError(directory, f"unreadable checkpoint ({type(e).__name__}: {e})") from None
    raise CheckpointError(directory, f"no weights: expected {' or '.join(WEIGHT_FILES)}")


def map_state_dict(raw: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size],
                   path: str | Path) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to HubertModel's `expected` keys; fail on anything missing, unknown or mis-shaped."""
    keys = dict(raw)
    # 1. Strip a wrapper prefix when the encoder lives under one (then un-prefixed keys are heads/extras).
    if not any(k.startswith("feature_extractor.") for k in keys):
        for prefix in KEY_PREFIXES:
            if any(k.startswith(prefix + "feature_extractor.") for k in keys):
                keys = {k.removeprefix(prefix): v for k, v in keys.items()}
                break
    # 2. Old weight-norm names.
    renamed = {}
    for k, v in keys.items():
        for pattern, repl in RENAMES:
            k = pattern.sub(repl, k)
        renamed[k] = v
    # 3. A plain positional-conv weight (weight norm folded away): split it back into g and v exactly.
    plain = f"{_POS_CONV}.weight"
    g_key, v_key = f"{_POS_CONV}.parametrizations.weight.original0", f"{_POS_CONV}.parametrizations.weight.original1"
    if plain in renamed and plain not in expected and g_key in expected and g_key not in renamed:
        w = renamed.pop(plain)
        renamed[g_key] = torch.norm_except_dim(w, 2, 2)  # (1, 1, K): norm over all dims but the kernel axis
        renamed[v_key] = w
    # 4. Drop known extras; everything else must match exactly.
    ignored = [k for k in renamed if k not in expected and any(fnmatch.fnmatchcase(k, p) for p in IGNORABLE_KEYS)]
    for k in ignored:
        del renamed[k]
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {', '.join(unexpected)}")
        raise CheckpointError(path, "; ".join(parts))
    bad = [f"{k} {tuple(renamed[k].shape)} != {tuple(shape)}" for k, shape in expected.items()
           if tuple(renamed[k].shape) != tuple(shape)]
    if bad:
        raise CheckpointError(path, f"shape mismatch: {'; '.join(bad)}")
    return renamed


def to_mert_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HubertModel keys -> the layout MERT's hub checkpoints use (old weight-norm names g/v)."""
    out = {}
    for k, v in state.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v.detach().contiguous()
    return out
