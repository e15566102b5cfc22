"""Instance segmentation metrics: the one implementation pages, CLI and tests share.

Definitions follow StarDist's ``matching`` (and the Data Science Bowl 2018 score): objects are
matched one-to-one at an IoU threshold, maximising total IoU (Hungarian algorithm), then

    precision = TP / (TP + FP)          recall = TP / (TP + FN)
    f1        = 2TP / (2TP + FP + FN)   ap (DSB) = TP / (TP + FP + FN)
    mean_iou  = mean IoU of matched pairs
    pq        = sum IoU of matched pairs / (TP + FP/2 + FN/2)   (panoptic quality)

A ratio whose denominator is 0 is 0, as in StarDist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core.training.data import TrainingPair

AP_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.5, 1.0, 0.05))


@dataclass(frozen=True)
class Matching:
    threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float  # DSB 2018 "average precision" at this threshold: TP / (TP + FP + FN)
    mean_iou: float  # over matched pairs
    pq: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else 0.0


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every true and predicted object: (matrix, true ids, pred ids).

    Computed from the label-pair histogram, so cost is one pass over the pixels.
    """
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    t = np.asarray(true).ravel()
    p = np.asarray(pred).ravel()
    if t.size and (t.min() < 0 or p.min() < 0):
        raise ValueError("label images must not contain negative labels")
    t_max, p_max = (int(t.max()), int(p.max())) if t.size else (0, 0)
    # Only pixels inside some object count towards areas and overlaps: background is most of an
    # image, so histogramming the rest is ~2x faster (the pair 0-0 is never used).
    dense = (t_max + 1) * (p_max + 1) <= 4 * t.size
    inside = np.flatnonzero((t > 0) | (p > 0))
    t, p = t[inside], p[inside]
    if dense:
        # Labels are small numbers (the usual 1..N): histogram the pairs directly.
        t_idx, p_idx, n_t, n_p = t.astype(np.int64), p, t_max + 1, p_max + 1
    else:  # sparse label values: compact them to 1..n first
        t_ids, t_idx = np.unique(t, return_inverse=True)
        p_ids, p_idx = np.unique(p, return_inverse=True)
        if t_ids[0] != 0:
            t_ids, t_idx = np.concatenate([[0], t_ids]), t_idx + 1
        if p_ids[0] != 0:
            p_ids, p_idx = np.concatenate([[0], p_ids]), p_idx + 1
        n_t, n_p = len(t_ids), len(p_ids)
    joint = np.bincount(t_idx.astype(np.int64) * n_p + p_idx, minlength=n_t * n_p).reshape(n_t, n_p)
    area_t = joint.sum(axis=1)
    area_p = joint.sum(axis=0)
    rows = np.flatnonzero(area_t[1:]) + 1  # labels present in each image
    cols = np.flatnonzero(area_p[1:]) + 1
    inter = joint[np.ix_(rows, cols)].astype(np.float64)
    union = area_t[rows, None] + area_p[None, cols] - inter
    if dense:
        true_ids, pred_ids = rows, cols
    else:
        true_ids, pred_ids = t_ids[rows], p_ids[cols]
    return inter / np.maximum(union, 1), true_ids, pred_ids


