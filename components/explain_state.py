"""The Explain page's steps with progress bars, kept in a server-wide bounded cache keyed by what
they depend on (the cells' key, the target, the settings): going back to a classifier or a CAM
already made costs nothing, and another session with the same cells shares it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from components.cellmap_state import EXPLAIN_ROWS, GROUND_TRUTH
from components.model_panel import params_for, params_text, shared_model
from components.recipe_panel import current_recipe
from components.workspace import Kept, kept_result
from core.analysis import Analysis
from core.cache import BoundedCache
from core.cells.cell_set import CellSet
from core.data.dataset import Dataset
from core.data.images import CellImage
from models.classifier import TrainedClassifier
from models.detector_cam import DetectorCam, detector_cam
from models.explain_cells import CellExplanation
from models.registry import availability
from models.weights import WeightsUnavailable
from workflows.explain import ExplainRequest, classifier_step, explain_analysis, explanation_step

# What Explain keeps across a reload: the cells sent from the Cell map and its controls.
KEPT = Kept(
    state=(EXPLAIN_ROWS,),
    widgets=("ex.view", "ex.target", "ex.method", "ex.layer", "ex.which", "ex.opacity", "ex.per_class", "ex.det_image",
             "ex.det_model", "ex.det_method", "ex.det_opacity", "ex.det_which", "ex.run_name"),
    prefixes=("ex.set.", "ex.det."),
    images=("ex.det_image",),  # an image removed on the Data page meanwhile is no choice any more
)


@st.cache_resource(show_spinner=False)
def explain_store() -> BoundedCache:
    """Classifiers (a few MB each with their out-of-fold arrays) and CAMs of a few hundred cells."""
    return BoundedCache(max_entries=16)


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def classifier_key(cells_key: str, target: str, labels: np.ndarray, settings: dict, device: str) -> str:
    # the labels themselves: "cluster" means other cells each time the map's clusters change
    digest = hashlib.sha1("\x00".join(map(str, labels)).encode()).hexdigest()
    return _key("classifier", cells_key, target, digest, settings, device)


def cached_classifier(key: str) -> TrainedClassifier | None:
    return kept_result("ex.classifier", key, explain_store())


def classifier_for(cells: CellSet, key: str, labels: np.ndarray, request: ExplainRequest) -> TrainedClassifier:
    """The classifier of ``key``, trained now (with a progress bar and the time left) if not kept."""
    def compute() -> TrainedClassifier:
        bar = st.progress(0.0, text="Training the classifier…")
        try:
            return classifier_step(cells, labels, request,
                                   progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
        finally:
            bar.empty()

    return kept_result("ex.classifier", key, explain_store(), compute)


def deletion_test_for(key: str, compute: Callable[[], Any] | None = None) -> Any:
    """The deletion/insertion test of ``key`` if kept (or computed now, when ``compute`` is given)."""
    return kept_result("ex.deletion", key, explain_store(), compute)


def explanation_for(cells: CellSet, trained: TrainedClassifier, key: str, rows: np.ndarray,
                    request: ExplainRequest) -> CellExplanation:
    """CAMs of ``rows`` (kept per classifier, cells, method, layer and explained class)."""
    def compute() -> CellExplanation:
        bar = st.progress(0.0, text=f"{request.method}: starting…")
        try:
            return explanation_step(cells, trained, rows, request,
                                    progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
        finally:
            bar.empty()

    digest = hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest()
    return kept_result("ex.cams", _key("cams", key, digest, request.method, request.layer, request.which),
                       explain_store(), compute)


def sent_cells(cells_key: str) -> dict | None:
    """The cells sent from the Cell map (``{"rows", "what"}``) if they were chosen among these
    cells; None otherwise (a caption says so when the Cell map's settings changed since)."""
    sent = st.session_state.get(EXPLAIN_ROWS)
    if sent and sent.get("cells") != cells_key:
        st.caption(f"The {sent['what']} sent from the Cell map were chosen among other cells (its settings changed "
                   "since): a sample of all cells is explained instead.")
        return None
    return sent or None


def forget_sent_cells() -> None:
    st.session_state.pop(EXPLAIN_ROWS, None)


def explain_record(ds: Dataset, cells: CellSet, trained: TrainedClassifier, explanation: CellExplanation,
                   request: ExplainRequest, choice: dict) -> Analysis:
    """The explanation's record (:func:`workflows.explain.explain_analysis`), with the Cell map's
    segmenter and its settings as what found the cells."""
    segmenter = choice["segmenter"]
    used = None if segmenter == GROUND_TRUTH else (segmenter, params_for(segmenter, choice["seg_settings"]))
    recipe = current_recipe() if segmenter == "classical" else None
    return explain_analysis(list(ds), cells, trained, explanation, request, segmenter=used, recipe=recipe)


def _detector_key(image: CellImage, name: str, settings: dict, device: str, method: str, detection: int | None) -> str:
    return _key("detector", f"{image.hash}{image.channels}", name, params_text(params_for(name, settings)), device,
                method, detection)


def cached_detector_cam(image: CellImage, name: str, settings: dict, device: str, *, method: str,
                        detection: int | None) -> DetectorCam | None:
    return kept_result("ex.detector", _detector_key(image, name, settings, device, method, detection), explain_store())


def detector_cam_for(image: CellImage, name: str, settings: dict, device: str, *, method: str,
                     detection: int | None) -> DetectorCam | str:
    """A detector's CAM over ``image`` (kept per image, model, settings, method and detection), or
    what went wrong, in words."""
    def compute() -> DetectorCam:
        model = shared_model(name, availability(name)[1], device)
        with st.spinner(f"{name}: detecting and computing the CAM…"):
            return detector_cam(model, image, method=method, detection=detection, **params_for(name, settings))

    key = _detector_key(image, name, settings, device, method, detection)
    try:
        return kept_result("ex.detector", key, explain_store(), compute)
    except (ValueError, RuntimeError, MemoryError, WeightsUnavailable) as exc:
        return f"{name} could not be explained on {image.name}: {exc}"
