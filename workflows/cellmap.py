"""The Cell map pipeline, once for the page and ``python -m core embed``: images -> cells (the one
image loop) -> features -> map and batch-effect metrics -> an :class:`~core.analysis.Analysis`
with the cells table and the files (cells.csv, cells.parquet, batch_effect.json, map.html,
map.png, provenance.json).

:func:`run_cellmap` runs the steps in order; ``keep(step, compute)`` lets the caller keep each
step's result (the page's server-wide cache with a progress bar each) or just run it (the CLI)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from core.analysis import PROVENANCE_FILE, Analysis, LazyFiles, inputs_of, provenance_json, with_provenance
from core.cells.cell_set import CellSet, Embedding, check_one_channel_layout
from core.data.images import CellImage
from core.data.instances import Instances
from core.figures.cellmap import drawn_as_groups, map_html, map_png
from core.segmentation.recipe import Recipe
from models.cellmap import (
    CORRECTION_NAMES,
    CellMap,
    MapSettings,
    cell_set,
    cells_frame,
    features_of,
    make_map,
    map_title,
    metrics_json,
    verdict_line,
)
from workflows.image_loop import Executor, SegmentSettings, run_images, segment_image
from workflows.provenance import provenance

T = TypeVar("T")
Progress = Callable[[float, str], None]
Segment = Callable[[CellImage], Instances | np.ndarray]
# keep(step, compute): the step's result, from a cache or ``compute(progress)`` now; steps: cells, features, map.
Keep = Callable[[str, Callable[[Progress | None], Any]], Any]

GROUND_TRUTH = "ground truth"  # a "segmenter" for datasets annotated throughout: the annotation's cells


def ground_truth(image: CellImage) -> np.ndarray:
    """The segment step of :data:`GROUND_TRUTH`: the image's annotation (no cells without one)."""
    return image.gt if image.gt is not None else np.zeros(image.shape[:2], np.int32)


def find_cells(images: Sequence[CellImage], segment: Segment, *, crop: dict[str, Any] | None = None,
               executor: Executor | None = None, progress: Progress | None = None) -> CellSet:
    """Every cell of ``images``: ``segment`` on each image through the one image loop, then the
    cells measured (``crop``: their crop geometry, the defaults without). An image that fails
    stops the run with its name: a map without some images' cells would be silently another map."""
    check_one_channel_layout(list(images))  # before any image is segmented
    outcomes = run_images(list(images), segment_image, SegmentSettings(segment=segment), executor=executor,
                          progress=progress)
    for outcome in outcomes:
        if not outcome.ok:
            raise ValueError(f"{outcome.name}: {outcome.error}")
    labels = {outcome.name: outcome.result.labels for outcome in outcomes}
    return cell_set(list(images), labels, **(crop or {}))


@dataclass(frozen=True)
class CellMapRequest:
    """What a map is made of: the segmenter (a model name or :data:`GROUND_TRUTH`) and the settings
    its ``predict`` runs with, the crops, the feature extractor and its settings, the map's settings,
    the device; and for the record, the recipe when the classical segmenter used it."""

    segmenter: str
    seg_settings: dict[str, Any] | None
    crop: dict[str, Any]
    features: str
    feat_settings: dict[str, Any] = field(default_factory=dict)
    map_settings: MapSettings = field(default_factory=MapSettings)
    device: str = "cpu"
    recipe: Recipe | None = None

    def settings(self) -> dict[str, Any]:
        return {"segmenter": self.segmenter, "segmenter settings": self.seg_settings, "crop": self.crop,
                "features": self.features, "feature settings": self.feat_settings,
                "map": json.loads(self.map_settings.to_json()), "device": self.device}


def _run(step: str, compute: Callable[[Progress | None], T]) -> T:
    return compute(None)


