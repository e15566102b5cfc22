"""Batch and condition labels: from a table, a filename pattern or folders."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.images import CellImage


@dataclass(frozen=True)
class BatchTable:
    """filename -> (batch, condition), keys without folders or extensions."""

    rows: dict[str, tuple[str, str]]


def _table_key(name: str) -> str:
    return PurePosixPath(name.strip()).stem if PurePosixPath(name.strip()).suffix else PurePosixPath(name.strip()).name


def parse_batch_table(data: bytes, sep: str = ",") -> BatchTable:
    """Parse a CSV/TSV with columns ``filename, batch[, condition]`` (header names case-insensitive)."""
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(data), sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"batch table could not be read ({exc}); save it as CSV or TSV") from exc
    columns = {c.strip().lower(): c for c in df.columns}
    name_col = next((columns[c] for c in ("filename", "file", "image", "name") if c in columns), None)
    if name_col is None or "batch" not in columns:
        raise ValueError(
            f"batch table needs the columns 'filename' and 'batch' (and optionally 'condition'); found {list(df.columns)}"
        )
    cond_col = columns.get("condition")
    rows = {}
    for _, r in df.iterrows():
        if not str(r[name_col]).strip():
            continue
        rows[_table_key(str(r[name_col]))] = (
            str(r[columns["batch"]]).strip() or "unassigned",
            str(r[cond_col]).strip() if cond_col else "",
        )
    if not rows:
        raise ValueError("batch table has no rows")
    return BatchTable(rows)


def apply_batch_table(images: Sequence[CellImage], table: BatchTable) -> tuple[list[CellImage], list[str]]:
    """Set batch/condition from the table; returns the images and the table names matching none."""
    out, used = [], set()
    for img in images:
        candidates = (img.name, PurePosixPath(img.name).name, _table_key(img.source.split(",")[0]))
        key = next((k for k in candidates if k in table.rows), None)
        if key is None:
            out.append(img)
            continue
        used.add(key)
        batch, condition = table.rows[key]
        out.append(img.with_(batch=batch, condition=condition or img.condition))
    return out, sorted(set(table.rows) - used)


def batches_from_pattern(names: Sequence[str], pattern: str) -> dict[str, str]:
    """Batch per image name from a regex with a named group ``batch`` (searched, not anchored).

    Names the pattern does not match are left out of the result.
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid pattern: {exc}") from exc
    if "batch" not in rx.groupindex:
        raise ValueError("the pattern needs a named group called batch, e.g. (?P<batch>plate\\d+)")
    found = {}
    for name in names:
        m = rx.search(name)
        if m and m["batch"]:
            found[name] = m["batch"]
    return found
