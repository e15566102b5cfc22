"""Inside the cell or the background? Where a cell's CAM puts its weight, as numbers per cell
and a plain-language reading per class.

Definitions, per cell, for a CAM ``c`` (S x S, values >= 0, as pytorch-grad-cam gives them:
scaled to [0, 1]) and the cell's own mask ``m`` in the same crop (:meth:`core.cells.cell_set.CellSet.masks`):

- energy = the sum of CAM values over a set of pixels;
- ``inside_energy`` = sum of c over m; ``background_energy`` = sum of c over the rest of the crop
  (the crop's pixels outside the cell's mask; neighbouring cells and any zero padding beyond the
  image border count as background: they are not the cell);
- ``inside_fraction`` = inside / (inside + background), in [0, 1]; NaN when the CAM is all zero;
- ``area_fraction`` = share of the crop's pixels inside the mask: the inside fraction a CAM that
  is the same everywhere would give;
- ``enrichment`` = inside_fraction / area_fraction: 1 = no preference, above 1 = the CAM is
  denser on the cell than on its background, below 1 = denser on the background. NaN when the
  mask is empty or the CAM all zero.

The same inside fraction means different things for a cell filling most of its crop and for a
small cell in a wide crop, so the reading rests on the enrichment and quotes both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Reading thresholds on a class's median enrichment. On planted data (tests/test_explain.py) a
# classifier that could only use the background gave Grad-CAM enrichment about 0.6 (inside share
# 0.26 where the cells cover 0.45 of the crop), one that could only use the cells' inside about 1.7
# (share 0.76); 1 is a CAM without preference. The cut-offs sit a quarter of the way from 1
# towards each, so noise around "no preference" is read as such.
CELL_FOCUS = 1.25
BACKGROUND_FOCUS = 0.8
# Below this many scored cells a class's median moves by more than 0.1 from one sample to the next
# (IQR / sqrt(n) with the IQRs seen, ~0.3): the reading says it is tentative.
MIN_CELLS = 20
STAT_COLUMNS = ("inside_energy", "background_energy", "inside_fraction", "area_fraction", "enrichment")
FOCUS = ("cells", "background", "both", "undetermined")


def _check(cams: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cams = np.asarray(cams, dtype=np.float64)
    masks = np.asarray(masks)
    if cams.ndim == 2:
        cams, masks = cams[None], masks[None]
    if cams.ndim != 3 or cams.shape != masks.shape:
        raise ValueError(f"need (n, S, S) CAMs and masks of the same shape; got {cams.shape} and {masks.shape}")
    if masks.dtype != bool:
        raise ValueError(f"masks must be boolean (the cell's own pixels); got {masks.dtype}")
    if not np.isfinite(cams).all():
        raise ValueError("CAMs contain NaN or infinite values")
    if (cams < 0).any():
        raise ValueError("CAMs must be >= 0 (energy is a sum of CAM values); got negative values")
    return cams, masks


def cam_mask_stats(cams: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    """One row per cell with the columns of :data:`STAT_COLUMNS` (defined in the module docstring)."""
    cams, masks = _check(cams, masks)
    inside = np.einsum("nij,nij->n", cams, masks.astype(np.float64))
    total = cams.sum(axis=(1, 2))
    area = masks.mean(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
        enrichment = np.where(area > 0, fraction / np.where(area > 0, area, 1.0), np.nan)
    return pd.DataFrame({"inside_energy": inside, "background_energy": total - inside, "inside_fraction": fraction,
                         "area_fraction": area, "enrichment": enrichment})


def inside_fraction(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(n,) share of each CAM's energy inside its cell's mask (NaN for an all-zero CAM)."""
    return cam_mask_stats(cams, masks)["inside_fraction"].to_numpy()


