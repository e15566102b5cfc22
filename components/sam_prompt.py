"""Prompting Segment Anything by clicking on the image (points) or dragging a box."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from components.image_viewer import cached_composite, picture
from components.model_panel import fetch_missing_weights, shared_model
from core.data.images import CellImage
from core.figures.display import fill_labels, preview
from models.registry import ModelInfo, availability, get_model_info, list_models

CHART_KEY = "cmp.sam_chart"
PROMPTS_KEY = "cmp.prompts"
VIEW_SIDE = 640


def prompts(image: CellImage) -> dict[str, list]:
    """This image's prompts: points [(x, y)] and boxes [(x0, y0, x1, y1)] in image pixels."""
    state = st.session_state.get(PROMPTS_KEY)
    if state is None or state["image"] != image.hash:
        state = st.session_state[PROMPTS_KEY] = {"image": image.hash, "points": [], "boxes": []}
    return state


def prompts_from_selection(selection: dict, shape: tuple[int, int]) -> tuple[list, list]:
    """Clicked points and dragged boxes of a Plotly selection, clipped to the image.

    A box selection also lists the grid points inside it: those are not point prompts.
    """
    h, w = shape
    points = [] if selection.get("box") else [
        (float(np.clip(p["x"], 0, w - 1)), float(np.clip(p["y"], 0, h - 1)))
        for p in selection.get("points", []) if "x" in p and "y" in p]
    boxes = []
    for b in selection.get("box", []):
        xs, ys = sorted(b["x"]), sorted(b["y"])
        box = (float(np.clip(xs[0], 0, w)), float(np.clip(ys[0], 0, h)), float(np.clip(xs[-1], 0, w)),
               float(np.clip(ys[-1], 0, h)))
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            boxes.append(box)
    return points, boxes


def _add_selection(image: CellImage) -> None:
    event = st.session_state.get(CHART_KEY) or {}
    points, boxes = prompts_from_selection(event.get("selection", {}), image.shape[:2])
    state = prompts(image)
    state["points"] += [p for p in points if p not in state["points"]]
    state["boxes"] += [b for b in boxes if b not in state["boxes"]]


def _figure(rgb: np.ndarray, shape: tuple[int, int], state: dict) -> go.Figure:
    h, w = shape
    scale = w / rgb.shape[1]
    fig = go.Figure(go.Image(z=rgb, dx=scale, dy=scale, hoverinfo="skip"))
    # An invisible grid of points makes every click on the image a selectable point.
    step = max(2, round(max(h, w) / 96))
    gy, gx = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    fig.add_trace(go.Scattergl(x=gx.ravel(), y=gy.ravel(), mode="markers", marker=dict(size=8, color="rgba(0,0,0,0)"),
                               hovertemplate="x %{x}, y %{y}<extra>click: point prompt</extra>", showlegend=False))
    if state["points"]:
        px, py = zip(*state["points"], strict=True)
        fig.add_trace(go.Scatter(x=px, y=py, mode="markers", marker=dict(size=11, color="#00e5ff", symbol="star",
                                 line=dict(color="black", width=1)), hoverinfo="skip", showlegend=False))
    for x0, y0, x1, y1 in state["boxes"]:
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="#00e5ff", width=2))
    fig.update_layout(height=460, margin=dict(l=0, r=0, t=0, b=0), dragmode="zoom")  # a click in "select" mode selects nothing
    fig.update_xaxes(visible=False, range=[0, w])
    fig.update_yaxes(visible=False, range=[h, 0], scaleanchor="x")
    return fig


def prompt_models() -> list[ModelInfo]:
    """Every model the view can prompt (its predict takes points and boxes), the smallest weights first."""
    found = [m for m in list_models("segment") if {"points", "boxes"} <= set(m.inputs)]
    return sorted(found, key=lambda m: ((m.weights.size_bytes or 0) if m.weights else 0, m.name))


def weights_mb(info: ModelInfo) -> str:
    size = info.weights.size_mb if info.weights else None
    return "no weights file" if info.weights is None else "size unknown" if size is None else f"{size:,.0f} MB"


def first_choice(names: list[str], ready: dict[str, bool], offered: Sequence[str]) -> str:
    """The model the view starts with: the smallest whose weights are here, else the smallest the page's
    model chooser has (its Download button is there), else the smallest."""
    return next((n for n in names if ready[n]), next((n for n in names if n in offered), names[0]))


