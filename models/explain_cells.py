"""The Explain page's cell side, also ``python -m core explain``: a classifier trained on the
Cell map's cells to predict a label (batch, condition, cluster), its CAMs on a sample of cells,
and where each CAM puts its weight, inside the cell or in the background around it.

Correct and wrong are judged by the out-of-fold predictions (the fold model that never saw the
cell's image), the honest ones; the CAMs are of the final model trained on every cell, asked
about the class chosen (by default the out-of-fold prediction).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.cells.cell_set import CellSet
from core.data.images import UNASSIGNED
from core.explain.cam_stats import cam_mask_stats, class_summary
from core.figures.display import cam_overlays, crops_rgb, encode_image
from core.schema import Field
from core.text import plural
from models.classifier import TrainedClassifier
from models.explain import CamResult, DeletionInsertion, compute_cams, deletion_insertion
from models.registry import get_model_info, load_model

Progress = Callable[[float, str], None]
TARGETS = ("batch", "condition", "cluster")
CLASSIFIER = "cell-classifier"
# CAMs for the inside/background statistics: 150 a class is seconds on a CPU. The Explain page's
# slider, `explain --cells-per-class` and ExplainRequest all read this one declaration.
CELLS_PER_CLASS = Field("per_class", "Cells per class", 150,
                        "Cells whose CAMs are computed and measured: a random sample of each true class, correct and "
                        "wrong predictions in their true proportions. More cells: steadier numbers, longer wait.",
                        kind="int", low=10, high=1000, step=10)
DEFAULT_CELLS_PER_CLASS = CELLS_PER_CLASS.default
DELETION_CELLS = 64  # the deletion/insertion test runs 2 x 11 x 4 perturbed crops per cell: 64 cells take seconds


def target_labels(cells: CellSet, target: str, clusters: np.ndarray | None = None) -> np.ndarray:
    """One label per cell for ``target``: a column of the cell table, or the Cell map's clusters."""
    if target == "cluster":
        if clusters is None or len(clusters) != len(cells):
            raise ValueError("no clusters for these cells: make the map on the Cell map page first (or pass --k)")
        return np.asarray([f"cluster {c}" if c >= 0 else "no cluster" for c in clusters], dtype=object)
    if target not in cells.table:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    values = cells.table[target].astype(str).to_numpy(dtype=object)
    images = unlabelled_images(target, dict(zip(cells.table["image"], values, strict=True)))
    if images and target == "condition":
        raise ValueError(f"{int((values == '').sum())} cells have no condition: assign conditions on the Data page "
                         "(a batches table with a condition column)")
    if images:
        raise ValueError(f"{plural(len(images), 'image')} ({', '.join(images[:4])}{', …' if len(images) > 4 else ''}; "
                         f"{plural(int((values == UNASSIGNED).sum()), 'cell')}) have no batch: assign their batch on the "
                         "Data page, or remove them; the classifier would learn 'unassigned' as one more plate")
    return values


def unlabelled_images(target: str, value_of: dict[str, str]) -> list[str]:
    """The images (name -> their ``target`` value) a classifier of ``target`` cannot use: without a
    condition, or without a batch while others have one (it would learn 'unassigned' as a plate)."""
    if target == "condition":
        return sorted(name for name, value in value_of.items() if value == "")
    if target == "batch" and len(set(value_of.values()) - {UNASSIGNED}) >= 1 and UNASSIGNED in value_of.values():
        return sorted(name for name, value in value_of.items() if value == UNASSIGNED)
    return []


def map_clusters(cells: CellSet, k: int, *, seed: int = 0) -> np.ndarray:
    """The Cell map's default clusters without the map: k-means with ``k`` clusters on the cells'
    morphology features, uncorrected (what :func:`models.cellmap.make_map` clusters by default)."""
    from core.cells.embed import cluster
    from models.cellmap import MapSettings, features_of

    settings = MapSettings(method="pca", k=k, seed=seed)  # validates k as the page's map does
    features = features_of(cells, "morphology", {}).features
    return cluster(features, "kmeans", k=min(settings.k, len(features)), seed=settings.seed)


def train_cell_classifier(cells: CellSet, labels: np.ndarray, settings: dict[str, Any], *, device: str = "cpu",
                          progress: Progress | None = None) -> TrainedClassifier:
    """The registry's cell classifier trained on ``cells`` to predict ``labels``, cross-validated by image."""
    return load_model(CLASSIFIER, device).classify(cells, labels, progress=progress, **settings)


def classifier_settings() -> tuple:
    return get_model_info(CLASSIFIER).settings


