"""Explain: what a classifier trained on the cells looks at (Grad-CAM and kin), inside the cell or
in the background, and what the detectors look at in a whole image."""

from __future__ import annotations

import hashlib

import streamlit as st

from components.cellmap_state import current_cells, current_map
from components.explain_controls import cam_controls, classifier_controls, nothing_to_tell_apart, train_button
from components.explain_detectors import detector_view
from components.explain_state import (
    cached_classifier,
    classifier_for,
    classifier_key,
    explain_record,
    explanation_for,
    forget_sent_cells,
    sent_cells,
)
from components.explain_views import classifier_view, export_view, grid_view, readings_view, sanity_view
from components.model_panel import current_device
from components.routing import page_with_images
from core.text import plural
from models.explain_cells import target_labels
from workflows.explain import ExplainRequest, rows_for


def cells_view(ds, device: str) -> None:
    try:
        cells, choice, key = current_cells(ds, device)
    except (ValueError, RuntimeError) as exc:
        st.error(f"The cells could not be found: {exc}")
        return
    cell_map = current_map(choice)
    st.caption(f"{plural(len(cells), 'cell')} of the Cell map ({choice['segmenter']}, {cells.size} px crops"
               f"{', background masked' if cells.mask_background else ''}); change them on the Cell map page.")
    sent = sent_cells(key)
    if sent:
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.info(f"Explaining {sent['what']} from the Cell map.")
        if c2.button("Use all cells", key="ex.all", width="stretch", help="Explain a sample of every class instead."):
            forget_sent_cells()
            st.rerun()
    target, settings, button_place = classifier_controls(cell_map is not None)
    if cell_map is None:
        st.caption("To predict the Cell map's clusters, make the map on the Cell map page first.")
    try:
        labels = target_labels(cells, target, None if cell_map is None else cell_map.clusters)
    except ValueError as exc:
        st.error(str(exc))
        return
    if (why := nothing_to_tell_apart(labels, target)) is not None:
        st.error(why)
        return
    ckey = classifier_key(key, target, labels, settings, device)
    trained = cached_classifier(ckey)
    train = train_button(button_place, done=trained is not None)
    if trained is None and not train:
        st.info(f"Press **Train the classifier** to teach a small CNN the cells' {target} "
                f"({len(set(labels))} classes: {', '.join(sorted(set(labels))[:6])}), then see what it looks at.")
        return
    try:
        trained_now = classifier_for(cells, ckey, labels, ExplainRequest(target, settings, device=device))
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The classifier could not be trained: {exc}")
        return
    if trained is None:  # the button above was drawn highlighted before training: draw the page again
        st.rerun()
    trained = trained_now
    classifier_view(trained, target, settings)
    st.subheader("What it looks at")
    method, layer, which, opacity, per_class = cam_controls(trained, sent)
    request = ExplainRequest(target, settings, method=method, layer=layer, which=which, per_class=per_class,
                             within=None if sent is None else sent["rows"], device=device)
    rows = rows_for(trained, request)
    if not len(rows):
        st.warning("None of these cells was in the classifier's training sample: raise Training cells.")
        return
    try:
        explanation = explanation_for(cells, trained, ckey, rows, request)
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The CAMs could not be computed: {exc}")
        return
    record = explain_record(ds, cells, trained, explanation, request, choice)
    readings_view(trained, explanation, record.tables["cam_cells"], target)
    grid_view(cells, trained, explanation, opacity)
    digest = hashlib.sha1(rows.tobytes()).hexdigest()[:12]
    sanity_view(cells, trained, explanation, f"sanity {ckey} {digest} {method} {layer} {which}")
    st.subheader("Export")
    export_view(cells, trained, explanation, record, target, opacity)


def explain_page() -> None:
    if (ds := page_with_images("Explain")) is None:
        return
    device = current_device()
    view = st.segmented_control("Explain", ("Cells", "Detectors"), default="Cells", required=True, key="ex.view",
                                label_visibility="collapsed",
                                help="Cells: a classifier trained on your cells and its CAMs. Detectors: what YOLO or "
                                     "R-CNN look at in a whole image.")
    if view == "Detectors":
        detector_view(ds, device)
    else:
        cells_view(ds, device)


explain_page()
