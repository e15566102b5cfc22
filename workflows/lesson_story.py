"""The lesson's story, prepared in the background (steps 5-7 of lessons/cnn-microscopy.yaml): the
same pipelines as the Cell map and Explain pages, on the lesson plates' cells cropped at native
resolution with their surroundings (``pad`` crops: a cell and the medium around it).

- ``cell_map``: autoencoder features -> t-SNE map, with the batch-effect report (the plate read
  from the features by a classifier cross-validated by image, next to chance and shuffled labels);
- ``grad_cam``: a CNN classifier of the plate (cross-validated by image) and Grad-CAM of a sample
  of its cells, with the CAM energy's share inside each cell's mask;
- ``mask_background``: the same with every pixel outside the cell's mask set to zero: the map, a
  classifier of the plate and one of the condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.cache import BoundedCache
from core.cells.cell_set import CellSet
from core.data.images import CellImage
from workflows.lesson import Progress, preparation

CROP = {"size": 48, "mode": "pad"}  # native resolution: the cell and the medium around it
FEATURES = "autoencoder"
_cells_cache = BoundedCache(max_entries=4)


def story_cells(images: Sequence[CellImage], params: Mapping[str, Any], *, mask: bool,
                progress: Progress | None = None) -> CellSet:
    """The classical recipe's cells of ``images`` (segmented once), cropped as the story crops them."""
    from dataclasses import replace

    from models.registry import get_model_info, load_model
    from models.runner import run_model
    from workflows.cellmap import find_cells

    key = tuple(id(img.pixels) for img in images)

    def segment() -> CellSet:
        model, settings = load_model("classical", "cpu"), get_model_info("classical").resolve({})
        return find_cells(list(images), lambda img: run_model(model, img, **settings), progress=progress)

    base = _cells_cache.get_or_compute(key, segment)
    return replace(base, size=int(params.get("crop_size", CROP["size"])), mode=CROP["mode"], mask_background=mask)


def map_request(params: Mapping[str, Any], *, mask: bool, seed: int = 0):
    from models.cellmap import MapSettings
    from models.registry import get_model_info
    from workflows.cellmap import CellMapRequest

    crop = {"size": int(params.get("crop_size", CROP["size"])), "mode": CROP["mode"], "mask_background": mask}
    return CellMapRequest("classical", get_model_info("classical").resolve({}), crop, FEATURES,
                          get_model_info(FEATURES).resolve({}), MapSettings(seed=seed))


def story_map(images: Sequence[CellImage], params: Mapping[str, Any], *, mask: bool, progress: Progress | None = None):
    """The Cell map pipeline (:func:`workflows.cellmap.run_cellmap`) on the story's cells."""
    from workflows.cellmap import run_cellmap

    cells = story_cells(images, params, mask=mask)
    steps = {"cells": 0.0, "features": 0.05, "map": 0.8}

    def keep(step: str, compute: Any) -> Any:
        if step == "cells":
            return cells
        start = steps[step]
        return compute(None if progress is None else
                       lambda f, what: progress(start + (0.8 - 0.05 if step == "features" else 0.2) * f, what))

    return run_cellmap(list(images), map_request(params, mask=mask), segment=lambda img: None, keep=keep)


