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

import numpy as np
import pandas as pd
import streamlit as st

from components.downloads import download_button
from components.results_images import crops_panel
from components.results_state import from_link, from_link_list, to_link
from core.cache import BoundedCache
from core.figures.cellmap import _natural, map_figure
from core.figures.map_view import Shape, Window, density, density_figure, selection_of
from core.run_tables import json_file
from core.runs import Run

MAP_COLOURS = ("batch", "condition", "cluster", "image")  # groups the map can be coloured by
FILTERS = ("batch", "condition", "cluster")
MAP_POINTS = 200_000  # drawn as points up to here; beyond, a density (measured in Chromium: docs/speed.md)
RINGS_UP_TO = 5_000  # selected cells ringed on the points; more are only outlined
LINK_PARAMS = ("color", *FILTERS, "window", "select", "cell")
NOT_MEASURED = {"cell_id", "image", "image_index", "batch", "condition", "label", "x", "y", "cluster",
                "x_uncorrected", "y_uncorrected"}
KIND, TABLE = "cellmap", "cells"


@st.cache_resource(show_spinner=False)
def frame_store() -> BoundedCache:
    """The map's columns of a few runs, shared by every session (a million cells: ~40 MB each)."""
    return BoundedCache(max_entries=4)


def map_frame(run: Run, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of the run's cells, text as categories (a million rows filter in milliseconds)."""
    def read() -> pd.DataFrame:
        frame = run.table(KIND, TABLE, columns).reset_index(drop=True)
        for c in columns:
            if c in FILTERS or c in ("batch", "condition", "image"):
                frame[c] = frame[c].astype(str).astype("category")
        return frame

    return frame_store().get_or_compute((str(run.info.path), run.info.created, tuple(columns)), read)


def set_link(**params: str | list[str] | None) -> None:
    for name, value in params.items():
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]


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
    columns = run.table_columns(KIND, TABLE)
    if not {"x", "y"} <= set(columns) or not run.table_rows(KIND, TABLE):
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
        from_link_list(f"res.f.{name}", name, values, ())
        chosen = col.multiselect(name.capitalize(), values, key=f"res.f.{name}", placeholder="all",
                                 on_change=to_link, args=(f"res.f.{name}", name), help=f"Only the cells of the {name}s chosen (none chosen: all) "
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
    window = Window.parse(Window(*typed).text())
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


def selected_rows(run: Run, picked: np.ndarray, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The saved table's rows of the cells ``picked`` (a mask over its rows): ``columns`` of them
    (every column, features too, with None)."""
    return run.table(KIND, TABLE, columns).iloc[np.flatnonzero(picked)]


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
    where = [c for c in ("cell_id", "image", "centroid_y", "centroid_x") if c in run.table_columns(KIND, TABLE)]
    crops_panel(run, selected_rows(run, picked, where))  # not the features: only where each cell is
