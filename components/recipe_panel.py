"""Widgets for every recipe step; they read and write ``st.session_state`` under ``rcp.<step>.<param>``.

Each widget's callback applies its change to the current recipe (``st.session_state.recipe``).
Loading a recipe (upload, auto-tune, reset) clears those keys from a callback, so the widgets
show the new recipe on the next run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import streamlit as st

from core.images import ChannelInfo
from core.recipe import (
    BACKGROUND_METHODS,
    DENOISE_METHODS,
    KERNEL_SHAPES,
    MORPH_OPS,
    STEP_ORDER,
    STEP_TYPES,
    THRESHOLD_METHODS,
    Recipe,
)

RECIPE_KEY = "recipe"  # the current recipe: the classical model of every page
STEP_TITLES = {
    "channel": "1 · Channel",
    "rotate": "2 · Rotate and flip",
    "normalize": "3 · Normalise intensity",
    "denoise": "4 · Denoise",
    "background": "5 · Background",
    "threshold": "6 · Threshold",
    "canny": "7 · Canny edges",
    "morphology": "8 · Morphology",
    "watershed": "9 · Split touching cells",
    "filters": "10 · Size and border filters",
}


def _key(step: str, param: str) -> str:
    return f"rcp.{step}.{param}"


WARNINGS_KEY = "recipe_warnings"  # step -> why its last change was refused


def current_recipe() -> Recipe:
    return st.session_state.get(RECIPE_KEY, Recipe())


def load_recipe(recipe: Recipe) -> None:
    """Make ``recipe`` current; open steps' widgets re-read it (call from a callback)."""
    st.session_state[RECIPE_KEY] = recipe
    st.session_state.pop(WARNINGS_KEY, None)
    for key in [k for k in st.session_state if str(k).startswith("rcp.")]:
        del st.session_state[key]


# Range sliders hold two recipe parameters in one widget: step -> (widget, low field, high field).
PAIRED = {"normalize": ("clip", "clip_low", "clip_high"), "canny": ("range", "low", "high")}


def _widget_values(step: str, values) -> dict[str, Any]:
    """Each of the step's widget keys and the value ``values`` (a step of a recipe) gives it."""
    widget, low, high = PAIRED.get(step, (None, None, None))
    out = {}
    for f in fields(STEP_TYPES[step]):
        if f.name in (low, high):
            out[_key(step, widget)] = (getattr(values, low), getattr(values, high))
        else:
            out[_key(step, f.name)] = getattr(values, f.name)
    return out


def _seed(step: str, values) -> None:
    """Give this step's widgets the recipe's values unless they hold the user's own already."""
    for key, value in _widget_values(step, values).items():
        st.session_state.setdefault(key, value)


def _read(step: str, current) -> dict:
    """The step's parameters from its widgets; ``current``'s for widgets not on screen."""
    widget, low, high = PAIRED.get(step, (None, None, None))
    params = {}
    for key, default in _widget_values(step, current).items():
        name, value = key.rsplit(".", 1)[1], st.session_state.get(key, default)
        if name == widget:
            params[low], params[high] = value
        else:
            params[name] = value
    if step == "threshold" and params["block_size"] % 2 == 0 and params["block_size"]:
        params["block_size"] += 1  # the slider steps by 2 from 0; keep it odd
    return params


def _changed(step: str, redraw: bool, views: tuple[str, ...], everything: tuple[str, ...]) -> None:
    """A step's widget moved: apply it to the recipe, then rerun only the fragments that show it.

    A value slider reruns the result views alone: the panel's widgets are not sent and
    re-rendered again. Widgets that show, hide or enable others, and refused changes, redraw
    the panel too."""
    warnings, recipe = st.session_state.setdefault(WARNINGS_KEY, {}), current_recipe()
    try:
        st.session_state[RECIPE_KEY] = recipe.with_step(step, **_read(step, getattr(recipe, step)))
        redraw |= warnings.pop(step, None) is not None
    except ValueError as exc:
        warnings[step] = f"{STEP_TITLES[step]}: those settings do not fit together ({exc}); kept the previous ones."
        redraw = True
    if views:
        st.rerun(list(everything if redraw else views))


