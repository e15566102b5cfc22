"""An analysis as one record: what ran (kind, settings, provenance), on which images (names and
content hashes), and what it made (tables, files). Every pipeline returns one (workflows/); the CLI
writes its files, the pages offer them as downloads, and :meth:`Analysis.save` / :meth:`Analysis.load`
keep a whole record in a folder or a zip (a JSON manifest, the tables as Parquet, the files as they
are) for saved runs.

Also the provenance dict's text forms: ``provenance.json``, its id, and its columns on a CSV
(:func:`with_provenance`). The dict itself is made by :func:`workflows.provenance.provenance`,
which asks the model registry."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.images import CellImage
from core.io.label_tiff import label_tiff_bytes, read_label_tiff
from core.saved_record import LABELS_TABLE, Labels, SavedFiles, SavedLabels, SavedTables, label_files, saved_labels

PROVENANCE_FILE = "provenance.json"
PROVENANCE_COLUMNS = ("cellscope", "device", "provenance_id")  # always added; "weights", "settings" when known
MANIFEST_FILE = "analysis.json"


@dataclass(frozen=True)
class InputFile:
    """One image an analysis read: its name, the content hash of its pixels (and of its ground
    truth), and the batch and condition it was given."""

    name: str
    pixels_hash: str
    gt_hash: str | None = None
    batch: str = ""
    condition: str = ""
    channels: tuple[tuple[str, str], ...] = ()  # (name, role) of each channel, in order

    def __post_init__(self) -> None:  # from JSON the pairs come back as lists
        object.__setattr__(self, "channels", tuple((str(n), str(r)) for n, r in self.channels))


def inputs_of(images: Sequence[CellImage]) -> tuple[InputFile, ...]:
    """The input manifest of ``images``, from the hashes each CellImage carries."""
    return tuple(InputFile(img.name, img.hash, img.gt_hash, img.batch, img.condition,
                           tuple((c.name, c.role) for c in img.channels)) for img in images)


class LazyFiles(Mapping[str, bytes]):
    """Files made only when read (a map's HTML of 100,000 cells takes seconds), each once."""

    def __init__(self, makers: Mapping[str, Callable[[], bytes | str]]) -> None:
        self._makers, self._made = dict(makers), {}

    def __getitem__(self, name: str) -> bytes:
        if name not in self._made:
            made = self._makers[name]()
            self._made[name] = made.encode() if isinstance(made, str) else made
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


class LazyLabels(Mapping[tuple[str, str], np.ndarray]):
    """Label images made each time one is read (e.g. decoded from a zip the record holds anyway),
    so a record kept for *Save as run* does not hold every image's labels a second time."""

    def __init__(self, makers: Mapping[tuple[str, str], Callable[[], np.ndarray]]) -> None:
        self._makers = dict(makers)

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        return self._makers[key]()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Analysis:
    """One run of a pipeline: ``kind`` (``cellmap``, ``explain``, ``segmentation``, ...), the images
    it read, its settings, its provenance (:func:`workflows.provenance.provenance`), its tables by
    name and its files by relative path (what the CLI writes into its folder)."""

    kind: str
    inputs: tuple[InputFile, ...]
    settings: dict[str, Any]
    provenance: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    # Each model's label images, kept apart from ``files`` (which the CLI writes into its folder, and
    # whose zips hold them already): saved as TIFFs with a ``labels`` table only into a run's folder.
    labels: Labels = field(default_factory=dict)

    def table_info(self, name: str) -> dict[str, Any] | None:
        """``{"rows": n, "columns": [...]}`` of table ``name`` (None if there is none), without
        reading a saved table."""
        if isinstance(self.tables, SavedTables):
            return self.tables.info.get(name)
        if name not in self.tables:
            return None
        table = self.tables[name]
        return {"rows": len(table), "columns": [str(c) for c in table.columns]}

    def manifest(self) -> dict[str, Any]:
        """Everything but the tables' rows and the files' bytes, as JSON values (a saved record's
        own, without reading its tables or files)."""
        hashes = self.files.hashes if isinstance(self.files, SavedFiles) else \
            {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}
        tables = {name: self.table_info(name) for name in self.tables}
        if not isinstance(self.tables, SavedTables) and self.labels:
            tables[LABELS_TABLE] = {"rows": len(self.labels), "columns": ["image", "model", "file"]}
        return {"kind": self.kind, "created": self.created,
                "inputs": [vars(f) for f in self.inputs], "settings": jsonable(self.settings),
                "provenance": self.provenance, "tables": tables, "files": hashes}

    def image_numbers(self) -> dict[str, int]:
        """Each input image's position: the default numbering of saved label images."""
        return {f.name: i for i, f in enumerate(self.inputs)}

    def write_files(self, folder: str | Path) -> list[Path]:
        """Write :attr:`files` into ``folder`` (made if needed); returns the paths written."""
        out, written = Path(folder), []
        for name, data in self.files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
        return written

    def _members(self, numbers: Mapping[str, int] | None) -> Iterator[tuple[str, bytes]]:
        yield MANIFEST_FILE, json.dumps(self.manifest(), indent=2, sort_keys=True).encode()
        tables = dict(self.tables)
        if self.labels:
            if LABELS_TABLE in tables:  # a saved record saved again: where its TIFFs were
                known = tables[LABELS_TABLE]
                where = dict(zip(zip(known["image"], known["model"], strict=True), known["file"], strict=True))
            else:
                where = label_files(self.labels, numbers if numbers is not None else self.image_numbers())
                tables[LABELS_TABLE] = pd.DataFrame([(image, model, path) for (image, model), path in where.items()],
                                                    columns=["image", "model", "file"])
            for key, path in where.items():  # one image's TIFF at a time
                yield path, (self.labels.tiff(key) if isinstance(self.labels, SavedLabels)
                             else label_tiff_bytes(self.labels[key]))
        for name, table in tables.items():
            buf = io.BytesIO()
            table.to_parquet(buf, index=False)
            yield f"tables/{name}.parquet", buf.getvalue()
        for name, data in self.files.items():
            yield f"files/{name}", data

    def save(self, where: str | Path, *, numbers: Mapping[str, int] | None = None) -> Path:
        """The whole record in a folder, or in a zip when ``where`` ends in ``.zip``: its manifest,
        tables as Parquet, files, and its label images as ``labels/<model>/<number>.tif`` with the
        table ``labels`` (image, model, file), ``numbers`` numbering the images (a run's
        ``images/index.parquet`` rows; by default the record's own input order)."""
        where = Path(where)
        if where.suffix.lower() == ".zip":
            with zipfile.ZipFile(where, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in self._members(numbers):
                    zf.writestr(name, data)
            return where
        for name, data in self._members(numbers):
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(data)
        return where

    @classmethod
    def load(cls, where: str | Path) -> Analysis:
        """A record :meth:`save` wrote. From a folder only the manifest is read: tables are read
        when first asked for, files and label images each time; a zip is read whole."""
        where = Path(where)
        if where.suffix.lower() == ".zip":
            with zipfile.ZipFile(where) as zf:
                members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
            if MANIFEST_FILE not in members:
                raise ValueError(f"{where}: no {MANIFEST_FILE}; not a saved analysis")
            manifest = json.loads(members[MANIFEST_FILE])
            tables = {name: pd.read_parquet(io.BytesIO(members[f"tables/{name}.parquet"]))
                      for name in manifest["tables"]}
            files = {name: members[f"files/{name}"] for name in manifest["files"]}
            labels: Labels = {}
            if LABELS_TABLE in tables:
                labels = {(r.image, r.model): read_label_tiff(members[r.file])
                          for r in tables[LABELS_TABLE].itertuples()}
        else:
            if not (where / MANIFEST_FILE).is_file():
                raise ValueError(f"{where}: no {MANIFEST_FILE}; not a saved analysis")
            manifest = json.loads((where / MANIFEST_FILE).read_bytes())
            expected = [f"tables/{name}.parquet" for name in manifest["tables"]] + [f"files/{n}" for n in manifest["files"]]
            if missing := [name for name in expected if not (where / name).is_file()]:  # a stat each: cheap
                raise ValueError(f"{where} is damaged: {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''} "
                                 f"{'is' if len(missing) == 1 else 'are'} missing (a copy or an edit by hand?)")
            tables = SavedTables(where, manifest["tables"])
            files = SavedFiles(where, manifest["files"])
            labels = saved_labels(where, tables)
        return cls(kind=manifest["kind"], inputs=tuple(InputFile(**f) for f in manifest["inputs"]),
                   settings=manifest["settings"], provenance=manifest["provenance"], tables=tables, files=files,
                   created=manifest["created"], labels=labels)


def jsonable(value: Any) -> Any:
    """Settings as JSON values: a Recipe as its dict, numpy scalars as numbers, tuples as lists."""
    from core.segmentation.recipe import Recipe

    if isinstance(value, Recipe):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"setting {value!r} ({type(value).__name__}) has no JSON form")


def cellscope_version(prov: Mapping[str, Any]) -> str:
    """``0.4.0``, or ``0.4.0 (git 1a2b3c4-dirty)`` when ``prov`` was made in a clone."""
    version, commit = prov["cellscope"]["version"], prov["cellscope"]["commit"]
    return version if commit is None else f"{version} (git {commit})"


def provenance_json(prov: Mapping[str, Any]) -> str:
    """The text of ``provenance.json``: indented, keys sorted."""
    return json.dumps(prov, indent=2, sort_keys=True)


def provenance_id(prov: Mapping[str, Any]) -> str:
    """"p" and 11 hex characters naming everything in ``prov`` but its creation time: the same
    settings, versions and device give the same id, so a CSV row can point at its ``provenance.json``.
    The letter first keeps it text in spreadsheets and CSV readers: a bare digest such as
    ``5306392e3405`` is read as a number (infinity), ``012345678901`` loses its zero."""
    timeless = {k: v for k, v in prov.items() if k != "created"}
    return "p" + hashlib.sha256(provenance_json(timeless).encode()).hexdigest()[:11]


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def with_provenance(df: pd.DataFrame, prov: Mapping[str, Any]) -> pd.DataFrame:
    """``df`` with provenance columns appended: ``cellscope`` (version and commit), ``device`` (kept
    as it is where the table has one: it is what each row actually ran on, e.g. the classical model
    always on the CPU) and ``provenance_id``. A table with a ``model`` column also gets ``weights``
    (the weights file, or "none") and ``settings`` (that model's settings as compact JSON); a table
    without one gets ``settings`` = ``{"recipe": ...}`` when ``prov`` has a recipe.

    Columns rather than ``#`` header lines: spreadsheets and ``pandas.read_csv`` read them without
    options, and rows keep their provenance when tables are filtered or concatenated. The cost is
    the same text on every row (zips compress it away).
    """
    extra: dict[str, Any] = {"cellscope": cellscope_version(prov)}
    if "device" not in df.columns:
        extra["device"] = prov["device"]
    extra["provenance_id"] = provenance_id(prov)
    if "model" in df.columns:
        entries = prov["models"]
        missing = sorted(set(df["model"]) - set(entries))
        if missing:
            raise ValueError(f"provenance has no settings for model(s) {', '.join(missing)}")
        extra["weights"] = df["model"].map(lambda m: entries[m]["weights"]["file"] if entries[m]["weights"] else "none")
        extra["settings"] = df["model"].map(lambda m: _compact(entries[m]["settings"]))
    elif prov["recipe"] is not None:
        extra["settings"] = _compact({"recipe": prov["recipe"]})
    return df.assign(**extra)
