"""What a saved run's tables say, for the Results page's views of one run and its comparison of
runs: cells per image, the per-cell measurements, a measurement's spread, F1 per model and the
run's JSON files (the plate-effect verdict, the classifier's report). Plain pandas on the
:class:`~core.runs.Run`'s tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.runs import Run

QUANTILES = {"p5": 0.05, "q1": 0.25, "median": 0.5, "q3": 0.75, "p95": 0.95}


def cells_per_image(run: Run) -> pd.DataFrame | None:
    """image, batch, condition, cells (and model, where the counts are each model's objects): from
    a segmentation's summary, else a per-cell table, else a comparison's object counts."""
    has_model = "model" in run.table_columns("segmentation", "summary")  # a batch job's: a row per image and model
    columns = ["image", "batch", "condition", *(["model"] if has_model else []), "cells"]
    if (summary := run.table("segmentation", "summary", columns)) is not None:
        return summary
    if (cells := cells_table(run, ["image", "batch", "condition"])) is not None:
        return cells.groupby(["image", "batch", "condition"], sort=False).size().rename("cells").reset_index()
    if (compare := run.analysis("compare")) is not None and "scores" in compare.tables:
        scores = compare.tables["scores"]
        return scores[["image", "batch", "condition", "model", "objects"]].rename(columns={"objects": "cells"})
    return None


def cells_kind(run: Run) -> str | None:
    """The analysis whose per-cell table the run's views read: a segmentation's, else a cell map's."""
    return next((kind for kind in ("segmentation", "cellmap") if run.table_columns(kind, "cells")), None)


def cells_table(run: Run, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The run's per-cell table (a segmentation's, else a cell map's): only ``columns`` of it, read
    from disk (a million cells' measurement is a few MB; the whole table with features hundreds)."""
    kind = cells_kind(run)
    return None if kind is None else run.table(kind, "cells", columns)


def _is_measurement(column: str) -> bool:
    return column not in {"label", "image_index", "x", "y", "cluster", "x_uncorrected", "y_uncorrected"} \
        and not column.startswith(("f_", "bbox_", "centroid_"))


def measurements(cells: pd.DataFrame) -> list[str]:
    """The columns worth plotting: numbers measured on cells, not ids, positions or features."""
    return [c for c in cells.columns if pd.api.types.is_numeric_dtype(cells[c]) and _is_measurement(c)]


def measurement_columns(run: Run) -> list[str]:
    """:func:`measurements` of the run's per-cell table, from its schema (no column read)."""
    kind = cells_kind(run)
    return [] if kind is None else [c for c in run.numeric_columns(kind, "cells") if _is_measurement(c)]


def spread(cells: pd.DataFrame, column: str, by: Sequence[str] = ("batch", "condition")) -> pd.DataFrame:
    """Per group of ``by``: n, the 5th, 25th, 50th, 75th and 95th percentiles of ``column``,
    computed here so that a million cells send a few numbers to the browser, not a million."""
    groups = cells.groupby(list(by), sort=True)[column]
    out = groups.quantile(list(QUANTILES.values())).unstack()
    out.columns = list(QUANTILES)
    return out.assign(n=groups.size()).reset_index()


def f1_by_model(run: Run) -> pd.DataFrame | None:
    """Per model, over the images with ground truth: mean precision, recall, F1 and images scored."""
    compare = run.analysis("compare")
    if compare is not None and "scores" in compare.tables:
        scores = compare.tables["scores"]
    elif (seg := run.analysis("segmentation")) is not None and "summary" in seg.tables:
        summary = seg.tables["summary"]  # a Preprocess run: the recipe's F1 on each image with ground truth
        if "f1" not in summary.columns:
            return None
        scores = summary.assign(model=str(seg.settings.get("model", "classical")))
        for column in ("precision", "recall"):  # its summary keeps F1 only
            if column not in scores.columns:
                scores[column] = float("nan")
    else:
        return None
    scores = scores.dropna(subset=["f1"])
    if scores.empty:
        return None
    table = scores.groupby("model", sort=False).agg(images=("image", "size"), precision=("precision", "mean"),
                                                    recall=("recall", "mean"), f1=("f1", "mean"))
    return table.reset_index()


def json_file(run: Run, kind: str, name: str) -> dict[str, Any] | None:
    """The JSON file ``name`` of the run's ``kind`` analysis, or None when absent or unreadable."""
    analysis = run.analysis(kind)
    if analysis is None or name not in analysis.files:
        return None
    try:
        return json.loads(analysis.files[name])
    except ValueError:
        return None