def _channel_options(channels: Sequence[ChannelInfo]) -> dict[str, str]:
    options = {c.role: f"{c.role} ({c.name})" for c in channels if c.role != "other"}
    options.update({"mean": "mean of all channels", "max": "maximum of all channels"})
    options.update({f"index:{i}": f"channel {i} ({c.name})" for i, c in enumerate(channels)})
    return options


OPEN_AT_START = ("threshold", "watershed", "filters")


def recipe_panel(channels: Sequence[ChannelInfo], *, views: Mapping[str, Sequence[str]] | None = None,
                 panel: Sequence[str] = ()) -> None:
    """Draw the step controls; each change goes into the current recipe (:func:`current_recipe`)
    from its widget's callback.

    ``views``: per step, the keys of the fragments that show what that step changes, rerun on
    a change; ``panel``: the
    fragment(s) this panel is drawn in, rerun with them when a change alters the panel. Empty:
    Streamlit's usual rerun. Only expanded steps draw their widgets (fewer widgets: a faster
    page); collapsed steps keep the values of the current recipe.
    """
    recipe = st.session_state.setdefault(RECIPE_KEY, Recipe())
    options = _channel_options(channels)
    if recipe.channel.source not in options:  # e.g. no nucleus channel in this image
        recipe = recipe.with_step("channel", source=next(iter(options)))
        st.session_state[RECIPE_KEY] = recipe
        st.session_state[_key("channel", "source")] = recipe.channel.source
    def k(step: str, param: str, *, redraw: bool = False) -> dict:
        shown = tuple((views or {}).get(step, ()))
        return dict(key=_key(step, param), on_change=_changed, args=(step, redraw, shown, tuple(panel) + shown))

    warnings = st.session_state.get(WARNINGS_KEY, {})
    for step in STEP_ORDER:
        box = st.expander(STEP_TITLES[step], expanded=step in OPEN_AT_START, key=f"open.{step}", on_change="rerun")
        if not box.open:
            continue
        _seed(step, getattr(recipe, step))
        with box:
            if step == "channel":
                _draw_channel(k, options)
            else:
                DRAW[step](k)
            if step in warnings:
                st.warning(warnings[step])


def _draw_channel(k, options: dict[str, str]) -> None:
    st.selectbox("Segment on", list(options), format_func=options.get, **k("channel", "source", redraw=True),
                 help="The channel (or merge of channels) the pipeline works on; nuclei are usually the nucleus channel.")


def _draw_rotate(k) -> None:
    on = st.toggle("Rotate / flip", **k("rotate", "enabled", redraw=True), help="cv.getRotationMatrix2D + warpAffine, on a canvas large enough to keep the corners. The steps "
                   "below work on the turned image; the cells found are mapped back to the image as it is, so counts, "
                   "measurements and ground-truth scores stay comparable (and the Compare and Cell map pages use "
                   "the same cells).")
    st.slider("Angle (degrees, counter-clockwise)", -180.0, 180.0, step=1.0, **k("rotate", "angle"), disabled=not on,
              help="Rotation angle, OpenCV convention: positive turns counter-clockwise.")
    st.slider("Scale", 0.25, 4.0, step=0.05, **k("rotate", "scale"), disabled=not on, help="Zoom factor applied with the rotation.")
    c1, c2 = st.columns(2)
    c1.slider("Centre x", 0.0, 1.0, step=0.05, **k("rotate", "center_x"), disabled=not on, help="Rotation centre, fraction of the width. It matters only for a zoom too large for a "
              "canvas holding the whole image (then the image is cropped about it).")
    c2.slider("Centre y", 0.0, 1.0, step=0.05, **k("rotate", "center_y"), disabled=not on, help="Rotation centre, fraction of the height (see Centre x).")
    # Not in the half-width columns above: at 1280 px those cut the labels to "Flip ..."; a wrapping
    # row gives each checkbox its label's width and moves the second below when both do not fit.
    flips = st.container(horizontal=True, wrap=True)
    flips.checkbox("Flip horizontally", **k("rotate", "flip_horizontal"), disabled=not on, help="Mirror left-right.")
    flips.checkbox("Flip vertically", **k("rotate", "flip_vertical"), disabled=not on, help="Mirror top-bottom.")


