"""The Results page's cell map at any size: the saved map's cells as WebGL points up to
:data:`MAP_POINTS`, beyond that a density (a 2-D histogram of every cell, computed here) in which
a box zooms in until the window holds few enough cells to draw. Filters by batch, condition and
cluster; cells selected with a box, a lasso or a click are counted, broken down, downloadable and
shown as crops. Everything chosen lives in the address, so a copied link shows the same view:

``?color=`` · ``?batch=&batch=`` (also ``condition``, ``cluster``) · ``?window=x0,x1,y0,y1`` ·
``?select=box:x0,x1,y0,y1`` or ``?select=lasso:x,y,x,y,…`` · ``?cell=ID&cell=ID`` (clicked cells).

A box or lasso is kept as its shape, not as its cells' ids: a link stays a few hundred characters
whether it selects ten cells or half a million, and the shape picks the same cells again (the
numbers are rounded before the cells are picked, so the view and its link agree)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from matplotlib.path import Path as Polygon

from components.downloads import download_button
from components.results_state import choices_from_link, choices_to_link, from_link, json_file, to_link
from core.cache import BoundedCache
from core.figures.cellmap import _natural, map_figure
from core.runs import Run

MAP_COLOURS = ("batch", "condition", "cluster", "image")  # groups the map can be coloured by
FILTERS = ("batch", "condition", "cluster")
MAP_POINTS = 200_000  # drawn as points up to here; beyond, a density (measured in Chromium: docs/speed.md)
DENSITY_BINS = 512  # bins along the window's longer side
RINGS_UP_TO = 5_000  # selected cells ringed on the points; more are only outlined
LASSO_VERTICES = 120  # a lasso kept in the address is thinned to this many corners
LINK_PARAMS = ("color", *FILTERS, "window", "select", "cell")
NOT_MEASURED = {"cell_id", "image", "image_index", "batch", "condition", "label", "x", "y", "cluster",
                "x_uncorrected", "y_uncorrected"}
KIND, TABLE = "cellmap", "cells"


# ---- the run's table, only the columns needed --------------------------------------------------------------------
# MERGE: replace these three with Run.table / Run.table_columns / Run.table_rows (core/runs.py, lazy column reads).

def _run_table(run: Run, kind: str, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    table = run.analysis(kind).tables[name]
    return table if columns is None else table[list(columns)]


def _run_table_columns(run: Run, kind: str, name: str) -> list[str]:
    return [str(c) for c in run.analysis(kind).tables[name].columns]


def _run_table_rows(run: Run, kind: str, name: str) -> int:
    return len(run.analysis(kind).tables[name])


@st.cache_resource(show_spinner=False)
def frame_store() -> BoundedCache:
    """The map's columns of a few runs, shared by every session (a million cells: ~40 MB each)."""
    return BoundedCache(max_entries=4)


def map_frame(run: Run, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of the run's cells, text as categories (a million rows filter in milliseconds)."""
    def read() -> pd.DataFrame:
        frame = _run_table(run, KIND, TABLE, columns).reset_index(drop=True)
        for c in columns:
            if c in FILTERS or c in ("batch", "condition", "image"):
                frame[c] = frame[c].astype(str).astype("category")
        return frame

    return frame_store().get_or_compute((str(run.info.path), run.info.created, tuple(columns)), read)


# ---- the window and the selection, as the address writes them ----------------------------------------------------

def _num(value: float) -> str:
    return f"{float(value):.6g}"


@dataclass(frozen=True)
class Window:
    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def around(cls, x: np.ndarray, y: np.ndarray) -> Window:
        """The bounds of ``x``, ``y`` (widened where all are equal)."""
        x0, x1, y0, y1 = float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y))
        wide = max(x1 - x0, y1 - y0) or 1.0
        x0, x1 = (x0 - wide / 2, x1 + wide / 2) if x0 == x1 else (x0, x1)
        y0, y1 = (y0 - wide / 2, y1 + wide / 2) if y0 == y1 else (y0, y1)
        return cls(x0, x1, y0, y1)

    @classmethod
    def parse(cls, text: str | None) -> Window | None:
        """``x0,x1,y0,y1`` (either order), or None where it is not four finite numbers with some width."""
        try:
            x0, x1, y0, y1 = (float(v) for v in (text or "").split(","))
        except ValueError:
            return None
        if not np.all(np.isfinite([x0, x1, y0, y1])) or x0 == x1 or y0 == y1:
            return None
        return cls(min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1))

    def text(self) -> str:
        return ",".join(_num(v) for v in (self.x0, self.x1, self.y0, self.y1))

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)


