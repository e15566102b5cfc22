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

from dataclasses import asdict, dataclass

import numpy as np

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
    t = np.asarray(true).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    true_ids = np.unique(t[t > 0])
    pred_ids = np.unique(p[p > 0])
    if len(true_ids) == 0 or len(pred_ids) == 0:
        return np.zeros((len(true_ids), len(pred_ids))), true_ids, pred_ids
    # Compact ids to 1..n so the joint histogram stays small whatever the label values are.
    t_idx = np.searchsorted(true_ids, t) + 1
    t_idx[t == 0] = 0
    p_idx = np.searchsorted(pred_ids, p) + 1
    p_idx[p == 0] = 0
    n_t, n_p = len(true_ids) + 1, len(pred_ids) + 1
    joint = np.bincount(t_idx * n_p + p_idx, minlength=n_t * n_p).reshape(n_t, n_p)
    inter = joint[1:, 1:].astype(np.float64)
    area_t = joint[1:, :].sum(axis=1, keepdims=True)
    area_p = joint[:, 1:].sum(axis=0, keepdims=True)
    union = area_t + area_p - inter
    return inter / np.maximum(union, 1), true_ids, pred_ids


def match_instances(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Match objects one-to-one at ``threshold`` IoU and score the match."""
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    return _score(iou, threshold)


def _matched_ious(iou: np.ndarray, threshold: float) -> np.ndarray:
    if iou.size == 0:
        return np.zeros(0)
    from scipy.optimize import linear_sum_assignment

    valid = iou >= threshold
    if not valid.any():
        return np.zeros(0)
    # Maximise the number of matches first, then their IoU (StarDist's cost).
    n_min = min(iou.shape)
    cost = -(valid.astype(np.float64) / (2 * n_min) + np.where(valid, iou, 0.0))
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return iou[rows[keep], cols[keep]]


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


def segmentation_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The summary the pages and ``compare`` report: counts and scores at IoU 0.5, AP over 0.5:0.95."""
    per_threshold = match_over_thresholds(true, pred)
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
