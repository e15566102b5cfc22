"""The Preprocess page's views of one image under the current recipe: the Result pictures with their
toggles and live threshold, the histogram, the three-threshold grid, and the cells' measurements
and crops. Each is computed before its first element is drawn."""

from __future__ import annotations

import cv2
import numpy as np
import streamlit as st

from components.downloads import download_button
from components.image_viewer import cached_composite, picture
from components.live_threshold import LIVE_METHODS, live_threshold
from components.pipeline_cache import cell_table, gt_scores, memo
from components.plots import histogram_figure
from components.preprocess_fragments import CONTROLS, open_views
from components.result_view import Layer, Panel, Summary, Toggle, result_view
from core.cells.measure import crop_cells
from core.data.images import CellImage
from core.figures.display import (
    display_mask,
    display_outlines,
    draw_outlines,
    gray_rgb,
    montage,
    overlay_png,
    preview,
    to_uint8,
)
from core.segmentation.preprocess import PipelineResult, compare_thresholds, image_geometry, transform_geometry
from core.segmentation.recipe import STEP_ORDER, Recipe

PREVIEW_SIDE = 640  # px; the views are about 500 px wide on a laptop screen
TINT_COLOR, OUTLINE_COLOR, GT_COLOR = (0, 200, 255), (255, 255, 0), (255, 0, 255)


def _merge(image: CellImage) -> np.ndarray:
    """The display merge of every channel, in the image's own frame (where the cells are drawn)."""
    return cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])


def _image_key(image: CellImage) -> str:
    return f"{image.hash}{image.channels}"


def _steps_upto(recipe: Recipe, last: str) -> tuple:
    """The recipe's steps up to and including ``last``: what a view made from that stage depends on."""
    return tuple(getattr(recipe, step) for step in STEP_ORDER[: STEP_ORDER.index(last) + 1])


def _picture(image: CellImage) -> tuple[np.ndarray, Layer, Layer | None]:
    """The display merge and the ground-truth outlines in the image's own frame (the pipeline's
    cells come back to it whatever the rotate step did), at preview size: (RGB array, base layer,
    ground-truth layer or None). Unchanged by every slider."""
    def compute():
        small = preview(_merge(image), PREVIEW_SIDE)
        base = Layer.of("base", "the image (display merge)", small, "jpeg")
        if image.gt is None:
            return small, base, None
        outlines = display_outlines(image.gt, (small.shape[1], small.shape[0]))
        return small, base, Layer.of("gt", "ground-truth outlines", overlay_png(outlines, GT_COLOR), toggle="gt")
    return memo((_image_key(image), "picture"), compute)


def _on_canvas(image: CellImage, recipe: Recipe, small: np.ndarray) -> np.ndarray:
    """The display merge as the pipeline's steps see it (rotated, scaled, flipped on its canvas),
    at about ``small``'s scale: the live threshold draws over it."""
    def compute():
        canvas = transform_geometry(_merge(image), recipe.rotate)
        side = round(PREVIEW_SIDE * max(canvas.shape[:2]) / max(image.shape[:2]))
        return preview(canvas, max(side, 1))
    return small if image_geometry(image.shape, recipe.rotate) is None else memo(
        (_image_key(image), "canvas", recipe.rotate), compute)


def _canvas_size(canvas: tuple[int, int], small: np.ndarray, image: CellImage) -> tuple[int, int]:
    """The preview size of the rotate step's canvas, at the preview's scale of the image."""
    factor = small.shape[1] / image.shape[1]
    return max(1, round(canvas[0] * factor)), max(1, round(canvas[1] * factor))