def focus(median_enrichment: float) -> str:
    """"cells" (>= CELL_FOCUS), "background" (<= BACKGROUND_FOCUS), "both", or "undetermined" (NaN)."""
    if not np.isfinite(median_enrichment):
        return "undetermined"
    if median_enrichment >= CELL_FOCUS:
        return "cells"
    return "background" if median_enrichment <= BACKGROUND_FOCUS else "both"


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def class_reading(name: str, row: pd.Series | dict, *, target: str = "class",
                  opener: str = "Predictions of {label} rely") -> str:
    """The sentence for one row of :func:`class_summary`, e.g. "Predictions of batch B rely mostly
    on the background (median inside-mask share 0.21, 0.45 expected from the cells' area, n=340
    cells).". ``opener`` says whose evidence it is ({label} = "batch B"): the predicted class's
    (default), the true class's, one class asked of every cell, or a class-agnostic map's."""
    n, scored = int(row["n_cells"]), int(row["n_scored"])
    # a class named after its label already ("cluster 3") is not named twice ("cluster cluster 3")
    label = str(name) if str(name).startswith(f"{target} ") else f"{target} {name}"
    if scored == 0:
        return f"No CAM energy to place for {label}: every CAM is zero ({_cells(n)})."
    share, area = row["median_inside"], row["median_area"]
    where = {
        "cells": "mostly on the cells" if share >= 0.5 else
                 "more on the cells than their area predicts, though most CAM energy lies outside them",
        "background": "mostly on the background" if share < 0.5 else
                      "more on the background than its area predicts, though most CAM energy lies on the cells",
        "both": "on cells and background about in proportion to their areas",
        "undetermined": "on an undetermined share of the cells (their masks are empty)",
    }[row["focus"]]
    text = (f"{opener.format(label=label)} {where} (median inside-mask share {share:.2f}, {area:.2f} expected from "
            f"the cells' area, {_cells(scored)}).")
    if scored < n:
        text += (f" {n - scored} of the {n} cells had an all-zero CAM (nothing at this layer for this class) and are "
                 "not counted.")
    if scored < MIN_CELLS:
        text += f" Tentative: fewer than {MIN_CELLS} cells."
    return text


def _cells(n: int) -> str:
    return f"n={n} cell" + ("" if n == 1 else "s")


def class_summary(
    stats: pd.DataFrame,
    classes: Sequence | np.ndarray,
    *,
    correct: Sequence[bool] | np.ndarray | None = None,
    target: str = "class",
    order: Sequence[str] | None = None,
    opener: str = "Predictions of {label} rely",
) -> pd.DataFrame:
    """Per class (the class each CAM explains, e.g. the predicted batch): one row, indexed by class
    name, with ``n_cells``, ``n_scored`` (CAM not all zero), ``n_correct`` and ``n_wrong`` (when
    ``correct`` is given, else None), ``median_inside``, ``q25_inside``, ``q75_inside`` (the IQR),
    ``median_area``, ``median_enrichment``, ``median_inside_correct``, ``median_inside_wrong``,
    ``focus`` (:func:`focus`), ``few_cells`` (n_scored < MIN_CELLS) and ``reading``
    (:func:`class_reading`; ``target`` names the label, e.g. "batch").
    """
    missing = [c for c in ("inside_fraction", "area_fraction", "enrichment") if c not in stats]
    if missing:
        raise ValueError(f"stats lacks {', '.join(missing)}: pass cam_mask_stats' table")
    names = np.asarray(classes, dtype=object).astype(str)
    if len(names) != len(stats):
        raise ValueError(f"{len(names)} classes for {len(stats)} cells")
    ok = None if correct is None else np.asarray(correct, dtype=bool)
    if ok is not None and ok.shape != names.shape:
        raise ValueError(f"{len(ok)} correct flags for {len(names)} cells")
    inside = stats["inside_fraction"].to_numpy(np.float64)
    area = stats["area_fraction"].to_numpy(np.float64)
    enrich = stats["enrichment"].to_numpy(np.float64)
    levels = list(order) if order is not None else sorted(set(names))
    rows = []
    for level in levels:
        sel = names == level
        scored = sel & np.isfinite(inside)
        q25, q75 = (np.quantile(inside[scored], [0.25, 0.75]) if scored.any() else (np.nan, np.nan))
        row = {
            "n_cells": int(sel.sum()), "n_scored": int(scored.sum()),
            "n_correct": None if ok is None else int((sel & ok).sum()),
            "n_wrong": None if ok is None else int((sel & ~ok).sum()),
            "median_inside": _median(inside[sel]), "q25_inside": float(q25), "q75_inside": float(q75),
            "median_area": _median(area[sel]), "median_enrichment": _median(enrich[sel]),
            "median_inside_correct": None if ok is None else _median(inside[sel & ok]),
            "median_inside_wrong": None if ok is None else _median(inside[sel & ~ok]),
        }
        row["focus"] = focus(row["median_enrichment"])
        row["few_cells"] = row["n_scored"] < MIN_CELLS
        row["reading"] = class_reading(level, row, target=target, opener=opener)
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(levels, name=target))
