"""Saved runs: analyses kept on disk under a name, for the Results page and ``runs`` commands.

A run is one folder of the runs folder (``CELLSCOPE_RUNS_DIR``, by default
``$XDG_DATA_HOME/cellscope/runs``, i.e. ``~/.local/share/cellscope/runs``): ``run.json`` (its
name, date, owner and a summary: images, cells, models, key numbers) and, under ``analyses/``,
each :class:`~core.analysis.Analysis` as :meth:`~core.analysis.Analysis.save` writes it (a JSON
manifest with the input hashes, settings and provenance; tables as Parquet; files as they are).
Open formats only.

A run is written into a hidden folder and renamed into place in one step, ``run.json`` last, so a
run killed half-way is never listed (its leftover is hidden and swept by the next save). A name
is never overwritten; deleting renames the folder away first, so a half-deleted run is not
listed either.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from core.analysis import Analysis
from core.data.images import CellImage
from core.names import name_problem
from core.run_parts import JOB_FILE, JobProgress, job_progress
from core.saved_record import SavedTables

RUNS_ENV = "CELLSCOPE_RUNS_DIR"
# What reading a damaged run raises (a file missing, truncated or edited by hand): the pages say so
# for that run and go on.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, pa.ArrowException)
RUN_FILE = "run.json"
THUMBNAIL, THUMBNAIL_SIDE = "thumbnail.png", 96  # the first image, small: the list of runs shows it
IMAGE_INDEX = "images/index.parquet"  # image, batch, condition, height, width, scale, file (one display PNG each)
INDEX_COLUMNS = ("image", "batch", "condition", "height", "width", "scale", "file")
DISPLAY_SIDE = 768  # a saved display image's longer side at most: what the pages show, ~0.5 MB as PNG
FORMAT = 1
_PARTIAL, _DELETING = ".partial-", ".deleting-"
STALE_PARTIAL_S = 24 * 3600  # a hidden leftover this old is from a save that died: removed by the next save


def runs_dir() -> Path:
    """Where runs are kept: ``CELLSCOPE_RUNS_DIR``, else ``$XDG_DATA_HOME/cellscope/runs``."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "cellscope" / "runs"


@dataclass(frozen=True)
class RunInfo:
    """What a list of runs shows of one run, read from its ``run.json`` alone."""

    name: str
    created: str
    kinds: tuple[str, ...]
    images: int
    cells: int | None
    models: tuple[str, ...]
    owner: str | None
    path: Path
    numbers: dict[str, Any] = field(default_factory=dict)  # key numbers: mean F1 per model, plate-effect verdict, ...
    note: str = ""
    progress: JobProgress | None = None  # a batch job's run still being written (not openable yet)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "kinds": list(self.kinds), "images": self.images,
                "cells": self.cells, "models": list(self.models), "owner": self.owner, "numbers": self.numbers,
                "note": self.note, "being_written": None if self.progress is None else vars(self.progress)}