@dataclass(frozen=True, eq=False)
class CellExplanation:
    """CAMs of some cells (table positions ``rows``) with their masks and inside/background numbers."""

    rows: np.ndarray  # (n,) table positions
    true: np.ndarray  # (n,) true class codes
    predicted: np.ndarray  # (n,) out-of-fold predicted codes
    correct: np.ndarray  # (n,) bool
    cams: np.ndarray  # (n, S, S) in [0, 1]
    masks: np.ndarray  # (n, S, S) bool
    result: CamResult
    stats: pd.DataFrame  # core.explain.cam_stats.cam_mask_stats, row i = cell rows[i]


def sample_rows(trained: TrainedClassifier, per_class: int = DEFAULT_CELLS_PER_CLASS, *, seed: int = 0,
                within: Sequence[int] | None = None) -> np.ndarray:
    """Table positions of a random sample of up to ``per_class`` cells of each true class (so
    correct and wrong predictions come in their true proportions and the readings describe the
    class), from the cells the classifier was cross-validated on, optionally only among
    ``within`` (a selection on the map)."""
    rng = np.random.default_rng(seed)
    index = np.arange(len(trained.rows))
    if within is not None:
        index = index[np.isin(trained.rows, np.asarray(within, np.int64))]
    picked = [np.sort(rng.permutation(index[trained.y[index] == code])[:per_class])
              for code in range(len(trained.classes))]
    return trained.rows[np.concatenate(picked)] if picked else np.zeros(0, np.int64)


def explain_cells(cells: CellSet, trained: TrainedClassifier, rows: Sequence[int] | np.ndarray, *,
                  method: str = "gradcam", layer: str | None = None, target: str | int = "predicted",
                  progress: Progress | None = None) -> CellExplanation:
    """CAMs of the final model on the cells at table positions ``rows`` (cells it was trained on),
    for ``target``: "predicted" (out of fold), "true" or a class index, and each CAM's share
    inside the cell's mask (:mod:`core.explain.cam_stats`)."""
    rows = np.asarray(rows, np.int64)
    where = {int(r): i for i, r in enumerate(trained.rows)}
    missing = [int(r) for r in rows if int(r) not in where]
    if missing:
        raise ValueError(f"{len(missing)} of the cells were not in the classifier's training sample (raise "
                         "'Training cells' to include every cell)")
    at = np.array([where[int(r)] for r in rows], np.int64)
    true, predicted = trained.y[at], trained.oof_pred[at]
    classes = predicted if target == "predicted" else true if target == "true" else target
    crops = cells.crops(rows)
    result = compute_cams(trained.model, crops, method=method, layer=layer, target=classes, progress=progress)
    masks = cells.masks(rows)
    return CellExplanation(rows, true, predicted, predicted == true, result.cams, masks, result,
                           cam_mask_stats(result.cams, masks))


READING_OPENERS = {
    "predicted": "Predictions of {label} rely",
    "true": "The evidence for the true class in cells of {label} lies",
    "class": "The evidence for {label} (asked of every explained cell) lies",
    "agnostic": "Eigen-CAM (the same for every class) of cells of true {label} lies",
}


def cam_summary(trained: TrainedClassifier, explanation: CellExplanation, target: str) -> pd.DataFrame:
    """Per class: the inside-mask shares and a plain-language reading (core.explain.cam_stats). Cells are
    grouped by the class their CAM explains, worded after how it was chosen; Eigen-CAM, which
    ignores the class, by true class."""
    result = explanation.result
    classes = np.asarray(trained.classes, dtype=object)
    if result.method == "eigencam":
        names, opener = classes[explanation.true], READING_OPENERS["agnostic"]
    else:
        names = classes[result.target]
        how = ("predicted" if np.array_equal(result.target, explanation.predicted) else
               "true" if np.array_equal(result.target, explanation.true) else "class")
        opener = READING_OPENERS[how]
    return class_summary(explanation.stats, names, correct=explanation.correct, target=target,
                         order=[c for c in trained.classes if c in set(names)], opener=opener)


def cam_table(cells: CellSet, trained: TrainedClassifier, explanation: CellExplanation) -> pd.DataFrame:
    """One row per explained cell: where it is from, true and predicted class, the class its CAM
    explains, the probability, and the inside/background numbers."""
    table = cells.table.iloc[explanation.rows]
    classes = np.asarray(trained.classes, dtype=object)
    result = explanation.result
    out = pd.DataFrame({
        "cell_id": table["cell_id"].to_numpy(), "image": table["image"].to_numpy(),
        "batch": table["batch"].to_numpy(), "condition": table["condition"].to_numpy(),
        "label": table["label"].to_numpy(), "centroid_x": table["x"].to_numpy(), "centroid_y": table["y"].to_numpy(),
        "true": classes[explanation.true], "predicted": classes[explanation.predicted],
        "correct": explanation.correct, "explained_class": classes[result.target],
        "probability": result.probability[np.arange(len(result.target)), result.target],
        "method": result.method, "layer": result.layer,
    })
    # "inside_mask_fraction": the share of CAM energy inside the cell's mask, under the name
    stats = explanation.stats.reset_index(drop=True).rename(columns={"inside_fraction": "inside_mask_fraction"})
    return pd.concat([out, stats], axis=1)