def models_help(models: list[ModelInfo]) -> str:
    """What the models are, from the registry: their weights' sizes (the encoder's cost grows with them)."""
    sizes = ", ".join(f"{m.name} {weights_mb(m)}" for m in models)
    return (f"Smallest first: {sizes}. The larger the weights, the slower the image embedding (computed once per "
            "image; each prompt afterwards costs only the mask decoder); of one kind (SAM ViT-B, -L, -H; SAM 2.1 "
            "tiny, small) the larger outlines natural images more accurately.")


def sam_prompt_view(image: CellImage, device: str, *, offered: list[str] = ()) -> None:
    """``offered``: models whose weights already have a Download button on the page."""
    st.caption("Click a cell to prompt Segment Anything with a point; for a box prompt pick *Box Select* in the "
               "chart's toolbar and drag around a cell. Drag (zoom mode) to zoom in, double-click to zoom out. The image "
               "embedding is computed once per image; each prompt afterwards costs only the mask decoder.")
    models = prompt_models()
    if not models:
        st.info("No model here takes point and box prompts.")
        return
    names = [m.name for m in models]
    ready = {n: availability(n)[0] for n in names}
    name = st.selectbox("SAM model", names, index=names.index(first_choice(names, ready, offered)),
                        key="cmp.sam_model", format_func=lambda n: f"{n} ({weights_mb(get_model_info(n))})"
                        + ("" if ready[n] else " (needs weights)"), help=models_help(models))
    st.caption(get_model_info(name).description)
    if not ready[name]:
        spec = get_model_info(name).weights
        if any(get_model_info(n).weights == spec for n in offered):
            st.info(f"**{name}** needs {spec.filename}: use its **Download** button above.")
            return
        if not fetch_missing_weights([name], key="cmp.sam"):
            return
    state = prompts(image)
    rgb = preview(cached_composite(image, image.hash, image.channels, (True,) * image.shape[2]), VIEW_SIDE)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(_figure(rgb, image.shape[:2], state), key=CHART_KEY, on_select=lambda: _add_selection(image),
                        selection_mode=("points", "box"), width="stretch", config={"displaylogo": False})
    with right:
        _prompt_result(image, name, device, state, rgb)
    c1, c2, c3 = st.columns([1, 1, 1])
    c1.number_input("x", 0, image.shape[1] - 1, image.shape[1] // 2, key="cmp.px", help="Point prompt, column in pixels.")
    c2.number_input("y", 0, image.shape[0] - 1, image.shape[0] // 2, key="cmp.py", help="Point prompt, row in pixels.")
    c3.button("Add point", key="cmp.add_point", help="Add the point typed at left as a prompt.",
              on_click=lambda: state["points"].append((float(st.session_state["cmp.px"]), float(st.session_state["cmp.py"]))))
    st.button("Clear prompts", key="cmp.clear", disabled=not (state["points"] or state["boxes"]),
              on_click=lambda: state.update(points=[], boxes=[]), help="Forget this image's points and boxes.")


def _prompt_result(image: CellImage, name: str, device: str, state: dict, rgb: np.ndarray) -> None:
    if not (state["points"] or state["boxes"]):
        st.info("No prompts yet: click a cell in the image.")
        return
    try:
        model = shared_model(name, availability(name)[1], device)
        t0 = time.perf_counter()
        with st.spinner("Computing the image embedding (once per image)…"):
            model.locked("embed", image)  # under the lock that keeps sessions off one predictor at once
        t_embed = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = model.predict(image, points=np.array(state["points"]).reshape(-1, 2) if state["points"] else None,
                               boxes=np.array(state["boxes"]).reshape(-1, 4) if state["boxes"] else None)
        t_decode = time.perf_counter() - t0
    except (RuntimeError, ValueError, MemoryError) as exc:
        st.error(f"{name} could not run on {image.name}: {exc}")
        return
    picture(fill_labels(rgb, result.labels, alpha=0.55),
            caption=f"{result.count} masks from {len(state['points'])} points and {len(state['boxes'])} boxes · "
                    f"embedding {'cached' if t_embed < 0.05 else f'{t_embed:.1f} s'} · decoding {t_decode:.2f} s on {result.device}")
