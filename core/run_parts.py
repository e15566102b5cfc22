"""A run written piece by piece by a batch job (``python -m core run``), then made whole.

While the job runs, its folder holds ``job.json`` (what it does: inputs, settings, each image's
number), and for every finished image ``parts/NNNNNNN.parquet`` (its cells) and, written last,
``parts/NNNNNNN.json`` (its summary: the image is done), its label images and its display picture
where the finished run keeps them; ``progress.json`` says how far it got. No ``run.json`` yet: the
Results page lists it as being written (:func:`job_progress`), and opens it once it is whole.

A job started again on the same folder skips every image with a summary (:func:`done_numbers`).
:func:`combine_parts` streams the parts into one Parquet file, part by part, so memory stays that
of one image's cells whatever the screen's size. Plain files and pyarrow: written by any worker
that sees the folder (one machine, or a shared file system for a cluster).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

JOB_FILE, PROGRESS_FILE, FAILURES_FILE, PARTS = "job.json", "progress.json", "failures.csv", "parts"
DIGITS = 7  # image numbers in part names: ten million images sort as text


def part_path(folder: Path, number: int, suffix: str) -> Path:
    return Path(folder) / PARTS / f"{number:0{DIGITS}d}{suffix}"


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all (a temporary name, then one rename): a job killed
    mid-write leaves no half file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_part(folder: Path, number: int, cells: pd.DataFrame, summary: Mapping[str, Any]) -> None:
    """One finished image: its cells as a Parquet part, then its summary, which marks it done."""
    table = pa.Table.from_pandas(cells, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(part_path(folder, number, ".parquet"), sink.getvalue().to_pybytes())
    write_atomic(part_path(folder, number, ".json"), json.dumps(dict(summary), default=_plain).encode())


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{value!r} is not JSON")


def done_numbers(folder: Path) -> set[int]:
    """The numbers of the images finished already (their summary written)."""
    parts = Path(folder) / PARTS
    if not parts.is_dir():
        return set()
    return {int(p.stem) for p in parts.glob("*.json") if p.stem.isdigit()}


def iter_summaries(folder: Path, numbers: Iterable[int]) -> Iterator[dict[str, Any]]:
    """The summaries of ``numbers``' images, in that order, one at a time."""
    for n in numbers:
        yield json.loads(part_path(folder, n, ".json").read_text())


def combine_parts(folder: Path, numbers: Sequence[int], target: Path) -> tuple[int, list[str]]:
    """The parts of ``numbers`` (in that order) streamed into one Parquet file at ``target``, one
    row group per part; parts whose columns differ (another channel layout) are widened to every
    column, missing values null. Returns the rows and the columns."""
    paths = [part_path(folder, n, ".parquet") for n in numbers]
    schemas = [pq.read_schema(p) for p in paths]
    if not schemas:
        empty = pd.DataFrame({"cell_id": pd.Series(dtype=str), "image": pd.Series(dtype=str)})
        target.parent.mkdir(parents=True, exist_ok=True)
        empty.to_parquet(target, index=False)
        return 0, list(empty.columns)
    schema = pa.unify_schemas([_without_null_types(s) for s in schemas], promote_options="permissive")
    schema = schema.remove_metadata()
    rows = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(target, schema) as writer:
        for path in paths:
            part = pq.read_table(path).replace_schema_metadata(None)
            columns = [part[f.name].cast(f.type) if f.name in part.column_names else pa.nulls(len(part), f.type)
                       for f in schema]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            rows += len(part)
    return rows, schema.names


def _without_null_types(schema: pa.Schema) -> pa.Schema:
    """A part with no cells has columns of no type (null): they take the other parts' types."""
    return pa.schema([f for f in schema if not pa.types.is_null(f.type)])


@dataclass(frozen=True)
class JobProgress:
    """How far a job got: images done, failed and in all, its rate and when it last said so."""

    state: str  # running, finishing (every image through: the run's tables and map being made), interrupted, done
    done: int
    failed: int
    total: int
    rate: float  # images per second over the last stretch
    updated: float  # time.time() of the last word

    @property
    def fraction(self) -> float:
        return (self.done + self.failed) / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        left = self.total - self.done - self.failed
        return left / self.rate if self.rate > 0 and left > 0 else None

    @property
    def stale(self) -> bool:
        """A working job that has said nothing for a minute: it was killed (or its machine lost)."""
        return self.state in ("running", "finishing") and time.time() - self.updated > STALE_S

    def words(self) -> str:
        """``being written: 340 of 10,000 images (3%), 2 failed, 5 min left`` or what it became."""
        from core.text import duration, plural

        failed = f", {self.failed} failed" if self.failed else ""
        counts = f"{self.done:,} of {plural(self.total, 'image')} ({self.fraction:.0%}){failed}"
        if self.state == "finishing" and not self.stale:
            return f"being written: every image through ({counts}); making the run's tables and cell map"
        if self.state == "running" and not self.stale:
            eta = f", {duration(self.eta_s)} left" if self.eta_s is not None else ""
            return f"being written: {counts}{eta}"
        return f"stopped part-way: {counts}; run the same command again to finish it"


STALE_S = 60.0


def write_progress(folder: Path, progress: JobProgress) -> None:
    write_atomic(Path(folder) / PROGRESS_FILE, json.dumps(vars(progress)).encode())


def job_progress(folder: Path) -> JobProgress | None:
    """The job's last word on its progress (None where no job wrote one, or it cannot be read)."""
    try:
        data = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        return JobProgress(**{k: data[k] for k in ("state", "done", "failed", "total", "rate", "updated")})
    except (OSError, ValueError, KeyError, TypeError):
        return None
