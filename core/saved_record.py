"""A saved analysis record's parts, read from its folder when asked for rather than all at once:
tables from their Parquet files (a run of a million cells opens by reading its manifests), files
and label images from disk each time. Also where a record's label images go in its folder."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.io.label_tiff import read_label_tiff

LABELS_TABLE = "labels"  # a saved record's table of its label images: image, model, file
Labels = Mapping[tuple[str, str], np.ndarray]  # (image name, model name) -> its label image


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One table (or some of its columns) from its Parquet file: the one place a saved table is read."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=None if columns is None else list(columns)).to_pandas()


class SavedTables(Mapping[str, pd.DataFrame]):
    """A saved record's tables, each read from its Parquet file when first asked for (then kept):
    opening a run of a million cells reads its manifests, not its tables. :meth:`read` reads a few
    columns without keeping them."""

    def __init__(self, folder: Path, info: Mapping[str, Mapping[str, Any]]) -> None:
        self._folder, self.info, self._read = folder, dict(info), {}

    def path(self, name: str) -> Path:
        return self._folder / "tables" / f"{name}.parquet"

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._read:
            if name not in self.info:
                raise KeyError(name)
            self._read[name] = _read_parquet(self.path(name))
        return self._read[name]

    def read(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``name``'s ``columns`` (all with None): from memory if read whole already, else from disk."""
        if name in self._read or columns is None:
            table = self[name]
            return table if columns is None else table[list(columns)]
        return _read_parquet(self.path(name), columns)

    def is_read(self, name: str) -> bool:
        """Whether table ``name`` is in memory already (read whole once)."""
        return name in self._read

    def __contains__(self, name: object) -> bool:  # Mapping's would read the table
        return name in self.info

    def __iter__(self) -> Iterator[str]:
        return iter(self.info)

    def __len__(self) -> int:
        return len(self.info)


class SavedFiles(Mapping[str, bytes]):
    """A saved record's files, read from disk each time one is asked for (never all at once)."""

    def __init__(self, folder: Path, hashes: Mapping[str, str]) -> None:
        self._folder, self.hashes = folder, dict(hashes)

    def __getitem__(self, name: str) -> bytes:
        if name not in self.hashes:
            raise KeyError(name)
        return (self._folder / "files" / name).read_bytes()

    def __contains__(self, name: object) -> bool:  # Mapping's would read the file
        return name in self.hashes

    def __iter__(self) -> Iterator[str]:
        return iter(self.hashes)

    def __len__(self) -> int:
        return len(self.hashes)


class SavedLabels(Mapping[tuple[str, str], np.ndarray]):
    """A saved record's label images by (image, model), each read from its TIFF when asked for."""

    def __init__(self, folder: Path, files: Mapping[tuple[str, str], str]) -> None:
        self._folder, self.files = folder, files  # read when first used

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        return read_label_tiff(self._folder / self.files[key])

    def tiff(self, key: tuple[str, str]) -> bytes:
        """The TIFF file of ``key`` as saved."""
        return (self._folder / self.files[key]).read_bytes()

    def __contains__(self, key: object) -> bool:  # Mapping's would read the TIFF
        return key in self.files

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def model_folder(model: str) -> str:
    """A model's name as a folder name: characters other than letters, digits, '.', '_' and '-'
    become '_' ("ground truth" -> "ground_truth"), never '.' or '..'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model).strip(".") or "model"


def label_files(labels: Labels, numbers: Mapping[str, int]) -> dict[tuple[str, str], str]:
    """Where each label image goes in a saved record: ``labels/<model folder>/<image number>.tif``,
    the number being the image's row in the run's ``images/index.parquet``. Two models whose folder
    names clash get ``-2``, ``-3``... (a model name is kept whole in the ``labels`` table)."""
    folders: dict[str, str] = {}
    for model in dict.fromkeys(m for _, m in labels):
        folder, n = model_folder(model), 1
        while folder in folders.values():
            n += 1
            folder = f"{model_folder(model)}-{n}"
        folders[model] = folder
    return {(image, model): f"labels/{folders[model]}/{numbers[image]:05d}.tif" for image, model in labels}


class _LabelFiles(Mapping[tuple[str, str], str]):
    """(image, model) -> TIFF path of a saved record, from its ``labels`` table read when first used."""

    def __init__(self, tables: SavedTables) -> None:
        self._tables, self._files = tables, None

    def _read(self) -> dict[tuple[str, str], str]:
        if self._files is None:
            table = self._tables[LABELS_TABLE]
            self._files = {(str(i), str(m)): str(f) for i, m, f in zip(table["image"], table["model"], table["file"],
                                                                          strict=True)}
        return self._files

    def __getitem__(self, key: tuple[str, str]) -> str:
        return self._read()[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def saved_labels(folder: Path, tables: SavedTables) -> Labels:
    if LABELS_TABLE not in tables.info:
        return {}
    return SavedLabels(folder, _LabelFiles(tables))
