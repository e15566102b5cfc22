"""Preprocess page: OpenCV steps on live sliders, a classical segmentation, per-cell measurements."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from components.image_viewer import cached_composite
from components.live_threshold import LIVE_METHODS, live_threshold
from components.plots import histogram_figure
from components.recipe_panel import current_recipe, load_recipe, recipe_panel
from components.routing import require_router
from components.state import dataset
from core.autotune import autotune
from core.cache import BoundedCache
from core.display import draw_outlines, encode_image, gray_rgb, montage, preview, tint
from core.export import label_tiff_bytes
from core.images import CellImage
from core.measure import crop_cells, measure_cells
from core.metrics import Matching, match_instances
from core.preprocess import (
    DEFAULT_RECIPE,
    PipelineResult,
    Recipe,
    compare_thresholds,
    run_pipeline,
    transform_geometry,
    transform_pixels,
)

PREVIEW_SIDE = 640  # px; the views are about 500 px wide on a laptop screen
VIEW_TOGGLES = {"show_mask": True, "log_hist": True, "show_gt": False}  # Result tab: key -> default


@st.cache_resource
def _stage_cache() -> BoundedCache:
    """One per server process, bounded: every stage keyed by image hash + the recipe so far, so
    moving a late slider reuses the earlier stages. Arrays are shared, not copied: the
    pipeline's ~20 MB of 1024 px arrays would cost ~20 ms to pickle per rerun in st.cache_data."""
    return BoundedCache(max_entries=96)


def pipeline(image: CellImage, recipe: Recipe) -> PipelineResult:
    return run_pipeline(image.pixels, image.channels, recipe, image_hash=f"{image.hash}{image.channels}",
                        cache=_stage_cache())


@st.cache_data(max_entries=64, show_spinner=False)
def cell_table(_image: CellImage, image_hash: str, channels: tuple, recipe: Recipe) -> pd.DataFrame:
    """Per-cell measurements, cached by image hash + recipe."""
    labels = pipeline(_image, recipe).labels
    return measure_cells(labels, transform_pixels(_image.pixels, recipe.rotate), _image.channels)


@st.cache_data(max_entries=256, show_spinner=False)
def gt_scores(_image: CellImage, image_hash: str, channels: tuple, recipe: Recipe) -> Matching:
    """Match against ground truth (in the pipeline's geometry), cached by image hash + recipe."""
    gt = transform_geometry(_image.gt, recipe.rotate, labels=True)
    return match_instances(gt, pipeline(_image, recipe).labels)


def _aligned(image: CellImage, recipe: Recipe) -> tuple[np.ndarray, np.ndarray | None]:
    """The display merge and ground truth in the pipeline's geometry (rotation, flips)."""
    rgb = cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])
    rgb = transform_geometry(rgb, recipe.rotate)
    gt = transform_geometry(image.gt, recipe.rotate, labels=True) if image.gt is not None else None
    return rgb, gt


def use_recipe(recipe: Recipe) -> None:
    """Callback: make ``recipe`` current and redraw the controls and the views."""
    load_recipe(recipe)
    st.rerun(list(BOTH))


def recipe_files() -> None:
    """Download, upload and reset the recipe."""
    st.markdown("**The recipe**: every step's settings, as JSON")
    recipe = current_recipe()
    c1, c2 = st.columns(2)
    c1.download_button("Download recipe", recipe.to_json(), file_name="cellscope_recipe.json", mime="application/json",
                       help="The ordered steps and parameters as JSON; the CLI takes it with --recipe.")
    c2.button("Reset to default", on_click=use_recipe, args=(DEFAULT_RECIPE,),
              help="The built-in recipe for fluorescent nuclei.")

    def _upload() -> None:
        f = st.session_state.get("recipe_upload")
        if f is None:
            return
        try:
            recipe = Recipe.from_json(f.getvalue())
        except ValueError as exc:
            st.session_state.recipe_message = ("error", f"**{f.name}**: {exc}")
            return
        st.session_state.recipe_message = ("success", f"Loaded recipe {f.name}")
        use_recipe(recipe)

    st.file_uploader("Upload recipe (JSON)", type=["json"], key="recipe_upload", on_change=_upload,
                     help="A recipe downloaded here or printed by `python -m core recipe`.")
    if msg := st.session_state.pop("recipe_message", None):
        (st.error if msg[0] == "error" else st.success)(msg[1])


