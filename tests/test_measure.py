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


def test_crop_cells_picks_the_given_ids_in_their_order():
    labels = np.zeros((40, 40), np.int32)
    labels[2:8, 2:8] = 1
    labels[20:30, 20:30] = 2
    img = (labels * 100).astype(np.uint16)
    crops = crop_cells(img, labels, size=16, ids=[2, 1])
    assert list(crops.labels) == [2, 1]
    assert crops.images[0, 8, 8, 0] == 200 and crops.images[1, 8, 8, 0] == 100
    with pytest.raises(ValueError, match="label 7 is not in the label image"):
        crop_cells(img, labels, size=16, ids=[7])


def test_pad_crop_keeps_native_scale():
    labels = np.zeros((60, 60), np.int32)
    labels[20:26, 30:36] = 1  # 6 x 6 px
    crops = crop_cells(np.ones((60, 60, 1), np.uint8), labels, size=32, mode="pad")
    rows, cols = np.nonzero(crops.masks[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (13, 18, 13, 18)  # 6 x 6, centred on 16
    assert tuple(crops.boxes[0]) == (7, 17, 39, 49)
    with pytest.raises(ValueError, match="crop mode"):
        crop_cells(np.ones((60, 60, 1), np.uint8), labels, mode="zoom")


def test_crops_of_images_with_more_than_four_channels():
    """OpenCV's area resize refuses more than 4 channels when shrinking; crop_cells goes 4 at a time."""
    labels = np.zeros((80, 80), np.int32)
    labels[10:60, 10:60] = 1  # 50 px cell: its window shrinks to 16 px
    img = np.dstack([np.full((80, 80), 10 * (c + 1), np.uint16) for c in range(6)])
    crops = crop_cells(img, labels, size=16)
    assert crops.images.shape == (1, 16, 16, 6)
    assert list(crops.images[0, 8, 8]) == [10, 20, 30, 40, 50, 60]
