"""Compare models: several segmenters on the same image, side by side, with numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from components.downloads import download_button
from components.image_viewer import cached_composite
from components.model_panel import (
    cached_result,
    compute_result,
    current_device,
    fetch_missing_weights,
    model_guide,
    model_picker,
    model_settings,
    result_key,
    run_models,
    scores,
    settings_used,
)
from components.plots import agreement_heatmap, f1_curve_figure
from components.result_view import Layer, Panel, Summary, Toggle, result_view
from components.routing import page_with_images
from components.sam_prompt import sam_prompt_view
from components.state import dataset
from core.analysis import with_provenance
from core.display import display_outlines, fill_png, overlay_png, preview
from core.export import results_zip
from core.images import CellImage, content_hash
from core.instances import Instances
from core.scoring import METRIC_KEYS, SEEN, mean_scores, seen_label, seen_warning, summary_row
from core.text import plural
from core.training_data import SEEN_ROLES, SeenImages
from models.registry import get_model_info, images_seen
from workflows.image_loop import run_on_images
from workflows.provenance import provenance

PREVIEW_SIDE = 640
OUTLINE_COLOR, GT_COLOR = (255, 255, 0), (255, 0, 255)  # as on the Preprocess page


def overlays(image: CellImage, results: dict[str, Instances], seen: dict[str, str]) -> None:
    """Two panels to a row, click to enlarge; outlines, filled masks and the ground truth over
    every model are switched in the browser, without a rerun."""
    small = preview(cached_composite(image, image.hash, image.channels, (True,) * image.shape[2]), PREVIEW_SIDE)
    size = (small.shape[1], small.shape[0])
    base = Layer.of("base", "the image (display merge)", small, "jpeg")
    gt = None
    if image.gt is not None:
        gt = Layer.of("gt", "ground-truth outlines", overlay_png(display_outlines(image.gt, size), GT_COLOR), toggle="gt")

    def layers(name: str, labels: np.ndarray) -> tuple[Layer, ...]:
        return (Layer.of(f"{name}.fill", f"{name}, filled", fill_png(labels, size), toggle="filled"),
                Layer.of(f"{name}.outlines", f"{name}, outlines", overlay_png(display_outlines(labels, size),
                                                                             OUTLINE_COLOR), toggle="outlines"))

    panels = []
    if image.gt is not None:
        panels.append(Panel("ground truth", f"Ground truth: {image.n_cells_gt} annotated cells",
                            (base, *layers("ground truth", image.gt))))
    for name, r in results.items():
        what = "boxes" if r.box_only else "objects"
        mark = {"training": " · trained on this image", "validation": " · validated on this image",
                "unknown": " · its training images are unknown"}.get(seen.get(name, ""), "")
        panels.append(Panel(name, f"{name}: {r.count} {what} · {r.runtime_s:.2f} s on {r.device}{mark}",
                            (base, *layers(name, r.labels), *((gt,) if gt else ()))))
    toggles = [
        Toggle("outlines", "Outlines", "Each object's outline in yellow."),
        Toggle("filled", "Filled masks", "Fill each object in its own colour.", on=False),
        Toggle("gt", "Ground truth over models", "Outline the ground-truth cells in magenta on every model's picture."
               if gt else "This image has no ground truth.", on=False, disabled=gt is None),
    ]
    summary = Summary(f"{plural(len(results), 'model')} on {image.name}",
                      tuple(p.caption for p in panels),
                      ("Click a picture to enlarge it, again to shrink it. Box detectors' boxes are drawn as filled "
                       "rectangles.",) if any(r.box_only for r in results.values()) else
                      ("Click a picture to enlarge it, again to shrink it.",))
    result_view(panels, toggles, summary, key="cmp.view")


def seen_by(names: list[str]) -> dict[str, SeenImages | None]:
    """Each model's record of the images it was trained and validated on (None: not the user's model)."""
    return {n: images_seen(n) for n in names}


def numbers(image: CellImage, results: dict[str, Instances], keys: tuple, settings: dict, device: str,
            seen: dict[str, SeenImages | None]) -> None:
    gt_hash = content_hash(image.gt) if image.gt is not None else None
    table, curve, agreement = scores(results, keys, image.gt, gt_hash)
    table = table.assign(**{SEEN: [seen_label(seen.get(m), image) for m in table.model]})  # in the CSV too
    cost = ["model", "objects", "output", "mean area px", "median area px", "runtime s", "device", "peak memory MB", "tiles"]
    st.dataframe(table[cost], hide_index=True, width="stretch")
    if image.gt is not None:
        marked = [SEEN] if any(s is not None for s in seen.values()) else []
        st.dataframe(table[["model", *marked, "matched on", *METRIC_KEYS]], hide_index=True, width="stretch",
                     column_config={k: st.column_config.NumberColumn(format="%.3f") for k in METRIC_KEYS})
        for model, label in zip(table.model, table[SEEN], strict=True):
            if (line := seen_warning(model, label, image.name, seen.get(model))) is not None:
                (st.warning if label != "unknown" else st.info)(line, icon=":material/school:")
    notes = [f"{n}: {note}" for n, r in results.items() for note in r.notes]
    if notes:
        st.caption(" · ".join(notes))
    if image.gt is not None:
        st.caption("Against ground truth, objects matched one-to-one at IoU ≥ 0.5; AP is TP/(TP+FP+FN) averaged over "
                   "IoU 0.5:0.05:0.95 (DSB 2018 / StarDist); PQ = panoptic quality. Box-only detectors are matched on "
                   "box IoU with the ground-truth boxes.")
    c1, c2 = st.columns(2)
    if agreement is not None:
        c1.plotly_chart(agreement_heatmap(agreement), width="stretch", config={"displaylogo": False})
    if curve is not None:
        c2.plotly_chart(f1_curve_figure(curve), width="stretch", config={"displaylogo": False})
    prov = provenance(models={n: settings_used(n, settings) for n in results}, device=device)
    d1, d2 = st.columns(2)
    download_button(d1, "Results for this image (zip)",
                       lambda: results_zip([image], {(image.name, n): r for n, r in results.items()}, table,
                                           provenance=prov),
                       file_name=f"{image.name.rsplit('.', 1)[0]}_compare.zip", mime="application/zip",
                       help="labels/<model>/<image>.tif label images, objects.csv (one row per object), "
                            "coco/<model>.json (COCO instances with scores), metrics.csv and provenance.json (each "
                            "model's settings and weights file, the device, CellScope and package versions).")
    download_button(d2, "Metrics (CSV)", lambda: with_provenance(table, prov).to_csv(index=False), file_name=f"{image.name.rsplit('.', 1)[0]}_metrics.csv",
                       mime="text/csv", help="The table above, with columns naming the CellScope version, device, weights and settings.")


def seen_f1(table: pd.DataFrame) -> None:
    """F1 per image and model, the images a model has seen marked, and means that leave them out
    unless asked."""
    if SEEN not in table:  # a table made before the column existed
        table = table.assign(**{SEEN: ""})
    pivot = table.pivot_table(index="image", columns="model", values="f1", sort=False)
    marks = table.pivot(index="image", columns="model", values=SEEN).reindex_like(pivot).fillna("")
    st.markdown("**F1 at IoU 0.5, image × model**")
    shade = {"training": "background-color: rgba(255, 140, 0, 0.45)",
             "validation": "background-color: rgba(255, 140, 0, 0.2)", "unknown": "font-style: italic"}
    styled = pivot.style.format("{:.3f}", na_rep="").apply(lambda _: marks.map(lambda m: shade.get(m, "")), axis=None)
    for role, tag in (("training", "trained on"), ("validation", "validated on"), ("unknown", "?")):
        cells = marks == role
        for model in pivot.columns[cells.any(axis=0)]:
            styled = styled.format(f"{{:.3f}} ({tag})", subset=pd.IndexSlice[pivot.index[cells[model]], [model]])
    st.dataframe(styled, width="stretch")
    seen = table[SEEN].isin(SEEN_ROLES)
    unknown = sorted(table.loc[table[SEEN] == "unknown", "model"].unique())
    if seen.any():
        st.caption(f"Shaded, *(trained on)* or *(validated on)*: an image the model has seen "
                   f"({plural(int(seen.sum()), 'score')}). Its F1 there says how well it fits images it has seen, not "
                   "how it does on new ones.")
    include = st.checkbox("Include the images each model was trained or validated on in its mean", value=False,
                          key="cmp.include_seen", disabled=not seen.any(),
                          help="Off: each model's mean is over the images it has not seen (its checkpoint records "
                               "them, recognised by their pixels).")
    means = mean_scores(table, include_seen=include)
    st.markdown("**Means over images**" + ("" if include or not seen.any() else
                                            ", leaving out the images each model has seen"))
    st.dataframe(means, width="stretch")
    if blind := [m for m in means.index if means.loc[m, "images"] == 0]:
        st.caption(f"{', '.join(blind)}: trained or validated on every image here, so no image is left to score "
                   "it on (an empty row). Add images it has not seen, or tick the box above to see its fit.")
    if unknown:
        st.caption(f"In italics, *(?)*: {', '.join(unknown)}: which images {'it was' if len(unknown) == 1 else 'they were'} "
                   "trained on is unknown (a checkpoint written before CellScope recorded them, or a file placed by "
                   "hand), so their means may include training images.")


def all_images(names: list[str], settings: dict, device: str) -> None:
    ds = dataset()
    st.caption(f"Every model on every one of the {plural(len(ds), 'image')}; cached results are reused.")
    if st.button(f"Run {plural(len(names), 'model')} on all {plural(len(ds), 'image')}", disabled=not names,
                 key="cmp.run_all", help="Progress is shown per image and model. Results are cached, so a second run "
                                         "is instant."):
        bar = st.progress(0.0)
        seen = seen_by(names)
        run = run_on_images(list(ds), names, lambda img, name: compute_result(img, name, settings, device),
                            lambda img, r: summary_row(r, img.gt) | {SEEN: seen_label(seen.get(r.model), img)},
                            progress=lambda f, what: bar.progress(f, text=what))
        bar.empty()
        for problem in run.problems:
            st.error(problem)
        prov = provenance(models={n: settings_used(n, settings) for n in names}, device=device)
        st.session_state["cmp.all"] = (run.table, run.results, prov)
        st.session_state["cmp.all_made"] = ({n: settings_used(n, settings) for n in names}, device, ds.signature())
    if "cmp.all" not in st.session_state:
        return
    table, results, prov = st.session_state["cmp.all"]
    if st.session_state.get("cmp.all_made") != ({n: settings_used(n, settings) for n in names}, device, ds.signature()):
        st.warning("These results are out of date: the models, their settings, the device or the images changed since "
                   "they were made. Press the button above to run again.", icon=":material/history:")
    if table.empty:
        st.warning("Nothing ran; see the messages above.")
        return
    if "f1" in table:
        seen_f1(table)
    st.dataframe(table, hide_index=True, width="stretch", height=300)
    download_button(st, "All results (zip)", lambda: results_zip(list(ds), results, table, provenance=prov),
                       file_name="cellscope_compare_all.zip", mime="application/zip",
                       help="Label TIFFs per model and image, objects.csv, COCO JSON per model, metrics.csv and "
                            "provenance.json (settings, weights, device, versions of this run).")


def compare_page() -> None:
    if (ds := page_with_images("Compare models")) is None:
        return
    c1, c2 = st.columns([3, 1.2], vertical_alignment="bottom")
    image = ds[c1.selectbox("Image", ds.names, key="cmp.image", help="The image every model runs on.")]
    if c2.button("What each model is", icon=":material/info:", key="cmp.guide", width="stretch",
                 help="Every model: what it was trained on, its licence, whether its weights are here."):
        model_guide()
    chosen = model_picker("cmp.models")  # a row of its own: every chosen model's chip stays readable
    names = fetch_missing_weights(chosen, key="cmp.models")
    device = current_device()
    s1, s2 = st.columns([3.2, 1], vertical_alignment="top")
    with s1:
        settings = model_settings("cmp.set", names)
    slow = [n for n in names if get_model_info(n).slow_on_cpu]
    # highlighted only while a chosen model waits for it: every result shown, nothing is left to press for
    needed = device == "cpu" and any(cached_result(image, n, settings, device) is None for n in slow)
    run_now = s2.button(f"Run {plural(len(names), 'model')}", type="primary" if needed else "secondary",
                        disabled=not names, key="cmp.run",
                        width="stretch", help="Classical and YOLO run as soon as they are chosen; SAM and R-CNN on "
                        "the CPU wait for this button (tens of seconds each). Results are cached per image and settings.")
    tabs = st.tabs(["This image", "All images", "Prompt SAM"], on_change="rerun", key="cmp.tab")
    if tabs[0].open:
        with tabs[0]:
            results = run_models(image, names, settings, device, all_now=run_now)
            waiting = [n for n in slow if n not in results and device == "cpu"]
            if waiting:
                st.info(f"Press **Run** for {', '.join(waiting)} (slow on the CPU).")
            if results:
                seen = seen_by(list(results))
                overlays(image, results, {n: seen_label(s, image) for n, s in seen.items()})
                numbers(image, results, tuple(result_key(image, n, settings, device) for n in results), settings, device,
                        seen)
    if tabs[1].open:
        with tabs[1]:
            all_images(names, settings, device)
    if tabs[2].open:
        with tabs[2]:
            sam_prompt_view(image, device, offered=chosen)


compare_page()