def _draw_normalize(k) -> None:
    on = st.toggle("Percentile clip", **k("normalize", "enabled", redraw=True), help="Map the chosen percentiles to 0 and 1; off: min and max.")
    st.slider("Percentiles", 0.0, 100.0, step=0.1, **k("normalize", "clip"), disabled=not on,
              help="Intensities below the low / above the high percentile are clipped.")
    clahe = st.checkbox("CLAHE", **k("normalize", "clahe", redraw=True), disabled=not on,
                        help="Contrast-limited adaptive histogram equalisation: evens out contrast across the field.")
    c1, c2 = st.columns(2)
    c1.slider("Clip limit", 0.5, 10.0, step=0.5, **k("normalize", "clahe_clip_limit"), disabled=not (on and clahe),
              help="Higher: stronger local contrast, more noise.")
    c2.slider("Tiles", 1, 32, **k("normalize", "clahe_tiles"), disabled=not (on and clahe), help="Grid of tiles per side.")


def _draw_denoise(k) -> None:
    on = st.toggle("Denoise", **k("denoise", "enabled", redraw=True), help="Smooth noise before thresholding.")
    method = st.selectbox("Method", DENOISE_METHODS, **k("denoise", "method", redraw=True), disabled=not on,
                          help="Gaussian: fast, blurs edges. Median: removes speckle. Bilateral and non-local means: keep edges, slower.")
    if method == "gaussian":
        st.slider("Sigma (px)", 0.1, 10.0, step=0.1, **k("denoise", "sigma"), disabled=not on, help="Width of the Gaussian kernel.")
    elif method == "median":
        st.select_slider("Kernel size", [3, 5, 7, 9, 11, 15, 21], **k("denoise", "ksize"), disabled=not on,
                         help="Odd window size in pixels.")
    elif method == "bilateral":
        st.slider("Diameter (px)", 1, 25, **k("denoise", "bilateral_d"), disabled=not on, help="Neighbourhood diameter.")
        st.slider("Colour sigma", 0.01, 1.0, step=0.01, **k("denoise", "bilateral_sigma_color"), disabled=not on,
                  help="Intensity differences above this are treated as edges and kept.")
    else:
        st.slider("Strength h", 0.01, 0.5, step=0.01, **k("denoise", "nlmeans_h"), disabled=not on,
                  help="Non-local means filter strength (normalised intensity units).")


def _draw_background(k) -> None:
    on = st.toggle("Subtract background", **k("background", "enabled", redraw=True),
                   help="Removes uneven illumination and haze before thresholding.")
    st.selectbox("Method", BACKGROUND_METHODS, **k("background", "method"), disabled=not on,
                 help="tophat: image minus its morphological opening (keeps objects smaller than the radius). "
                      "gaussian: image minus a large blur.")
    st.slider("Radius (px, 0 = auto)", 0, 200, **k("background", "radius"), disabled=not on,
              help="Larger than the biggest cell. 0 = 1.5 x the typical cell diameter.")


def _draw_threshold(k) -> None:
    method = st.selectbox("Method", THRESHOLD_METHODS, **k("threshold", "method", redraw=True),
                          help="otsu: minimises within-class variance. otsu_gaussian: Otsu after a Gaussian blur. "
                               "triangle: good for few bright objects. manual: your value. adaptive: a local threshold per "
                               "neighbourhood, robust to dim cells and uneven light (the default).")
    if method == "manual":
        st.slider("Threshold", 0.0, 1.0, step=0.01, **k("threshold", "value"),
                  help="Normalised intensity. For instant feedback while dragging, turn on *Live threshold preview* in the Result view.")
    if method == "otsu_gaussian":
        st.slider("Blur sigma (px)", 0.5, 10.0, step=0.5, **k("threshold", "blur_sigma"), help="Gaussian blur before Otsu.")
    if method.startswith("adaptive"):
        st.slider("Block size (px, 0 = auto)", 0, 301, step=2, **k("threshold", "block_size"),
                  help="Odd neighbourhood size; 0 = about 4 typical cell diameters.")
        st.slider("Offset", -0.2, 0.2, step=0.005, **k("threshold", "offset"),
                  help="Subtracted from the local mean: negative values demand pixels brighter than their surroundings."
                       " For instant feedback while dragging, turn on *Live threshold preview* in the Result view.")
        st.slider("Floor (x Otsu)", 0.0, 1.0, step=0.05, **k("threshold", "floor"),
                  help="Pixels must also exceed this fraction of the global Otsu threshold; keeps empty areas empty.")
    st.checkbox("Invert (dark objects)", **k("threshold", "invert"), help="For dark cells on a bright background.")


