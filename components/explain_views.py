"""The Explain page's views of the cells: the classifier's accuracy, the CAM readings, the overlay
grid, the deletion/insertion test and the downloads (from the explanation's record)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from components.downloads import download_button
from components.explain_state import deletion_test_for
from components.image_viewer import picture
from components.save_run import default_run_name, save_run_control
from core.analysis import Analysis
from core.figures.display import montage
from core.figures.explain import confusion_figure, curves_figure, deletion_figure, inside_figure
from models.classifier import TrainedClassifier
from models.explain_cells import (
    CellExplanation,
    cam_summary,
    classifier_json,
    deletion_test,
    dumps,
    overlays,
    overlays_zip,
)

FOCUS_STYLE = {"background": st.error, "cells": st.success, "both": st.info, "undetermined": st.info}
GRID = 8  # cells shown per class and per correct / wrong


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


def export_view(cells, trained: TrainedClassifier, explanation: CellExplanation, record: Analysis, target: str,
                opacity: float) -> None:
    """The record's CAM table, the classifier's report and every overlay as the grid shows them."""
    table = record.tables["cam_cells"]
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
    save_run_control("ex.run_name", [record], default_name=default_run_name("explain"),
                     images=[img for img, _ in cells.pairs])
