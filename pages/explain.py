"""Explain: what a classifier trained on the cells looks at (Grad-CAM and kin), inside the cell or
in the background, and what the detectors look at in a whole image."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from components.cellmap_state import EXPLAIN_ROWS, current_cells, current_map
from components.downloads import download_button
from components.explain_state import (
    cached_classifier,
    cached_detector_cam,
    classifier_for,
    classifier_key,
    deletion_test_for,
    detector_cam_for,
    explanation_for,
)
from components.image_viewer import picture
from components.model_panel import current_device, fetch_missing_weights, model_settings, setting_widget
from components.routing import page_with_images
from core.display import montage
from core.explain_figures import confusion_figure, curves_figure, deletion_figure, inside_figure
from core.text import plural
from models.classifier import TrainedClassifier
from models.detector_cam import METHOD_TITLES, cam_methods_of, draw_detector_cam, highlighted
from models.explain import CAM_METHOD_NAMES, cam_layers
from models.explain_cells import (
    TARGETS,
    CellExplanation,
    cam_summary,
    cam_table,
    classifier_json,
    classifier_settings,
    deletion_test,
    dumps,
    overlays,
    overlays_zip,
    sample_rows,
    target_labels,
)
from models.registry import availability, get_model_info, list_models

METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "scorecam": "Score-CAM",
                 "eigencam": "Eigen-CAM", "layercam": "LayerCAM"}
FOCUS_STYLE = {"background": st.error, "cells": st.success, "both": st.info, "undetermined": st.info}
GRID = 8  # cells shown per class and per correct / wrong


def classifier_controls(has_clusters: bool) -> tuple[str, dict, object]:
    c1, c2, c3 = st.columns([1.2, 1, 1], vertical_alignment="bottom")
    targets = [t for t in TARGETS if t != "cluster" or has_clusters]
    target = c1.selectbox("Predict", targets, key="ex.target", format_func=lambda t: f"the cell's {t}",
                          help="What the classifier learns to tell from each cell's crop. Batch: can the plates be "
                               "told apart (a batch effect)? Condition: is the treatment visible? Cluster: what sets "
                               "the Cell map's clusters apart (make the map first).")
    with c2.popover("Classifier settings", icon=":material/tune:", width="stretch",
                    help="Epochs, batch size, learning rate, cross-validation folds, seed, training cells."):
        cols = st.columns(2)
        settings = {s.name: setting_widget(s, key=f"ex.set.{s.name}", where=cols[i % 2])
                    for i, s in enumerate(classifier_settings())}
    return target, settings, c3


def train_button(where, done: bool) -> bool:
    """Highlighted while there is a classifier to train for these choices; plain once it is shown."""
    return where.button("Train the classifier", type="secondary" if done else "primary", key="ex.train",
                        width="stretch",
                        help="A small CNN on the Cell map's crops, cross-validated by image (cells of one image "
                             "are never in both training and test). Tens of seconds on a CPU for a thousand cells.")


def classifier_view(trained: TrainedClassifier, target: str, settings: dict) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Balanced accuracy", f"{trained.balanced_accuracy:.2f}",
              help="Mean recall over the classes, on cells of images the network never saw (cross-validated by image).")
    c2.metric("Chance", f"{trained.chance:.2f}", help=f"1 / {len(trained.classes)} classes: what guessing reaches.")
    c3.metric("Cells · images", f"{len(trained.y):,} · {trained.n_images}",
              help="Cells and images the classifier was cross-validated on; " + ", ".join(
                  f"{k}: {v} images" for k, v in trained.images_per_class.items()))
    c4.metric("Folds · time", f"{trained.folds} · {trained.seconds:.0f} s", help="Cross-validation folds and training time.")
    asked = settings.get("folds", trained.folds)
    st.caption(f"Each image's cells were predicted by a network that never saw that image ({trained.folds} folds of "
               "images, stratified by class" + (f"; fewer than the {asked} asked, because a class has only "
               f"{min(trained.images_per_class.values())} images" if trained.folds < asked else "")
               + "). A final network trained on every cell is the one explained below.")
    if trained.balanced_accuracy < trained.chance + 0.1:
        st.warning(f"The {target} can hardly be told from the crops (balanced accuracy {trained.balanced_accuracy:.2f}, "
                   f"chance {trained.chance:.2f}): the CAMs below explain a classifier that mostly guesses.")
    if min(trained.images_per_class.values()) < 3:
        st.info("Some classes have fewer than 3 images: the accuracy rests on few held-out images and may vary a lot "
                "with the seed.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(confusion_figure(trained.confusion, trained.classes), width="stretch", key="ex.confusion",
                    config={"displaylogo": False})
    c2.plotly_chart(curves_figure(trained.train_loss, trained.val_accuracy, trained.chance), width="stretch",
                    key="ex.curves", config={"displaylogo": False})


def cam_controls(trained: TrainedClassifier, sent: dict | None) -> tuple[str, str, str | int, float, int]:
    c1, c2, c3, c4 = st.columns([1, 1, 1.2, 1], vertical_alignment="bottom")
    method = c1.selectbox("Method", CAM_METHOD_NAMES, key="ex.method", format_func=METHOD_LABELS.get,
                          help="Grad-CAM: gradients of the class score weight the last conv block's maps (the usual "
                               "choice). Grad-CAM++ and LayerCAM: finer, better with several objects. HiResCAM: "
                               "faithful to the model's computation. Score-CAM: no gradients, slower. Eigen-CAM: the "
                               "main component of the activations, the same for every class.")
    layers = list(cam_layers(trained.model))
    layer = c2.selectbox("Layer", layers, index=len(layers) - 1, key="ex.layer",
                         help="Where the CAM is taken: the last block (default) is the most class-specific and the "
                              "coarsest; earlier blocks show finer detail.")
    options = ["predicted", "true", *range(len(trained.classes))]
    which = c3.selectbox("Explain the class", options, key="ex.which",
                         format_func=lambda o: {"predicted": "predicted (unseen)",
                                                "true": "true"}.get(o, f"{trained.classes[o]}" if isinstance(o, int)
                                                                        else str(o)),
                         help="Which class's evidence to show: the predicted one, the true one, or one class for "
                              "every cell (where would it see that class?).")
    opacity = c4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="ex.opacity",
                        help="0 shows the crop only, 1 the map only. Red: relied on; blue: ignored.")
    per_class = 150
    if sent is None:
        per_class = st.slider("Cells per class", 20, 500, 150, 10, key="ex.per_class",
                              help="Cells whose CAMs are computed and measured: a random sample of each true class, "
                                   "correct and wrong predictions in their true proportions. More cells: steadier "
                                   "numbers, longer wait.")
    return method, layer, which, opacity, per_class


def readings_view(trained: TrainedClassifier, explanation: CellExplanation, table: pd.DataFrame, target: str) -> None:
    summary = cam_summary(trained, explanation, target)
    for _, row in summary.iterrows():
        FOCUS_STYLE[row["focus"]](row["reading"])
    st.caption("Inside share: the part of a cell's CAM inside its outline, next to the part of the crop the cell "
               "covers (what a CAM without preference would give). A classifier that tells plates apart by their "
               "background lights up the background: a batch effect, not biology.")
    st.plotly_chart(inside_figure(table, order=trained.classes), width="stretch", key="ex.inside",
                    config={"displaylogo": False})


def grid_view(cells, trained: TrainedClassifier, explanation: CellExplanation, opacity: float) -> None:
    st.caption("Overlays: red = what the network relied on, blue = what it ignored; white = the cell's outline. "
               "Up to 8 cells per group; every explained cell is in the Overlays zip below.")
    for code, name in enumerate(trained.classes):
        mine = np.flatnonzero(explanation.true == code)
        if not len(mine):
            continue
        st.markdown(f"**True {name}**")
        c1, c2 = st.columns(2)
        for where, ok, label in ((c1, True, "correctly classified"), (c2, False, "wrongly classified")):
            picks = mine[explanation.correct[mine] == ok][:GRID]
            if not len(picks):
                where.caption(f"No {label} cells among the {len(mine)} explained.")
                continue
            tiles = overlays(cells, explanation, opacity, picks)
            scale = max(1, 96 // tiles.shape[1])  # ~96 px a cell: the CAM's grid and the outline stay visible
            tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
            predicted = ", ".join(sorted({trained.classes[p] for p in explanation.predicted[picks]}))
            picture(montage(tiles, columns=4), where=where, fmt="png",
                    caption=f"{label}: {len(picks)} of {int((explanation.correct[mine] == ok).sum())}"
                            + ("" if ok else f" · predicted {predicted}"))


def sanity_view(cells, trained: TrainedClassifier, explanation: CellExplanation, key: str) -> None:
    st.markdown("**Can the CAM be trusted?** The deletion/insertion test removes a cell's most highlighted pixels "
                "first and watches the class probability fall; if it falls no faster than with random pixels, the "
                "CAM does not show what the model uses.")
    if st.button("Run the deletion/insertion test", key="ex.sanity", help="On up to 64 of the explained cells."):
        with st.spinner("Masking pixels and scoring…"):
            deletion_test_for(key, lambda: deletion_test(cells, trained, explanation))
    test = deletion_test_for(key)
    if test is not None:
        (st.success if test.beats_random else st.warning)(test.reading())
        st.plotly_chart(deletion_figure(test.fractions, {"deletion": test.deletion, "random_deletion": test.random_deletion,
                                                         "insertion": test.insertion,
                                                         "random_insertion": test.random_insertion}),
                        width="stretch", key="ex.deletion", config={"displaylogo": False})


def export_view(cells, trained: TrainedClassifier, explanation: CellExplanation, table: pd.DataFrame, target: str,
                opacity: float) -> None:
    c1, c2, c3 = st.columns(3)
    download_button(c1, "CAM table (CSV)", lambda: table.to_csv(index=False), file_name="cam_cells.csv",
                       mime="text/csv", help="One row per explained cell: origin, true and predicted class, "
                                             "probability, inside share, area share, enrichment.")
    report = dumps(classifier_json(trained, target, cells))
    download_button(c2, "Classifier (JSON)", report, file_name="classifier.json", mime="application/json",
                       help="Accuracy, chance, confusion matrix, curves and how they were measured.")
    download_button(c3, "Overlays (zip)", lambda: overlays_zip(cells, trained, explanation, opacity,
                                                              extra={"classifier.json": report}),
                       file_name="cam_overlays.zip", mime="application/zip",
                       help="Every explained cell's overlay as PNG, by true class and correct/wrong, with the table.")


def cells_view(ds, device: str) -> None:
    try:
        cells, choice, key = current_cells(ds, device)
    except (ValueError, RuntimeError) as exc:
        st.error(f"The cells could not be found: {exc}")
        return
    cell_map = current_map(choice)
    st.caption(f"{plural(len(cells), 'cell')} of the Cell map ({choice['segmenter']}, {cells.size} px crops"
               f"{', background masked' if cells.mask_background else ''}); change them on the Cell map page.")
    sent = st.session_state.get(EXPLAIN_ROWS)
    if sent and sent.get("cells") != key:
        st.caption(f"The {sent['what']} sent from the Cell map were chosen among other cells (its settings changed "
                   "since): a sample of all cells is explained instead.")
        sent = None
    if sent:
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.info(f"Explaining {sent['what']} from the Cell map.")
        if c2.button("Use all cells", key="ex.all", width="stretch", help="Explain a sample of every class instead."):
            st.session_state.pop(EXPLAIN_ROWS, None)
            st.rerun()
    target, settings, button_place = classifier_controls(cell_map is not None)
    if cell_map is None:
        st.caption("To predict the Cell map's clusters, make the map on the Cell map page first.")
    try:
        labels = target_labels(cells, target, None if cell_map is None else cell_map.clusters)
    except ValueError as exc:
        st.error(str(exc))
        return
    if len(set(labels)) < 2:
        where = {"batch": "assign batches on the Data page (a batches table, folder names or a file-name pattern)",
                 "condition": "assign conditions on the Data page (a batches table with a condition column)"}
        st.error(f"Every cell has the same {target} ({labels[0]!r}): there is nothing to tell apart. "
                 + where.get(target, "choose another target") + ".")
        return
    ckey = classifier_key(key, target, labels, settings, device)
    trained = cached_classifier(ckey)
    train = train_button(button_place, done=trained is not None)
    if trained is None and not train:
        st.info(f"Press **Train the classifier** to teach a small CNN the cells' {target} "
                f"({len(set(labels))} classes: {', '.join(sorted(set(labels))[:6])}), then see what it looks at.")
        return
    try:
        trained_now = classifier_for(cells, ckey, labels, settings, device)
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The classifier could not be trained: {exc}")
        return
    if trained is None:  # the button above was drawn highlighted before training: draw the page again
        st.rerun()
    trained = trained_now
    classifier_view(trained, target, settings)
    st.subheader("What it looks at")
    method, layer, which, opacity, per_class = cam_controls(trained, sent)
    rows = sample_rows(trained, per_class if sent is None else len(sent["rows"]),
                       within=None if sent is None else sent["rows"])
    if not len(rows):
        st.warning("None of these cells was in the classifier's training sample: raise Training cells.")
        return
    try:
        explanation = explanation_for(cells, trained, ckey, rows, method=method, layer=layer, target=which)
    except (ValueError, RuntimeError, MemoryError) as exc:
        st.error(f"The CAMs could not be computed: {exc}")
        return
    table = cam_table(cells, trained, explanation)
    readings_view(trained, explanation, table, target)
    grid_view(cells, trained, explanation, opacity)
    digest = hashlib.sha1(rows.tobytes()).hexdigest()[:12]
    sanity_view(cells, trained, explanation, f"sanity {ckey} {digest} {method} {layer} {which}")
    st.subheader("Export")
    export_view(cells, trained, explanation, table, target, opacity)


def detector_view(ds, device: str) -> None:
    models = sorted((m.name for m in list_models("segment") if cam_methods_of(m)),
                    key=lambda n: not availability(n)[0])  # those ready to run first
    c1, c2, c3, c4 = st.columns([1.2, 1.2, 1, 1], vertical_alignment="bottom")
    image_name = c1.selectbox("Image", ds.names, key="ex.det_image", help="The image to explain the detector on.")
    name = c2.selectbox("Detector", models, key="ex.det_model",
                        help="YOLO: Eigen-CAM (the main component of a layer's activations). Faster / Mask R-CNN: "
                             "Eigen-CAM, or Grad-CAM of the boxes' scores.")
    method = c3.selectbox("Method", cam_methods_of(get_model_info(name)), key="ex.det_method", format_func=METHOD_TITLES.get,
                          help="Eigen-CAM needs no class and is the same for every detection; Grad-CAM follows the "
                               "chosen detection's score.")
    opacity = c4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="ex.det_opacity", help="0: the image; 1: the map.")
    settings = model_settings("ex.det", [name], f"Detector settings ({name})")
    if not fetch_missing_weights([name], key="ex.det"):
        return
    image = ds[image_name]
    slow = get_model_info(name).slow_on_cpu and device == "cpu"
    if slow and cached_detector_cam(image, name, settings, device, method=method, detection=None) is None:
        st.info(f"**{name}** takes 10-30 s per image on this CPU.")
        if not st.button("Compute the CAM", type="primary", key="ex.det_run",
                         help="Detect, then compute the CAM over the whole image."):
            return
    first = detector_cam_for(image, name, settings, device, method=method, detection=None)
    if isinstance(first, str):
        st.error(first)
        return
    count = first.instances.count
    choices = ["all", *range(count)]
    detection = st.selectbox("Detection", choices, key="ex.det_which",
                             format_func=lambda d: f"all {count} detections" if d == "all" else f"detection {d}",
                             help="Grad-CAM of one detection's score, or of all of them together.")
    if detection != "all" and not first.targeted:  # Eigen-CAM: the same map, the box highlighted
        first = highlighted(first, int(detection))
        detection = "all"
    if detection != "all" and slow and cached_detector_cam(image, name, settings, device, method=method,
                                                           detection=int(detection)) is None:
        if not st.button(f"Compute the CAM of detection {detection}", type="primary", key="ex.det_run_one"):
            picture(draw_detector_cam(image, first, opacity=opacity), caption="All detections (computed before)")
            return
    result = first if detection == "all" else detector_cam_for(image, name, settings, device, method=method,
                                                               detection=int(detection))
    if isinstance(result, str):
        st.error(result)
        return
    for note in result.notes:
        st.caption(note)
    picture(draw_detector_cam(image, result, opacity=opacity),
            caption=f"{METHOD_TITLES[result.method]} of {name} at {result.layer} · {plural(count, 'detection')} · "
                    f"{result.seconds:.1f} s")


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