@dataclass(frozen=True)
class CellMapRun:
    """A made map: its cells, their features, the map, and (made when first asked for) the run's record."""

    images: tuple[CellImage, ...]
    request: CellMapRequest
    cells: CellSet
    embedding: Embedding
    cell_map: CellMap
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def analysis(self) -> Analysis:
        return cellmap_analysis(self.images, self.cells, self.embedding, self.cell_map, self.request, extra=self.extra)


def run_cellmap(images: Sequence[CellImage], request: CellMapRequest, *, segment: Segment,
                keep: Keep = _run, allow_download: bool = False, extra: dict[str, Any] | None = None) -> CellMapRun:
    """Images -> cells -> features -> map, and the Cell map's :class:`~core.analysis.Analysis`.
    The cells are measured once whatever the crops (crop-free features share them)."""
    base = keep("cells", lambda progress: find_cells(images, segment, progress=progress))
    cells = replace(base, **request.crop)
    embedding = keep("features", lambda progress: features_of(cells, request.features, request.feat_settings,
                                                              device=request.device, progress=progress,
                                                              allow_download=allow_download))
    cell_map = keep("map", lambda progress: make_map(cells, embedding, request.map_settings, progress=progress))
    return CellMapRun(tuple(images), request, cells, embedding, cell_map, extra or {})


def cellmap_analysis(images: Sequence[CellImage], cells: CellSet, embedding: Embedding, cell_map: CellMap,
                     request: CellMapRequest, *, extra: dict[str, Any] | None = None) -> Analysis:
    """The record of a map: the cells table (one row per cell: ids, batch, condition, measurements,
    map x/y, cluster, features) and the CLI's files, made when read."""
    models = {request.segmenter: request.seg_settings} if request.seg_settings is not None else None
    prov = provenance(recipe=request.recipe, models=models, device=request.device,
                      extra={"features": request.features, "map": json.loads(request.map_settings.to_json()),
                             **(extra or {})})
    table = cells_frame(cells, embedding, cell_map)
    title, subtitle = map_title(cells, embedding, cell_map), verdict_line(cell_map)
    plain = cells_frame(cells, None, cell_map, with_features=False)
    stamped = lambda: with_provenance(table, prov)  # noqa: E731
    files = LazyFiles({
        "cells.csv": lambda: stamped().to_csv(index=False),
        "cells.parquet": lambda: parquet_bytes(stamped()),
        "batch_effect.json": lambda: metrics_text(cells, embedding, cell_map),
        "map.html": lambda: map_html(plain, "batch", title=title, subtitle=subtitle),
        "map.png": lambda: map_png(cell_map.coords, cells.table["batch"].to_numpy(), title=title, subtitle=subtitle,
                                   legend="batch"),
        PROVENANCE_FILE: lambda: provenance_json(prov),
    })
    # The segmenter's label images of the images with cells (an image without any is not in cells.pairs).
    labels = {(img.name, request.segmenter): image_labels for img, image_labels in cells.pairs}
    return Analysis("cellmap", inputs_of(images), request.settings(), prov, tables={"cells": table}, files=files,
                    labels=labels)


def metrics_text(cells: CellSet, embedding: Embedding, cell_map: CellMap) -> str:
    """``batch_effect.json``: every batch-effect metric, before and after correction."""
    return json.dumps(metrics_json(cell_map, embedding, cells), indent=2, default=float)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def map_figure_files(cells: CellSet, embedding: Embedding, cell_map: CellMap, frame: pd.DataFrame,
                     color_by: str) -> dict[str, Callable[[], bytes | str]]:
    """The map as HTML coloured by ``color_by`` and as PNG by its groups (by batch when it is a
    measurement): the page's downloads, made when asked for."""
    title, subtitle = map_title(cells, embedding, cell_map), verdict_line(cell_map)
    groups = frame[color_by] if drawn_as_groups(frame[color_by]) else frame["batch"]
    return {"html": lambda: map_html(frame, color_by, title=title, subtitle=subtitle),
            "png": lambda: map_png(cell_map.coords, groups.to_numpy(), title=title, subtitle=subtitle,
                                   legend=groups.name)}


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
