"""The lesson's first three steps, live: the channels of a 16-bit image and the HPA merge
(``channels``), OpenCV's rotation, edges and thresholds on a nucleus channel (``opencv``), and the
classical recipe finding, measuring and cropping the nuclei (``find_cells``).

Each draws on the Data and Preprocess pages' parts (the channel toggles and merge, the recipe's
thresholds and settings' declarations, the classical model) and returns the numbers its checkpoint
reads (:mod:`core.lesson.image_checks`). What several students ask for is computed once per server.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.image_viewer import cached_composite, channel_toggles, picture
from components.lesson_actions import StepContext, action
from components.model_panel import shared_model
from components.recipe_panel import current_recipe
from components.settings_widgets import field_widget, range_widget
from components.state import shared_read_only
from core.cache import BoundedCache
from core.cells.cell_set import CellSet
from core.data.images import CellImage, nucleus_plane
from core.figures.display import crops_rgb, draw_outlines, gray_rgb, montage, tint
from core.io.hpa_example import make_hpa_example
from core.lesson.image_checks import (
    EIGHT_BIT_MAX,
    bit_depth_reading,
    cells_reading,
    merge_weights,
    threshold_views,
    thresholds_reading,
    yellow_split,
)
from core.schema import field_of
from core.segmentation.preprocess import canny_edges, rotation_matrix
from core.segmentation.recipe import CannyStep, Recipe, RotateStep, ThresholdStep, WatershedStep
from models.registry import availability

CROPS_SHOWN = 12
TABLE_COLUMNS = {"label": "cell", "area": "area (px)", "eccentricity": "eccentricity", "solidity": "solidity",
                 "mean_nucleus": "mean nucleus", "mean_protein": "mean protein"}


@st.cache_resource(show_spinner=False)
def _store() -> BoundedCache:
    """One per server: readings, planes, segmentations and cell sets of the lesson's images."""
    return BoundedCache(max_entries=64)


def _memo(key: tuple[Hashable, ...], compute: Callable[[], Any]) -> Any:
    return _store().get_or_compute(("lesson_images", *key), compute)


@st.cache_resource(show_spinner="Generating the HPA-style image…")
def hpa_image() -> CellImage:
    return shared_read_only([make_hpa_example()])[0]


def _seed(key: str, default: Any) -> str:
    """``key`` with ``default`` as its first value (kept across a reload as the student left it)."""
    st.session_state.setdefault(key, default)
    return key


def _pick_image(ctx: StepContext, *, with_truth: bool = False) -> CellImage | None:
    images = [img for img in ctx.images if img.gt is not None] if with_truth else list(ctx.images)
    if not images:
        st.warning("This lesson's images have no ground truth, so nothing can be scored here.")
        return None
    by_name = {img.name: img for img in images}
    key = ctx.key + "image"
    if st.session_state.get(key) not in by_name:
        st.session_state[key] = images[0].name
    name = st.selectbox("Image", list(by_name), key=key,
                        format_func=lambda n: f"{n} ({by_name[n].batch}, {by_name[n].condition})",
                        help="One field of the lesson's two plates.")
    return by_name[name]


# ---------------------------------------------------------------------------------------
# images: 16-bit values and the merge


def raw_histogram(image: CellImage) -> go.Figure:
    """Each channel's raw values (log counts) in its display colour, 255 marked."""
    top = max(int(image.pixels.max()), EIGHT_BIT_MAX + 1)
    edges = np.linspace(0, top + 1, 129)
    fig = go.Figure()
    for i, ch in enumerate(image.channels):
        counts, _ = np.histogram(image.pixels[:, :, i], bins=edges)
        fig.add_trace(go.Scatter(x=edges[:-1], y=np.where(counts > 0, counts, np.nan), mode="lines",
                                 line_shape="hv", name=ch.name, line_color=ch.color, connectgaps=False,
                                 hovertemplate="%{x:.0f}: %{y} pixels<extra>" + ch.name + "</extra>"))
    fig.add_vline(x=EIGHT_BIT_MAX, line_color="#888", line_dash="dash", annotation_text="255: the most 8 bits hold",
                  annotation_position="top right")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="raw value (photon counts + offset)",
                      yaxis_title="pixels", yaxis_type="log", legend=dict(orientation="h", y=-0.3))
    return fig


def _bits_view(image: CellImage) -> dict[str, float]:
    reading = _memo((image.hash, "bits"), lambda: bit_depth_reading(image.pixels))
    a, b, c, d = st.columns(4)
    a.metric("Stored as", f"{reading['stored_bits']:.0f}-bit", help=f"{image.pixels.dtype}: 0 to "
             f"{2 ** int(reading['stored_bits']) - 1:,} per pixel and channel.")
    b.metric("Maximum", f"{reading['max_value']:,.0f}", help="The largest raw value of any channel.")
    c.metric("Bits it needs", f"{reading['bits']:.0f}", help=f"2^{reading['bits']:.0f} = "
             f"{2 ** int(reading['bits']):,} levels hold the brightest value; 8 bits hold 256.")
    d.metric("Above 255", f"{reading['share_above_255']:.1%}",
             help="The share of raw values an 8-bit image (a photo) could not hold.")
    figure = _memo((image.hash, "histogram"), lambda: raw_histogram(image))
    st.plotly_chart(figure, width="stretch", config={"displaylogo": False}, key=f"{image.name}_raw_histogram")
    return reading


