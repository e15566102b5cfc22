"""Metrics against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.matching import iou_matrix, match_instances, match_over_thresholds, segmentation_scores


def squares(*boxes, shape=(40, 40)):
    out = np.zeros(shape, np.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes, 1):
        out[y0:y1, x0:x1] = i
    return out


A, B = (0, 0, 10, 10), (20, 20, 30, 30)


def test_perfect_match_with_other_label_values():
    gt = squares(A, B)
    pred = gt * 7  # same objects, different ids
    m = match_instances(gt, pred)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.precision == m.recall == m.f1 == m.ap == m.mean_iou == m.pq == 1.0


def test_one_object_split_in_two():
    gt = squares(A)
    pred = squares((0, 0, 10, 6), (0, 6, 10, 10))  # IoU 0.6 and 0.4
    m = match_instances(gt, pred)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.precision == 0.5 and m.recall == 1.0 and m.f1 == pytest.approx(2 / 3)
    assert m.ap == pytest.approx(0.5) and m.mean_iou == pytest.approx(0.6)
    assert m.pq == pytest.approx(0.6 / 1.5)


def test_two_objects_merged_in_one():
    gt = squares((0, 0, 10, 10), (0, 10, 10, 30))  # areas 100 and 200
    pred = squares((0, 0, 10, 30))  # IoU 1/3 and 2/3
    m = match_instances(gt, pred)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.mean_iou == pytest.approx(2 / 3) and m.ap == pytest.approx(0.5)


def test_empty_prediction_and_empty_ground_truth():
    gt = squares(A, B)
    empty = np.zeros_like(gt)
    m = match_instances(gt, empty)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1) == (0, 0, 2, 0.0, 0.0, 0.0)
    m = match_instances(empty, gt)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall) == (0, 2, 0, 0.0, 0.0)
    m = match_instances(empty, empty)  # StarDist convention: 0/0 = 0
    assert (m.tp, m.fp, m.fn, m.f1) == (0, 0, 0, 0.0)


def test_threshold_decides_a_match_and_ap_averages_thresholds():
    gt = squares(A)
    pred = squares((0, 0, 10, 8))  # IoU 0.8
    per_t = match_over_thresholds(gt, pred)
    assert [m.tp for m in per_t] == [1] * 7 + [0] * 3  # matched at 0.50, 0.55, ... 0.80
    assert segmentation_scores(gt, pred)["ap"] == pytest.approx(0.7)


def test_iou_matrix_values_and_shape_check():
    gt = squares(A, B)
    pred = squares((0, 0, 10, 5))
    iou, t, p = iou_matrix(gt, pred)
    assert iou.shape == (2, 1) and iou[0, 0] == pytest.approx(0.5) and iou[1, 0] == 0
    with pytest.raises(ValueError, match="differ in shape"):
        iou_matrix(gt, pred[:10])


def test_hungarian_prefers_more_matches():
    # pred 1 overlaps gt 1 best, but gt 2 only overlaps pred 1 too; one-to-one must not double count
    gt = squares((0, 0, 10, 10), (0, 10, 10, 12))
    pred = squares((0, 0, 10, 11))
    m = match_instances(gt, pred)
    assert m.tp == 1 and m.fn == 1 and m.fp == 0


def test_sparse_and_dense_label_values_give_the_same_scores():
    gt = squares(A, B)
    pred = squares((0, 0, 10, 8), (20, 20, 30, 30))
    dense = match_instances(gt, pred)
    sparse = match_instances(gt * 100_000, pred * 77_777)  # far beyond the direct-histogram limit
    assert dense == sparse and dense.tp == 2
    iou_d, t_d, _ = iou_matrix(gt, pred)
    iou_s, t_s, _ = iou_matrix(gt * 100_000, pred * 77_777)
    np.testing.assert_allclose(iou_d, iou_s)
    assert list(t_s) == [100_000, 200_000]


def test_box_iou_and_box_matching():
    from core.evaluation.matching import box_iou_matrix

    iou = box_iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[0.5, 0.0]])
    gt = squares(A, B)  # boxes (0,0,10,10) and (20,20,30,30) in x0,y0,x1,y1
    pred_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 26]], np.float32)  # IoU 1.0 and 0.6
    scores = segmentation_scores(gt, gt, pred_boxes=pred_boxes)
    assert scores["f1"] == 1.0 and scores["mean_iou"] == pytest.approx(0.8)


def test_validation_scores_pool_counts_over_images_from_any_predictor():
    from types import SimpleNamespace

    from core.evaluation.matching import validation_scores

    a = np.zeros((8, 8), np.int32)
    a[0:3, 0:3], a[5:8, 5:8] = 1, 2  # two nuclei
    b = np.zeros((8, 8), np.int32)
    b[0:4, 4:8] = 1  # one nucleus
    pairs = [SimpleNamespace(image=np.full((8, 8, 1), i, np.float32), labels=lab) for i, lab in enumerate((a, b))]
    # Image 0: one nucleus found and one missed; image 1: its nucleus and a false one found.
    found = {0: np.where(a == 1, 1, 0), 1: np.where(b > 0, 1, 0) + np.pad(np.ones((2, 2), np.int32) * 2, ((6, 0), (0, 6)))}
    scores = validation_scores(lambda image: found[int(image[0, 0, 0])], pairs)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
    assert scores["f1"] == 4 / 6 and scores["precision"] == 2 / 3 and scores["recall"] == 2 / 3


def test_every_trainer_scores_validation_with_the_one_implementation():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = [p for part in ("core", "models", "workflows", "components", "pages") for p in sorted((root / part).rglob("*.py"))]
    defined = [p.name for p in code if "def validation_scores(" in p.read_text()]
    assert defined == ["matching.py"]  # core/evaluation/matching.py
    for trainer in ("unet_training.py", "rcnn_training.py", "yolo_training.py"):
        assert "from core.evaluation.matching import validation_scores" in (root / "models" / trainer).read_text()
