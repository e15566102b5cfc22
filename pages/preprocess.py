"""Preprocess page: OpenCV steps on live sliders, a classical segmentation, per-cell measurements."""

from __future__ import annotations

import streamlit as st

from components.pipeline_cache import pipeline
from components.preprocess_fragments import CONTROLS, HISTOGRAM, VIEWS, open_views, redraw_all
from components.preprocess_run import all_images_and_tune, recipe_files
from components.preprocess_views import histogram, measurements, result_views, threshold_grid
from components.recipe_panel import current_recipe, recipe_panel
from components.routing import page_with_images
from components.state import dataset
from components.workspace import fragment
from core.data.images import CellImage
from core.segmentation.preprocess import PipelineResult
from core.segmentation.recipe import STEP_ORDER, Recipe


def preprocess_page() -> None:
    if page_with_images("Preprocess") is None:
        return
    left, right = st.columns([1, 2.2], gap="large")
    with left:
        controls()
    with right:
        # Only the chosen view runs: a slider move must not re-measure cells in a hidden one.
        # A segmented control, not st.tabs: tabs add ~20 ms of browser work to every slider move.
        choice = st.segmented_control("View", list(VIEWS), default="Result", required=True, key="pre_tab",
                                      label_visibility="collapsed", help="What to show of the current recipe.")
        for draw in DRAW_VIEW[choice]:
            draw()


@fragment(CONTROLS)
def controls() -> None:
    """Image choice and recipe steps. A fragment of its own: a value slider reruns only the
    open view (the panel's widgets already show their new values), a structural change both."""
    ds = dataset()
    if st.session_state.get("pre_image") not in ds.names:
        st.session_state.pre_image = ds.names[0]
    st.selectbox("Image", ds.names, key="pre_image", on_change=redraw_all, help="The image the live preview works on.")
    recipe_panel(ds[st.session_state.pre_image].channels, views={step: open_views(step) for step in STEP_ORDER},
                 panel=(CONTROLS,))


def _current(*, explain: bool = True) -> tuple[CellImage, Recipe, PipelineResult] | None:
    """The chosen image, the current recipe and what it makes of the image (None, after
    explaining why if ``explain``, when the pipeline could not run)."""
    ds = dataset()
    image, recipe = ds[st.session_state.get("pre_image", ds.names[0])], current_recipe()
    try:
        return image, recipe, pipeline(image, recipe)
    except ValueError as exc:
        if explain:
            st.error(f"The pipeline could not run on {image.name}: {exc}")
        return None


@fragment(VIEWS["Result"])
def show_result() -> None:
    if current := _current():
        result_views(*current)


@fragment(HISTOGRAM)
def show_histogram() -> None:
    if current := _current(explain=False):
        histogram(*current)


@fragment(VIEWS["Thresholds"])
def show_thresholds() -> None:
    if current := _current():
        threshold_grid(current[2])


@fragment(VIEWS["Cells & crops"])
def show_measurements() -> None:
    if current := _current():
        measurements(*current)


@fragment(VIEWS["Recipe & all images"])
def show_batch() -> None:
    recipe_files()
    all_images_and_tune(current_recipe())


DRAW_VIEW = {"Result": (show_result, show_histogram), "Thresholds": (show_thresholds,),
             "Cells & crops": (show_measurements,), "Recipe & all images": (show_batch,)}
preprocess_page()
