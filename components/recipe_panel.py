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

from components.settings_widgets import field_widget, range_widget
from core.data.images import ChannelInfo
from core.schema import field_of
from core.segmentation.recipe import STEP_ORDER, STEP_TYPES, Recipe

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


def _field(step: str, param: str):
    return field_of(STEP_TYPES[step], param)


def _w(where, k, step: str, param: str, *, redraw: bool = False, **kwargs) -> Any:
    """``step.param``'s widget, drawn from its declaration in core.segmentation.recipe."""
    return field_widget(where, _field(step, param), **k(step, param, redraw=redraw), **kwargs)


def _draw_channel(k, options: dict[str, str]) -> None:
    field = _field("channel", "source")
    st.selectbox(field.label, list(options), format_func=options.get, **k("channel", "source", redraw=True),
                 help=field.help)  # the options are the image's channels


def _draw_rotate(k) -> None:
    on = _w(st, k, "rotate", "enabled", redraw=True, widget="toggle")
    _w(st, k, "rotate", "angle", disabled=not on)
    _w(st, k, "rotate", "scale", disabled=not on)
    c1, c2 = st.columns(2)
    _w(c1, k, "rotate", "center_x", disabled=not on)
    _w(c2, k, "rotate", "center_y", disabled=not on)
    # Not in the half-width columns above: at 1280 px those cut the labels to "Flip ..."; a wrapping
    # row gives each checkbox its label's width and moves the second below when both do not fit.
    flips = st.container(horizontal=True, wrap=True)
    _w(flips, k, "rotate", "flip_horizontal", disabled=not on)
    _w(flips, k, "rotate", "flip_vertical", disabled=not on)


def _draw_normalize(k) -> None:
    on = _w(st, k, "normalize", "enabled", redraw=True, widget="toggle")
    range_widget(st, _field("normalize", "clip_low"), _field("normalize", "clip_high"), **k("normalize", "clip"),
                 disabled=not on)
    clahe = _w(st, k, "normalize", "clahe", redraw=True, disabled=not on)
    c1, c2 = st.columns(2)
    _w(c1, k, "normalize", "clahe_clip_limit", disabled=not (on and clahe))
    _w(c2, k, "normalize", "clahe_tiles", disabled=not (on and clahe))


def _draw_denoise(k) -> None:
    on = _w(st, k, "denoise", "enabled", redraw=True, widget="toggle")
    method = _w(st, k, "denoise", "method", redraw=True, disabled=not on)
    if method == "gaussian":
        _w(st, k, "denoise", "sigma", disabled=not on)
    elif method == "median":
        _w(st, k, "denoise", "ksize", disabled=not on)
    elif method == "bilateral":
        _w(st, k, "denoise", "bilateral_d", disabled=not on)
        _w(st, k, "denoise", "bilateral_sigma_color", disabled=not on)
    else:
        _w(st, k, "denoise", "nlmeans_h", disabled=not on)


def _draw_background(k) -> None:
    on = _w(st, k, "background", "enabled", redraw=True, widget="toggle")
    _w(st, k, "background", "method", disabled=not on)
    _w(st, k, "background", "radius", disabled=not on)


def _draw_threshold(k) -> None:
    method = _w(st, k, "threshold", "method", redraw=True)
    if method == "manual":
        _w(st, k, "threshold", "value")
    if method == "otsu_gaussian":
        _w(st, k, "threshold", "blur_sigma")
    if method.startswith("adaptive"):
        _w(st, k, "threshold", "block_size")  # steps by 2 from 0; _read keeps it odd
        _w(st, k, "threshold", "offset")
        _w(st, k, "threshold", "floor")
    _w(st, k, "threshold", "invert")


def _draw_canny(k) -> None:
    on = _w(st, k, "canny", "enabled", redraw=True, widget="toggle")
    range_widget(st, _field("canny", "low"), _field("canny", "high"), **k("canny", "range"), disabled=not on)
    _w(st, k, "canny", "aperture", widget="select_slider", disabled=not on)
    _w(st, k, "canny", "l2_gradient", disabled=not on)  # a half column cut it to "L2 g..."
    _w(st, k, "canny", "cut_mask", disabled=not on)


def _draw_morphology(k) -> None:
    op = _w(st, k, "morphology", "operation", redraw=True)
    c1, c2 = st.columns(2)
    _w(c1, k, "morphology", "ksize", disabled=op == "none")
    _w(c2, k, "morphology", "shape", disabled=op == "none")
    _w(st, k, "morphology", "iterations", disabled=op == "none")
    _w(st, k, "morphology", "fill_holes")


def _draw_watershed(k) -> None:
    on = _w(st, k, "watershed", "enabled", redraw=True, widget="toggle")
    _w(st, k, "watershed", "seed_distance", disabled=not on)
    _w(st, k, "watershed", "smoothing", disabled=not on)


def _draw_filters(k) -> None:
    _w(st, k, "filters", "min_area", widget="number_input")
    _w(st, k, "filters", "max_area", widget="number_input")
    _w(st, k, "filters", "remove_border")


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
