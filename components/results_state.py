"""The Results page's data: the saved runs as a table, one run read once per server (a bounded
cache keyed by its name and its ``run.json``'s time, shared read-only by every session; what its
tables say is :mod:`core.run_tables`), and the choices that live in the address (``?run=``,
``?view=``, ``?measure=``) so that a copied link shows the same view."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from components.workspace import Kept
from core.cache import BoundedCache
from core.runs import READ_ERRORS, RUN_FILE, Run, RunInfo, open_run, thumbnail_uri

# The run, its view and the measurement shown live in the address, not in the workspace: see NOT_KEPT
# in tests/test_workspace_kept.py. The search text is kept like any page's setting.
KEPT = Kept(widgets=("res.search",))
LIST_COLUMNS = ("picture", "name", "date", "kinds", "images", "cells", "models", "key numbers", "note", "owner")


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


ADDRESS_KEY = "res.address"  # the page's last address (all but ?ws=), for a visit to another page and back


def restore_address() -> None:
    """Arriving at Results by the sidebar, whose links carry only ``?ws=``: the address the page
    had when it was left, so the run, view, image, map window and comparison come back."""
    if not any(k != "ws" for k in st.query_params) and (kept := st.session_state.get(ADDRESS_KEY)):
        for name, values in kept.items():
            st.query_params[name] = values if len(values) > 1 else values[0]


def remember_address() -> None:
    """At the end of the page: its address (each parameter's values), for :func:`restore_address`."""
    st.session_state[ADDRESS_KEY] = {k: st.query_params.get_all(k) for k in st.query_params if k != "ws"}


@contextmanager
def reading(name: str) -> Iterator[None]:
    """Around what reads run ``name`` from disk: a damaged run is said, naming it and the fix,
    and the rest of the page is drawn (no traceback)."""
    try:
        yield
    except READ_ERRORS as exc:
        st.error(f"The run “{name}” could not be read: {exc}. It may be damaged (a file missing, cut short or "
                 f"edited by hand): save it again, or delete it (`python -m core runs delete {name}`).",
                 icon=":material/broken_image:")


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
    rows = [{"picture": thumbnail_uri(i), "name": i.name, "date": date_text(i.created), "kinds": ", ".join(i.kinds), "images": i.images,
             "cells": i.cells, "models": ", ".join(i.models), "key numbers": numbers_text(i.numbers), "note": i.note,
             "owner": i.owner or ""} for i in infos]
    return pd.DataFrame(rows, columns=list(LIST_COLUMNS)).astype({"cells": "Int64"})


def search_runs(table: pd.DataFrame, text: str) -> pd.DataFrame:
    """The rows holding every word of ``text`` (case ignored) somewhere among their cells."""
    words = text.lower().split()
    if not words:
        return table
    text_columns = table.drop(columns=["picture"], errors="ignore")  # base64 pixels would match any word
    rows = text_columns.map(lambda v: "" if pd.isna(v) else str(v)).agg(" ".join, axis=1).str.lower()  # a run without cells too
    return table[[all(w in row for w in words) for row in rows]]


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


def from_link_list(key: str, param: str, options: Sequence[str], default: Sequence[str]) -> None:
    """:func:`from_link` for a multiselect: ``?param=a&param=b`` (or ``?param=a,b``) chooses those
    of ``options`` (``?param=`` alone: none), else what the widget held, else ``default``."""
    ss = st.session_state
    if param in st.query_params:
        wanted = {v for raw in st.query_params.get_all(param) for v in raw.split(",")}
        ss[key] = [o for o in options if o in wanted]
    elif not isinstance(ss.get(key), list) or not set(ss[key]) <= set(options):
        ss[key] = list(default)


def to_link(key: str, param: str) -> None:
    """A widget's ``on_change``: its value into the address (a list as the parameter repeated,
    an empty one as ``?param=``: none chosen, unlike no parameter, which chooses the default)."""
    value = st.session_state.get(key)
    if value is None:
        if param in st.query_params:
            del st.query_params[param]
    elif isinstance(value, list | tuple):
        st.query_params[param] = list(value) if value else ""
    else:
        st.query_params[param] = value
