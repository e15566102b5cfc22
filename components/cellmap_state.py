"""The Cell map's pipeline (workflows/cellmap.py) with progress bars, each step kept in a server-wide
bounded cache keyed by what it depends on: segmentations (the Compare page's cache), the cells, the
features, the map. Going back to a setting already computed costs nothing; another session with
the same data shares it. Also which cells the Cell map shows, for the Explain page."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from components.model_panel import compute_result, params_for, params_text
from components.workspace import Kept, kept_result
from core.cache import BoundedCache
from core.cells.cell_set import CellSet
from core.data.dataset import Dataset
from core.data.images import CellImage
from core.figures.display import crops_rgb
from core.segmentation.recipe import Recipe
from models.cellmap import CellMap, MapSettings, uses_no_crops
from workflows.cellmap import GROUND_TRUTH, CellMapRequest, CellMapRun, Progress, find_cells, ground_truth, run_cellmap

# What the Cell map keeps across a reload: what it shows and its controls (the map itself is a kept result).
KEPT = Kept(
    state=("cm.current", "cm.ready"),
    widgets=("cm.segmenter", "cm.features", "cm.crop_size", "cm.crop_mode", "cm.mask", "cm.method", "cm.correction",
             "cm.control", "cm.drag", "cm.clusters", "cm.perplexity", "cm.iterations", "cm.neighbors", "cm.min_dist",
             "cm.k", "cm.min_size", "cm.seed", "cm.color", "cm.view", "cm.explain_cluster", "cm.run_name"),
    prefixes=("cm.feat.", "cm.seg."),
)


@st.cache_resource(show_spinner=False)
def cellmap_store() -> BoundedCache:
    """Cells, features and maps of every session: a few datasets' worth (features of 100,000 cells
    take 13 MB at 32 numbers each, their crops are never kept)."""
    return BoundedCache(max_entries=24)


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def cells_key(ds: Dataset, segmenter: str, settings: dict, device: str, crop: dict | None) -> str:
    """What a CellSet depends on; ``crop=None``: the cells and their measurements alone, which
    crop-free features (morphology) and the segmentation share across crop settings."""
    used = "" if segmenter == GROUND_TRUTH else params_text(params_for(segmenter, settings))
    return _key("cells", ds.signature(), segmenter, used, device, crop)


def features_key(ds: Dataset, segmenter: str, settings: dict, device: str, crop: dict, features: str) -> str:
    """What ``features``' embedding of the cells depends on: not the crops for features measured on
    the whole cell (morphology), so changing the crop does not recompute them nor their map."""
    return cells_key(ds, segmenter, settings, device, None if uses_no_crops(features) else crop)


def _with_bar(start: str, text: Callable[[float, str], str], compute: Callable[[Progress], Any]) -> Any:
    """``compute(progress)`` with a progress bar showing ``text(fraction, what)``, gone once done."""
    bar = st.progress(0.0, text=start)
    try:
        return compute(lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=text(f, what)))
    finally:
        bar.empty()


def _segment(segmenter: str, settings: dict, device: str) -> Callable[[CellImage], Any]:
    """The segment step of the image loop: the Compare page's cached result, or the ground truth."""
    if segmenter == GROUND_TRUTH:
        return ground_truth
    return lambda img: compute_result(img, segmenter, settings, device)


def _cells_bar(ds: Dataset, segmenter: str, compute: Callable[[Progress], CellSet]) -> CellSet:
    """The cells step's progress bar: which image is being segmented, then the measuring."""
    n = len(ds)
    return _with_bar("Segmenting…", lambda f, what: "Measuring cells…" if what == "done" else
                     f"Finding cells: {segmenter} on {what} ({round(f * n) + 1} of {n})", compute)


def cells_for(ds: Dataset, segmenter: str, settings: dict, device: str, crop: dict) -> CellSet:
    """Every cell of the dataset by ``segmenter``, with ``crop``'s geometry."""
    # Measuring is the slow part and does not depend on the crops: one CellSet, new crop geometry.
    def compute(progress: Progress) -> CellSet:
        return find_cells(list(ds), _segment(segmenter, settings, device), progress=progress)

    base = kept_result("cm.cells", cells_key(ds, segmenter, settings, device, None), cellmap_store(),
                       lambda: _cells_bar(ds, segmenter, compute))
    return replace(base, **crop)


