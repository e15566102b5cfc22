"""The Explain page's choices: what the classifier predicts and its settings, the button that
trains it, and the CAM method, layer, explained class, opacity and number of cells."""

from __future__ import annotations

import streamlit as st

from components.model_panel import setting_widget
from components.settings_widgets import field_widget
from models.classifier import TrainedClassifier
from models.explain import CAM_METHOD_NAMES, cam_layers
from models.explain_cells import CELLS_PER_CLASS, TARGETS, classifier_settings

METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "scorecam": "Score-CAM",
                 "eigencam": "Eigen-CAM", "layercam": "LayerCAM"}
WHERE_TO_ASSIGN = {"batch": "assign batches on the Data page (a batches table, folder names or a file-name pattern)",
                   "condition": "assign conditions on the Data page (a batches table with a condition column)"}


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
    per_class = CELLS_PER_CLASS.default
    if sent is None:
        per_class = field_widget(st, CELLS_PER_CLASS, "ex.per_class", CELLS_PER_CLASS.default, widget="slider")
    return method, layer, which, opacity, per_class


def nothing_to_tell_apart(labels, target: str) -> str | None:
    """Why a classifier cannot be trained on ``labels`` (all alike), in words; None when it can."""
    if len(set(labels)) >= 2:
        return None
    where = WHERE_TO_ASSIGN.get(target, "choose another target")
    return f"Every cell has the same {target} ({labels[0]!r}): there is nothing to tell apart. {where[:1].upper()}{where[1:]}."
