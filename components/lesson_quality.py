"""The actions of the lesson "Is my segmentation good?" (lessons/segmentation-quality.yaml): one
nucleus's IoU under a changed outline, matching and F1 at an IoU threshold, AP over IoU 0.5-0.95,
and two recipes compared over images with the Compare page's ranking. Every number comes from
:mod:`core.evaluation` (the metric the pages, the CLI and the tests share); the segmentations are
the classical recipe's, run through the model registry (about 40 ms an image, so all is live)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.image_viewer import cached_composite, picture
from components.lesson_actions import StepContext, action
from components.model_panel import shared_model
from components.model_ranking import model_ranking
from components.plots import f1_curve_figure
from components.settings_widgets import field_widget
from core.cache import BoundedCache
from core.data.images import CellImage
from core.data.instances import Instances
from core.evaluation.matching import (
    AP_THRESHOLDS,
    Matching,
    iou_matrix,
    match_instances,
    match_over_thresholds,
    matched_objects,
    summarize,
)
from core.evaluation.ranking import rank_models
from core.figures.display import display_outlines, label_boundaries, tint
from core.schema import field_of
from core.segmentation.recipe import DEFAULT_RECIPE, DenoiseStep, MorphologyStep, Recipe, ThresholdStep, WatershedStep
from models.registry import availability

MODEL = "classical"
GREEN, RED, YELLOW, MAGENTA = (40, 220, 40), (255, 60, 60), (255, 220, 0), (255, 0, 255)
MAX_GROW, MAX_SHIFT = 6, 10  # the IoU step's sliders, pixels
RECIPES = {"A": "recipe A", "B": "recipe B"}  # the model names in the ranking's table


@st.cache_resource(show_spinner=False)
def _segmentations() -> BoundedCache:
    """The recipe's labels per (image, recipe), shared by every student: the lesson's images and
    its recipes are the same for all."""
    return BoundedCache(max_entries=64)


def segment(image: CellImage, recipe: Recipe = DEFAULT_RECIPE) -> Instances:
    """The classical recipe's nuclei on ``image`` (through the registry's shared model)."""
    def compute() -> Instances:
        return shared_model(MODEL, availability(MODEL)[1], "cpu").predict(image, recipe=recipe)

    return _segmentations().get_or_compute((image.hash, recipe.to_json()), compute)


def scored_images(ctx: StepContext) -> list[CellImage]:
    images = [img for img in ctx.images if img.gt is not None]
    if not images:
        raise ValueError("none of the lesson's images has ground truth to score against")
    return images


def seeded(key: str, default: Any) -> str:
    """``key``, its widget's first value set through Session State (a value given to the widget as
    well would be refused once the workspace has restored the student's own)."""
    st.session_state.setdefault(key, default)
    return key


def choose_image(ctx: StepContext, images: Sequence[CellImage]) -> CellImage:
    by_name = {img.name: img for img in images}
    name = st.selectbox("Image", list(by_name), key=seeded(f"{ctx.key}image", images[0].name),
                        help="A field of the example plates; its true nuclei are known because the images are made.")
    return by_name[name]


def merged(image: CellImage) -> np.ndarray:
    return cached_composite(image, image.hash, tuple(image.channels), (True,) * len(image.channels))


def _outline(rgb: np.ndarray, labels: np.ndarray, color: tuple[int, int, int], width: int = 1) -> np.ndarray:
    edge = display_outlines(labels, (rgb.shape[1], rgb.shape[0]))
    if width > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
    out = rgb.copy()
    out[edge] = color
    return out


# ------------------------------------------------------------------------- 1. IoU of one nucleus


def changed_outline(mask: np.ndarray, grow: int, shift: int) -> np.ndarray:
    """``mask`` grown (``grow`` > 0) or shrunk by ``|grow|`` px with a round kernel, then moved
    ``shift`` px to the right (what leaves the window is lost)."""
    out = mask.astype(np.uint8)
    if grow:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1,) * 2)
        out = (cv2.dilate if grow > 0 else cv2.erode)(out, kernel)
    if shift:
        moved = np.zeros_like(out)
        moved[:, shift:] = out[:, : out.shape[1] - shift]
        out = moved
    return out