def map_numbers(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """What step 5's checkpoint reads from a map's batch-effect report."""
    if report is None:
        return {}
    clf = report.get("classifier") or {}
    condition = report.get("condition") or {}
    return {"batch_accuracy": report.get("classifier_accuracy"), "chance": report.get("chance"),
            "shuffled": clf.get("chance_upper"), "condition_accuracy": condition.get("classifier_accuracy"),
            "verdict": report.get("verdict"), "n_cells": report.get("n_cells"), "n_images": report.get("n_images")}


def classifier_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    from models.explain_cells import CLASSIFIER
    from models.registry import get_model_info

    return get_model_info(CLASSIFIER).resolve(dict(params.get("classifier", {})))


def explain(images: Sequence[CellImage], cells: CellSet, target: str, params: Mapping[str, Any], *,
            method: str = "gradcam", layer: str | None = None, progress: Progress | None = None) -> Explained:
    """The Explain pipeline (:func:`workflows.explain.run_explain`): a classifier of ``target``
    cross-validated by image, and CAMs of a sample of its cells."""
    from workflows.explain import ExplainRequest, run_explain

    settings = classifier_settings(params)
    request = ExplainRequest(target, settings, method=method, layer=layer, per_class=int(params.get("per_class", 100)))

    def keep(step: str, compute: Any) -> Any:
        if progress is None or step != "classifier":
            return compute(None)
        return compute(lambda f, what: progress(0.9 * f, what))

    return Explained(cells, run_explain(list(images), cells, request, keep=keep), settings, target)


@dataclass(frozen=True)
class Explained:
    """A classifier of the story's cells and CAMs of a sample of them (an Explain run), with the cells."""

    cells: CellSet
    run: Any  # workflows.explain.ExplainRun
    settings: dict[str, Any]
    target: str

    @property
    def trained(self) -> Any:
        return self.run.trained

    def cams(self, method: str, layer: str | None) -> Any:
        """The same cells' CAMs by another ``method`` at another ``layer`` (the classifier is kept)."""
        from workflows.explain import ExplainRequest, explanation_step

        explanation = self.run.explanation
        if (method, layer) == (explanation.result.method, explanation.result.layer):
            return explanation
        request = ExplainRequest(self.target, self.settings, method=method, layer=layer)
        return explanation_step(self.cells, self.trained, explanation.rows, request)


def cam_numbers(trained: Any, explanation: Any) -> dict[str, Any]:
    """What step 6's checkpoint reads: the classifier's accuracy and the CAMs' median inside share."""
    stats = explanation.stats
    inside = stats["inside_fraction"].to_numpy(float)
    area = stats["area_fraction"].to_numpy(float)
    ok = np.isfinite(inside)
    return {"accuracy": trained.balanced_accuracy, "chance": trained.chance,
            "median_inside": float(np.median(inside[ok])) if ok.any() else None,
            "median_area": float(np.median(area[ok])) if ok.any() else None, "n_cells": int(ok.sum()),
            "method": explanation.result.method, "layer": explanation.result.layer}


@dataclass(frozen=True)
class MaskedStory:
    """Step 7: the story with the background masked."""

    map_run: Any  # CellMapRun
    batch: Explained  # a classifier of the plate
    condition: Explained  # a classifier of the condition

    def numbers(self, batch_before: float | None = None) -> dict[str, Any]:
        return {"batch_accuracy": self.batch.trained.balanced_accuracy, "chance": self.batch.trained.chance,
                "condition_accuracy": self.condition.trained.balanced_accuracy,
                "batch_accuracy_before": batch_before,
                "map_batch_accuracy": map_numbers(self.map_run.cell_map.report).get("batch_accuracy")}


def _part(progress: Progress, start: float, width: float) -> Progress:
    return lambda f, what: progress(start + width * min(max(f, 0.0), 1.0), what)


@preparation("cell_map")
def prepare_cell_map(images: Sequence[CellImage], params: Mapping[str, Any], progress: Progress):
    progress(0.0, "segmenting the cells")
    story_cells(images, params, mask=False)
    return story_map(images, params, mask=False, progress=progress)


@preparation("grad_cam")
def prepare_grad_cam(images: Sequence[CellImage], params: Mapping[str, Any], progress: Progress):
    progress(0.0, "training a classifier of the plates")
    return explain(images, story_cells(images, params, mask=False), "batch", params, progress=progress)


@preparation("mask_background")
def prepare_mask_background(images: Sequence[CellImage], params: Mapping[str, Any], progress: Progress) -> MaskedStory:
    cells = story_cells(images, params, mask=True)
    progress(0.0, "mapping the masked crops")
    map_run = story_map(images, params, mask=True, progress=_part(progress, 0.0, 0.3))
    progress(0.3, "a classifier of the plates on masked crops")
    batch = explain(images, cells, "batch", params, progress=_part(progress, 0.3, 0.35))
    progress(0.65, "a classifier of the condition on masked crops")
    condition = explain(images, cells, "condition", params, progress=_part(progress, 0.65, 0.35))
    return MaskedStory(map_run, batch, condition)
