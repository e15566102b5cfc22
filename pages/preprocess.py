"""Preprocess page: OpenCV steps on live sliders, a classical segmentation, per-cell measurements."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from components.downloads import download_button
from components.image_viewer import cached_composite, picture
from components.live_threshold import LIVE_METHODS, live_threshold
from components.pipeline_cache import cell_table, gt_scores, memo, pipeline, pipeline_instances
from components.plots import histogram_figure
from components.recipe_panel import current_recipe, load_recipe, recipe_panel
from components.result_view import Layer, Panel, Summary, Toggle, result_view
from components.routing import page_with_images
from components.state import dataset
from components.workspace import fragment
from core.analysis import with_provenance
from core.autotune import MAX_TUNING_IMAGES, TuneResult, autotune, recipe_changes
from core.display import (
    display_mask,
    display_outlines,
    draw_outlines,
    gray_rgb,
    montage,
    overlay_png,
    preview,
    to_uint8,
)
from core.images import CellImage
from core.measure import crop_cells
from core.preprocess import (
    PipelineResult,
    compare_thresholds,
    image_geometry,
    transform_geometry,
)
from core.recipe import DEFAULT_RECIPE, STEP_ORDER, Recipe
from core.text import plural
from workflows.segmentation import run_segmentation

PREVIEW_SIDE = 640  # px; the views are about 500 px wide on a laptop screen
TINT_COLOR, OUTLINE_COLOR, GT_COLOR = (0, 200, 255), (255, 255, 0), (255, 0, 255)


def _merge(image: CellImage) -> np.ndarray:
    """The display merge of every channel, in the image's own frame (where the cells are drawn)."""
    return cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])


def use_recipe(recipe: Recipe, message: str = "") -> None:
    """Callback: make ``recipe`` current, say so, and redraw the controls and the views."""
    load_recipe(recipe)
    if message:
        st.session_state.recipe_message = message
    redraw_all()


def recipe_files() -> None:
    """The recipe as JSON: shown, downloaded, uploaded, reset."""
    st.markdown("**The recipe**: every step's settings, as JSON")
    recipe = current_recipe()
    if msg := st.session_state.pop("recipe_message", None):
        st.success(msg)
    with st.expander("Show the recipe's JSON"):
        st.code(recipe.to_json(), language="json")
    row = st.container(horizontal=True)
    download_button(row, "Download recipe", recipe.to_json(), file_name="cellscope_recipe.json", mime="application/json",
                       help="The ordered steps and parameters as JSON; the CLI takes it with --recipe.")
    row.button("Reset to default", on_click=use_recipe, args=(DEFAULT_RECIPE, "Reset to the default recipe."),
              help="The built-in recipe for fluorescent nuclei.")

    def _upload() -> None:
        f = st.session_state.get("recipe_upload")
        if f is None:
            return
        try:
            recipe = Recipe.from_json(f.getvalue())
        except ValueError as exc:
            # Kept while the file stays in the box: an error must not vanish on the next rerun.
            st.session_state.recipe_error = (f.file_id, f"**{f.name}** was not loaded: {exc}. Fix the file or "
                                             "remove it (×) and upload another.")
            return
        use_recipe(recipe, f"Loaded the recipe from {f.name}.")

    upload = st.file_uploader("Upload recipe (JSON)", type=["json"], key="recipe_upload", on_change=_upload,
                              help="A recipe downloaded here or printed by `python -m core recipe`.")
    error = st.session_state.get("recipe_error")
    if error and upload is not None and upload.file_id == error[0]:
        st.error(error[1])


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


def recipe_row(image: CellImage, recipe: Recipe, result) -> dict:
    """One image's line of the all-images table: its cells and, with ground truth, F1."""
    row = {"cells": result.count}
    if image.gt is not None:
        row["f1"] = round(gt_scores(image, image.hash, image.channels, recipe).f1, 4)
    return row