def typical_nucleus(gt: np.ndarray) -> int:
    """The position (from 1) of the nucleus of median area among those clear of the border."""
    ids = np.unique(gt[gt > 0])
    inner = set(ids) - set(np.unique(np.concatenate([gt[0], gt[-1], gt[:, 0], gt[:, -1]])))
    areas = np.bincount(gt.ravel())[ids]
    order = [i for i in np.argsort(areas) if ids[i] in inner] or list(np.argsort(areas))
    return int(order[len(order) // 2]) + 1


def _iou(true: np.ndarray, pred: np.ndarray) -> float:
    iou, _, _ = iou_matrix(true.astype(np.uint8), pred.astype(np.uint8))
    return float(iou[0, 0]) if iou.size else 0.0


def iou_reading(true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """One nucleus's IoU (the matching's) and the pixel counts it is made of."""
    true, pred = true > 0, pred > 0
    return {"iou": _iou(true, pred), "intersection": int((true & pred).sum()), "area_true": int(true.sum()),
            "area_pred": int(pred.sum())}


def _iou_picture(rgb: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    scale = max(1, 360 // max(true.shape))
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    t, p = (cv2.resize(m.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            for m in (true, pred))
    big = tint(big, (t > 0) & (p > 0), (255, 255, 255), 0.3)
    for mask, color in ((t, GREEN), (p, MAGENTA)):
        edge = cv2.dilate(label_boundaries(mask).astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
        big[edge] = color
    return big


@action("quality_iou")
def iou_of_one_nucleus(ctx: StepContext) -> dict[str, Any]:
    image = scored_images(ctx)[0]
    gt = image.gt
    ids = np.unique(gt[gt > 0])
    pick, grow_col, shift_col = st.columns(3)
    n = pick.number_input(f"Nucleus (1 to {len(ids)})", 1, len(ids), key=seeded(f"{ctx.key}nucleus", typical_nucleus(gt)),
                          help="One of the true nuclei of the first image; it starts at one of median size.")
    grow = grow_col.slider("Grow (+) or shrink (−), px", -MAX_GROW, MAX_GROW, key=seeded(f"{ctx.key}grow", 0),
                           help="The predicted outline: the true one grown or shrunk by this many pixels.")
    shift = shift_col.slider("Shift right, px", 0, MAX_SHIFT, key=seeded(f"{ctx.key}shift", 0),
                             help="The predicted outline moved sideways by this many pixels.")
    ys, xs = np.nonzero(gt == ids[n - 1])
    margin = MAX_GROW + MAX_SHIFT + 2
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, gt.shape[0])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, gt.shape[1])
    true = (gt[y0:y1, x0:x1] == ids[n - 1]).astype(np.uint8)
    pred = changed_outline(true, grow, shift)
    reading = iou_reading(true, pred)
    iou, inter, area_t, area_p = (reading[k] for k in ("iou", "intersection", "area_true", "area_pred"))
    left, right = st.columns([3, 2])
    picture(_iou_picture(merged(image)[y0:y1, x0:x1], true, pred), fmt="png", where=left,
            caption=f"Nucleus {n} of {image.name}: green, the truth; magenta, the prediction; pale, their overlap.")
    with right:
        a, b = st.columns(2)
        a.metric("IoU", f"{iou:.2f}", help="Intersection over union of the two outlines.")
        b.metric("Counts as found at 0.5", "yes" if iou >= 0.5 else "no")
        st.caption(f"Intersection {inter} px, union {area_t} + {area_p} − {inter} = {area_t + area_p - inter} px.")
        ks = np.arange(-MAX_GROW, MAX_GROW + 1)
        curve = [_iou(true, changed_outline(true, int(k), shift)) for k in ks]
        fig = go.Figure(go.Scatter(x=ks, y=curve, mode="lines+markers", name="IoU",
                                   hovertemplate="%{x:+d} px: IoU %{y:.2f}<extra></extra>"))
        fig.add_hline(y=0.5, line_dash="dash", line_color="grey", annotation_text="0.5: found")
        fig.add_trace(go.Scatter(x=[grow], y=[iou], mode="markers", marker=dict(size=14, color="magenta"), name="now"))
        fig.update_layout(height=250, margin=dict(l=10, r=10, t=10, b=10), showlegend=False, yaxis_range=[0, 1.05],
                          xaxis_title=f"grown (+) / shrunk (−), px; shifted {shift} px", yaxis_title="IoU")
        st.plotly_chart(fig, width="stretch", key=f"{ctx.key}curve")
        r = float(np.sqrt(area_t / np.pi))
        if grow < 0 and shift == 0:
            st.caption(f"A disc of radius {r:.1f} px shrunk by {-grow} px keeps (({r:.1f} − {-grow}) / {r:.1f})² = "
                       f"{max(r + grow, 0) ** 2 / r ** 2:.2f} of itself; this nucleus, {iou:.2f}.")
    low, high = st.session_state.get(f"{ctx.key}seen", (float("nan"), float("nan")))
    if grow or shift:  # the truth itself (IoU 1) is no prediction to learn from
        low, high = np.nanmin([low, iou]), np.nanmax([high, iou])
        st.session_state[f"{ctx.key}seen"] = (float(low), float(high))
    return {**reading, "grow_px": grow, "shift_px": shift, "lowest_iou": float(low), "highest_iou": float(high)}


# ------------------------------------------------------------------------- 2. matching and F1


def matching_picture(image: CellImage, pred: np.ndarray, threshold: float) -> np.ndarray:
    """The image with matched predictions outlined in green, unmatched ones (FP) in red (thicker: they
    are few and must show), and the true nuclei left unmatched (FN) filled in yellow."""
    true_ids, pred_ids, _ = matched_objects(image.gt, pred, threshold)
    tp = np.isin(pred, pred_ids)
    rgb = tint(merged(image), (image.gt > 0) & ~np.isin(image.gt, true_ids), YELLOW, 0.6)
    rgb = _outline(rgb, np.where(tp, pred, 0), GREEN)
    return _outline(rgb, np.where(tp, 0, pred), RED, width=2)


def matching_reading(gt: np.ndarray, pred: np.ndarray, threshold: float) -> dict[str, Any]:
    """The matching at ``threshold``: counts, precision, recall, F1, and F1 at IoU 0.5."""
    m = match_instances(gt, pred, threshold)
    return {"threshold": threshold, "tp": m.tp, "fp": m.fp, "fn": m.fn, "n_true": m.n_true, "n_pred": m.n_pred,
            "precision": m.precision, "recall": m.recall, "f1": m.f1, "f1_at_50": match_instances(gt, pred, 0.5).f1}


@action("quality_matching")
def matching_and_f1(ctx: StepContext) -> dict[str, Any]:
    image = choose_image(ctx, scored_images(ctx))
    threshold = st.slider("IoU threshold", 0.5, 0.95, step=0.05, key=seeded(f"{ctx.key}threshold", 0.5),
                          help="A predicted and a true nucleus are matched only if their IoU reaches it.")
    pred = segment(image).labels
    m = matching_reading(image.gt, pred, threshold)
    per = match_over_thresholds(image.gt, pred)
    cols = st.columns(6)
    for col, (label, value) in zip(cols, (("True nuclei", m["n_true"]), ("Found", m["n_pred"]), ("TP", m["tp"]),
                                          ("FP", m["fp"]), ("FN", m["fn"]), ("F1", f"{m['f1']:.2f}")), strict=True):
        col.metric(label, value)
    left, right = st.columns([3, 2])
    picture(matching_picture(image, pred, threshold), fmt="png", where=left,
            caption=f"The classical recipe on {image.name} at IoU ≥ {threshold:.2f}: green, matched (TP); red, "
                    "predicted but unmatched (FP); filled yellow, true but unmatched (FN).")
    curve = pd.DataFrame([{"model": "classical recipe", "iou": p.threshold, "f1": p.f1} for p in per])
    fig = f1_curve_figure(curve, height=300)
    fig.add_vline(x=threshold, line_dash="dash", line_color="grey")
    right.plotly_chart(fig, width="stretch", key=f"{ctx.key}curve")
    right.caption(f"Precision {m['precision']:.2f} = TP / (TP + FP); recall {m['recall']:.2f} = TP / (TP + FN); "
                  f"F1 {m['f1']:.2f} = 2TP / (2TP + FP + FN).")
    return m


# ------------------------------------------------------------------------- 3. AP over IoU 0.5-0.95


def shrunk_labels(labels: np.ndarray, px: int) -> np.ndarray:
    """Every object's outline moved ``px`` pixels inwards (touching objects stay apart)."""
    out = labels.copy()
    for _ in range(px):
        out[label_boundaries(out)] = 0
    return out


def ap_reading(recipe: Sequence[Matching], shrunk: Sequence[Matching], shrink: int) -> dict[str, Any]:
    """AP and F1 at 0.5 of the recipe and of the truth shrunk by ``shrink`` px, from their matchings
    at IoU 0.5:0.05:0.95."""
    s_recipe, s_shrunk = summarize(list(recipe)), summarize(list(shrunk))
    return {"ap": s_recipe["ap"], "ap_per_threshold": [m.ap for m in recipe], "f1_at_50": s_recipe["f1"],
            "shrink_px": shrink, "shrunk_f1_at_50": s_shrunk["f1"], "shrunk_ap": s_shrunk["ap"]}


@action("quality_ap")
def average_precision(ctx: StepContext) -> dict[str, Any]:
    image = choose_image(ctx, scored_images(ctx))
    shrink = st.slider("Shrink the true outlines by, px", 0, 4, key=seeded(f"{ctx.key}shrink", 0),
                       help="A second segmentation: the truth itself, every nucleus found, each outline drawn this "
                            "many pixels too tight.")
    recipe = match_over_thresholds(image.gt, segment(image).labels)
    shrunk = match_over_thresholds(image.gt, shrunk_labels(image.gt, shrink))
    name = f"truth shrunk by {shrink} px"
    rows = pd.DataFrame({"IoU ≥": AP_THRESHOLDS, "TP": [m.tp for m in recipe], "FP": [m.fp for m in recipe],
                         "FN": [m.fn for m in recipe], "recipe": [m.ap for m in recipe], "shrunk": [m.ap for m in shrunk]})
    reading = ap_reading(recipe, shrunk, shrink)
    cols = st.columns(4)
    cols[0].metric("Recipe: F1 at 0.5", f"{reading['f1_at_50']:.2f}")
    cols[1].metric("Recipe: AP 0.5–0.95", f"{reading['ap']:.2f}")
    cols[2].metric(f"Shrunk {shrink} px: F1 at 0.5", f"{reading['shrunk_f1_at_50']:.2f}")
    cols[3].metric(f"Shrunk {shrink} px: AP", f"{reading['shrunk_ap']:.2f}")
    bars = (("recipe", rows["recipe"]), (name, rows["shrunk"]))
    fig = go.Figure([go.Bar(x=rows["IoU ≥"], y=values, name=c, hovertemplate=f"{c}<br>IoU ≥ %{{x:.2f}}: "
                            "TP / (TP + FP + FN) = %{y:.2f}<extra></extra>") for c, values in bars])
    for c, ap, dash in (("recipe", reading["ap"], "dash"), (name, reading["shrunk_ap"], "dot")):
        fig.add_hline(y=ap, line_dash=dash, annotation_text=f"AP {c}: {ap:.2f}", annotation_position="top right")
    fig.update_layout(height=388, margin=dict(l=10, r=10, t=10, b=10), yaxis_range=[0, 1.05], barmode="group",
                      xaxis_title="IoU threshold", yaxis_title="TP / (TP + FP + FN)", legend=dict(orientation="h", y=-0.3))
    left, right = st.columns([3, 2])
    left.plotly_chart(fig, width="stretch", key=f"{ctx.key}bars")
    right.dataframe(rows, hide_index=True, width="stretch", height=388, column_config={
        "IoU ≥": st.column_config.NumberColumn(format="%.2f"), "TP": st.column_config.NumberColumn(help="The recipe's"),
        "recipe": st.column_config.NumberColumn(format="%.2f", help="The recipe's TP / (TP + FP + FN)"),
        "shrunk": st.column_config.NumberColumn(format="%.2f", help=f"The {name}: TP / (TP + FP + FN)")})
    st.caption(f"AP, the Data Science Bowl's (and StarDist's): TP / (TP + FP + FN) at each of the ten thresholds, "
               f"averaged. The classical recipe on {image.name}; the TP, FP and FN are its.")
    return reading


# ------------------------------------------------------------------------- 4. which is better


def recipe_b(ctx: StepContext) -> tuple[Recipe, bool]:
    """Recipe B from four of the Preprocess page's settings (their own widgets); whether it differs from A."""
    a = DEFAULT_RECIPE
    cols = st.columns(4)
    method = field_widget(cols[0], field_of(ThresholdStep, "method"), seeded(f"{ctx.key}b.threshold",
                          a.threshold.method), label="Threshold")
    operation = field_widget(cols[1], field_of(MorphologyStep, "operation"), seeded(f"{ctx.key}b.morphology",
                             a.morphology.operation), label="Morphology")
    sigma = field_widget(cols[2], field_of(DenoiseStep, "sigma"), seeded(f"{ctx.key}b.sigma", a.denoise.sigma),
                         label="Denoise sigma (px)")
    watershed = field_widget(cols[3], field_of(WatershedStep, "enabled"), seeded(f"{ctx.key}b.watershed",
                             a.watershed.enabled), widget="toggle", label="Watershed")
    b = (a.with_step("threshold", method=method).with_step("morphology", operation=operation)
         .with_step("denoise", sigma=float(sigma)).with_step("watershed", enabled=bool(watershed)))
    return b, b != a


def scores_table(images: Sequence[CellImage], recipes: dict[str, Recipe]) -> pd.DataFrame:
    """A Compare run's per-image table of the recipes (one row per image and recipe)."""
    rows = []
    for image in images:
        for name, recipe in recipes.items():
            result = segment(image, recipe)
            s = summarize(match_over_thresholds(image.gt, result.labels))
            rows.append({"image": image.name, "model": name, "f1": s["f1"], "ap": s["ap"],
                         "runtime s": result.runtime_s, "output": "masks"})
    return pd.DataFrame(rows)


def _differences_figure(scores: pd.DataFrame, low: float, high: float) -> go.Figure:
    f1 = scores.pivot_table(index="image", columns="model", values="f1", sort=False)
    diff = f1[RECIPES["B"]] - f1[RECIPES["A"]]
    fig = go.Figure(go.Bar(x=diff.index, y=diff.values, marker_color=np.where(diff.values >= 0, "#2ca02c", "#d62728"),
                           hovertemplate="%{x}: B − A = %{y:+.3f}<extra></extra>"))
    if np.isfinite(low) and np.isfinite(high):
        fig.add_hrect(y0=low, y1=high, fillcolor="#1f77b4", opacity=0.2, line_width=0,
                      annotation_text="95 % interval of the mean", annotation_position="top left")
    fig.add_hline(y=0, line_color="black")
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="F1 of B − F1 of A",
                      yaxis_tickformat="+.3f")
    return fig


def comparison_reading(scores: pd.DataFrame) -> dict[str, Any]:
    """Recipe B against recipe A as the ranking reads ``scores``: mean F1 of each, the paired
    difference B − A over the images with its 95 % interval, and whether it is decided."""
    ranking = rank_models(scores)
    other = ranking.table[ranking.table["verdict"] != "leader"].iloc[0]
    sign = 1.0 if other["model"] == RECIPES["A"] else -1.0  # the table's gaps are leader − other; we show B − A
    low, high = sorted((sign * float(other["interval low"]), sign * float(other["interval high"])))
    means = scores.groupby("model")["f1"].mean()
    return {"images": int(scores["image"].nunique()), "f1_a": float(means[RECIPES["A"]]),
            "f1_b": float(means[RECIPES["B"]]), "diff": float(means[RECIPES["B"]] - means[RECIPES["A"]]),
            "low": low, "high": high, "determined": int(ranking.determined)}


@action("quality_compare")
def which_is_better(ctx: StepContext) -> dict[str, Any]:
    images = scored_images(ctx)
    st.markdown("**Recipe A**: the Preprocess page's defaults. **Recipe B**: the same with the settings below.")
    b, changed = recipe_b(ctx)
    if not changed:  # recipe A scored already: the first change of B waits for B's images alone
        a = scores_table(images, {RECIPES["A"]: DEFAULT_RECIPE})
        st.info(f"Recipe A: F1 {a['f1'].mean():.3f} at IoU 0.5, AP {a['ap'].mean():.3f}, on {len(images)} images. "
                "Recipe B is recipe A for now: change one of its settings.", icon=":material/tune:")
        return {"changed": 0}
    scores = scores_table(images, {RECIPES["A"]: DEFAULT_RECIPE, RECIPES["B"]: b})
    reading = comparison_reading(scores)
    st.plotly_chart(_differences_figure(scores, reading["low"], reading["high"]), width="stretch",
                    key=f"{ctx.key}diffs")
    model_ranking(scores, key=f"{ctx.key}rank")
    decided_seen, undecided_seen = st.session_state.get(f"{ctx.key}seen", (0, 0))
    decided_seen, undecided_seen = decided_seen or reading["determined"], undecided_seen or 1 - reading["determined"]
    st.session_state[f"{ctx.key}seen"] = (decided_seen, undecided_seen)
    return {**reading, "changed": 1, "decided_seen": decided_seen, "undecided_seen": undecided_seen}