def map_request(segmenter: str, seg_settings: dict, crop: dict, features: str, feat_settings: dict,
                settings: MapSettings, device: str, recipe: Recipe) -> CellMapRequest:
    """The page's choices as the pipeline's request (the settings the segmenter's ``predict`` runs with)."""
    used = None if segmenter == GROUND_TRUTH else params_for(segmenter, seg_settings)
    return CellMapRequest(segmenter, used, crop, features, feat_settings, settings, device,
                          recipe=recipe if segmenter == "classical" else None)


def map_for(ds: Dataset, request: CellMapRequest, seg_settings: dict) -> tuple[CellMapRun, str]:
    """The Cell map pipeline (:func:`workflows.cellmap.run_cellmap`) with each step kept in the
    server-wide cache and the workspace, a progress bar while it runs; also the map's key."""
    segmenter, device, name = request.segmenter, request.device, request.features
    made_from = features_key(ds, segmenter, seg_settings, device, request.crop, name)
    features = _key("features", made_from, name, request.feat_settings, device)
    made_from += name + json.dumps(request.feat_settings, default=str)
    map_made = map_key(made_from, request.map_settings)

    def keep(step: str, compute: Callable[[Progress], Any]) -> Any:
        if step == "cells":
            return kept_result("cm.cells", cells_key(ds, segmenter, seg_settings, device, None), cellmap_store(),
                               lambda: _cells_bar(ds, segmenter, compute))
        if step == "features":
            return kept_result("cm.features", features, cellmap_store(),
                               lambda: _with_bar(f"{name}: starting…", lambda f, what: f"{name}: {what}", compute))
        return kept_result("cm.map", map_made, cellmap_store(), lambda: _with_bar("Mapping…", lambda f, what: what,
                                                                                    compute))

    return run_cellmap(list(ds), request, segment=_segment(segmenter, seg_settings, device), keep=keep), map_made


def map_key(key: str, settings: MapSettings) -> str:
    return _key("map", key, settings.to_json())


CURRENT = "cm.current"  # what the Cell map last showed: the Explain page uses the same cells
EXPLAIN_ROWS = "ex.rows"  # cells sent from the Cell map to the Explain page: {"cells": key, "rows": [...], "what": ...}
DEFAULT_CELLS = {"segmenter": "classical", "seg_settings": {}, "crop": {"size": 32, "mode": "scale",
                                                                          "mask_background": False}}


def remember_cells(segmenter: str, seg_settings: dict, crop: dict, map_key: str, features: str) -> None:
    """Note which cells (and which map) the Cell map shows, as plain data kept with the workspace."""
    st.session_state[CURRENT] = {"segmenter": segmenter, "seg_settings": dict(seg_settings), "crop": dict(crop),
                                 "map_key": map_key, "features": features}


def current_cells(ds: Dataset, device: str) -> tuple[CellSet, dict, str]:
    """The cells the Cell map shows (its defaults before it was opened), from the shared cache:
    computed again with a progress bar only if the cache dropped them. Also what they are and their key."""
    choice = {**DEFAULT_CELLS, **st.session_state.get(CURRENT, {})}
    args = (ds, choice["segmenter"], choice["seg_settings"], device, choice["crop"])
    return cells_for(*args), choice, cells_key(*args)


def current_map(choice: dict) -> CellMap | None:
    """The Cell map's last map of these cells if the server still keeps it (its clusters), else None."""
    key = choice.get("map_key")
    return kept_result("cm.map", key, cellmap_store()) if key else None


def send_to_explain(cells_key_: str, rows: list[int], what: str) -> None:
    """Hand cells selected on the map to the Explain page and open it."""
    st.session_state[EXPLAIN_ROWS] = {"cells": cells_key_, "rows": [int(r) for r in rows], "what": what}
    st.session_state["ex.view"] = "Cells"  # the page's view is kept: it may have been left on Detectors
    st.switch_page("pages/explain.py")


def selected_crops(cells: CellSet, rows: np.ndarray) -> np.ndarray:
    """The crops of ``rows`` as (n, S, S, 3) uint8, each channel in its display colour."""
    return crops_rgb(cells.crops(rows), cells.channels)
