"""The recipe on every image (the Preprocess page's *Run on all images*): segment and measure each
image through the one image loop, and return an :class:`~core.analysis.Analysis` with the
summary (a row per image: cells, F1 with ground truth), every cell's measurements and the label
images (``labels.zip``, with ``provenance.json``; also as the record's ``labels``, which a saved run
keeps as one TIFF per image)."""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.analysis import Analysis, LazyFiles, LazyLabels, inputs_of, with_provenance
from core.cells.measure import measure_cells
from core.data.images import CellImage
from core.data.instances import Instances, instances_from_labels
from core.evaluation.matching import match_instances
from core.io.export import labels_zip
from core.io.label_tiff import read_label_tiff
from core.segmentation.preprocess import run_pipeline
from core.segmentation.recipe import Recipe
from workflows.image_loop import Executor, run_on_images
from workflows.provenance import provenance

MODEL = "classical"


def recipe_instances(image: CellImage, recipe: Recipe) -> Instances:
    """The recipe's cells on ``image`` as the one result type."""
    result = run_pipeline(image.pixels, image.channels, recipe)
    return instances_from_labels(result.labels, MODEL, notes=tuple(result.notes))


def image_cells(image: CellImage, result: Instances) -> pd.DataFrame:
    """Per-cell measurements of one image, on the image as it is."""
    return measure_cells(result.labels, image.pixels, image.channels)


def summary_row(image: CellImage, result: Instances) -> dict[str, Any]:
    """One image's line of the summary: its cells and, with ground truth, F1 at IoU 0.5."""
    row: dict[str, Any] = {"cells": result.count}
    if image.gt is not None:
        row["f1"] = round(match_instances(image.gt, result.labels).f1, 4)
    return row


def zipped_labels(zipped: bytes, name: str) -> np.ndarray:
    """Image ``name``'s label image from a :func:`core.io.export.labels_zip`."""
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        return read_label_tiff(zf.read(f"{name}_labels.tif"))


@dataclass(frozen=True)
class SegmentationRun:
    analysis: Analysis
    problems: list[str]  # one line per image (or alike failing images) that could not be segmented


def run_segmentation(images: Sequence[CellImage], recipe: Recipe, *,
                     segment: Callable[[CellImage], Instances] | None = None,
                     measure: Callable[[CellImage, Instances], pd.DataFrame] = image_cells,
                     row: Callable[[CellImage, Instances], dict[str, Any]] = summary_row,
                     progress: Callable[[float, str], None] | None = None,
                     executor: Executor | None = None) -> SegmentationRun:
    """``recipe`` on every image: tables ``summary`` (image, batch, condition, cells[, f1]) and
    ``cells`` (every cell with its image, batch and condition), files ``labels.zip`` and
    ``cells.csv`` (with provenance columns). ``segment``, ``measure`` and ``row`` default to the
    plain pipeline; a page passes its cached ones."""
    segment = segment or (lambda image: recipe_instances(image, recipe))
    run = run_on_images(list(images), [MODEL], lambda image, _: segment(image), row, progress=progress,
                        executor=executor)
    done = [img for img in images if (img.name, MODEL) in run.results]
    cells = pd.concat([measure(img, run.results[(img.name, MODEL)]).assign(
        image=img.name, batch=img.batch, condition=img.condition) for img in done], ignore_index=True) \
        if done else pd.DataFrame()
    prov = provenance(recipe=recipe, device="cpu")  # the classical pipeline is OpenCV on the CPU
    labels = {img.name: run.results[(img.name, MODEL)].labels for img in done}
    summary = run.table.drop(columns="model") if len(run.table) else run.table
    zipped = labels_zip(labels, prov)
    files = LazyFiles({"labels.zip": lambda: zipped, "cells.csv": lambda: with_provenance(cells, prov).to_csv(index=False)})
    # Each image's labels decoded from labels.zip when read: the record (kept by the page for Save as
    # run) holds the compressed TIFFs once rather than every label image besides.
    unzipped = LazyLabels({(name, MODEL): functools.partial(zipped_labels, zipped, name) for name in labels})
    record = Analysis("segmentation", inputs_of(list(images)), {"recipe": recipe.to_dict(), "model": MODEL}, prov,
                      tables={"summary": summary, "cells": cells}, files=files, labels=unzipped)
    return SegmentationRun(record, run.problems)