def classifier_json(trained: TrainedClassifier, target: str, cells: CellSet, *,
                    explanation: CellExplanation | None = None,
                    deletion: DeletionInsertion | None = None) -> dict[str, Any]:
    """What ``classifier.json`` holds: the scores next to chance, how they were measured, the curves;
    with ``explanation``, its CAMs' method and layer and each class's inside/background reading
    (:func:`cam_summary`); with ``deletion``, the deletion/insertion test."""
    summary = trained.summary()
    summary.update({"target": target, "cross_validation": "by image (StratifiedGroupKFold): no image is in both the "
                    "training and the test folds", "crop": {"size": cells.size, "mode": cells.mode,
                                                           "mask_background": cells.mask_background}})
    if explanation is not None:
        result = explanation.result
        readings = cam_summary(trained, explanation, target)
        summary["cams"] = {"method": result.method, "layer": result.layer, "n_cells": int(len(explanation.rows)),
                           "seconds": result.seconds, "classes": {
                               str(name): {k: _plain(v) for k, v in row.items()} for name, row in readings.iterrows()}}
    if deletion is not None:
        summary["deletion_test"] = deletion.summary()
    return summary


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as numbers, NaN as null (JSON has no NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def deletion_test(cells: CellSet, trained: TrainedClassifier, explanation: CellExplanation, *,
                  max_cells: int = DELETION_CELLS) -> DeletionInsertion:
    """The deletion/insertion test of :func:`models.explain.deletion_insertion` on up to
    ``max_cells`` of the explained cells, spread evenly over them (they are ordered by class)."""
    picks = np.linspace(0, len(explanation.rows) - 1, min(max_cells, len(explanation.rows))).astype(int)
    return deletion_insertion(trained.model, cells.crops(explanation.rows[picks]), explanation.cams[picks],
                              explanation.result.target[picks])


def overlays(cells: CellSet, explanation: CellExplanation, opacity: float = 0.5,
             picks: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """(n, S, S, 3) uint8: each crop in display colours, its CAM over it, its outline in white;
    ``picks``: positions within the explanation (all by default)."""
    picks = np.arange(len(explanation.rows)) if picks is None else np.asarray(picks, np.int64)
    rgb = crops_rgb(cells.crops(explanation.rows[picks]), cells.channels)
    return cam_overlays(rgb, explanation.cams[picks], opacity, explanation.masks[picks])


def overlay_pngs(cells: CellSet, trained: TrainedClassifier, explanation: CellExplanation, opacity: float = 0.5,
                 *, scale: int = 4) -> Iterator[tuple[str, bytes]]:
    """(path, PNG bytes) of every explained cell's overlay, enlarged ``scale`` times (nearest
    neighbour, so the CAM's grid stays visible), at ``overlays/<true class>/<correct|wrong>/
    <cell>_pred-<predicted>.png``: the layout of the zip and of ``python -m core explain``'s folder."""
    table = cam_table(cells, trained, explanation)
    for start in range(0, len(explanation.rows), 256):  # a chunk of tiles in memory at a time
        picks = np.arange(start, min(start + 256, len(explanation.rows)))
        for i, tile in zip(picks, overlays(cells, explanation, opacity, picks), strict=True):
            row = table.iloc[i]
            name = str(row["cell_id"]).replace("/", "_").replace(":", "_cell")
            folder = f"{_safe(row['true'])}/{'correct' if row['correct'] else 'wrong'}"
            big = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
            yield f"overlays/{folder}/{name}_pred-{_safe(row['predicted'])}.png", encode_image(big)


def overlays_zip(cells: CellSet, trained: TrainedClassifier, explanation: CellExplanation, opacity: float = 0.5,
                 *, scale: int = 4, extra: dict[str, str] | None = None) -> bytes:
    """Every explained cell's overlay as a PNG (:func:`overlay_pngs`), the CAM table, and ``extra`` files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, png in overlay_pngs(cells, trained, explanation, opacity, scale=scale):
            zf.writestr(path, png)
        zf.writestr("cam_cells.csv", cam_table(cells, trained, explanation).to_csv(index=False))
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()


def _safe(value: object) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(value)) or "_"


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
