"""Scores of segmentation results against ground truth and against each other: the tables the
Compare page shows and the command line writes (plain data and maths, no model code)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.data.images import CellImage
from core.data.instances import Instances
from core.evaluation.matching import match_boxes, match_instances, scores_over_thresholds, summarize
from core.training.data import SEEN_ROLES, SeenImages

METRIC_KEYS = ("precision", "recall", "f1", "ap", "mean_iou", "pq")
SEEN = "seen in training"  # the column: "training", "validation", "unknown" or "" (a new image to the model)


def seen_label(seen: SeenImages | None, image: CellImage) -> str:
    """What ``image`` was to a model: "training", "validation", "unknown" (its checkpoint does not
    say) or "" (not among its images, or a model not trained on the user's images)."""
    return "" if seen is None else seen.role(image.name, image.hash)


def seen_warning(model: str, label: str, image_name: str, seen: SeenImages | None = None) -> str | None:
    """The sentence to put beside a model's scores on one image it has (or may have) seen; None
    for an image new to it."""
    if label in SEEN_ROLES:
        verb = "trained" if label == "training" else "validated (its best epoch was chosen)"
        return (f"{model} was {verb} on {image_name}: its scores here show how well it fits an image it has seen, "
                "not how it does on new images.")
    if label == "unknown":
        why = f" ({seen.why})" if seen is not None and seen.why else ""
        return (f"{model}: which images it was trained on is unknown{why}; if {image_name} was one of them, its "
                "scores here are optimistic.")
    return None


def mean_scores(table: pd.DataFrame, *, include_seen: bool = False,
                columns: tuple[str, ...] = ("precision", "recall", "f1", "ap", "pq", "runtime s")) -> pd.DataFrame:
    """Per model, the mean of ``columns`` over its images, leaving out (unless ``include_seen``)
    the images it was trained or validated on; "images" counts the images averaged and "left out"
    those it has seen. A model that has seen every image gets no mean (NaN), not a flattering one."""
    seen = table[SEEN].isin(SEEN_ROLES) if SEEN in table else pd.Series(False, index=table.index)
    rows = []
    for model, group in table.groupby("model", sort=False):
        used = group if include_seen else group[~seen.loc[group.index]]
        rows.append({"model": model, **{c: used[c].mean() if len(used) else np.nan for c in columns if c in group},
                     "images": len(used), "left out": 0 if include_seen else int(seen.loc[group.index].sum())})
    return pd.DataFrame(rows).set_index("model").round(3)


def object_count(labels: np.ndarray) -> int:
    return int(len(np.unique(labels[labels > 0])))


def metrics_entry(result: Instances, gt: np.ndarray | None) -> dict[str, Any]:
    """One model's line of ``metrics.json``. Counts and scores come from the label image as written,
    so anyone can recompute them from ``<model>.tif``; box detectors also get box-IoU matching,
    reported under ``box_iou_matching``."""
    labels = result.labels
    entry: dict[str, Any] = {"count": object_count(labels), "runtime_s": round(result.runtime_s, 4),
                             "device": result.device, "output": "boxes filled into labels" if result.box_only else "masks"}
    if gt is not None:
        entry.update({k: summarize(scores_over_thresholds(gt, labels))[k] for k in METRIC_KEYS})
        if result.box_only:
            boxed = summarize(scores_over_thresholds(gt, labels, pred_boxes=result.boxes))
            entry["box_iou_matching"] = {"detections": result.count, **{k: boxed[k] for k in METRIC_KEYS}}
    return entry


def _matchings(result: Instances, gt: np.ndarray) -> list:
    """Matchings against ground truth at IoU 0.5:0.05:0.95; box detectors on box IoU."""
    return scores_over_thresholds(gt, result.labels, pred_boxes=result.boxes if result.box_only else None)


def summary_row(result: Instances, gt: np.ndarray | None, matchings: list | None = None) -> dict[str, Any]:
    """What the page's table shows per model: box detectors are scored on box IoU, and say so.
    ``matchings`` (from :func:`_matchings`) saves matching again when the caller has them."""
    labels, b = result.labels, result.boxes
    if result.box_only:
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    else:
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
    row: dict[str, Any] = {
        "model": result.model, "objects": result.count if result.box_only else object_count(labels),
        "output": "boxes" if result.box_only else "masks",
        "mean area px": round(float(np.mean(areas)), 1) if len(areas) else 0.0,
        "median area px": round(float(np.median(areas)), 1) if len(areas) else 0.0,
        "runtime s": round(result.runtime_s, 3), "device": result.device,
        "peak memory MB": None if result.peak_memory_mb is None else round(result.peak_memory_mb, 1),
        "tiles": result.tiles,
    }
    if gt is not None:
        scores = summarize(matchings if matchings is not None else _matchings(result, gt))
        row["matched on"] = "box IoU" if result.box_only else "mask IoU"
        row.update({k: round(scores[k], 4) for k in METRIC_KEYS})
    return row


def summary_table(results: Mapping[str, Instances], gt: np.ndarray | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The table (one row per model) and, with ground truth, the F1-vs-IoU curve (long format:
    model, iou, f1, precision, recall); each model is matched once for both."""
    if gt is None:
        return pd.DataFrame([summary_row(r, None) for r in results.values()]), None
    matchings = {name: _matchings(r, gt) for name, r in results.items()}
    table = pd.DataFrame([summary_row(r, gt, matchings[name]) for name, r in results.items()])
    curve = pd.DataFrame([{"model": name, "iou": m.threshold, "f1": m.f1, "precision": m.precision, "recall": m.recall}
                          for name, per_threshold in matchings.items() for m in per_threshold])
    return table, curve


def agreement_matrix(results: Mapping[str, Instances], threshold: float = 0.5) -> pd.DataFrame:
    """Pairwise F1 at ``threshold`` IoU between models (symmetric); pairs with a box-only model
    are matched on box IoU."""
    names = list(results)
    f1 = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            ra, rb = results[a], results[names[j]]
            if ra.box_only or rb.box_only:
                m = match_boxes(ra.boxes, rb.boxes, threshold)
            else:
                m = match_instances(ra.labels, rb.labels, threshold)
            f1[i, j] = f1[j, i] = m.f1
    return pd.DataFrame(f1, index=names, columns=names)


def objects_table(image_name: str, result: Instances) -> pd.DataFrame:
    """One row per object: image, model, label, box, centroid, area in pixels, score, and the
    device the model ran on (the classical model always runs on the CPU)."""
    from scipy import ndimage as ndi

    labels = result.labels
    n = len(result.boxes)
    ids = np.arange(1, n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1 : n + 1]
    if n and not result.box_only:
        centres = np.array(ndi.center_of_mass(np.ones_like(labels), labels, ids)).reshape(-1, 2)
    else:
        b = result.boxes
        centres = np.stack([(b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2], axis=1) if n else np.zeros((0, 2))
    b = result.boxes
    return pd.DataFrame({
        "image": image_name, "model": result.model, "label": ids,
        "x0": b[:, 0].round(1), "y0": b[:, 1].round(1), "x1": b[:, 2].round(1), "y1": b[:, 3].round(1),
        "centroid x": centres[:, 1].round(1), "centroid y": centres[:, 0].round(1),
        "area px": area if not result.box_only else ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).round(1),
        "score": result.scores.round(4), "output": "box" if result.box_only else "mask", "device": result.device,
    })