def batch_and_tune(recipe: Recipe) -> None:
    ds = dataset()
    st.markdown("**Apply the recipe to every image**")
    if st.button("Run on all images", help="Segment and measure every image in the dataset with this recipe."):
        bar = st.progress(0.0)
        run = run_segmentation(list(ds), recipe, segment=lambda img: pipeline_instances(img, recipe),
                               measure=lambda img, _: cell_table(img, img.hash, img.channels, recipe),
                               row=lambda img, r: recipe_row(img, recipe, r),
                               progress=lambda f, what: bar.progress(f, text=f"Segmenting: {what}…"))
        bar.empty()
        for problem in run.problems:
            st.error(problem)
        record = run.analysis
        st.session_state.batch_result = (record.tables["summary"], record.tables["cells"], record.files["labels.zip"],
                                          record.provenance)
        st.session_state.batch_recipe = (recipe, ds.signature())
    if "batch_result" in st.session_state:
        summary, cells, zipped_labels, prov = st.session_state.batch_result
        made_with, made_on = st.session_state.get("batch_recipe", (None, None))
        changed = [what for what, now, then in (("the recipe", recipe, made_with), ("the images", ds.signature(), made_on))
                   if now != then]
        if changed:
            st.warning(f"These results are out of date: {' and '.join(changed)} changed since they were made. Press "
                       "**Run on all images** again to update them.", icon=":material/history:")
        st.dataframe(summary, hide_index=True, width="stretch")
        if "f1" in summary:
            st.caption(f"Mean F1 @ IoU 0.5 over {plural(int(summary['f1'].notna().sum()), 'image')} with ground truth: {summary['f1'].mean():.3f}")
        c1, c2 = st.columns(2)
        download_button(c1, "All measurements (CSV)", lambda: with_provenance(cells, prov).to_csv(index=False),
                           file_name="cellscope_cells.csv", mime="text/csv",
                           help="Every cell of every image, with image, batch and condition columns, and columns "
                                "naming the CellScope version, device and recipe.")
        download_button(c2, "All label images (zip)", zipped_labels, file_name="cellscope_labels.zip", mime="application/zip",
                           help="One label TIFF per image: 0 = background, 1..N = cells; provenance.json records the "
                                "recipe and versions.")

    st.markdown("**Auto-tune on ground truth**")
    with_gt = [img for img in ds if img.gt is not None]
    if st.button("Auto-tune", disabled=not with_gt,
                 help=f"Searches threshold method, blur, watershed seed distance and minimum area for the best mean F1 "
                      f"at IoU 0.5 on up to {MAX_TUNING_IMAGES} images with ground truth, taken in turn from each batch."
                 if with_gt else "Needs images with ground truth."):
        bar = st.progress(0.0, text="Tuning…")
        try:
            result = autotune(with_gt, recipe, progress=lambda f, what: bar.progress(min(f, 1.0), text=f"Trying {what}"))
        except ValueError as exc:
            st.error(str(exc))
        else:
            st.session_state.tune_result, st.session_state.tune_made_on = result, ds.signature()
        bar.empty()
    if tuned := st.session_state.get("tune_result"):
        tune_report(tuned, recipe, images_changed=st.session_state.get("tune_made_on") != ds.signature())


def tune_report(tuned: TuneResult, recipe: Recipe, *, images_changed: bool = False) -> None:
    """What the search found, on which images, and the tuned recipe to use only when it is better."""
    scope = tuned.scope()
    if recipe != tuned.start:
        st.warning("The recipe changed after this search; it compares the settings it started from, not the current "
                   "ones. Press **Auto-tune** again to search from the current recipe.", icon=":material/history:")
    if images_changed:
        st.warning("The images or their ground truth changed after this search: its scores are of the images as they "
                   "were. Press **Auto-tune** again to search on them as they are.", icon=":material/history:")
    if not tuned.improved:
        st.info(f"No setting in the search beat the recipe it started from: F1 @ IoU 0.5 {tuned.start_f1:.3f} "
                f"({scope}), {len(tuned.trials)} trials. Nothing to change.")
    else:
        st.success(f"Best F1 @ IoU 0.5: **{tuned.best_f1:.3f}**, up from {tuned.start_f1:.3f} ({scope}; "
                   f"{len(tuned.trials)} trials)")
        st.dataframe(pd.DataFrame(recipe_changes(tuned.start, tuned.best)).astype(str), hide_index=True,
                     width="stretch")
    if tuned.with_gt > len(tuned.images):
        st.caption(f"These F1s are means over the {len(tuned.images)} tuning images only, so they differ from the mean "
                   f"over all {tuned.with_gt} images with ground truth that **Run on all images** shows.")
    if not tuned.improved:
        return
    if recipe == tuned.best:
        st.button("The tuned recipe is in use", disabled=True, icon=":material/check:", key="tuned_in_use",
                  help="The controls on the left show it, and it is the classical model on every page.")
    else:
        st.button("Use the tuned recipe", on_click=use_recipe, type="primary",
                  args=(tuned.best, f"Now using the tuned recipe (F1 {tuned.best_f1:.3f}, {scope})."),
                  help="Load it into the controls; it becomes the classical model on every page.")


CONTROLS = "pre_controls"  # the recipe panel's fragment
HISTOGRAM = "pre_histogram"  # the Result view's histogram, a fragment below its pictures
# The views, each drawn by a fragment of its own: a slider move reruns only the open view's, so
# the browser gets a handful of messages per move and hidden views cost nothing.
VIEWS = {"Result": "pre_result", "Thresholds": "pre_thresholds", "Cells & crops": "pre_measure",
        "Recipe & all images": "pre_batch"}


def open_views(step: str | None = None) -> tuple[str, ...]:
    """The keys of the open view's fragments that a change of ``step`` (None: of anything) must
    rerun: the histogram only follows the steps up to the threshold."""
    view = VIEWS.get(st.session_state.get("pre_tab"), VIEWS["Result"])
    if view != VIEWS["Result"] or step in STEP_ORDER[STEP_ORDER.index("threshold") + 1:]:
        return (view,)
    return view, HISTOGRAM


def redraw_all() -> None:
    """Callback: rerun the recipe panel and the open view (everything when the view changed in the
    same rerun: its fragment is not drawn yet)."""
    try:
        st.rerun([CONTROLS, *open_views()])
    except StreamlitAPIException:
        st.rerun()


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
    batch_and_tune(current_recipe())


DRAW_VIEW = {"Result": (show_result, show_histogram), "Thresholds": (show_thresholds,),
             "Cells & crops": (show_measurements,), "Recipe & all images": (show_batch,)}
preprocess_page()