@dataclass(frozen=True)
class Shape:
    """A box (``xs``, ``ys`` its two corners) or a lasso (its corners), in map coordinates."""

    kind: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    @classmethod
    def parse(cls, text: str | None) -> Shape | None:
        kind, _, numbers = (text or "").partition(":")
        try:
            values = [float(v) for v in numbers.split(",")]
        except ValueError:
            return None
        if not np.all(np.isfinite(values)):
            return None
        if kind == "box" and len(values) == 4:
            return cls("box", tuple(values[:2]), tuple(values[2:]))
        if kind == "lasso" and len(values) >= 6 and len(values) % 2 == 0:
            return cls("lasso", tuple(values[0::2]), tuple(values[1::2]))
        return None

    @classmethod
    def of(cls, kind: str, xs: Sequence[float], ys: Sequence[float]) -> Shape | None:
        """A shape from Plotly's selection, rounded (and a lasso thinned) as the address keeps it."""
        step = max(1, -(-len(xs) // LASSO_VERTICES))
        xs, ys = list(xs)[::step], list(ys)[::step]
        numbers = [*xs, *ys] if kind == "box" else [v for xy in zip(xs, ys, strict=True) for v in xy]
        return cls.parse(f"{kind}:" + ",".join(_num(v) for v in numbers))

    def text(self) -> str:
        numbers = [*self.xs, *self.ys] if self.kind == "box" else [v for p in zip(self.xs, self.ys, strict=True) for v in p]
        return f"{self.kind}:" + ",".join(_num(v) for v in numbers)

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.kind == "box":
            return Window(min(self.xs), max(self.xs), min(self.ys), max(self.ys)).holds(x, y)
        return Polygon(np.column_stack([self.xs, self.ys])).contains_points(np.column_stack([x, y]))

    def bounds(self) -> Window:
        return Window.around(np.array(self.xs), np.array(self.ys))

    def outline(self) -> dict:
        """The shape as a Plotly layout shape (dashed), so a linked selection is seen where it is."""
        if self.kind == "box":
            return dict(type="rect", x0=self.xs[0], x1=self.xs[1], y0=self.ys[0], y1=self.ys[1],
                        line=dict(color="#222", dash="dash", width=1.5))
        path = "M" + "L".join(f"{x},{y}" for x, y in zip(self.xs, self.ys, strict=True)) + "Z"
        return dict(type="path", path=path, line=dict(color="#222", dash="dash", width=1.5))


def selection_of(event: dict, ids: np.ndarray) -> tuple[Shape | None, list[str]]:
    """What a Plotly selection event chose: its box or lasso (the last one drawn), else the ids
    (``ids``, by the points' ``customdata`` row) of the points clicked."""
    sel = event.get("selection", {})
    if sel.get("lasso"):
        return Shape.of("lasso", sel["lasso"][-1]["x"], sel["lasso"][-1]["y"]), []
    if sel.get("box"):
        return Shape.of("box", sel["box"][-1]["x"], sel["box"][-1]["y"]), []
    rows = sorted({int(p["customdata"]) for p in sel.get("points", []) if "customdata" in p})
    return None, [str(ids[r]) for r in rows if 0 <= r < len(ids)]


def set_link(**params: str | list[str] | None) -> None:
    for name, value in params.items():
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]


# ---- the density -------------------------------------------------------------------------------------------------

def density(x: np.ndarray, y: np.ndarray, window: Window, values: np.ndarray | None = None,
            bins: int = DENSITY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cells per bin of ``window`` (square bins, ``bins`` along its longer side; rows are y):
    (counts, x centres, y centres, the mean of ``values`` per bin or None). Cells outside the window
    are not counted; those on its far edges go to the last bins."""
    side = max(window.x1 - window.x0, window.y1 - window.y0) / bins
    nx = max(1, min(bins, int(np.ceil((window.x1 - window.x0) / side))))
    ny = max(1, min(bins, int(np.ceil((window.y1 - window.y0) / side))))
    inside = window.holds(x, y)
    ix = np.minimum(((x[inside] - window.x0) / (window.x1 - window.x0) * nx).astype(np.int64), nx - 1)
    iy = np.minimum(((y[inside] - window.y0) / (window.y1 - window.y0) * ny).astype(np.int64), ny - 1)
    flat = iy * nx + ix
    counts = np.bincount(flat, minlength=nx * ny).reshape(ny, nx)
    means = None
    if values is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (np.bincount(flat, weights=values[inside], minlength=nx * ny).reshape(ny, nx) / counts)
    xc = window.x0 + (np.arange(nx) + 0.5) * (window.x1 - window.x0) / nx
    yc = window.y0 + (np.arange(ny) + 0.5) * (window.y1 - window.y0) / ny
    return counts, xc, yc, means


def density_figure(counts: np.ndarray, xc: np.ndarray, yc: np.ndarray, window: Window, means: np.ndarray | None,
                   measure: str, height: int = 560) -> go.Figure:
    """Cells per bin on a log colour scale (or a measurement's mean per bin); an empty bin is blank."""
    shown = counts.astype(np.float32)
    shown[counts == 0] = np.nan
    if means is None:
        z, title, hover = np.log10(shown), "cells", "%{customdata:,} cells<extra></extra>"
        ticks = [m * 10 ** k for k in range(len(str(max(int(counts.max()), 1)))) for m in (1, 2, 5)]
        bar = dict(title=dict(text="cells per square", side="right"), thickness=12,
                   tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:,}" for t in ticks])
    else:
        z, title = np.where(counts > 0, means, np.nan).astype(np.float32), measure
        hover = f"%{{customdata:,}} cells<br>mean {measure} %{{z:.3g}}<extra></extra>"
        bar = dict(title=dict(text=f"mean {measure}", side="right"), thickness=12)
    fig = go.Figure(go.Heatmap(x=xc, y=yc, z=z, customdata=counts.astype(np.int32), colorscale="Viridis",
                               colorbar=bar, hovertemplate=hover, name=title, hoverongaps=False))
    # Two invisible corners: a heatmap offers no box tool, a scatter does (the box zooms in).
    fig.add_trace(go.Scatter(x=[window.x0, window.x1], y=[window.y0, window.y1], mode="markers",
                             marker=dict(opacity=0), hoverinfo="skip", showlegend=False))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), dragmode="select",
                      uirevision=window.text())
    fig.update_xaxes(range=[window.x0, window.x1], showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(range=[window.y0, window.y1], showticklabels=False, zeroline=False, showgrid=False,
                     scaleanchor="x")
    return fig


# ---- the view ----------------------------------------------------------------------------------------------------

def plate_effect(run: Run) -> None:
    effect = json_file(run, KIND, "batch_effect.json")
    if effect is None:
        return
    st.subheader(f"Plate effect: {effect.get('verdict', 'undetermined')}")
    st.write(effect.get("reason", ""))
    numbers = {"silhouette": effect.get("silhouette"), "iLISI": effect.get("ilisi"), "kBET": effect.get("kbet"),
               "classifier accuracy": effect.get("classifier_accuracy"), "chance": effect.get("chance")}
    for col, (label, value) in zip(st.columns(len(numbers)), numbers.items(), strict=True):
        col.metric(label, "–" if value is None else f"{value:.2f}")


def colour_options(columns: Sequence[str]) -> list[str]:
    """The groups present, then every measurement (not ids, positions or features)."""
    return [c for c in MAP_COLOURS if c in columns] + [
        c for c in columns if c not in NOT_MEASURED and not c.startswith(("f_", "bbox_", "centroid_"))]


def cellmap_view(run: Run) -> None:
    plate_effect(run)
    columns = _run_table_columns(run, KIND, TABLE)
    if not {"x", "y"} <= set(columns) or not _run_table_rows(run, KIND, TABLE):
        if "map.png" in run.analysis(KIND).files:
            st.image(run.analysis(KIND).files["map.png"], caption="The cell map, coloured by batch, as saved")
        return
    options, filters = colour_options(columns), [c for c in FILTERS if c in columns]
    if st.session_state.get("res.map.run") not in (None, run.info.name):  # another run chosen: its own map
        set_link(**{param: None for param in LINK_PARAMS if param != "color"})
        for name in FILTERS:
            st.session_state.pop(f"res.f.{name}", None)
    st.session_state["res.map.run"] = run.info.name
    from_link("res.color", "color", options, options[0])
    to_link("res.color", "color")
    top = st.columns([1.2, *[1] * len(filters)])
    color = top[0].selectbox(
        "Colour by", options, key="res.color", on_change=to_link, args=("res.color", "color"),
        help="A group (batch, condition, cluster, image) or a measurement (a colour scale). Where the map is a "
             "density, a measurement colours each square by its cells' mean.")
    frame = map_frame(run, list(dict.fromkeys(["x", "y", *(["cell_id"] if "cell_id" in columns else []),
                                               *filters, color])))
    keep = np.ones(len(frame), bool)
    for col, name in zip(top[1:], filters, strict=True):
        values = sorted(map(str, frame[name].cat.categories), key=_natural)
        choices_from_link(f"res.f.{name}", name, values)
        chosen = col.multiselect(name.capitalize(), values, key=f"res.f.{name}", placeholder="all",
                                 on_change=choices_to_link, args=(f"res.f.{name}", name), help=f"Only the cells of the {name}s chosen (none chosen: all) "
                                 "are drawn, counted and selected.")
        if chosen:
            keep &= frame[name].isin(chosen).to_numpy()
    if not keep.any():
        st.info("No cell is in every group chosen above: widen a filter.")
        return
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    asked = st.query_params.get("window")
    window = Window.parse(asked)
    if asked is not None and window is None:
        st.warning(f"The address's window “{asked}” is not four numbers x0,x1,y0,y1 with some width: the whole "
                   "map is shown.")
    whole = window is None
    window = window or Window.around(x[keep], y[keep])
    shown = keep & window.holds(x, y)
    ids = frame["cell_id"].astype(str).to_numpy() if "cell_id" in frame else np.arange(len(frame)).astype(str)
    shape, clicked = Shape.parse(st.query_params.get("select")), st.query_params.get_all("cell")
    picked = keep & (shape.holds(x, y) if shape else np.isin(ids, clicked) if clicked else np.zeros(len(x), bool))
    measure = color if color not in MAP_COLOURS and pd.api.types.is_numeric_dtype(frame[color]) else None
    n = int(shown.sum())
    if n > MAP_POINTS:
        values = frame[measure].to_numpy(float)[keep] if measure else None
        counts, xc, yc, means = density(x[keep], y[keep], window, values)
        fig = density_figure(counts, xc, yc, window, means, measure or "")
        if shape:
            fig.add_shape(shape.outline())
        key = f"res.map.density.{window.text()}"  # a fresh chart per window: no stale box
        st.plotly_chart(fig, key=key, on_select=functools.partial(_zoom_to_box, key), selection_mode=("box",),
                        config={"displaylogo": False, "scrollZoom": True}, width="stretch")
        st.caption(f"{n:,} cells in view, more than the {MAP_POINTS:,} drawn as points: each square counts the "
                   f"cells in it. **Drag a box to zoom in**; once the window holds {MAP_POINTS:,} cells or fewer "
                   "they are drawn, to colour and select.")
    else:
        rows = np.flatnonzero(shown)
        drawn = frame.iloc[rows][[c for c in ("x", "y", color) if c in frame]].reset_index(drop=True)
        drawn["cell_id"] = ids[rows]
        rings = np.flatnonzero(picked[rows]) if picked.sum() <= RINGS_UP_TO else ()
        fig = map_figure(drawn, color, height=560, selected=rings)
        fig.update_layout(dragmode="select", uirevision=window.text())
        if not whole:
            fig.update_xaxes(range=[window.x0, window.x1])
            fig.update_yaxes(range=[window.y0, window.y1])
        if shape:
            fig.add_shape(shape.outline())
        key = f"res.map.points.{st.session_state.get('res.map.gen', 0)}"
        st.plotly_chart(fig, key=key, on_select=functools.partial(_select_cells, key, ids[rows]),
                        selection_mode=("points", "box", "lasso"), width="stretch",
                        config={"displaylogo": False, "scrollZoom": True})
        st.caption(f"{n:,} cells drawn. Drag a box (or pick the lasso above the map) to select cells, click one "
                   "to select it; scroll to look closer. The address keeps the view: copy it to share it.")
    window_controls(window, whole, shape)
    selection_panel(run, frame, picked, filters)


def _zoom_to_box(key: str) -> None:
    shape, _ = selection_of(st.session_state[key], np.array([]))
    if shape is not None:
        set_link(window=shape.bounds().text(), select=None, cell=None)


def _select_cells(key: str, ids: np.ndarray) -> None:
    shape, clicked = selection_of(st.session_state[key], ids)
    set_link(select=shape.text() if shape else None, cell=clicked or None)


def _clear_selection() -> None:
    set_link(select=None, cell=None)
    st.session_state["res.map.gen"] = st.session_state.get("res.map.gen", 0) + 1  # a fresh chart: no box drawn


def _window_typed(key: str) -> None:
    typed = [st.session_state[f"{key}.{side}"] for side in ("x0", "x1", "y0", "y1")]
    window = Window.parse(",".join(_num(v) for v in typed))
    if window is None:
        st.session_state["res.win.bad"] = True
    else:
        set_link(window=window.text())


def window_controls(window: Window, whole: bool, shape: Shape | None) -> None:
    left, middle, _ = st.columns([1, 1, 2])
    if not whole:
        left.button("Show the whole map", key="res.map.whole", on_click=set_link, kwargs={"window": None},
                    help="Back to every cell of the filters chosen.")
    if shape is not None:
        middle.button("Zoom to the selection", key="res.map.tosel", on_click=set_link,
                      kwargs={"window": shape.bounds().text()}, help="The window becomes the selection's bounds.")
    with st.expander("Window in map coordinates"):
        if st.session_state.pop("res.win.bad", False):
            st.error("A window needs x0 ≠ x1 and y0 ≠ y1: nothing changed.")
        key = f"res.win.{window.text()}"  # the boxes show the window in view, whatever changed it
        with st.form(key, border=False):
            cols = st.columns(4)
            for col, side in zip(cols, ("x0", "x1", "y0", "y1"), strict=True):
                col.number_input(side, value=float(getattr(window, side)), key=f"{key}.{side}", format="%.4f",
                                 help="The window's edge on the map (its x or y axis, as the saved map has it).")
            st.form_submit_button("Show this window", on_click=_window_typed, args=(key,),
                                  help="Zoom to exactly these bounds (kept in the address as ?window=).")


def selected_rows(run: Run, picked: np.ndarray) -> pd.DataFrame:
    """The saved table's rows of the cells ``picked`` (a mask over its rows), features too."""
    return _run_table(run, KIND, TABLE).iloc[np.flatnonzero(picked)]


def selection_panel(run: Run, frame: pd.DataFrame, picked: np.ndarray, groups: Sequence[str]) -> None:
    n = int(picked.sum())
    if not n:
        if "select" in st.query_params or "cell" in st.query_params:
            st.info("No cell of the filters chosen lies in the selection.")
        return
    head, clear = st.columns([3, 1])
    head.subheader(f"{n:,} {'cell' if n == 1 else 'cells'} selected")
    clear.button("Clear the selection", key="res.map.clear", on_click=_clear_selection,
                 help="Forget the cells selected (the address too).")
    for col, name in zip(st.columns(max(1, len(groups))), groups, strict=False):
        counts = frame[name][picked].astype(str).value_counts()
        table = pd.DataFrame({name: counts.index, "cells": counts.to_numpy(), "share": counts.to_numpy() / n})
        col.dataframe(table, hide_index=True, column_config={"share": st.column_config.ProgressColumn(
            format="percent", min_value=0, max_value=1)})
    download_button(st, "Download the selected cells (CSV)", lambda: selected_rows(run, picked).to_csv(index=False),
                    file_name=f"{run.info.name}-selected-cells.csv", mime="text/csv", key="res.dl.selected",
                    help="The selected cells' rows of the saved table: ids, batch, condition, measurements, map "
                         "position, cluster and features.")
    try:
        from components.results_images import crops_panel  # MERGE: written by another helper; import at the top
    except ImportError:
        st.caption("The selected cells' crops are not available in this version of CellScope.")
    else:
        crops_panel(run, selected_rows(run, picked))