def _draw_canny(k) -> None:
    on = st.toggle("Canny edges", **k("canny", "enabled", redraw=True), help="cv.Canny on the denoised image; shown as a view.")
    st.slider("Hysteresis thresholds", 0.0, 1.0, step=0.01, **k("canny", "range"), disabled=not on,
              help="Edges above the high value start a contour; connected ones above the low value extend it.")
    st.select_slider("Aperture", [3, 5, 7], **k("canny", "aperture"), disabled=not on, help="Sobel kernel size.")
    st.checkbox("L2 gradient", **k("canny", "l2_gradient"), disabled=not on,  # a half column cut it to "L2 g..."
                help="Exact gradient magnitude (slower).")
    st.checkbox("Cut the mask along edges", **k("canny", "cut_mask"), disabled=not on,
                help="Removes edge pixels from the foreground: can separate touching cells.")


def _draw_morphology(k) -> None:
    op = st.selectbox("Operation", MORPH_OPS, **k("morphology", "operation", redraw=True),
                      help="open: removes specks and thin bridges. close: fills small gaps. erode/dilate: shrink/grow.")
    c1, c2 = st.columns(2)
    c1.slider("Kernel size", 1, 21, step=2, **k("morphology", "ksize"), disabled=op == "none", help="Odd size in pixels.")
    c2.selectbox("Kernel shape", list(KERNEL_SHAPES), **k("morphology", "shape"), disabled=op == "none",
                 help="Structuring element shape.")
    st.slider("Iterations", 1, 5, **k("morphology", "iterations"), disabled=op == "none", help="Repeat the operation.")
    st.checkbox("Fill holes", **k("morphology", "fill_holes"), help="Fill background enclosed by a cell.")


def _draw_watershed(k) -> None:
    on = st.toggle("Watershed", **k("watershed", "enabled", redraw=True),
                   help="Distance transform + watershed: one seed per distance peak splits touching cells.")
    st.slider("Seed distance (px, 0 = auto)", 0, 50, **k("watershed", "seed_distance"), disabled=not on,
              help="Minimum distance between seeds: larger merges, smaller splits. 0 = half the typical cell radius.")
    st.slider("Smoothing", 0.0, 5.0, step=0.5, **k("watershed", "smoothing"), disabled=not on,
              help="Blur of the distance map; removes spurious seeds on irregular cells.")


def _draw_filters(k) -> None:
    st.number_input("Minimum area (px, -1 = auto)", min_value=-1, max_value=100_000, step=5, **k("filters", "min_area"),
                    help="Smaller objects are dropped. -1 = a fifth of the typical cell area.")
    st.number_input("Maximum area (px, 0 = off)", min_value=0, max_value=10_000_000, step=100, **k("filters", "max_area"),
                    help="Larger objects (clumps, debris) are dropped.")
    st.checkbox("Remove cells touching the border", **k("filters", "remove_border"),
                help="Cut-off cells bias size and intensity measurements.")


DRAW = {
    "rotate": _draw_rotate,
    "normalize": _draw_normalize,
    "denoise": _draw_denoise,
    "background": _draw_background,
    "threshold": _draw_threshold,
    "canny": _draw_canny,
    "morphology": _draw_morphology,
    "watershed": _draw_watershed,
    "filters": _draw_filters,
}
