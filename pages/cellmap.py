"""Cell map: every cell cropped, turned into features, mapped with t-SNE / UMAP / PCA and coloured by
batch; batch effects measured, and corrected, with numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from components.cellmap_state import (
    GROUND_TRUTH,
    cells_for,
    cells_key,
    embedding_for,
    features_key,
    map_for,
    map_key,
    remember_cells,
    selected_crops,
    send_to_explain,
)
from components.downloads import download_button
from components.image_viewer import cached_composite, picture
from components.model_panel import (
    current_device,
    fetch_missing_weights,
    model_settings,
    setting_widget,
)
from components.recipe_panel import current_recipe
from components.routing import page_with_images
from components.settings_widgets import field_widget
from core.cells import CellSet, Embedding
from core.display import crops_rgb, draw_outlines, montage
from core.map_figures import composition_figure, drawn_as_groups, loss_figure, map_figure, map_html, map_png
from core.preprocess import image_geometry
from core.schema import fields_of
from core.text import plural
from models.cellmap import (
    CORRECTION_NAMES,
    CROP_SIZES,
    METHOD_NAMES,
    CellMap,
    MapSettings,
    cells_frame,
    compositions,
    embedders,
    map_title,
    metrics_json,
    verdict_line,
)
from models.registry import get_model_info, list_models
from models.weights import WeightsUnavailable

VIEWS = ("Map", "Batch effects", "Clusters", "Features", "Export")
RUN_AT_ONCE = {"morphology"}  # fast enough to compute as soon as chosen; the others wait for the button


def cell_controls(ds, where, more) -> tuple[str, dict, dict, str, dict]:
    """Segmenter, its settings, the crop geometry and the feature extractor: the main choices in
    ``where``, the rest in ``more`` (a popover)."""
    c1, c2 = where
    segmenters = [m.name for m in list_models("segment")]
    if all(img.gt is not None for img in ds):
        segmenters.insert(0, GROUND_TRUTH)
    segmenter = c1.selectbox("Cells from", segmenters, index=segmenters.index("classical"), key="cm.segmenter",
                             help="The segmenter that finds the cells: the classical recipe of the Preprocess page, a "
                                  "model of the Compare page (its results are reused), or the ground truth.")
    features = c2.selectbox("Features", embedders(), key="cm.features",
                            format_func=lambda n: f"{n} · {get_model_info(n).family}" if n != get_model_info(n).family else n,
                            help="morphology: the measured shape and intensity of each cell, and of a ring and the background around it (fast). autoencoder: a "
                                 "convolutional autoencoder trained here on your crops; its bottleneck is the embedding. "
                                 "resnet: an ImageNet-trained CNN's features (weights downloaded on first use).")
    with more:
        d1, d2 = st.columns(2)
        size = d1.selectbox("Crop size (px)", CROP_SIZES, key="cm.crop_size",
                            help="Side of each cell's crop, for the autoencoder and the CNN.")
        mode = d2.selectbox("Crop", ("scale", "pad"), key="cm.crop_mode",
                            format_func=lambda m: {"scale": "scaled to fit", "pad": "native size"}[m],
                            help="Scaled to fit: each cell fills its crop (size is lost, shape kept). Native size: a "
                                 "fixed window centred on the cell, so big and small cells look big and small.")
        mask = st.toggle("Mask the background", key="cm.mask", help="Zero every pixel outside the cell in its crop, "
                         "so features see the cell only (background differences between plates then cannot leak in).")
        seg_settings = (model_settings("cm.seg", [segmenter], f"Segmenter settings ({segmenter})")
                        if segmenter != GROUND_TRUTH else {})
        info = get_model_info(features)
        if info.settings:
            st.caption(f"**{features}** settings")
        cols = st.columns(3)
        feat_settings = {s.name: setting_widget(s, key=f"cm.feat.{s.name}", where=cols[i % 3])
                         for i, s in enumerate(info.settings)}
    return segmenter, seg_settings, {"size": size, "mode": mode, "mask_background": mask}, features, feat_settings


def map_controls(conditions: list[str], where, more, one_batch: bool = False) -> MapSettings:
    c1, c2, c4 = where
    f = {spec.name: spec for spec in fields_of(MapSettings)}  # ranges, defaults, labels: MapSettings' own
    method = field_widget(c1, f["method"], "cm.method", widget="segmented_control", format_func=METHOD_NAMES.get)
    correction = field_widget(c2, f["correction"], "cm.correction", disabled=one_batch,
                                format_func=CORRECTION_NAMES.get)
    clusters = field_widget(c4, f["clusters"], "cm.clusters", format_func={"kmeans": "k-means", "hdbscan": "HDBSCAN"}.get)
    with more:
        control = st.selectbox(f["control"].label, ["all cells", *conditions], key="cm.control",
                               disabled=correction != "standardize", help=f["control"].help)
        d1, d2 = st.columns(2)
        perplexity = field_widget(d1, f["perplexity"], "cm.perplexity", f["perplexity"].default, integer=True)
        iterations = field_widget(d2, f["iterations"], "cm.iterations", f["iterations"].default)
        neighbours = field_widget(d1, f["n_neighbors"], "cm.neighbors", f["n_neighbors"].default)
        min_dist = field_widget(d2, f["min_dist"], "cm.min_dist", f["min_dist"].default)
        k = field_widget(d1, f["k"], "cm.k", f["k"].default)
        min_size = field_widget(d2, f["min_cluster_size"], "cm.min_size", f["min_cluster_size"].default)
        seed = field_widget(d1, f["seed"], "cm.seed", f["seed"].default, widget="number_input")
    if one_batch:
        correction = "none"  # nothing to correct; the box is greyed out
    return MapSettings(method=method, perplexity=float(perplexity), iterations=iterations, n_neighbors=neighbours,
                       min_dist=float(min_dist), seed=int(seed), clusters=clusters, k=k, min_cluster_size=min_size,
                       correction=correction, control="" if control == "all cells" else control)


def color_control(frame: pd.DataFrame, where=st) -> str:
    """The column the map is coloured by (the Map view and the saved figures share it)."""
    features = [c for c in frame.columns if c.startswith(("area", "perimeter", "eccentricity", "solidity", "mean_"))]
    return where.selectbox("Colour by", ["batch", "condition", "image", "cluster", *features], key="cm.color",
                           label_visibility="collapsed", placeholder="Colour by",
                           format_func=lambda c: f"Colour by {c}", help="Groups get a colour each (click the legend to hide one); a measurement, a scale.")


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


def metrics_table(cell_map: CellMap) -> pd.DataFrame:
    """Every metric of the features (before and after a correction) and of the 2-D map, with the
    verdict each column's numbers give and the batch classifier on each part of the features."""
    parts = list(((cell_map.report or {}).get("evidence") or {}).get("parts") or {})

    def column(r: dict | None) -> list:
        if r is None:
            return ["–"] * (8 + len(parts))
        cond = r.get("condition") or {}
        by_part = (r.get("evidence") or {}).get("parts") or {}
        numbers = [r["silhouette"], r["ilisi"], r["kbet"], r["classifier_accuracy"],
                   *[by_part.get(p, {}).get("balanced_accuracy") for p in parts],
                   r["chance"], cond.get("classifier_accuracy"), cond.get("chance")]
        return [r["verdict"]] + ["–" if v is None else f"{v:.3f}" for v in numbers]

    rows = ["verdict", "batch ASW (1 = mixed)", "iLISI (median)", "kBET acceptance", "batch classifier (balanced acc.)",
            *[f"batch classifier, {p} only" for p in parts],
            "batch chance", "condition classifier (balanced acc.)", "condition chance"]
    corrected = cell_map.report_before is not None
    after = f", after {CORRECTION_NAMES[cell_map.settings.correction]}" if corrected else ""
    table = {"metric": rows}
    if corrected:
        table["features, before correction"] = column(cell_map.report_before)
    table[f"features{after}"] = column(cell_map.report)
    map_column = column(cell_map.report_map)
    map_column[0] = "–"  # a linear boundary on 2 coordinates is no test of the features
    table[f"2-D map{after}"] = map_column
    return pd.DataFrame(table)


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


