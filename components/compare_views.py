"""The Compare page's "This image" view: every chosen model's objects over the image (outlines,
filled masks, ground truth switched in the browser) and its numbers, curves and downloads."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components.downloads import download_button
from components.image_viewer import cached_composite
from components.model_panel import scores, settings_used
from components.plots import agreement_heatmap, f1_curve_figure
from components.result_view import Layer, Panel, Summary, Toggle, result_view
from core.analysis import with_provenance
from core.data.images import CellImage, content_hash
from core.data.instances import Instances
from core.evaluation.score_tables import METRIC_KEYS, SEEN, seen_label, seen_warning
from core.figures.display import display_outlines, fill_png, overlay_png, preview
from core.io.export import results_zip
from core.text import plural
from core.training.data import SeenImages
from models.registry import images_seen
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
