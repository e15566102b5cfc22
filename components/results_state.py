"""The Results page's data: the saved runs as a table, one run read once per server (a bounded
cache keyed by its name and its ``run.json``'s time, shared read-only by every session), what its
tables say (cells per image, F1 per model, a measurement's spread), and the choices that live in
the address (``?run=``, ``?view=``, ``?measure=``) so that a copied link shows the same view."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from components.workspace import Kept
from core.cache import BoundedCache
from core.runs import RUN_FILE, Run, RunInfo, open_run

# The run, its view and the measurement shown live in the address, not in the workspace: see NOT_KEPT
# in tests/test_workspace_kept.py. The search text is kept like any page's setting.
KEPT = Kept(widgets=("res.search",))
LIST_COLUMNS = ("name", "date", "kinds", "images", "cells", "models", "key numbers", "note", "owner")


@st.cache_resource(show_spinner=False)
def run_store() -> BoundedCache:
    """Runs read from disk, shared by every session: a few runs' tables at once."""
    return BoundedCache(max_entries=8)


def load_run(info: RunInfo) -> Run:
    """``info``'s run, read from disk once; a run saved again under the same name (after a delete)
    has another ``run.json`` time, so it is read afresh."""
    stamp = (info.path / RUN_FILE).stat().st_mtime_ns
    return run_store().get_or_compute((str(info.path), stamp),
                                      lambda: open_run(info.name, info.path.parent))


def date_text(created: str) -> str:
    """``2026-12-07T13:50:02+00:00`` as ``2026-12-07 13:50 UTC``."""
    try:
        when = pd.Timestamp(created)
    except ValueError:
        return created
    if pd.isna(when):  # an unreadable run.json: no date
        return created
    return when.strftime("%Y-%m-%d %H:%M") + (" UTC" if when.tzinfo is not None else "")


def numbers_text(numbers: dict[str, Any]) -> str:
    return " · ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items())


def runs_table(infos: Sequence[RunInfo]) -> pd.DataFrame:
    """One row per run, as the list shows it."""
    rows = [{"name": i.name, "date": date_text(i.created), "kinds": ", ".join(i.kinds), "images": i.images,
             "cells": i.cells, "models": ", ".join(i.models), "key numbers": numbers_text(i.numbers), "note": i.note,
             "owner": i.owner or ""} for i in infos]
    return pd.DataFrame(rows, columns=list(LIST_COLUMNS)).astype({"cells": "Int64"})


def search_runs(table: pd.DataFrame, text: str) -> pd.DataFrame:
    """The rows holding every word of ``text`` (case ignored) somewhere among their cells."""
    words = text.lower().split()
    if not words:
        return table
    rows = table.map(lambda v: "" if pd.isna(v) else str(v)).agg(" ".join, axis=1).str.lower()  # a run without cells too
    return table[[all(w in row for w in words) for row in rows]]


def cells_per_image(run: Run) -> pd.DataFrame | None:
    """image, batch, condition, cells (and model, where the counts are each model's objects): from
    a segmentation's summary, else a per-cell table, else a comparison's object counts."""
    seg = run.analysis("segmentation")
    if seg is not None and "summary" in seg.tables:
        return seg.tables["summary"][["image", "batch", "condition", "cells"]]
    for kind in ("segmentation", "cellmap"):
        if (a := run.analysis(kind)) is not None and "cells" in a.tables:
            cells = a.tables["cells"]
            return cells.groupby(["image", "batch", "condition"], sort=False).size().rename("cells").reset_index()
    if (compare := run.analysis("compare")) is not None and "scores" in compare.tables:
        scores = compare.tables["scores"]
        return scores[["image", "batch", "condition", "model", "objects"]].rename(columns={"objects": "cells"})
    return None


def cells_table(run: Run) -> pd.DataFrame | None:
    """The run's per-cell measurements (a segmentation's, else a cell map's)."""
    for kind in ("segmentation", "cellmap"):
        if (a := run.analysis(kind)) is not None and "cells" in a.tables:
            return a.tables["cells"]
    return None


def measurements(cells: pd.DataFrame) -> list[str]:
    """The columns worth plotting: numbers measured on cells, not ids, positions or features."""
    skip = {"label", "image_index", "x", "y", "cluster"}
    return [c for c in cells.columns if pd.api.types.is_numeric_dtype(cells[c]) and c not in skip
            and not c.startswith(("f_", "bbox_", "centroid_"))]


def spread(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per batch and condition: n, the 5th, 25th, 50th, 75th and 95th percentiles of ``column``,
    computed here so that a million cells send a few numbers to the browser, not a million."""
    groups = cells.groupby(["batch", "condition"], sort=True)[column]
    out = groups.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    out.columns = ["p5", "q1", "median", "q3", "p95"]
    return out.assign(n=groups.size()).reset_index()


def f1_by_model(run: Run) -> pd.DataFrame | None:
    """Per model, over the images with ground truth: mean precision, recall, F1 and images scored."""
    compare = run.analysis("compare")
    if compare is None or "scores" not in compare.tables:
        return None
    scores = compare.tables["scores"].dropna(subset=["f1"])
    if scores.empty:
        return None
    table = scores.groupby("model", sort=False).agg(images=("image", "size"), precision=("precision", "mean"),
                                                    recall=("recall", "mean"), f1=("f1", "mean"))
    return table.reset_index()


def json_file(run: Run, kind: str, name: str) -> dict[str, Any] | None:
    analysis = run.analysis(kind)
    if analysis is None or name not in analysis.files:
        return None
    try:
        return json.loads(analysis.files[name])
    except ValueError:
        return None


def run_zip(folder: Path) -> bytes:
    """The run's folder as a zip, under its own name: what the run is on disk (JSON, Parquet, files)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return buf.getvalue()


def from_link(key: str, param: str, options: Sequence[str], default: str | None = None) -> None:
    """Before the widget ``key`` is drawn: the address's ``?param=`` chooses (``default`` where it
    names no option), else what the widget held, else ``default``."""
    ss = st.session_state
    wanted = st.query_params.get(param)
    if wanted in options:
        ss[key] = wanted
    elif wanted is not None or ss.get(key) not in options:  # a link naming what is not here: nothing chosen
        ss[key] = default


def to_link(key: str, param: str) -> None:
    """A widget's ``on_change``: its value into the address."""
    value = st.session_state.get(key)
    if value is None:
        if param in st.query_params:
            del st.query_params[param]
    else:
        st.query_params[param] = value



def choices_from_link(key: str, param: str, options: Sequence[str]) -> None:
    """Before the multiselect ``key`` is drawn: the address's repeated ``?param=`` values that are
    options choose (none where the address has none of them), else what the widget held."""
    ss = st.session_state
    if param in st.query_params:
        ss[key] = [v for v in dict.fromkeys(st.query_params.get_all(param)) if v in options]
    else:
        ss[key] = [v for v in ss.get(key) or [] if v in options]


def choices_to_link(key: str, param: str) -> None:
    """A multiselect's ``on_change``: its values into the address as ``?param=a&param=b``."""
    values = list(st.session_state.get(key) or [])
    if values:
        st.query_params[param] = values
    elif param in st.query_params:
        del st.query_params[param]