def _merge_view(image: CellImage, key: str, caption: str) -> None:
    visible = channel_toggles(image, key)
    picture(cached_composite(image, image.hash, image.channels, visible), caption=caption)


@action("channels")
def channels(ctx: StepContext) -> dict[str, float] | None:
    image = _pick_image(ctx)
    if image is None:
        return None
    left, right = st.columns([1, 1])
    with left:
        roles = ", ".join(f"{ch.role} in {ch.color}" for ch in image.channels)
        _merge_view(image, ctx.key + "merge", f"{image.name}: {roles}. Each channel is scaled to its own range "
                    "(0.5th to 99.8th percentile) and painted in its colour.")
    with right:
        reading = _bits_view(image)

    st.markdown("**A Human Protein Atlas image: four channels on a three-colour screen**")
    hpa = hpa_image()
    left, right = st.columns([1, 1])
    with left:
        _merge_view(hpa, ctx.key + "hpa", "Generated in the HPA's layout: red microtubules, green the protein "
                    "(here in the nucleoli), blue the nucleus, yellow the endoplasmic reticulum.")
    with right:
        weights = _memo((hpa.hash, "weights"), lambda: merge_weights(hpa))
        table = pd.DataFrame({"channel": [f"{ch.name} ({ch.role})" for ch in hpa.channels],
                              "to red": weights[:, 0], "to green": weights[:, 1], "to blue": weights[:, 2]})
        st.dataframe(table, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns[1:]})
        split = _memo((hpa.hash, "yellow"), lambda: yellow_split(hpa))
        st.caption(f"Measured on the merge itself: each channel drawn alone, read where it is at full brightness. "
                   f"Yellow lands {split['yellow_to_red']:.2f} on red and {split['yellow_to_green']:.2f} on green, so "
                   "the ER shows yellow without drowning the microtubules and the protein.")
    return {**reading, **split}


# ---------------------------------------------------------------------------------------
# opencv: rotate, edges, three thresholds


