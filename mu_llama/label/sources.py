"""What to label: a directory tree, a glob, a file list (.txt/.lst), one file, or a Hugging Face `datasets` dataset
(a save_to_disk directory, or a hub id written `hf:owner/name[:config]`) with an Audio column.

A source enumerates `Item`s in a fixed order (sorted paths; dataset split then row order). That order, not completion
order, is the order of the final output. Sources are picklable: a dataset source reopens its (memory-mapped) dataset
lazily in whichever process reads it, so decode workers and Ray tasks receive only the spec.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from mu_llama.errors import ConfigError, choice_error

KINDS = ("auto", "files", "dataset", "hub")
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class Item:
    key: str                 # unique, stable id: the path as enumerated, or "split/row" for a dataset row
    index: int               # position in source order
    path: str | None = None  # the file to read (a dataset row's own path when it has no bytes)
    split: str | None = None
    row: int | None = None


class FileSource:
    """Paths from mu_llama.audio.iter_audio_files: directory walks keep broken links, loops and directories named
    like audio so that they reach the errors file instead of vanishing."""

    kind = "files"

    def __init__(self, spec: str | Path):
        self.spec = str(spec)

    def describe(self) -> str:
        return self.spec

    def items(self) -> list[Item]:
        from mu_llama.audio import iter_audio_files

        return [Item(key=str(p), index=i, path=str(p)) for i, p in enumerate(iter_audio_files(self.spec))]

    def read_bytes(self, item: Item) -> tuple[bytes | None, str]:
        return None, item.path  # files are decoded from disk (seekable: long files decode only the heard windows)

    def audio_ref(self, item: Item) -> dict:
        return {"path": os.path.abspath(item.path), "bytes": None}


class DatasetSource:
    """Rows of a datasets Dataset / DatasetDict. The audio column is read with Audio(decode=False): encoded bytes
    (or a path) that mu_llama.audio decodes; datasets' own decoder (torchcodec) is never needed."""

    kind = "dataset"

    def __init__(self, spec: str, *, split: str | None = None, audio_column: str | None = None):
        self.spec, self.split, self.audio_column = spec, split, audio_column
        self._splits = None  # {split: Dataset}, opened lazily per process

    def __getstate__(self):
        return {**self.__dict__, "_splits": None}

    def describe(self) -> str:
        return self.spec + (f" [{self.split}]" if self.split else "")

    @property
    def hub(self) -> bool:
        return self.spec.startswith(HUB_PREFIX)

    def splits(self) -> dict:
        if self._splits is None:
            self._splits = self._open()
        return self._splits

    def _open(self) -> dict:
        import datasets
        from datasets import Audio

        if self.hub:
            name, _, config = self.spec[len(HUB_PREFIX):].partition(":")
            try:
                loaded = datasets.load_dataset(name, config or None, split=self.split)
            except Exception as e:  # noqa: BLE001 - offline, unknown id, gated: one clear line
                raise ConfigError(f"cannot load hub dataset {name!r}: {type(e).__name__}: {e}") from None
        else:
            loaded = datasets.load_from_disk(self.spec)
        if isinstance(loaded, datasets.DatasetDict):
            if self.split is not None and self.split not in loaded:
                raise choice_error("split", self.split, list(loaded))
            parts = {self.split: loaded[self.split]} if self.split else dict(loaded)
        else:
            parts = {self.split or str(loaded.split or "train"): loaded}
        out = {}
        for name, ds in parts.items():
            col = self.audio_column or _audio_column(ds)
            if col not in ds.column_names:
                raise choice_error("audio column", col, ds.column_names)
            out[name] = (ds.cast_column(col, Audio(decode=False)), col)
        return out

    def items(self) -> list[Item]:
        import pyarrow.compute as pc

        items = []
        for split, (ds, col) in self.splits().items():
            paths = []
            for batch in ds.select_columns([col]).with_format("arrow").iter(batch_size=4096):
                paths += pc.struct_field(batch.column(col), "path").to_pylist()
            for row, p in enumerate(paths):
                items.append(Item(key=f"{split}/{row}", index=len(items), path=p, split=split, row=row))
        return items

    def read_bytes(self, item: Item) -> tuple[bytes | None, str]:
        ds, col = self.splits()[item.split]
        cell = ds[item.row][col] or {}
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return bytes(data), path or item.key
        if path and not self.hub and not os.path.isabs(path):  # relative paths are relative to the dataset dir
            path = os.path.join(self.spec, path)
        return None, path or item.key

    def audio_ref(self, item: Item) -> dict:
        ds, col = self.splits()[item.split]
        cell = ds[item.row][col] or {}
        return {"path": cell.get("path"), "bytes": cell.get("bytes")}


def _audio_column(ds) -> str:
    from datasets import Audio

    for name, feat in ds.features.items():
        if isinstance(feat, Audio):
            return name
    if "audio" in ds.column_names:
        return "audio"
    raise ConfigError(f"no Audio column among {ds.column_names}; pass audio_column=")


def open_source(spec: str | Path, *, kind: str = "auto", split: str | None = None,
                audio_column: str | None = None) -> FileSource | DatasetSource:
    """Pick the source type: "hf:..." is a hub dataset; a directory holding dataset_info.json / dataset_dict.json
    (save_to_disk) is a dataset; anything else (directory, glob, list, file) is files."""
    if kind not in KINDS:
        raise choice_error("source kind", kind, KINDS)
    spec = str(spec)
    if kind == "auto":
        if spec.startswith(HUB_PREFIX):
            kind = "hub"
        elif os.path.isdir(spec) and any(os.path.exists(os.path.join(spec, n))
                                         for n in ("dataset_info.json", "dataset_dict.json", "state.json")):
            kind = "dataset"
        else:
            kind = "files"
    if kind == "files":
        if not os.path.lexists(spec) and not glob.has_magic(spec):
            raise ConfigError(f"{spec}: no such file, directory or glob")
        return FileSource(spec)
    if kind == "hub" and not spec.startswith(HUB_PREFIX):
        spec = HUB_PREFIX + spec
    if kind == "dataset" and not os.path.isdir(spec):
        raise ConfigError(f"{spec}: not a datasets save_to_disk directory")
    return DatasetSource(spec, split=split, audio_column=audio_column)