def export_view(cells: CellSet, embedding: Embedding, cell_map: CellMap, side) -> None:
    frame = cells_frame(cells, embedding, cell_map)
    color_by = color_control(frame, side)
    c1, c2, c3, c4, c5 = st.columns(5)
    download_button(c1, "Cells (CSV)", lambda: frame.to_csv(index=False), file_name="cells.csv", mime="text/csv",
                       help="One row per cell: ids, batch, condition, measurements, map x/y, cluster, features.")
    download_button(c2, "Cells (Parquet)", lambda: _parquet(frame), file_name="cells.parquet",
                       mime="application/octet-stream", help="The same table, typed and compact (pandas, R arrow).")
    title, subtitle = map_title(cells, embedding, cell_map), verdict_line(cell_map)
    download_button(c3, "Map (HTML)", lambda: map_html(frame, color_by, title=title, subtitle=subtitle), file_name="cell_map.html",
                       mime="text/html", help=f"The interactive figure coloured by {color_by} (as on the Map view), "
                                              "self-contained: it opens in any browser, offline too.")
    groups = frame[color_by] if drawn_as_groups(frame[color_by]) else frame["batch"]
    download_button(c4, "Map (PNG)", lambda: map_png(cell_map.coords, groups.to_numpy(), title=title, subtitle=subtitle,
                                                    legend=groups.name),
                       file_name="cell_map.png", mime="image/png",
                       help="A static picture for a slide or a report, coloured by the Map view's groups (by batch "
                            "when it shows a measurement).")
    download_button(c5, "Metrics (JSON)", lambda: json.dumps(metrics_json(cell_map, embedding, cells), indent=2,
                                                              default=float),
                       file_name="batch_effect.json", mime="application/json",
                       help="Every batch-effect metric, before and after correction, and how the map was made.")