def match_instances(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Match objects one-to-one at ``threshold`` IoU and score the match."""
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    return _score(iou, threshold)


def matched_objects(true: np.ndarray, pred: np.ndarray,
                    threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which objects :func:`match_instances` matched: (true ids, predicted ids, their IoU), one row per
    pair; the true objects not listed are false negatives, the predicted ones false positives."""
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    rows, cols = _matched_pairs(iou, threshold)
    return true_ids[rows], pred_ids[cols], iou[rows, cols]


def _matched_pairs(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of ``iou`` matched one-to-one at ``threshold``."""
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if iou.size == 0:
        return none
    from scipy.optimize import linear_sum_assignment

    valid = iou >= threshold
    if not valid.any():
        return none
    if valid.sum(axis=0).max() == 1 and valid.sum(axis=1).max() == 1:
        return np.nonzero(valid)  # no object has two candidates (always so above IoU 0.5): nothing to assign
    # Maximise the number of matches first, then their IoU (StarDist's cost).
    n_min = min(iou.shape)
    cost = -(valid.astype(np.float64) / (2 * n_min) + np.where(valid, iou, 0.0))
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


def _matched_ious(iou: np.ndarray, threshold: float) -> np.ndarray:
    rows, cols = _matched_pairs(iou, threshold)
    return iou[rows, cols]


def _score(iou: np.ndarray, threshold: float) -> Matching:
    n_true, n_pred = iou.shape
    matched = _matched_ious(iou, threshold)
    tp = len(matched)
    fp, fn = n_pred - tp, n_true - tp
    return Matching(
        threshold=float(threshold),
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        ap=_ratio(tp, tp + fp + fn),
        mean_iou=_ratio(matched.sum(), tp),
        pq=_ratio(matched.sum(), tp + fp / 2 + fn / 2),
    )


def match_over_thresholds(
    true: np.ndarray, pred: np.ndarray, thresholds: tuple[float, ...] = AP_THRESHOLDS
) -> list[Matching]:
    """:func:`match_instances` at several thresholds, sharing one IoU matrix."""
    iou, _, _ = iou_matrix(true, pred)
    return [_score(iou, t) for t in thresholds]


def box_iou_matrix(true_boxes: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of (x0, y0, x1, y1) boxes: (n_true, n_pred)."""
    t = np.asarray(true_boxes, np.float64).reshape(-1, 4)[:, None, :]
    p = np.asarray(pred_boxes, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(t[..., 2], p[..., 2]) - np.maximum(t[..., 0], p[..., 0]), 0, None)
    ih = np.clip(np.minimum(t[..., 3], p[..., 3]) - np.maximum(t[..., 1], p[..., 1]), 0, None)
    inter = iw * ih
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    return inter / np.maximum(area_t + area_p - inter, 1e-9)


def scores_over_thresholds(true: np.ndarray, pred: np.ndarray, *,
                           pred_boxes: np.ndarray | None = None) -> list[Matching]:
    """Matchings at IoU 0.5:0.05:0.95 (the F1-vs-IoU curve).

    With ``pred_boxes`` (a box-only detector) objects are matched on box IoU against the ground
    truth's bounding boxes instead of on masks.
    """
    if pred_boxes is None:
        return match_over_thresholds(true, pred)
    from core.cells.measure import bounding_boxes

    iou = box_iou_matrix(bounding_boxes(true)[1], pred_boxes)
    return [_score(iou, t) for t in AP_THRESHOLDS]


def summarize(per_threshold: list[Matching]) -> dict[str, float]:
    """Counts and scores at IoU 0.5, AP averaged over 0.5:0.95."""
    at50 = per_threshold[0]
    return {
        "n_true": at50.n_true,
        "n_pred": at50.n_pred,
        "precision": at50.precision,
        "recall": at50.recall,
        "f1": at50.f1,
        "mean_iou": at50.mean_iou,
        "pq": at50.pq,
        "ap": float(np.mean([m.ap for m in per_threshold])),
    }


def match_boxes(true_boxes: np.ndarray, pred_boxes: np.ndarray, threshold: float = 0.5) -> Matching:
    """:func:`match_instances` for boxes (x0, y0, x1, y1): one-to-one matching on box IoU."""
    return _score(box_iou_matrix(true_boxes, pred_boxes), threshold)


def segmentation_scores(true: np.ndarray, pred: np.ndarray, *, pred_boxes: np.ndarray | None = None) -> dict[str, float]:
    """The summary the pages and ``compare`` report (see :func:`summarize`)."""
    return summarize(scores_over_thresholds(true, pred, pred_boxes=pred_boxes))


def validation_scores(predict: Callable[[np.ndarray], np.ndarray], pairs: Iterable[TrainingPair]) -> dict[str, float]:
    """How every trainer scores an epoch: F1, precision and recall at IoU 0.5 over ``pairs`` pooled
    (TP, FP, FN summed over images, so an image with many nuclei weighs more), each pair's image
    (H, W, planes; normalised as the adapters normalise) turned into a label image by ``predict``
    and matched by :func:`match_instances`."""
    tp = fp = fn = 0
    for pair in pairs:
        m = match_instances(pair.labels, predict(pair.image), 0.5)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn}