@dataclass(frozen=True)
class Run:
    info: RunInfo
    analyses: tuple[Analysis, ...]

    def analysis(self, kind: str) -> Analysis | None:
        """The run's first analysis of ``kind``, or None."""
        return next((a for a in self.analyses if a.kind == kind), None)

    def table(self, kind: str, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        """Table ``name`` of the run's ``kind`` analysis, only ``columns`` of it (all with None), read
        from its Parquet file (a table read whole already comes from memory); None where the run has
        no such analysis or table. KeyError naming them for columns the table lacks."""
        analysis = self.analysis(kind)
        info = analysis.table_info(name) if analysis is not None else None
        if info is None:
            return None
        if columns is not None and (missing := [c for c in columns if c not in info["columns"]]):
            raise KeyError(f"the {kind} table {name!r} has no column {', '.join(map(repr, missing))} "
                           f"(it has {', '.join(info['columns'])})")
        if isinstance(analysis.tables, SavedTables):
            return analysis.tables.read(name, columns)
        table = analysis.tables[name]
        return table if columns is None else table[list(columns)]

    def table_columns(self, kind: str, name: str) -> list[str]:
        """The columns of table ``name`` of the ``kind`` analysis, from its manifest ([] if none)."""
        analysis = self.analysis(kind)
        info = analysis.table_info(name) if analysis is not None else None
        return list(info["columns"]) if info else []

    def check_tables(self) -> None:
        """Read each saved table's Parquet footer (its schema: milliseconds whatever its size), so
        that a table cut short or overwritten raises here (:data:`READ_ERRORS`), not half-way
        through drawing a page."""
        import pyarrow.parquet as pq

        for analysis in self.analyses:
            if isinstance(analysis.tables, SavedTables):
                for name in analysis.tables:
                    pq.read_schema(analysis.tables.path(name))

    def numeric_columns(self, kind: str, name: str) -> list[str]:
        """The columns of table ``name`` holding numbers (or booleans), from the Parquet file's schema
        when the table is not in memory: no column is read."""
        analysis = self.analysis(kind)
        if analysis is None or name not in analysis.tables:
            return []
        tables = analysis.tables
        if isinstance(tables, SavedTables) and not tables.is_read(name):
            import pyarrow.parquet as pq
            import pyarrow.types as pt

            schema = pq.read_schema(tables.path(name))
            return [f.name for f in schema if pt.is_integer(f.type) or pt.is_floating(f.type) or pt.is_boolean(f.type)]
        table = tables[name]
        return [str(c) for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]

    def table_rows(self, kind: str, name: str) -> int:
        """The rows of table ``name`` of the ``kind`` analysis, from its manifest (0 if none)."""
        analysis = self.analysis(kind)
        info = analysis.table_info(name) if analysis is not None else None
        return int(info["rows"]) if info else 0


def _models(analysis: Analysis) -> list[str]:
    settings = analysis.settings
    if isinstance(settings.get("models"), dict):
        return list(settings["models"])
    return [str(settings[key]) for key in ("model", "segmenter", "family") if settings.get(key)]


def _numbers(analysis: Analysis) -> dict[str, Any]:
    """A few numbers that say what came out, for the list of runs."""
    numbers: dict[str, Any] = {}
    scores = analysis.tables.get("scores")
    if scores is not None and "f1" in scores.columns and len(scores):
        means = scores.dropna(subset=["f1"]).groupby("model")["f1"].mean()
        numbers.update({f"mean F1 {model}": round(float(f1), 4) for model, f1 in means.items()})
    summary = analysis.tables.get("summary")
    if summary is not None and "f1" in summary.columns and summary["f1"].notna().any():
        numbers[f"mean F1 {analysis.settings.get('model', 'recipe')}"] = round(float(summary["f1"].mean()), 4)
    if (cam_cells := analysis.table_info("cam_cells")) is not None:
        numbers["explained cells"] = int(cam_cells["rows"])
    if "classifier.json" in analysis.files:
        try:
            report = json.loads(analysis.files["classifier.json"])
            numbers["balanced accuracy"] = round(float(report["balanced_accuracy"]), 3)
            numbers["chance"] = round(float(report["chance"]), 3)
        except (ValueError, KeyError, TypeError):
            pass
    if "batch_effect.json" in analysis.files:
        try:
            verdict = json.loads(analysis.files["batch_effect.json"]).get("verdict")
        except ValueError:
            verdict = None
        if verdict:
            numbers["plate effect"] = verdict
    return numbers


def _cells(analysis: Analysis) -> int | None:
    """The cells the analysis found (an explanation's table holds only the cells it explained)."""
    info = analysis.table_info("cells")
    return int(info["rows"]) if info else None


def summary_of(name: str, analyses: Sequence[Analysis], *, owner: str | None = None, note: str = "",
               created: str | None = None) -> dict[str, Any]:
    """``run.json``'s content for ``analyses`` saved as ``name``."""
    images = {f.name for a in analyses for f in a.inputs}
    cells = [c for c in (_cells(a) for a in analyses) if c is not None]
    models = list(dict.fromkeys(m for a in analyses for m in _models(a)))
    numbers: dict[str, Any] = {}
    for analysis in analyses:
        numbers.update(_numbers(analysis))
    return {"format": FORMAT, "name": name, "created": created or datetime.now(UTC).isoformat(timespec="seconds"), "owner": owner, "note": note,
            "kinds": [a.kind for a in analyses], "images": len(images), "cells": max(cells) if cells else None,
            "models": models, "numbers": numbers}


def run_info(folder: Path, data: dict[str, Any]) -> RunInfo:
    """A run's :class:`RunInfo` from the content of its ``run.json``."""
    return RunInfo(name=data["name"], created=data["created"], kinds=tuple(data["kinds"]), images=int(data["images"]),
                   cells=data.get("cells"), models=tuple(data.get("models", ())), owner=data.get("owner"),
                   path=folder, numbers=dict(data.get("numbers", {})), note=data.get("note", ""))


def _sweep(root: Path) -> None:
    """Remove leftovers of saves and deletions that died (older than a day: a save may be running)."""
    for leftover in list(root.glob(f"{_PARTIAL}*")) + list(root.glob(f"{_DELETING}*")):
        try:
            if leftover.name.startswith(_DELETING) or time.time() - leftover.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def image_numbers(images: Sequence[CellImage], analyses: Sequence[Analysis]) -> dict[str, int]:
    """Each image's number in the run: its row of ``images/index.parquet`` (the order ``images``
    come in), then any other image an analysis read, in the order first read."""
    names = [img.name for img in images] + [f.name for a in analyses for f in a.inputs]
    return {name: i for i, name in enumerate(dict.fromkeys(names))}


def write_images(folder: Path, images: Sequence[CellImage], numbers: Mapping[str, int]) -> None:
    """``images/index.parquet`` and one display PNG per image (the pages' colour merge, its longer
    side at most :data:`DISPLAY_SIDE`; ``scale`` = display / full size), one image at a time."""
    from core.figures.display import encode_image, image_rgb, thumbnail

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(images):
        shown = thumbnail(image_rgb(img), DISPLAY_SIDE)
        if i == 0:  # the run's face in the list of runs
            (folder / THUMBNAIL).write_bytes(encode_image(thumbnail(shown, THUMBNAIL_SIDE), "png"))
        file = f"images/{numbers[img.name]:05d}.png"
        (folder / file).write_bytes(encode_image(shown, "png"))
        height, width = img.pixels.shape[:2]
        rows.append((img.name, img.batch, img.condition, height, width, shown.shape[1] / width, file))
    pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).astype({"height": "int64", "width": "int64", "scale": "float64"}) \
        .to_parquet(folder / IMAGE_INDEX, index=False)


