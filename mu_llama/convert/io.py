"""Reading foreign PyTorch pickles safely and writing (sharded) safetensors.

Foreign `.pth` files are loaded with `torch.load(weights_only=True)` only: tensors, containers and
primitive values. One extra type is allowed, `argparse.Namespace`, because the LLaMA-Adapter training
scripts (MU-LLaMA's included) save their command-line arguments next to the weights
(`{"model": ..., "optimizer": ..., "epoch": ..., "args": Namespace(...)}`); a Namespace is a plain
attribute bag and cannot run code. Anything else that needs a global fails with a CheckpointError.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mu_llama.errors import CheckpointError

SAFE_GLOBALS = (argparse.Namespace,)
DEFAULT_SHARD_BYTES = 2 * 1024**3  # HF-style shards of at most ~2 GiB


def load_pth(path: str | Path) -> object:
    """torch.load(path, weights_only=True) on CPU (memory-mapped when the file format allows it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "missing" if not path.exists() else "not a file")
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped: read them normally
                raise CheckpointError(path, f"cannot be read by torch.load ({_first_line(e)})") from None
        except pickle.UnpicklingError as e:
            raise CheckpointError(path, f"refused by torch.load(weights_only=True): {_first_line(e)}") from None
        except (EOFError, OSError, ValueError) as e:
            raise CheckpointError(path, f"not a readable PyTorch checkpoint ({_first_line(e)})") from None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(path, f"refused by torch.load(weights_only=True): {_first_line(e)}") from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(path, f"not a readable PyTorch checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    """The informative part of a torch.load error (its weights_only text puts the reason after 'WeightsUnpickler')."""
    text = " ".join(str(e).split())
    m = re.search(r"WeightsUnpickler error: (.+?)(?: was not an allowed global| Check the documentation|$)", text)
    if m:
        return m.group(1).strip()[:200]
    return (text or type(e).__name__)[:200]


def tensor_dict(obj: object, path: str | Path, *, key: str | None = None) -> dict[str, Tensor]:
    """The {name: tensor} state dict inside a loaded checkpoint: obj[key] when given/present, else obj itself."""
    if key is not None and isinstance(obj, Mapping) and key in obj:
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(path, f"expected a state dict{f' under {key!r}' if key else ''}, "
                                    f"found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(path, f"{len(bad)} entries are not named tensors: {', '.join(bad[:5])}")
    return dict(obj)


def save_sharded(state: Mapping[str, Tensor], directory: Path, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                 progress=None) -> list[Path]:
    """Write an HF-layout checkpoint: model.safetensors, or model-0000i-of-0000n.safetensors + index json."""
    from safetensors.torch import save_file

    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    written = []
    for fname, shard in zip(names, shards):
        save_file({k: v.contiguous() for k, v in shard.items()}, str(directory / fname), metadata={"format": "pt"})
        written.append(directory / fname)
        if progress is not None:
            progress.update(1)
    if n > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: fname for fname, shard in zip(names, shards) for k in shard}}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return written
