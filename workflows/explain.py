"""The Explain pipeline, once for the page and ``python -m core explain``: cells -> the labels of a
target (batch, condition or the map's clusters) -> a classifier cross-validated by image -> CAMs
of a sample of cells -> an :class:`~core.analysis.Analysis` with the CAM table and the files
(cam_cells.csv, classifier.json, overlays/, provenance.json).

The page runs the steps one by one (each kept in its cache, the CAM choices drawn once the
classifier is there) through :func:`classifier_step` and :func:`explanation_step`; the CLI runs
them all with :func:`run_explain`. Both make their record with :func:`explain_analysis`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.analysis import PROVENANCE_FILE, Analysis, LazyFiles, inputs_of, provenance_json, with_provenance
from core.cells.cell_set import CellSet
from core.data.images import CellImage
from core.segmentation.recipe import Recipe
from models.classifier import TrainedClassifier
from models.explain_cells import (
    CELLS_PER_CLASS,
    CLASSIFIER,
    DEFAULT_CELLS_PER_CLASS,
    CellExplanation,
    cam_table,
    classifier_json,
    deletion_test,
    dumps,
    explain_cells,
    map_clusters,
    overlay_pngs,
    sample_rows,
    target_labels,
    train_cell_classifier,
)
from workflows.provenance import provenance

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ExplainRequest:
    """What an explanation is made of: the target, the classifier's settings, the CAM method, layer
    and explained class, how many cells per class (or which cells), and the device."""

    target: str
    settings: dict[str, Any]
    method: str = "gradcam"
    layer: str | None = None
    which: str | int = "predicted"
    per_class: int = DEFAULT_CELLS_PER_CLASS
    within: Sequence[int] | None = None  # cells chosen on the map; None: a sample of every class
    k: int | None = None  # with target "cluster" and no map: k-means clusters of the morphology features
    deletion: bool = False
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.within is None:  # cells chosen on the map are explained however many they are
            CELLS_PER_CLASS.check(self.per_class)


def labels_for(cells: CellSet, request: ExplainRequest, clusters: np.ndarray | None = None) -> np.ndarray:
    """Each cell's class: its batch or condition, or its cluster (the map's, else ``request.k``'s)."""
    if request.target == "cluster" and clusters is None and request.k is not None:
        clusters = map_clusters(cells, request.k, seed=request.settings["seed"])
    return target_labels(cells, request.target, clusters)


def classifier_step(cells: CellSet, labels: np.ndarray, request: ExplainRequest, *,
                    progress: Progress | None = None) -> TrainedClassifier:
    return train_cell_classifier(cells, labels, request.settings, device=request.device, progress=progress)


def rows_for(trained: TrainedClassifier, request: ExplainRequest, *, seed: int | None = None) -> np.ndarray:
    """The cells whose CAMs are computed: ``request.within`` (those the classifier saw), else a
    sample of ``per_class`` cells of each class."""
    per_class = request.per_class if request.within is None else len(request.within)
    return sample_rows(trained, per_class, within=request.within, **({} if seed is None else {"seed": seed}))


def explanation_step(cells: CellSet, trained: TrainedClassifier, rows: np.ndarray, request: ExplainRequest, *,
                     progress: Progress | None = None) -> CellExplanation:
    return explain_cells(cells, trained, rows, method=request.method, layer=request.layer, target=request.which,
                         progress=progress)


@dataclass(frozen=True)
class ExplainRun:
    """A made explanation: the classifier, the CAMs, the deletion test (when asked), the record."""

    trained: TrainedClassifier
    explanation: CellExplanation
    deletion: Any
    analysis: Analysis


def _run(step: str, compute: Callable[[Progress | None], Any]) -> Any:
    return compute(None)


def run_explain(images: Sequence[CellImage], cells: CellSet, request: ExplainRequest, *,
                keep: Callable[[str, Callable[[Progress | None], Any]], Any] = _run,
                segmenter: tuple[str, dict[str, Any]] | None = None, recipe: Recipe | None = None) -> ExplainRun:
    """Cells -> labels -> classifier -> CAMs (-> deletion test): the whole pipeline at once.
    ``keep(step, compute)`` runs each step (``classifier``, ``cams``, ``deletion``), e.g. with a
    progress printer; ``segmenter`` (name, settings) and ``recipe`` are recorded in the provenance."""
    labels = labels_for(cells, request)
    trained = keep("classifier", lambda progress: classifier_step(cells, labels, request, progress=progress))
    rows = rows_for(trained, request, seed=request.settings["seed"])
    explanation = keep("cams", lambda progress: explanation_step(cells, trained, rows, request, progress=progress))
    deletion = keep("deletion", lambda _: deletion_test(cells, trained, explanation)) if request.deletion else None
    record = explain_analysis(images, cells, trained, explanation, request, deletion=deletion, segmenter=segmenter,
                              recipe=recipe, overlays=True)
    return ExplainRun(trained, explanation, deletion, record)


def explain_analysis(images: Sequence[CellImage], cells: CellSet, trained: TrainedClassifier,
                     explanation: CellExplanation, request: ExplainRequest, *, deletion: Any = None,
                     segmenter: tuple[str, dict[str, Any]] | None = None, recipe: Recipe | None = None,
                     overlays: bool = False) -> Analysis:
    """The record of an explanation: the CAM table (one row per explained cell) and the CLI's
    files, made when read; with ``overlays`` also every explained cell's ``overlays/...png``."""
    models = {**({segmenter[0]: segmenter[1]} if segmenter is not None else {}), CLASSIFIER: request.settings}
    prov = provenance(recipe=recipe, models=models, device=request.device,
                      extra={**request.extra, "target": request.target,
                             "k": request.k if request.target == "cluster" else None,
                             "method": explanation.result.method, "layer": explanation.result.layer,
                             "explained class": "predicted (out of fold)" if request.which == "predicted"
                             else str(request.which),
                             "cells_per_class": request.per_class})
    table = cam_table(cells, trained, explanation)
    settings = {**({"segmenter": segmenter[0]} if segmenter is not None else {}),
                "target": request.target, "classifier": request.settings, "method": request.method,
                "layer": explanation.result.layer, "explained class": request.which, "cells_per_class": request.per_class,
                "k": request.k, "deletion test": request.deletion, "device": request.device}
    pngs = dict(overlay_pngs(cells, trained, explanation)) if overlays else {}
    files = LazyFiles({"cam_cells.csv": lambda: with_provenance(table, prov).to_csv(index=False),
                       "classifier.json": lambda: dumps(classifier_json(trained, request.target, cells,
                                                                        explanation=explanation, deletion=deletion)),
                       **{path: (lambda png=png: png) for path, png in pngs.items()},
                       PROVENANCE_FILE: lambda: provenance_json(prov)})
    return Analysis("explain", inputs_of(images), settings, prov, tables={"cam_cells": table}, files=files)