def save_run(name: str, analyses: Sequence[Analysis], *, images: Sequence[CellImage] | None = None,
             owner: str | None = None, note: str = "", root: str | Path | None = None) -> RunInfo:
    """Save ``analyses`` as the run ``name``: ValueError if the name is not a file-safe name or is
    taken (a run is never overwritten). Written whole or not at all. With ``images``, also each
    image's display PNG and ``images/index.parquet`` (the Results page's image browser and crops);
    each analysis's label images are numbered as the index numbers their images."""
    if problem := name_problem(name, "run"):
        raise ValueError(problem)
    if not analyses:
        raise ValueError("a run holds at least one analysis; there is nothing to save yet")
    root = Path(root) if root is not None else runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    final = root / name
    if final.exists():
        raise ValueError(f"a run named {name!r} exists already in {root}: choose another name (runs are never "
                         "overwritten; delete the old one first if it should go)")
    partial = root / f"{_PARTIAL}{name}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        numbers = image_numbers(images or (), analyses)
        for i, analysis in enumerate(analyses):
            analysis.save(partial / "analyses" / f"{i:02d}-{analysis.kind}", numbers=numbers)
        if images:
            write_images(partial, images, numbers)
        data = summary_of(name, analyses, owner=owner, note=note)
        (partial / RUN_FILE).write_text(json.dumps(data, indent=2, sort_keys=True))  # last: it makes a run
        _fsync(partial / RUN_FILE)
        try:
            os.rename(partial, final)  # one step; refused when another save took the name meanwhile
        except OSError:
            raise ValueError(f"a run named {name!r} exists already in {root}: choose another name") from None
        _fsync(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return run_info(final, data)


def thumbnail_uri(info: RunInfo) -> str | None:
    """The run's thumbnail as a ``data:`` URI (about 10 KB), or None for a run saved without images.
    Read once per run (a run is never overwritten; one saved again after a delete has another date),
    not on every rerun of the list."""
    return _thumbnail_uri(str(info.path), info.created)


@functools.lru_cache(maxsize=1024)
def _thumbnail_uri(folder: str, created: str) -> str | None:
    import base64

    try:
        return "data:image/png;base64," + base64.b64encode((Path(folder) / THUMBNAIL).read_bytes()).decode()
    except OSError:
        return None


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Every complete run, newest first. A folder whose ``run.json`` cannot be read is listed with
    a note saying so rather than left out without a word."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not (folder / RUN_FILE).is_file():
            if (folder / JOB_FILE).is_file() and (being := _being_written(folder)) is not None:
                found.append(being)
            continue
        try:
            found.append(run_info(folder, json.loads((folder / RUN_FILE).read_text())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.append(RunInfo(folder.name, "", (), 0, None, (), None, folder,
                                 note=f"unreadable {RUN_FILE}: {exc}"))
    return sorted(found, key=lambda info: (info.created, info.name), reverse=True)


def _being_written(folder: Path) -> RunInfo | None:
    """A batch job's run not whole yet (``python -m core run``): listed with its progress, opened once whole."""
    progress = job_progress(folder)
    try:
        job = json.loads((folder / JOB_FILE).read_text())
        models = tuple(job["settings"]["models"])
        started = datetime.fromtimestamp((folder / JOB_FILE).stat().st_mtime, UTC).isoformat(timespec="seconds")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if progress is None:  # started, no image sent yet: stale a minute after it began, if it never goes on
        progress = JobProgress("running", 0, 0, len(job.get("images", {})), 0.0, float(job.get("started", 0)))
    return RunInfo(folder.name, started, ("segmentation",), progress.total, None, models, None, folder,
                   note=progress.words(), progress=progress)


def _folder(name: str, root: str | Path | None) -> Path:
    root = Path(root) if root is not None else runs_dir()
    folder = root / name
    if not name_problem(name, "run") and not (folder / RUN_FILE).is_file() and (folder / JOB_FILE).is_file():
        being = _being_written(folder)
        raise ValueError(f"the run {name!r} is not whole yet: {being.note if being else 'a batch job is writing it'}; "
                         "it can be opened once the job has written it")
    if name_problem(name, "run") or not (folder / RUN_FILE).is_file():
        known = ", ".join(info.name for info in list_runs(root)[:10]) or "none"
        raise ValueError(f"no run named {name!r} in {root} (runs: {known})")
    return folder


def open_run(name: str, root: str | Path | None = None) -> Run:
    """The run ``name``: its ``run.json`` and each analysis's manifest (settings, provenance, inputs);
    tables are read when first asked for, files and images each time."""
    folder = _folder(name, root)
    info = run_info(folder, json.loads((folder / RUN_FILE).read_text()))
    analyses = tuple(Analysis.load(path) for path in sorted((folder / "analyses").iterdir()) if path.is_dir())
    return Run(info, analyses)


def delete_run(name: str, root: str | Path | None = None) -> None:
    """Delete the run ``name``: it leaves the list at once (renamed away), then its files go."""
    folder = _folder(name, root)
    doomed = folder.parent / f"{_DELETING}{name}-{uuid.uuid4().hex[:8]}"
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
