"""Inside-mask shares on hand-made CAMs and masks (exact numbers), per-class summaries and readings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.explain import cam_stats
from core.explain.cam_stats import cam_mask_stats, class_summary, focus, inside_fraction


def corner_mask(size: int = 4, side: int = 2) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[:side, :side] = True
    return mask


def test_inside_fraction_area_and_enrichment_on_hand_made_cams():
    mask = corner_mask()  # 4 of 16 pixels
    flat = np.ones((4, 4))
    hot_cell = np.where(mask, 3.0, 1.0)  # inside 4 x 3 = 12, background 12 x 1 = 12
    only_background = np.where(mask, 0.0, 0.5)  # inside 0, background 6
    only_cell = np.where(mask, 0.25, 0.0)  # inside 1, background 0
    stats = cam_mask_stats(np.stack([flat, hot_cell, only_background, only_cell]), np.stack([mask] * 4))
    assert list(stats.columns) == list(cam_stats.STAT_COLUMNS)
    assert stats["inside_energy"].tolist() == [4.0, 12.0, 0.0, 1.0]
    assert stats["background_energy"].tolist() == [12.0, 12.0, 6.0, 0.0]
    assert stats["inside_fraction"].tolist() == [0.25, 0.5, 0.0, 1.0]
    assert stats["area_fraction"].tolist() == [0.25] * 4
    assert stats["enrichment"].tolist() == [1.0, 2.0, 0.0, 4.0]


def test_a_flat_cam_gives_the_share_expected_from_area_whatever_the_mask():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 16, 16)) < np.linspace(0.1, 0.9, 5)[:, None, None]
    stats = cam_mask_stats(np.full((5, 16, 16), 0.7), masks)
    assert np.allclose(stats["inside_fraction"], masks.mean(axis=(1, 2)))
    assert np.allclose(stats["enrichment"], 1.0)


def test_zero_cams_and_empty_masks_give_nan_not_a_number_that_misleads():
    mask = corner_mask()
    stats = cam_mask_stats(np.stack([np.zeros((4, 4)), np.ones((4, 4))]), np.stack([mask, np.zeros((4, 4), bool)]))
    assert np.isnan(stats["inside_fraction"][0]) and np.isnan(stats["enrichment"][0])
    assert stats["inside_fraction"][1] == 0.0 and stats["area_fraction"][1] == 0.0
    assert np.isnan(stats["enrichment"][1])
    assert inside_fraction(np.ones((4, 4)), mask).tolist() == [0.25]  # one (S, S) CAM works too


@pytest.mark.parametrize(("cams", "masks", "message"), [
    (np.ones((2, 4, 4)), np.ones((2, 4, 5), bool), "same shape"),
    (np.ones((2, 4, 4)), np.ones((2, 4, 4), np.uint8), "boolean"),
    (-np.ones((2, 4, 4)), np.ones((2, 4, 4), bool), ">= 0"),
    (np.full((2, 4, 4), np.nan), np.ones((2, 4, 4), bool), "NaN"),
    (np.ones((4,)), np.ones((4,), bool), "same shape"),
])
def test_bad_cams_or_masks_are_refused_with_the_reason(cams, masks, message):
    with pytest.raises(ValueError, match=message):
        cam_mask_stats(cams, masks)


def test_focus_thresholds():
    assert focus(cam_stats.CELL_FOCUS) == "cells" and focus(3.0) == "cells"
    assert focus(cam_stats.BACKGROUND_FOCUS) == "background" and focus(0.1) == "background"
    assert focus(1.0) == "both" and focus(float("nan")) == "undetermined"


def planted_stats(inside: list[float], area: float = 0.45) -> pd.DataFrame:
    inside_arr = np.asarray(inside, float)
    return pd.DataFrame({"inside_fraction": inside_arr, "area_fraction": np.full(len(inside_arr), area),
                         "enrichment": inside_arr / area})


def test_class_summary_gives_medians_iqr_counts_and_a_reading_per_class():
    b_inside = [0.1, 0.2, 0.21, 0.3, 0.9] * 8  # 40 cells, median 0.21: background
    a_inside = [0.7, 0.8, 0.75, 0.9] * 6  # 24 cells, median 0.775: cells
    stats = planted_stats(b_inside + a_inside)
    classes = ["B"] * len(b_inside) + ["A"] * len(a_inside)
    correct = np.r_[np.ones(30, bool), np.zeros(10, bool), np.ones(24, bool)]
    table = class_summary(stats, classes, correct=correct, target="batch")
    assert list(table.index) == ["A", "B"] and table.index.name == "batch"
    b = table.loc["B"]
    assert (b["n_cells"], b["n_scored"], b["n_correct"], b["n_wrong"]) == (40, 40, 30, 10)
    assert b["median_inside"] == pytest.approx(0.21)
    assert (b["q25_inside"], b["q75_inside"]) == pytest.approx(tuple(np.quantile(b_inside, [0.25, 0.75])))
    assert b["median_inside_correct"] == pytest.approx(np.median(np.asarray(b_inside)[:30]))
    assert b["median_inside_wrong"] == pytest.approx(np.median(np.asarray(b_inside)[30:]))
    assert b["focus"] == "background" and not b["few_cells"]
    assert b["reading"] == ("Predictions of batch B rely mostly on the background (median inside-mask share 0.21, "
                            "0.45 expected from the cells' area, n=40 cells).")
    assert table.loc["A", "focus"] == "cells"
    assert table.loc["A", "reading"].startswith("Predictions of batch A rely mostly on the cells (median inside-mask "
                                                "share 0.78")
    assert table.loc["A", "median_inside_wrong"] is None or np.isnan(table.loc["A", "median_inside_wrong"])


def test_a_reading_on_few_cells_says_so_and_no_preference_is_read_as_such():
    table = class_summary(planted_stats([0.45] * 5), ["C"] * 5)
    row = table.loc["C"]
    assert row["few_cells"] and row["focus"] == "both" and row["n_correct"] is None
    assert "about in proportion to their areas" in row["reading"]
    assert row["reading"].endswith(f"Tentative: fewer than {cam_stats.MIN_CELLS} cells.")


def test_small_cells_in_wide_crops_are_read_by_enrichment_not_by_raw_share():
    # Cells cover 10% of the crop and hold 35% of the CAM energy: 3.5x denser than the background.
    row = class_summary(planted_stats([0.35] * 30, area=0.1), ["D"] * 30).loc["D"]
    assert row["focus"] == "cells"
    assert "more on the cells than their area predicts, though most CAM energy lies outside them" in row["reading"]


def test_an_all_zero_class_and_a_given_order():
    stats = cam_mask_stats(np.zeros((3, 4, 4)), np.stack([corner_mask()] * 3))
    table = class_summary(stats, ["x", "x", "x"], order=["y", "x"])
    assert list(table.index) == ["y", "x"] and table.loc["y", "n_cells"] == 0
    assert table.loc["x", "n_scored"] == 0 and "No CAM energy to place for class x" in table.loc["x", "reading"]
    assert table.loc["x", "focus"] == "undetermined"


def test_class_summary_refuses_mismatched_inputs():
    stats = planted_stats([0.5, 0.5])
    with pytest.raises(ValueError, match="3 classes for 2 cells"):
        class_summary(stats, ["a", "b", "c"])
    with pytest.raises(ValueError, match="1 correct flags for 2 cells"):
        class_summary(stats, ["a", "b"], correct=[True])
    with pytest.raises(ValueError, match="lacks enrichment"):
        class_summary(stats.drop(columns="enrichment"), ["a", "b"])


@pytest.mark.parametrize("mode", ["pad", "scale"])
def test_cell_masks_line_up_with_the_cells_crops_in_any_row_order(mode):
    from core.cells.cell_set import CellSet, IntensityScaling
    from core.cells.measure import crop_cells
    from core.data.images import CellImage, default_channels

    pairs = []
    for i, (rows, cols) in enumerate([(slice(10, 30), slice(40, 52)), (slice(60, 70), slice(5, 25))]):
        labels = np.zeros((80, 80), np.int32)
        labels[rows, cols] = 1
        labels[50:58, 50:58] = 2  # a second cell in each image
        pixels = np.where(labels == 1, 1000, 200).astype(np.uint16)[:, :, None]
        pairs.append((CellImage(f"img{i}", pixels, default_channels(1)), labels))
    cells = CellSet.build(pairs, size=32, mode=mode)
    cells = CellSet(cells.pairs, cells.table, IntensityScaling(("ch0",), (0.0,), (1000.0,)), 32, mode)
    rows = np.array([2, 0, 3, 1])
    masks, crops = cells.masks(rows), cells.crops(rows)
    assert masks.shape == (4, 32, 32) and masks.dtype == bool
    for k, row in enumerate(rows):
        image, label = cells.table.loc[row, ["image_index", "label"]]
        img, lab = cells.pairs[image]
        reference = crop_cells(img.pixels, lab, 32, mode=mode, ids=[label]).masks[0]
        assert np.array_equal(masks[k], reference)
    bright = crops[:2, :, :, 0] > 0.6  # rows 2 and 0: label 1, the bright cells
    agreement = (bright == masks[:2]).mean()
    assert agreement == 1.0 if mode == "pad" else agreement > 0.95


def test_a_reading_counts_empty_cams_and_says_whose_evidence_it_is():
    cams = np.zeros((3, 4, 4))
    cams[:2] = corner_mask()  # two CAMs all inside their cell, one all zero
    stats = cam_mask_stats(cams, np.stack([corner_mask()] * 3))
    row = class_summary(stats, ["B"] * 3, target="batch",
                        opener="The evidence for {label} (asked of every explained cell) lies").loc["B"]
    assert row["reading"].startswith("The evidence for batch B (asked of every explained cell) lies mostly on the cells")
    assert "n=2 cells" in row["reading"] and "1 of the 3 cells had an all-zero CAM" in row["reading"]
    one = class_summary(stats.iloc[:1], ["B"], target="batch").loc["B"]
    assert "n=1 cell)" in one["reading"]
