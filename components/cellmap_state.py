"""The Cell map's steps with progress bars, each kept in a server-wide bounded cache keyed by what
it depends on: segmentations (the Compare page's cache), the cells, the features, the map. Going
back to a setting already computed costs nothing; another session with the same data shares it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from components.model_panel import compute_result, params_for, params_text
from components.workspace import kept_result
from core.cache import BoundedCache
from core.cells import CellSet, Embedding
from core.dataset import Dataset
from core.display import crops_rgb
from models.cellmap import CellMap, MapSettings, cell_set, features_of, make_map, uses_no_crops

GROUND_TRUTH = "ground truth"  # a "segmenter" for datasets annotated throughout: the annotation's cells


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


def cells_for(ds: Dataset, segmenter: str, settings: dict, device: str, crop: dict) -> CellSet:
    """Every cell of the dataset by ``segmenter``, with a progress bar while images are segmented."""
    def compute() -> CellSet:
        bar = st.progress(0.0, text="Segmenting…")
        labels = {}
        try:
            for i, img in enumerate(ds):
                bar.progress(i / len(ds), text=f"Finding cells: {segmenter} on {img.name} ({i + 1} of {len(ds)})")
                if segmenter == GROUND_TRUTH:
                    if img.gt is not None:
                        labels[img.name] = img.gt
                else:
                    labels[img.name] = compute_result(img, segmenter, settings, device).labels
            bar.progress(1.0, text="Measuring cells…")
            return cell_set(list(ds), labels)
        finally:
            bar.empty()

    # Measuring is the slow part and does not depend on the crops: one CellSet, new crop geometry.
    base = kept_result("cm.cells", cells_key(ds, segmenter, settings, device, None), cellmap_store(), compute)
    return replace(base, **crop)


def embedding_for(cells: CellSet, key: str, name: str, settings: dict, device: str) -> Embedding:
    """``name``'s features of ``cells``, with a progress bar and the time left."""
    def compute() -> Embedding:
        bar = st.progress(0.0, text=f"{name}: starting…")
        try:
            return features_of(cells, name, settings, device=device,
                               progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=f"{name}: {what}"))
        finally:
            bar.empty()

    return kept_result("cm.features", _key("features", key, name, settings, device), cellmap_store(), compute)


def map_for(cells: CellSet, embedding: Embedding, key: str, settings: MapSettings) -> CellMap:
    def compute() -> CellMap:
        bar = st.progress(0.0, text="Mapping…")
        try:
            return make_map(cells, embedding, settings,
                            progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
        finally:
            bar.empty()

    return kept_result("cm.map", map_key(key, settings), cellmap_store(), compute)


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
