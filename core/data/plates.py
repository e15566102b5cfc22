"""Batch and condition labels: from a table, a filename pattern or folders."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.data.images import UNASSIGNED, CellImage


@dataclass(frozen=True)
class BatchTable:
    """filename -> (batch, condition), keys without folders or extensions."""

    rows: dict[str, tuple[str, str]]


def _table_key(name: str) -> str:
    """The image name a table row refers to: no folders (Windows backslashes too), no extension."""
    path = PurePosixPath(name.strip().replace("\\", "/"))
    return path.stem if path.suffix else path.name


def _table_text(data: bytes) -> str:
    """The table's text. Excel saves UTF-8 with a byte-order mark, or the Windows code page
    (a 'µM' condition is then not UTF-8)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_batch_table(data: bytes, sep: str = ",") -> BatchTable:
    """Parse a CSV/TSV with columns ``filename, batch[, condition]`` (header names case-insensitive).

    A header without ``sep`` but with ';' or a tab uses that instead, as Excel writes CSV in
    locales where the comma is the decimal mark.
    """
    import pandas as pd

    text = _table_text(data)
    header = text.lstrip("\r\n").partition("\n")[0]
    if sep not in header:
        sep = next((s for s in (",", ";", "\t") if s in header), sep)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
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
            str(r[columns["batch"]]).strip() or UNASSIGNED,
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