def result_views(image: CellImage, recipe: Recipe, result: PipelineResult) -> None:
    """The Result view. Everything is computed before the first element is drawn, so the page's
    elements reach the browser in one burst and it re-renders the page once, not once per view."""
    small, base, gt = _picture(image)
    size = (small.shape[1], small.shape[0])
    geometry = result.geometry
    # The processed image, its foreground and edges lie on the rotate step's canvas; the cells are
    # back in the image's frame. Each caption says which.
    canvas = size if geometry is None else _canvas_size(geometry.size, small, image)
    upto_background = _steps_upto(recipe, "background")
    processed = memo((_image_key(image), "processed", upto_background), lambda: Layer.of(
        "processed", "the processed image", to_uint8(cv2.resize(result.processed, canvas, interpolation=cv2.INTER_AREA)), "jpeg"))
    tint = Layer.of("tint", "foreground", overlay_png(display_mask(result.mask, canvas), TINT_COLOR, 0.35), toggle="tint")
    outlines = Layer.of("outlines", "cell outlines", overlay_png(display_outlines(result.labels, size), OUTLINE_COLOR),
                        toggle="outlines")
    turned = "" if geometry is None else f" ({geometry.what}, as the steps see it)"
    panels = [
        Panel("original", "Original (display merge), as the image is" + (": the rotate step is not applied here"
                                                                        if geometry else ""), (base,)),
        Panel("processed", f"Processed{turned}: what is thresholded; the foreground tinted blue", (processed, tint)),
        Panel("segmentation", "Found cells" + (" mapped back to the image as it is," if geometry else "")
              + " outlined in yellow" + (", ground truth (switch above) in magenta" if gt else ""),
              (base, *((gt,) if gt else ()), outlines)),
    ]
    if result.edges is not None:
        edges = overlay_png(display_mask(result.edges, canvas, thin=True), (255, 255, 255), 0.9)
        panels.append(Panel("edges", f"Canny edges (white){turned}",
                            ((base,) if geometry is None else (processed,)) + (Layer.of("edges", "Canny edges", edges),)))
    toggles = [
        Toggle("tint", "Tint foreground", "Show the thresholded mask over the processed image."),
        Toggle("outlines", "Cell outlines", "Outline every found cell in yellow."),
        Toggle("gt", "Ground truth", "Outline the ground-truth cells in magenta." if gt else "This image has no ground truth.",
               on=False, disabled=gt is None),
    ]
    lines = [f"{result.mask.mean():.1%} of the {'rotate step’s canvas' if geometry else 'image'} is foreground · "
             + ("adaptive threshold (it varies across the image)" if result.threshold is None else f"threshold {result.threshold:.3f}")]
    if gt is not None:
        scores = gt_scores(image, image.hash, image.channels, recipe)
        lines.insert(0, f"Against ground truth (objects matched one-to-one at IoU ≥ 0.5): F1 {scores.f1:.3f} · "
                        f"precision {scores.precision:.3f} · recall {scores.recall:.3f} · mean matched IoU {scores.mean_iou:.3f}")
    summary = Summary(f"{result.n_cells} cells found", tuple(lines), tuple(result.notes))

    if recipe.threshold.method in LIVE_METHODS and st.toggle(
            "Live threshold preview", value=False, key="live_preview",
            help="A threshold slider whose foreground is drawn in your browser as you drag (no server round "
                 "trip); the segmentation follows when you release it."):
        live_threshold(_on_canvas(image, recipe, small), result.processed, recipe.threshold,
                       result.cell_diameter, f"{_image_key(image)}{upto_background}", rerun=(CONTROLS, *open_views()))
    result_view(panels, toggles, summary, key="result_panels")


def histogram(image: CellImage, recipe: Recipe, result: PipelineResult) -> None:
    """The histogram of what is thresholded, the threshold marked. A fragment of its own, below
    the pictures: the steps after the threshold do not change it, so their sliders leave it be
    (a Plotly chart redrawn costs the browser ~60 ms)."""
    log_y = st.toggle("Log histogram", value=True, key="log_hist", help="Logarithmic pixel counts: shows the small foreground peak.")
    figure = memo((_image_key(image), "histogram", _steps_upto(recipe, "background"), result.threshold, log_y),
                   lambda: histogram_figure(result.processed, result.threshold, log_y=log_y))
    st.plotly_chart(figure, width="stretch", config={"displaylogo": False})


def threshold_grid(result: PipelineResult) -> None:
    turned = "" if result.geometry is None else f", {result.geometry.what} as the steps see it"
    st.caption("As in the OpenCV tutorial: the same image thresholded three ways (on the normalised, not yet denoised "
               f"image{turned}).")
    for name, source, value, mask in compare_thresholds(result.normalized):
        c1, c2, c3 = st.columns([1, 1.4, 1])
        picture(preview(gray_rgb(source), 320), caption=name, fmt="png", where=c1)
        c2.plotly_chart(histogram_figure(source, value, height=200), width="stretch", config={"displaylogo": False},
                        key=f"grid_{name}")
        picture(preview(gray_rgb(mask.astype(np.float32)), 320), fmt="png", where=c3,
                caption=f"threshold {value:.3f} · {mask.mean():.1%} foreground")


def measurements(image: CellImage, recipe: Recipe, result: PipelineResult) -> None:
    if result.n_cells == 0:
        st.info("No cells found, so nothing to measure. Adjust the threshold on the left.")
        return
    table = cell_table(image, image.hash, image.channels, recipe)
    if result.geometry is not None:
        st.caption(f"Measured on the image as it is: the cells were found with the image {result.geometry.what} and "
                   "mapped back, so positions, areas and intensities are the image's own.")
    st.dataframe(table, hide_index=True, width="stretch", height=320)
    download_button(st, "Download measurements (CSV)", table.to_csv(index=False), file_name=f"{image.name}_cells.csv",
                       mime="text/csv", help="One row per cell: shape, position, mean and integrated intensity per channel.")
    crops = crop_cells(draw_outlines(_merge(image), result.labels), result.labels, size=64)
    shown = min(len(crops.labels), 60)
    picture(montage(crops.images[:shown]),
            caption=f"Cells located by thresholding and cropped: {shown} of {len(crops.labels)}, label order")