def result_views(image: CellImage, recipe: Recipe, result: PipelineResult) -> None:
    """The result tab. Everything is computed before the first element is drawn, so the page's
    elements reach the browser in one burst and it re-renders the page once, not once per view."""
    rgb, gt = _aligned(image, recipe)
    show = {key: st.session_state.get(key, default) for key, default in VIEW_TOGGLES.items()}
    show_mask, log_hist, show_gt = show["show_mask"], show["log_hist"], show["show_gt"] and gt is not None
    # Made at display size and sent as JPEG: a few ms per view instead of ~20 ms at full size as PNG.
    small = preview(rgb, PREVIEW_SIDE)
    size = (small.shape[1], small.shape[0])
    processed = gray_rgb(cv2.resize(result.processed, size, interpolation=cv2.INTER_AREA))
    if show_mask:
        processed = tint(processed, cv2.resize(result.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)
    outlined = draw_outlines(draw_outlines(small, gt, (255, 0, 255)) if show_gt else small, result.labels)
    jpegs = [encode_image(x, "jpeg") for x in (small, processed, outlined)]
    if result.edges is not None:
        jpegs.append(encode_image(preview(tint(rgb, result.edges, (255, 255, 255), 0.9), PREVIEW_SIDE), "jpeg"))
    histogram = histogram_figure(result.processed, result.threshold, log_y=log_hist)
    scores = gt_scores(image, image.hash, image.channels, recipe) if gt is not None else None

    o1, o2, o3 = st.columns(3)
    o1.toggle("Tint foreground", value=VIEW_TOGGLES["show_mask"], key="show_mask", help="Show the thresholded mask over the processed image.")
    o2.toggle("Log histogram", value=VIEW_TOGGLES["log_hist"], key="log_hist", help="Logarithmic pixel counts: shows the small foreground peak.")
    o3.toggle("Ground truth", value=VIEW_TOGGLES["show_gt"], key="show_gt", disabled=gt is None,
              help="Draw the ground-truth outlines in magenta too." if gt is not None else "This image has no ground truth.")
    if recipe.threshold.method in LIVE_METHODS and st.toggle(
            "Live threshold preview", value=False, key="live_preview",
            help="A threshold slider whose foreground is drawn in your browser as you drag (no server round "
                 "trip); the segmentation follows when you release it."):
        upto_background = {k: v for k, v in recipe.to_dict()["steps"].items()
                           if k in ("channel", "rotate", "normalize", "denoise", "background")}
        live_threshold(small, result.processed, recipe.threshold, result.cell_diameter,
                       f"{image.hash}{image.channels}{sorted(upto_background.items())}", rerun=BOTH)
    c1, c2 = st.columns(2)
    c1.image(jpegs[0], caption="Original (display merge)", width="stretch")
    c2.image(jpegs[1], caption="Processed (what is thresholded)" + (", foreground tinted" if show_mask else ""), width="stretch")
    c3, c4 = st.columns(2)
    c3.image(jpegs[2], width="stretch",
             caption=f"{result.n_cells} cells found (yellow)" + (" · ground truth magenta" if show_gt else ""))
    c4.plotly_chart(histogram, width="stretch", config={"displaylogo": False})
    if result.edges is not None:
        st.image(jpegs[3], caption="Canny edges", width="stretch")
    # One line each, not a widget per number: fewer elements make every slider move faster.
    if scores is not None:
        st.markdown(f"Against ground truth (objects matched one-to-one at IoU ≥ 0.5): **F1 {scores.f1:.3f}** · "
                    f"precision {scores.precision:.3f} · recall {scores.recall:.3f} · mean matched IoU {scores.mean_iou:.3f}")
    st.caption(" · ".join(f"ℹ️ {note}" for note in result.notes))


def threshold_grid(result: PipelineResult) -> None:
    st.caption("As in the OpenCV tutorial: the same image thresholded three ways (on the normalised, not yet denoised image).")
    for name, source, value, mask in compare_thresholds(result.normalized):
        c1, c2, c3 = st.columns([1, 1.4, 1])
        c1.image(preview(gray_rgb(source), 320), caption=name, width="stretch")
        c2.plotly_chart(histogram_figure(source, value, height=200), width="stretch", config={"displaylogo": False},
                        key=f"grid_{name}")
        c3.image(preview(gray_rgb(mask.astype(np.float32)), 320), caption=f"threshold {value:.3f} · {mask.mean():.1%} foreground",
                 width="stretch")


def measurements(image: CellImage, recipe: Recipe, result: PipelineResult) -> None:
    if result.n_cells == 0:
        st.info("No cells found, so nothing to measure. Adjust the threshold on the left.")
        return
    table = cell_table(image, image.hash, image.channels, recipe)
    st.dataframe(table, hide_index=True, width="stretch", height=320)
    st.download_button("Download measurements (CSV)", table.to_csv(index=False), file_name=f"{image.name}_cells.csv",
                       mime="text/csv", help="One row per cell: shape, position, mean and integrated intensity per channel.")
    rgb, _ = _aligned(image, recipe)
    crops = crop_cells(draw_outlines(rgb, result.labels), result.labels, size=64)
    shown = min(len(crops.labels), 60)
    st.image(montage(crops.images[:shown]), width="stretch",
             caption=f"Cells located by thresholding and cropped: {shown} of {len(crops.labels)}, label order")


def batch_and_tune(recipe: Recipe) -> None:
    ds = dataset()
    st.markdown("**Apply the recipe to every image**")
    if st.button("Run on all images", help="Segment and measure every image in the dataset with this recipe."):
        bar = st.progress(0.0)
        rows, tables, label_zip = [], [], io.BytesIO()
        with zipfile.ZipFile(label_zip, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, img in enumerate(ds):
                bar.progress(i / len(ds), text=f"Segmenting {img.name}…")
                res = pipeline(img, recipe)
                row = {"image": img.name, "batch": img.batch, "cells": res.n_cells}
                if img.gt is not None:
                    row["f1"] = round(gt_scores(img, img.hash, img.channels, recipe).f1, 4)
                rows.append(row)
                t = cell_table(img, img.hash, img.channels, recipe)
                tables.append(t.assign(image=img.name, batch=img.batch, condition=img.condition))
                zf.writestr(f"{img.name}_labels.tif", label_tiff_bytes(res.labels))
        bar.empty()
        st.session_state.batch_result = (pd.DataFrame(rows), pd.concat(tables, ignore_index=True), label_zip.getvalue())
    if "batch_result" in st.session_state:
        summary, cells, labels_zip = st.session_state.batch_result
        st.dataframe(summary, hide_index=True, width="stretch")
        if "f1" in summary:
            st.caption(f"Mean F1 @ IoU 0.5 over {summary['f1'].notna().sum()} images with ground truth: {summary['f1'].mean():.3f}")
        c1, c2 = st.columns(2)
        c1.download_button("All measurements (CSV)", cells.to_csv(index=False), file_name="cellscope_cells.csv", mime="text/csv",
                           help="Every cell of every image, with image, batch and condition columns.")
        c2.download_button("All label images (zip)", labels_zip, file_name="cellscope_labels.zip", mime="application/zip",
                           help="One label TIFF per image: 0 = background, 1..N = cells.")

    st.markdown("**Auto-tune on ground truth**")
    with_gt = [img for img in ds if img.gt is not None]
    if st.button("Auto-tune", disabled=not with_gt,
                 help="Searches threshold method, blur, watershed seed distance and minimum area for the best F1 at IoU 0.5 "
                      "on up to 4 images with ground truth." if with_gt else "Needs images with ground truth."):
        bar = st.progress(0.0, text="Tuning…")
        try:
            result = autotune(with_gt[:4], recipe, progress=lambda f, what: bar.progress(min(f, 1.0), text=f"Trying {what}"))
        except ValueError as exc:
            st.error(str(exc))
        else:
            st.session_state.tune_result = result
        bar.empty()
    if tuned := st.session_state.get("tune_result"):
        st.success(f"Best F1 @ IoU 0.5: **{tuned.best_f1:.3f}** (started at {tuned.start_f1:.3f}, {len(tuned.trials)} trials)")
        start, best = tuned.trials[0].recipe.to_dict()["steps"], tuned.best.to_dict()["steps"]
        changes = [{"parameter": f"{step}.{k}", "was": start[step][k], "tuned": v}
                   for step, params in best.items() for k, v in params.items() if start[step][k] != v]
        if changes:
            st.dataframe(pd.DataFrame(changes).astype(str), hide_index=True, width="stretch")
        else:
            st.info("No setting in the search beat the current recipe.")
        st.button("Use the tuned recipe", on_click=use_recipe, args=(tuned.best,), type="primary",
                  help="Load it into the controls; it becomes the classical model on every page.")


CONTROLS, VIEWS = "pre_controls", "pre_views"  # the page's two fragments
BOTH = (CONTROLS, VIEWS)


def preprocess_page() -> None:
    require_router()
    st.title("Preprocess")
    if len(dataset()) == 0:
        st.warning("No images loaded. Add some on the Data page.")
        return
    left, right = st.columns([1, 2.2], gap="large")
    with left:
        controls()
    with right:
        views()


@st.fragment(key=CONTROLS)
def controls() -> None:
    """Image choice and recipe steps. A fragment of its own: a value slider reruns only the
    views (the panel's widgets already show their new values), a structural change both."""
    ds = dataset()
    if st.session_state.get("pre_image") not in ds.names:
        st.session_state.pre_image = ds.names[0]
    st.selectbox("Image", ds.names, key="pre_image", on_change=st.rerun, args=(list(BOTH),),
                 help="The image the live preview works on.")
    recipe_panel(ds[st.session_state.pre_image].channels, views=(VIEWS,), panel=(CONTROLS,))


@st.fragment(key=VIEWS)
def views() -> None:
    """What the current recipe makes of the chosen image."""
    ds = dataset()
    image, recipe = ds[st.session_state.get("pre_image", ds.names[0])], current_recipe()
    try:
        result = pipeline(image, recipe)
    except ValueError as exc:
        st.error(f"The pipeline could not run on {image.name}: {exc}")
        return
    # Only the open tab runs: a slider move must not re-measure cells in a hidden tab.
    tabs = st.tabs(["Result", "Compare thresholds", "Measurements & crops", "Recipe, all images & auto-tune"],
                   on_change="rerun", key="pre_tab")
    tab_views = (lambda: result_views(image, recipe, result), lambda: threshold_grid(result),
                 lambda: measurements(image, recipe, result), lambda: (recipe_files(), batch_and_tune(recipe)))
    for tab, view in zip(tabs, tab_views, strict=True):
        if tab.open:
            with tab:
                view()


preprocess_page()
