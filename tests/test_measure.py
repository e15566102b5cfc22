from __future__ import annotations

import numpy as np
import pytest

from core.images import default_channels
from core.measure import crop_cells, measure_cells


def test_measurements_match_hand_computation():
    labels = np.zeros((30, 30), np.int32)
    labels[2:6, 3:9] = 1  # 4 x 6 = 24 px
    labels[10:20, 10:20] = 2
    pixels = np.dstack([np.full((30, 30), 10, np.uint16), np.arange(900, dtype=np.uint16).reshape(30, 30)])
    df = measure_cells(labels, pixels, default_channels(2))
    assert list(df["label"]) == [1, 2] and list(df["area"]) == [24, 100]
    row = df.iloc[0]
    assert row["mean_ch0"] == 10 and row["integrated_ch0"] == 240
    assert row["mean_ch1"] == pytest.approx(pixels[2:6, 3:9, 1].mean())
    assert (row["centroid_y"], row["centroid_x"]) == (3.5, 5.5)
    assert (row["bbox_min_y"], row["bbox_max_x"]) == (2, 9)
    assert 0 < row["solidity"] <= 1 and 0 <= row["eccentricity"] < 1


def test_no_cells_gives_an_empty_table_with_columns():
    df = measure_cells(np.zeros((5, 5), np.int32), np.zeros((5, 5, 1), np.uint8), default_channels(1))
    assert len(df) == 0 and "mean_ch0" in df.columns


def test_crops_are_centred_square_and_masked():
    labels = np.zeros((50, 50), np.int32)
    labels[10:20, 10:20] = 3
    labels[45:50, 0:4] = 5  # at the corner: padded with zeros
    img = np.zeros((50, 50, 2), np.uint16)
    img[labels == 3] = 1000
    crops = crop_cells(img, labels, size=32)
    assert crops.images.shape == (2, 32, 32, 2) and list(crops.labels) == [3, 5]
    assert crops.images[0, 16, 16, 0] == 1000 and crops.masks[0, 16, 16]
    assert crops.images[0, 0, 0, 0] == 0 and not crops.masks[0, 0, 0]
    assert crops.masks[1].any()
