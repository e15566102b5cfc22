"""The lesson's story on live widgets (steps 5-7): the autoencoder's map coloured by plate, the
plate classifier's Grad-CAM readings and overlays, and the same with the background masked. The
slow parts come prepared (:mod:`workflows.lesson_story`); what a student changes (the colouring,
the CAM method and layer, the map's perplexity) is computed live and kept for the next visit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from components.explain_views import classifier_view, grid_view, readings_view
from components.lesson_actions import StepContext, action
from core.cache import BoundedCache
from core.figures.cellmap import map_figure
from models.cellmap import MapSettings, cells_frame, make_map
from models.explain import CAM_METHOD_NAMES, cam_layers
from models.explain_cells import cam_table
from workflows.lesson_story import cam_numbers, map_numbers

COLOR_NAMES = {"batch": "plate", "condition": "condition"}


@st.cache_resource(show_spinner=False)
def _live() -> BoundedCache:
    """What students computed live (another perplexity, another CAM method): shared, bounded."""
    return BoundedCache(max_entries=32)


def _live_result(key: tuple, compute: Callable[[], Any], text: str) -> Any:
    cache = _live()
    if (held := cache.get(key)) is not None:
        return held
    with st.spinner(text):
        return cache.get_or_compute(key, compute)


def _not_ready(ctx: StepContext) -> None:
    if ctx.state == "failed":
        st.info("The prepared result is missing; the step's checkpoint waits for it.")


def _map(frame, color: str, title: str, key: str) -> None:
    # a chart key outside ls.: the workspace gives kept widgets their values back, charts take none
    st.plotly_chart(map_figure(frame, color, title=title, height=430, compact=True), width="stretch", key=key,
                    config={"displaylogo": False})


@action("cell_map")
def cell_map_action(ctx: StepContext) -> dict[str, Any] | None:
    run = ctx.prepared
    if run is None:
        _not_ready(ctx)
        return None
    c1, c2 = st.columns([1, 1], vertical_alignment="bottom")
    color = c1.segmented_control("Colour by", tuple(COLOR_NAMES), default="batch", required=True,
                                 key=ctx.key + "color", format_func=COLOR_NAMES.get,
                                 help="Colour each cell by its plate (the batch) or by its condition (the biology).")
    perplexity = c2.select_slider("t-SNE perplexity", (5, 15, 30, 50, 100), value=30, key=ctx.key + "perplexity",
                                  help="About how many neighbours each cell keeps close; 30 was prepared, other "
                                       "values are mapped live (a few seconds).")
    cell_map = run.cell_map
    if perplexity != cell_map.settings.perplexity:
        settings = MapSettings(perplexity=float(perplexity), seed=cell_map.settings.seed)
        cell_map = _live_result(("map", id(run), perplexity), lambda: make_map(run.cells, run.embedding, settings),
                                f"t-SNE at perplexity {perplexity}…")
    frame = cells_frame(run.cells, None, cell_map, with_features=False)
    _map(frame, color, f"{len(frame):,} cells, autoencoder features → t-SNE, by {COLOR_NAMES[color]}", f"lesson.chart.{ctx.step.id}")
    report = run.cell_map.report
    if report is not None:
        st.markdown(report["reason"])
        if report.get("comparison"):
            st.caption(report["comparison"])
    return map_numbers(report)


@action("grad_cam")
def grad_cam_action(ctx: StepContext) -> dict[str, Any] | None:
    explained = ctx.prepared
    if explained is None:
        _not_ready(ctx)
        return None
    trained = explained.trained
    classifier_view(trained, "plate", explained.settings)
    c1, c2 = st.columns(2)
    method = c1.selectbox("CAM method", CAM_METHOD_NAMES, key=ctx.key + "method",
                          help="Grad-CAM weighs each feature map by its mean gradient; the others weigh them "
                               "differently. Grad-CAM at the last layer was prepared; others are computed live.")
    layers = list(cam_layers(trained.model))
    layer = c2.selectbox("Layer", layers, index=len(layers) - 1, key=ctx.key + "layer",
                         help="Earlier layers see finer detail at a higher resolution; the last one sees most.")
    explanation = _live_result(("cams", id(explained), method, layer), lambda: explained.cams(method, layer),
                               f"{method} at {layer}…")
    readings_view(trained, explanation, cam_table(explained.cells, trained, explanation), "batch")
    grid_view(explained.cells, trained, explanation, 0.5)
    return cam_numbers(trained, explanation)


@action("mask_background")
def mask_background_action(ctx: StepContext) -> dict[str, Any] | None:
    story = ctx.prepared
    if story is None:
        _not_ready(ctx)
        return None
    before = ctx.others.get("grad_cam")
    batch_before = before.trained.balanced_accuracy if before is not None else None
    numbers = story.numbers(batch_before)
    c1, c2, c3 = st.columns(3)
    c1.metric("Plate, background masked", f"{numbers['batch_accuracy']:.2f}",
              delta=None if batch_before is None else f"{numbers['batch_accuracy'] - batch_before:+.2f} vs unmasked",
              delta_color="off", help="Balanced accuracy of a CNN predicting the plate, on images it never saw.")
    c2.metric("Condition, background masked", f"{numbers['condition_accuracy']:.2f}",
              help="Balanced accuracy of a CNN predicting treated vs control, on images it never saw.")
    c3.metric("Chance", f"{numbers['chance']:.2f}", help="What guessing reaches: 1 / 2 classes.")
    frame = cells_frame(story.map_run.cells, None, story.map_run.cell_map, with_features=False)
    m1, m2 = st.columns(2)
    with m1:
        _map(frame, "batch", "Masked crops: by plate", f"lesson.chart.{ctx.step.id}.plate")
    with m2:
        _map(frame, "condition", "Masked crops: by condition", f"lesson.chart.{ctx.step.id}.condition")
    if story.map_run.cell_map.report is not None:
        st.caption("On the masked crops' autoencoder features (the map above, a linear classifier, not the CNN): "
                   + story.map_run.cell_map.report["reason"])
    return numbers
