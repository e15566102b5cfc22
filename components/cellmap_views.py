"""The Cell map page's views: the map (a click shows a cell in its image, a lasso its crops), the
batch-effect metrics and maps before and after a correction, the clusters, the features, and the
downloads (from the run's record)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from components.cellmap_controls import color_control
from components.cellmap_state import selected_crops, send_to_explain
from components.downloads import download_button
from components.image_viewer import cached_composite, picture
from components.save_run import default_run_name, save_run_control
from core.cells.cell_set import CellSet, Embedding
from core.figures.cellmap import composition_figure, loss_figure, map_figure
from core.figures.display import crops_rgb, draw_outlines, montage
from core.text import plural
from models.cellmap import CORRECTION_NAMES, CellMap, cells_frame, compositions
from workflows.cellmap import CellMapRun, map_figure_files, metrics_table, parquet_bytes


def map_view(cells: CellSet, embedding: Embedding, cell_map: CellMap, side, key: str) -> None:
    frame = cells_frame(cells, embedding, cell_map, with_features=False)
    s1, s2 = side.columns([1.1, 1], vertical_alignment="bottom")
    # Zoom by default: in Lasso and Box mode Streamlit's chart ignores a click, and a click on one
    # cell (to see it in its image) is the first thing people try.
    drag = s1.segmented_control("Drag to", ("zoom", "lasso", "select"), default="zoom", required=True, key="cm.drag",
                                label_visibility="collapsed",
                                format_func={"zoom": "Click", "lasso": "Lasso", "select": "Box"}.get,
                                help="Click: a click shows one cell in its image, a drag zooms in (double-click zooms "
                                     "out). Lasso or Box: drag around cells to select many and see their crops.")
    color_by = color_control(frame, s2)
    figure = map_figure(frame, color_by)
    figure.update_layout(dragmode=drag)
    event = st.plotly_chart(figure, key="cm.chart", on_select="rerun",
                            selection_mode=("points", "box", "lasso"), width="stretch",
                            config={"displaylogo": False, "scrollZoom": True})
    rows = sorted({int(p["customdata"]) for p in (event.selection.points if event else []) if "customdata" in p})
    if not rows:
        st.caption(f"{plural(len(frame), 'cell')}. " + ("Click a cell to see it in its image; choose **Lasso** or "
                   "**Box** (above the map) to select many." if drag == "zoom" else "Drag a lasso or a box around cells "
                   "to see them; choose **Click** to see one cell in its image."))
        return
    picked = frame.iloc[rows]
    head, button = st.columns([3, 1], vertical_alignment="center")
    head.markdown(f"**{plural(len(rows), 'cell')} selected** · "
                  + " · ".join(f"{k}: {v}" for k, v in picked["batch"].value_counts().head(6).items()))
    if button.button("Explain these cells", key="cm.explain_sel", icon=":material/visibility:", width="stretch",
                     help="Open the Explain page on these cells: what a classifier trained on all cells looks at "
                          "in them (Grad-CAM), inside the cell or in the background."):
        send_to_explain(key, rows, f"{plural(len(rows), 'cell')} selected on the map")
    if len(rows) == 1:
        cell_in_image(cells, rows[0])
    else:
        shown = rows[:60]
        picture(montage(selected_crops(cells, np.array(shown)), columns=12),
                caption=f"Crops of {len(shown)} of the {len(rows)} selected cells, as the features saw them")
    st.dataframe(picked[["cell_id", "image", "batch", "condition", "label", "centroid_x", "centroid_y", "cluster"]],
                 hide_index=True, width="stretch", height=min(300, 40 + 35 * len(rows)))


def cell_in_image(cells: CellSet, row: int) -> None:
    """The clicked cell in its image, outlined, with some surroundings."""
    cell = cells.table.iloc[row]
    image, labels = cells.pairs[int(cell["image_index"])]
    rgb = cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])
    pad = 48
    y0, x0 = max(int(cell["bbox_min_y"]) - pad, 0), max(int(cell["bbox_min_x"]) - pad, 0)
    y1, x1 = int(cell["bbox_max_y"]) + pad, int(cell["bbox_max_x"]) + pad
    window = draw_outlines(rgb[y0:y1, x0:x1], (labels[y0:y1, x0:x1] == cell["label"]).astype(np.int32))
    c1, c2, _ = st.columns([2, 1, 3])
    picture(window, caption=f"{cell['cell_id']} in {image.name} (batch {cell['batch']}, {cell['condition'] or 'no condition'})",
            where=c1)
    picture(selected_crops(cells, np.array([row]))[0], caption="its crop, as the features saw it", where=c2)


VERDICT_STYLE = {"no": st.success, "weak": st.warning, "strong": st.error, "undetermined": st.info}


def batch_view(cells: CellSet, cell_map: CellMap) -> None:
    report = cell_map.report
    if report is None:
        return
    # The reason starts with the verdict ("Strong batch effect: …") and holds the neighbourhood
    # metrics too: a "no" whose neighbourhoods are not mixed is not shown as a green all-clear.
    unmixed_no = report["verdict"] == "no" and not report.get("mixed_locally", True)
    (st.info if unmixed_no else VERDICT_STYLE[report["verdict"]])(report["reason"])
    if report.get("comparison"):
        st.markdown(report["comparison"])
    for warning in report.get("warnings", []):
        st.warning(warning)
    if (cmp := cell_map.comparison) and cmp.get("message"):
        (st.error if cmp.get("condition_erased") else st.warning if cmp.get("condition_weakened") else st.info)(
            cmp["message"])
    st.dataframe(metrics_table(cell_map), hide_index=True, width="stretch")
    st.caption("scIB metrics (Luecken et al. 2022). Batch ASW: 1 = batches mixed, 0 = separated. iLISI: how many "
               "batches a cell's neighbourhood holds (1 = one, up to the number of batches). kBET: share of "
               "neighbourhoods whose batch mix matches the whole. Classifier: balanced accuracy predicting the batch "
               "(or condition) of cells of images it never saw (cross-validated by image), next to chance; for "
               "morphology also on the cells' own measurements alone and on their surroundings alone. The verdict "
               "rests on the classifier on all features: the neighbourhood metrics can read a shift shared by all "
               "cells of a plate as mixed (a high ASW beside a strong effect) and field-to-field differences as a "
               "batch effect. The 2-D map is made from the features"
               + (" after the correction" if cell_map.report_before is not None else "")
               + "; on it a linear classifier can miss curved patterns, so its column is for reading the picture "
               "and gives no verdict.")
    frame = cells_frame(cells, None, cell_map, with_features=False)
    if cell_map.coords_before is not None:
        for by in ("batch", "condition"):
            c1, c2 = st.columns(2)
            c1.plotly_chart(map_figure(frame, by, x="x_uncorrected", y="y_uncorrected", title=f"Before: by {by}",
                                       height=420, compact=True), width="stretch", key=f"cm.before.{by}", config={"displaylogo": False})
            c2.plotly_chart(map_figure(frame, by, title=f"After {CORRECTION_NAMES[cell_map.settings.correction]}: by {by}",
                                       height=420, compact=True),
                            width="stretch", key=f"cm.after.{by}", config={"displaylogo": False})
    else:
        c1, c2 = st.columns(2)
        c1.plotly_chart(map_figure(frame, "batch", title="By batch", height=420, compact=True), width="stretch", key="cm.by_batch",
                        config={"displaylogo": False})
        c2.plotly_chart(map_figure(frame, "condition", title="By condition", height=420, compact=True), width="stretch",
                        key="cm.by_condition", config={"displaylogo": False})


def clusters_view(cells: CellSet, cell_map: CellMap, key: str) -> None:
    shares = compositions(cells, cell_map)
    c1, c2 = st.columns(2)
    c1.plotly_chart(composition_figure(shares["batch"], "batch"), width="stretch", key="cm.comp.batch")
    c2.plotly_chart(composition_figure(shares["condition"], "condition"), width="stretch", key="cm.comp.condition")
    counts = pd.Series(cell_map.clusters).value_counts().sort_index()
    st.caption("Cells per cluster: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
               + (" (−1: in no cluster)" if -1 in counts.index else "")
               + ". A cluster made of one batch is a batch effect, not biology, unless its images differ.")
    c1, c2, _ = st.columns([1, 1, 2], vertical_alignment="bottom")
    chosen = c1.selectbox("Cluster", list(counts.index), key="cm.explain_cluster",
                          help="A cluster to look into on the Explain page.")
    if c2.button("Explain this cluster", key="cm.explain_cl", icon=":material/visibility:", width="stretch",
                 help="Open the Explain page on this cluster's cells: what a classifier trained on all cells looks "
                      "at in them (Grad-CAM), inside the cell or in the background."):
        send_to_explain(key, list(np.flatnonzero(cell_map.clusters == chosen)),
                        f"cluster {chosen} ({plural(int(counts[chosen]), 'cell')})")


def features_view(cells: CellSet, embedding: Embedding) -> None:
    st.markdown(f"**{embedding.model}**: {embedding.features.shape[1]} numbers per cell, computed in "
                f"{embedding.seconds:.1f} s.")
    extra = embedding.extra
    if "loss_curve" in extra:
        st.plotly_chart(loss_figure(extra["loss_curve"]), width="stretch", key="cm.loss",
                        config={"displaylogo": False, "scrollZoom": False})
        st.caption(f"Reconstruction loss (mean squared error) per epoch, trained on {extra['train_cells']} cells.")
        examples, recon = extra["examples"], extra["reconstructions"]
        picture(montage(np.concatenate([crops_rgb(examples, cells.channels), crops_rgb(recon, cells.channels)]),
                        columns=len(examples)),
                caption="Top: crops; bottom: the autoencoder's reconstructions from the bottleneck alone")
        if extra.get("note"):
            st.warning(extra["note"])
    elif embedding.names and not embedding.names[0].startswith(("resnet", "ae_")):
        st.caption("Features: " + ", ".join(embedding.names))


def export_view(run: CellMapRun, side) -> None:
    """The record's cells table, the map as drawn on the Map view, and the record's metrics file."""
    record = run.analysis
    frame = record.tables["cells"]
    color_by = color_control(frame, side)
    figures = map_figure_files(run.cells, run.embedding, run.cell_map, frame, color_by)
    c1, c2, c3, c4, c5 = st.columns(5)
    download_button(c1, "Cells (CSV)", lambda: frame.to_csv(index=False), file_name="cells.csv", mime="text/csv",
                       help="One row per cell: ids, batch, condition, measurements, map x/y, cluster, features.")
    download_button(c2, "Cells (Parquet)", lambda: parquet_bytes(frame), file_name="cells.parquet",
                       mime="application/octet-stream", help="The same table, typed and compact (pandas, R arrow).")
    download_button(c3, "Map (HTML)", figures["html"], file_name="cell_map.html",
                       mime="text/html", help=f"The interactive figure coloured by {color_by} (as on the Map view), "
                                              "self-contained: it opens in any browser, offline too.")
    download_button(c4, "Map (PNG)", figures["png"],
                       file_name="cell_map.png", mime="image/png",
                       help="A static picture for a slide or a report, coloured by the Map view's groups (by batch "
                            "when it shows a measurement).")
    download_button(c5, "Metrics (JSON)", lambda: record.files["batch_effect.json"].decode(),
                       file_name="batch_effect.json", mime="application/json",
                       help="Every batch-effect metric, before and after correction, and how the map was made.")
    save_run_control("cm.run_name", [record], default_name=default_run_name("cellmap"), images=run.images)
