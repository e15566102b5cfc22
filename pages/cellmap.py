"""Cell map: every cell cropped, turned into features, mapped with t-SNE / UMAP / PCA and coloured by
batch; batch effects measured, and corrected, with numbers."""

from __future__ import annotations

import streamlit as st

from components.cellmap_controls import cell_controls, compute_button, map_controls, map_shown
from components.cellmap_state import GROUND_TRUTH, cells_key, map_for, map_request, remember_cells
from components.cellmap_views import batch_view, clusters_view, export_view, features_view, map_view
from components.model_panel import current_device, fetch_missing_weights
from components.recipe_panel import current_recipe
from components.routing import page_with_images
from core.cells.cell_set import check_one_channel_layout
from core.cells.embed import umap_compiled
from core.segmentation.preprocess import image_geometry
from core.text import plural
from models.cellmap import CORRECTION_NAMES, METHOD_NAMES
from models.weights import WeightsUnavailable

VIEWS = ("Map", "Batch effects", "Clusters", "Features", "Export")


def cellmap_page() -> None:
    if (ds := page_with_images("Cell map")) is None:
        return
    try:
        check_one_channel_layout(list(ds))
    except ValueError as exc:
        st.error(str(exc))
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
    if settings.method == "umap" and not umap_compiled():
        note.caption("The first UMAP after the server starts takes up to a minute longer: umap-learn compiles its "
                     "code on first use.")
    if segmenter != GROUND_TRUTH and not fetch_missing_weights([segmenter], key="cm.seg"):
        return
    if not fetch_missing_weights([features], key="cm.feat"):
        return
    device = current_device()
    key = cells_key(ds, segmenter, seg_settings, device, crop)
    if not compute_button(run, key, features, feat_settings):
        return
    request = map_request(segmenter, seg_settings, crop, features, feat_settings, settings, device, current_recipe())
    try:
        made, made_key = map_for(ds, request, seg_settings)
    except WeightsUnavailable as exc:
        st.error(str(exc))
        return
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The map could not be made: {exc}")
        return
    remember_cells(segmenter, seg_settings, crop, made_key, features)
    if map_shown(key, features, feat_settings):  # the button was drawn highlighted before the work: draw again
        st.rerun()
    cells, embedding, cell_map = made.cells, made.embedding, made.cell_map
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
     "Export": lambda: export_view(made, side)}[view]()


cellmap_page()
