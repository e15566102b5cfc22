"""The lesson's model steps on screen: detectors scored against the ground truth (boxes against masks,
with an IoU threshold to move), and a U-Net trained on a few labels against the classical recipe on
images it never saw (with "Run it live" on the student's own choice of images and epochs).

The slow work is :mod:`workflows.lesson_models`' (the lesson's background preparation); these
actions show its result at once and only redo it when asked. A live result is kept in this
session under ``lesson.live.<step key>``, outside the ``ls.`` widget prefix the workspace restores
into widgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from components.image_viewer import cached_composite
from components.lesson_actions import StepContext, action
from components.plots import f1_curve_figure
from components.result_view import Layer, Panel, Summary, Toggle, result_view
from core.data.images import CellImage
from core.evaluation.matching import AP_THRESHOLDS
from core.evaluation.score_tables import SEEN
from core.figures.display import display_outlines, fill_png, overlay_png, preview
from core.text import plural
from workflows.lesson_models import (
    CLASSICAL,
    LESSON_EPOCHS,
    PERFECT_BOXES,
    SECONDS_PER_EPOCH,
    DetectorScores,
    UNetLesson,
    curated_split,
    score_detectors,
    train_and_score,
)

OUTLINE_COLOR, GT_COLOR = (255, 255, 0), (255, 0, 255)  # as on the Compare page
PREVIEW_SIDE = 640


def _live_key(ctx: StepContext) -> str:
    return f"lesson.live.{ctx.key}"


def _fixed_key(ctx: StepContext, name: str) -> str:
    """Keys of buttons and of the picture component: outside ``ls.``, whose widgets the workspace sets
    again at every run (a button's value cannot be set)."""
    return f"lesson.fixed.{ctx.key}{name}"


def _not_ready(ctx: StepContext, what: str) -> bool:
    """True (and a line saying so) while the step's preparation is still queued or running."""
    if ctx.state in ("waiting", "running"):
        st.caption(f":material/hourglass_top: {what} in the background; the result appears here when it is ready.")
        return True
    return False


def _outlines(image: CellImage, labels: Mapping[str, np.ndarray], captions: Mapping[str, str], *, key: str,
              headline: str) -> None:
    """One panel per label image over ``image`` (the Compare page's view): outlines, filled masks and
    the ground truth switched in the browser."""
    small = preview(cached_composite(image, image.hash, image.channels, (True,) * image.shape[2]), PREVIEW_SIDE)
    size = (small.shape[1], small.shape[0])
    base = Layer.of("base", "the image (display merge)", small, "jpeg")
    gt = Layer.of("gt", "ground-truth outlines", overlay_png(display_outlines(image.gt, size), GT_COLOR), toggle="gt")
    panels = [Panel("ground truth", f"Ground truth: {image.n_cells_gt} nuclei",
                    (base, Layer.of("gt.outlines", "ground truth, outlines",
                                    overlay_png(display_outlines(image.gt, size), OUTLINE_COLOR), toggle="outlines")))]
    for i, (name, lab) in enumerate(labels.items()):
        panels.append(Panel(name, captions[name], (
            base, Layer.of(f"m{i}.fill", f"{name}, filled", fill_png(lab, size), toggle="filled"),
            Layer.of(f"m{i}.outlines", f"{name}, outlines", overlay_png(display_outlines(lab, size), OUTLINE_COLOR),
                     toggle="outlines"), gt)))
    toggles = [Toggle("outlines", "Outlines", "Each object's outline in yellow."),
               Toggle("filled", "Filled masks", "Fill each object in its own colour.", on=False),
               Toggle("gt", "Ground truth over models", "Outline the true nuclei in magenta on every picture.", on=False)]
    result_view(panels, toggles, Summary(headline, tuple(p.caption for p in panels),
                                         ("Click a picture to enlarge it, again to shrink it.",)), key=key)


# ---------------------------------------------------------------------------------------- detectors


def _label(model: str, kind: str, matched_on: str) -> str:
    if kind == "masks":
        return f"{model} (masks)"
    return f"{model} ({'as outlines' if matched_on == 'mask IoU' else 'box IoU'})"


def _scored_detectors(ctx: StepContext) -> DetectorScores | None:
    scores = ctx.prepared if ctx.prepared is not None else st.session_state.get(_live_key(ctx))
    if scores is not None or _not_ready(ctx, "The detectors are being run and scored"):
        return scores
    st.info("The detectors have not been scored yet (the background preparation did not run).")
    if not st.button("Score the detectors now", key=_fixed_key(ctx, "run"), icon=":material/play_arrow:"):
        return None
    bar = st.progress(0.0, text="Running the detectors…")
    scores = score_detectors(ctx.images, progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
    bar.empty()
    st.session_state[_live_key(ctx)] = scores
    return scores


@action("detectors")
def detectors(ctx: StepContext) -> dict[str, Any] | None:
    scores = _scored_detectors(ctx)
    if scores is None:
        return None
    iou = st.select_slider("IoU threshold to match objects at", options=list(AP_THRESHOLDS), value=0.5,
                           key=f"{ctx.key}iou", format_func=lambda v: f"{v:.2f}",
                           help="A found object counts when it overlaps a true nucleus by at least this IoU "
                                "(intersection over union). AP averages over 0.50 to 0.95.")
    masks_ap, boxes_ap = scores.score(CLASSICAL, "ap"), scores.score(PERFECT_BOXES, "ap")
    left, right = st.columns(2)
    left.metric("Classical masks: AP 0.50:0.95", f"{masks_ap:.2f}",
                f"F1 {scores.f1_at(CLASSICAL, iou):.2f} at IoU {iou:.2f}", delta_color="off", delta_arrow="off")
    right.metric("Perfect boxes as outlines: AP 0.50:0.95", f"{boxes_ap:.2f}",
                 f"F1 {scores.f1_at(PERFECT_BOXES, iou):.2f} at IoU {iou:.2f}", delta_color="off", delta_arrow="off")
    table = scores.at(iou)
    table.insert(0, "detector", [_label(m, k, w) for m, k, w in zip(table["model"], table["kind"],
                                                                      table["matched on"], strict=True)])
    st.dataframe(table.drop(columns=["model"]).round(3), hide_index=True, width="stretch")
    st.caption(f"Mean over the {scores.images} images with ground truth. *Perfect boxes* are the true nuclei's own "
               "bounding boxes: on box IoU they score 1 by definition; filled and scored as outlines they show what "
               "any box detector loses. Box detectors are scored both ways; the Compare page scores them on box IoU.")
    curve = scores.curves.assign(model=[_label(m, k, w) for m, k, w in zip(
        scores.curves["model"], scores.curves["kind"], scores.curves["matched on"], strict=True)])
    fig = f1_curve_figure(curve)
    fig.add_vline(x=iou, line_dash="dot", line_color="#888")
    st.plotly_chart(fig)
    if scores.absent:
        with st.expander(f"{len(scores.absent)} other detectors of the Compare page are not run here"):
            st.dataframe(pd.DataFrame({"model": list(scores.absent), "why": list(scores.absent.values())}),
                         hide_index=True, width="stretch")
    names = [img.name for img in ctx.images if img.name in scores.labels]
    chosen = st.selectbox("Image", names, key=f"{ctx.key}image", help="The image drawn below.")
    image = next(img for img in ctx.images if img.name == chosen)
    shown, kinds = scores.labels[chosen], dict(zip(scores.ap["model"], scores.ap["kind"], strict=False))
    captions = {m: f"{m}: {len(np.unique(lab)) - 1} {kinds[m]}" for m, lab in shown.items()}
    _outlines(image, shown, captions, key=_fixed_key(ctx, "view"), headline=f"Boxes against masks on {chosen}")
    return {"classical_f1": scores.score(CLASSICAL, "f1"), "classical_ap": masks_ap,
            "boxes_f1": scores.score(PERFECT_BOXES, "f1"), "boxes_ap": boxes_ap, "iou": float(iou),
            "classical_f1_at_iou": scores.f1_at(CLASSICAL, iou), "boxes_f1_at_iou": scores.f1_at(PERFECT_BOXES, iou),
            "detectors_run": int(scores.ap["model"].nunique()) - 1}


# -------------------------------------------------------------------------------------------- U-Net


def _run_live(ctx: StepContext) -> None:
    """Retrain with the student's number of training images and epochs, a progress bar meanwhile."""
    n_images = sum(img.gt is not None for img in ctx.images)
    with st.expander("Run it live: your own number of labels and epochs", icon=":material/play_circle:"):
        left, right = st.columns(2)
        n_train = left.slider("Images to train on", 1, max(n_images - 2, 1), 2, key=f"{ctx.key}n_train",
                              help="Taken from the plates in turn; one more image validates (chooses the best "
                                   "epoch); every other image is held out for the test.")
        epochs = right.slider("Epochs", 2, 20, LESSON_EPOCHS, key=f"{ctx.key}epochs",
                              help="Passes of 10 steps of 8 random tiles each, as on the Train page.")
        train, val, test = curated_split(ctx.images, n_train)
        prepared = ctx.prepared
        per_epoch = prepared.train_seconds / prepared.epochs if prepared is not None else SECONDS_PER_EPOCH
        st.caption(f"Trains on {', '.join(train)}; validates on {val[0]}; tests on the other {len(test)} images. "
                   f"About {epochs * per_epoch:.0f} s here (the prepared run took {per_epoch:.0f} s an epoch)."
                   if prepared is not None else f"Trains on {', '.join(train)}; validates on {val[0]}; tests on "
                   f"the other {len(test)} images. About {epochs * per_epoch:.0f} s on one CPU core.")
        if not st.button("Train the U-Net", key=_fixed_key(ctx, "train"), icon=":material/model_training:"):
            return
        bar = st.progress(0.0, text="Training the U-Net…")
        result = train_and_score(ctx.images, n_train=n_train, epochs=epochs, device=ctx.device,
                                 progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
        bar.empty()
        st.session_state[_live_key(ctx)] = result


def _shown_unet(ctx: StepContext) -> UNetLesson | None:
    prepared, live = ctx.prepared, st.session_state.get(_live_key(ctx))
    if prepared is not None and live is not None:
        mine = st.toggle(f"Show my run ({len(live.train)} training images, {live.epochs} epochs)", value=True,
                         key=f"{ctx.key}mine", help="Off: the lesson's prepared run "
                                                     f"({len(prepared.train)} images, {prepared.epochs} epochs).")
        return live if mine else prepared
    return prepared if prepared is not None else live


@action("unet")
def unet(ctx: StepContext) -> dict[str, Any] | None:
    _run_live(ctx)
    lesson = _shown_unet(ctx)
    if lesson is None:
        if not _not_ready(ctx, "The U-Net is being trained"):
            st.info("No U-Net trained yet: train one above.")
        return None
    st.info(f"**Held out.** Trained on {plural(len(lesson.train), 'image')} ({', '.join(lesson.train)}), validated "
            f"on {', '.join(lesson.val)}; both models are scored on the other {plural(len(lesson.test), 'image')} "
            "only, which the U-Net never saw.", icon=":material/visibility_off:")
    a, b, c = st.columns(3)
    a.metric("U-Net F1 (held out)", f"{lesson.unet_f1:.2f}", help="Mean over the held-out images, IoU 0.5.")
    b.metric("Classical F1 (same images)", f"{lesson.classical_f1:.2f}")
    c.metric("Training", f"{lesson.train_seconds:.0f} s", f"{lesson.epochs} epochs", delta_color="off", delta_arrow="off")
    table = lesson.table.pivot(index="image", columns="model", values="f1")
    table["U-Net " + SEEN] = lesson.table.loc[lesson.table["model"] == "U-Net"].set_index("image")[SEEN]
    st.dataframe(table.reset_index(), hide_index=True, width="stretch")
    st.caption("F1 at IoU 0.5 on every image. On the images it was trained or validated on (marked), the U-Net's "
               "score says how well it fits what it has seen, not how it does on new images: those are left out of "
               "its mean above.")
    chosen = st.selectbox("Held-out image", lesson.test, key=f"{ctx.key}image")
    image = next(img for img in ctx.images if img.name == chosen)
    shown = lesson.labels[chosen]
    f1 = lesson.table.set_index(["image", "model"])["f1"]
    captions = {m: f"{m}: {len(np.unique(lab)) - 1} nuclei, F1 {f1[(chosen, m)]:.2f}" for m, lab in shown.items()}
    _outlines(image, shown, captions, key=_fixed_key(ctx, "view"), headline=f"U-Net and classical recipe on {chosen} "
              "(held out)")
    return lesson.result()