def _parquet(frame: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def cellmap_page() -> None:
    if (ds := page_with_images("Cell map")) is None:
        return
    if len({tuple(c.name for c in img.channels) for img in ds}) > 1:
        st.error("The images have different channels; a map needs one channel layout. Remove the others on the Data "
                 "page, or name their channels alike.")
        return
    # one row of choices and one of actions, so that the map itself starts above the fold at 1280 x 800
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1.35, 0.95, 0.8], vertical_alignment="bottom")
    run, more_cells, more_map, note = st.columns([1, 1.1, 1.1, 1.8], vertical_alignment="center")
    segmenter, seg_settings, crop, features, feat_settings = cell_controls(
        ds, (c1, c2), more_cells.popover("Cell settings", icon=":material/tune:", width="stretch",
                                         help="Crop size and mode, background masking, the segmenter's and the "
                                              "feature extractor's settings."))
    settings = map_controls(sorted({img.condition for img in ds if img.condition}), (c3, c4, c5),
                            one_batch=len({img.batch for img in ds}) < 2,
                            more=more_map.popover("Map settings", icon=":material/tune:", width="stretch",
                                             help="Whose cells scale a standardisation, t-SNE, UMAP and "
                                                  "clustering settings, and the seed."))
    if settings.method == "umap":
        note.caption("The first UMAP after the server starts takes up to a minute longer: umap-learn compiles its "
                     "code on first use.")
    if segmenter != GROUND_TRUTH and not fetch_missing_weights([segmenter], key="cm.seg"):
        return
    if not fetch_missing_weights([features], key="cm.feat"):
        return
    device = current_device()
    key = cells_key(ds, segmenter, seg_settings, device, crop)
    ready = (key, features, json.dumps(feat_settings, default=str))
    done = features in RUN_AT_ONCE or st.session_state.get("cm.ready") == ready  # highlighted only while it is needed
    asked = run.button("Compute the map", type="secondary" if done else "primary", key="cm.run",
                       width="stretch",
                      help="Morphology maps appear at once; the autoencoder and the CNN wait for this button (tens "
                           "of seconds or more on a CPU). Every step is kept, so coming back is instant.")
    if not (asked or done):
        st.info(f"Press **Compute the map** to train or run **{features}** on the cells.")
        return
    try:
        cells = cells_for(ds, segmenter, seg_settings, device, crop)
        made_from = features_key(ds, segmenter, seg_settings, device, crop, features)
        embedding = embedding_for(cells, made_from, features, feat_settings, device)
        made_from += features + json.dumps(feat_settings, default=str)
        cell_map = map_for(cells, embedding, made_from, settings)
    except WeightsUnavailable as exc:
        st.error(str(exc))
        return
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The map could not be made: {exc}")
        return
    st.session_state["cm.ready"] = ready
    remember_cells(segmenter, seg_settings, crop, map_key(made_from, settings), features)
    if not done:  # the button above was drawn highlighted before the work: draw the page again, now kept
        st.rerun()
    note.caption(f"{plural(len(cells), 'cell')} from {plural(len(cells.pairs), 'image')} · {embedding.model} "
                 f"features ({embedding.features.shape[1]} per cell) · {METHOD_NAMES[cell_map.method or settings.method]} map"
                 + (f" · {CORRECTION_NAMES[settings.correction]}" if settings.correction != "none" else ""))
    for message in cell_map.notes:
        st.info(message)
    if segmenter == "classical" and (turned := image_geometry(ds[ds.names[0]].shape, current_recipe().rotate)):
        st.caption(f"The classical recipe works on each image {turned.what}; its cells are mapped back to the image "
                   "as it is, so crops and measurements are of the image as it is.")
    left, side = st.columns([1.05, 1], vertical_alignment="bottom")
    view = left.segmented_control("View", VIEWS, default="Map", required=True, key="cm.view",
                                  label_visibility="collapsed", help="What to look at.")
    {"Map": lambda: map_view(cells, embedding, cell_map, side, key), "Batch effects": lambda: batch_view(cells, cell_map),
     "Clusters": lambda: clusters_view(cells, cell_map, key), "Features": lambda: features_view(cells, embedding),
     "Export": lambda: export_view(cells, embedding, cell_map, side)}[view]()


cellmap_page()