def _rotate_and_edges(ctx: StepContext, plane: np.ndarray) -> None:
    c1, c2 = st.columns(2)
    angle = field_widget(c1, field_of(RotateStep, "angle"), _seed(ctx.key + "angle", 30.0))
    low, high = range_widget(c2, field_of(CannyStep, "low"), field_of(CannyStep, "high"),
                             _seed(ctx.key + "canny", (0.1, 0.3)), label="Canny thresholds (low, high)")
    h, w = plane.shape
    matrix = rotation_matrix(plane.shape, RotateStep(enabled=True, angle=float(angle)))  # cv2.getRotationMatrix2D
    turned = cv2.warpAffine(plane, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    (a, b, tx), (c, d, ty) = matrix
    picture(gray_rgb(turned), fmt="png", where=c1,
            caption=f"cv2.warpAffine with cv2.getRotationMatrix2D(({(w - 1) / 2:g}, {(h - 1) / 2:g}), {angle:g}, 1) = "
                    f"[[{a:.2f}, {b:.2f}, {tx:.0f}], [{c:.2f}, {d:.2f}, {ty:.0f}]]; corners outside are cut.")
    if low >= high:
        c2.info("Canny needs the low threshold below the high one: move the sliders apart.")
        return
    edges = canny_edges(turned, CannyStep(enabled=True, low=float(low), high=float(high)))
    picture(gray_rgb(edges.astype(np.float32)), fmt="png", where=c2,
            caption=f"cv2.Canny of the turned image: {edges.mean():.1%} of pixels are edges. Edges above the high "
                    "threshold start a contour; connected ones above the low one extend it.")


def _threshold_panels(image: CellImage, views: Sequence, plane: np.ndarray) -> None:
    base = _memo((image.hash, "gray"), lambda: gray_rgb(plane))
    for col, view in zip(st.columns(len(views)), views, strict=True):
        col.metric(view.name, f"IoU {view.iou:.2f}", help="Overlap of the foreground with the true nuclei: "
                   "intersection / union of the two masks (1 = identical).")
        picture(draw_outlines(tint(base, view.mask), image.gt), fmt="jpeg", where=col,
                caption=f"level {view.level:.3f} · {view.mask.mean():.1%} foreground (cyan); true nuclei outlined "
                        "in yellow")


@action("opencv")
def opencv(ctx: StepContext) -> dict[str, float] | None:
    image = _pick_image(ctx, with_truth=True)
    if image is None:
        return None
    plane = _memo((image.hash, "nucleus"), lambda: nucleus_plane(image))
    st.caption(f"The nucleus channel of {image.name}, its 0.5th to 99.8th percentile mapped to 0 to 1 (what the "
               "Preprocess page thresholds).")
    _rotate_and_edges(ctx, plane)
    st.markdown("**Three thresholds, scored against the true nuclei** (on the image as it is, where the truth lies)")
    c1, c2 = st.columns(2)
    level = field_widget(c1, field_of(ThresholdStep, "value"), _seed(ctx.key + "level", 0.5),
                         label="Global level (fixed)")
    sigma = field_widget(c2, field_of(ThresholdStep, "blur_sigma"), _seed(ctx.key + "sigma", 2.0),
                         label="Gaussian blur σ (px) before Otsu")
    views = _memo((image.hash, "thresholds", float(level), float(sigma)),
                  lambda: threshold_views(plane, image.gt, level=float(level), sigma=float(sigma)))
    _threshold_panels(image, views, plane)
    return thresholds_reading(views, sigma=float(sigma))


# ---------------------------------------------------------------------------------------
# find-cells: the classical recipe, measured and cropped


def classical_labels(image: CellImage, recipe: Recipe, device: str) -> np.ndarray:
    """The registry's classical model on ``image`` with ``recipe`` (one run per image and recipe)."""
    def run() -> np.ndarray:
        model = shared_model("classical", availability("classical")[1], device)
        return model.predict(image, recipe=recipe).labels

    return _memo((image.hash, "classical", recipe), run)


def _recipe(ctx: StepContext) -> Recipe:
    c1, c2 = st.columns(2)
    auto = c1.toggle("Automatic minimum size", key=_seed(ctx.key + "auto_min", True),
                     help="A fifth of the typical nucleus's area (the recipe's default).")
    min_area = c1.slider("Minimum area (px)", 0, 1000, step=10, key=_seed(ctx.key + "min_area", 60), disabled=auto,
                         help="Smaller objects are dropped (debris, fragments).")
    split = c2.toggle("Split touching nuclei (watershed)", key=_seed(ctx.key + "watershed", True),
                      help=field_of(WatershedStep, "enabled").help)
    c2.caption("The rest is the Preprocess page's recipe (its defaults unless you changed them there).")
    return current_recipe().with_step("filters", min_area=-1 if auto else int(min_area)) \
        .with_step("watershed", enabled=bool(split))


def _cells_view(image: CellImage, recipe: Recipe, labels: np.ndarray, reading: dict[str, float]) -> None:
    a, b, c = st.columns(3)
    a.metric("Nuclei found", f"{reading['n_found']:.0f}")
    b.metric("True nuclei", f"{reading['n_truth']:.0f}")
    c.metric("F1 at IoU 0.5", f"{reading['f1']:.2f}", help="Found and true nuclei matched one-to-one where they "
             "overlap by at least half: 2 × matched / (found + true).")
    left, right = st.columns([1, 1])
    merge = cached_composite(image, image.hash, image.channels, (True,) * len(image.channels))
    picture(draw_outlines(merge, labels), where=left, caption=f"{image.name}: the nuclei found, outlined in yellow")
    if not labels.any():
        right.info("No nuclei found, so nothing to measure or crop: turn the automatic minimum size back on.")
        return
    cells = _memo((image.hash, "cells", recipe), lambda: CellSet.build([(image, labels)], size=48))
    shown = [col for col in TABLE_COLUMNS if col in cells.table.columns]
    right.dataframe(cells.table[shown].head(10).rename(columns=TABLE_COLUMNS), hide_index=True, width="stretch",
                    column_config={"eccentricity": st.column_config.NumberColumn(format="%.2f"),
                                   "solidity": st.column_config.NumberColumn(format="%.2f"),
                                   "mean nucleus": st.column_config.NumberColumn(format="%.0f"),
                                   "mean protein": st.column_config.NumberColumn(format="%.0f")})
    right.caption(f"Measured, the first 10 of {len(cells)}: shape, and the mean raw intensity of each channel.")
    rows = np.arange(min(CROPS_SHOWN, len(cells)))
    strip = montage(crops_rgb(cells.crops(rows), cells.channels), columns=CROPS_SHOWN)
    picture(strip, fmt="png", caption=f"Cropped: the first {len(rows)} nuclei, each centred in a 48 px square (the "
                                      "input of the CNNs that follow)")


@action("find_cells")
def find_cells(ctx: StepContext) -> dict[str, float] | None:
    image = _pick_image(ctx, with_truth=True)
    if image is None:
        return None
    recipe = _recipe(ctx)
    labels = classical_labels(image, recipe, ctx.device)
    reading = _memo((image.hash, "cells_reading", recipe), lambda: cells_reading(image.gt, labels))
    _cells_view(image, recipe, labels, reading)
    return reading
