from __future__ import annotations

import numpy as np
import pytest

from core.cells.measure import crop_cells, measure_cells
from core.data.images import default_channels


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


def test_rings_and_backgrounds_are_expand_labels_territories():
    """Each cell's ring = the pixels scikit-image's expand_labels gives it (nearest cell) within the
    ring's width, minus the cells; its background = those it gives it beyond the ring, out to
    BACKGROUND_REACH ring widths; robust level and noise there match numpy's percentiles."""
    from skimage.segmentation import expand_labels

    from core.cells.measure import BACKGROUND_REACH, RING_MIN_WIDTH, measure_surroundings

    rng = np.random.default_rng(0)
    labels = np.zeros((70, 70), np.int32)
    labels[10:18, 10:18] = 1  # 64 px: radius 4.5, ring at the minimum width, 3 px
    labels[10:18, 21:29] = 2  # 3 px from cell 1: the gap is shared by nearness
    labels[45:55, 45:55] = 3
    pixels = rng.normal(100, 10, (70, 70, 2))
    df = measure_surroundings(labels, pixels, default_channels(2))
    assert list(df.columns) == ["label", "ring_mean_ch0", "ring_mean_ch1", "ring_sd_ch0", "ring_sd_ch1",
                                "background_ch0", "background_ch1", "background_sd_ch0", "background_sd_ch1"]
    near = expand_labels(labels, distance=RING_MIN_WIDTH)
    far = expand_labels(labels, distance=BACKGROUND_REACH * RING_MIN_WIDTH)
    for k, lab in enumerate([1, 2, 3]):
        ring = pixels[(labels == 0) & (near == lab)]
        assert len(ring) > 20
        np.testing.assert_allclose(df.loc[k, ["ring_mean_ch0", "ring_mean_ch1"]].to_numpy(float), ring.mean(axis=0))
        np.testing.assert_allclose(df.loc[k, ["ring_sd_ch0", "ring_sd_ch1"]].to_numpy(float), ring.std(axis=0))
        around = pixels[(near == 0) & (far == lab)]
        assert len(around) > 100
        lo, mid, hi = np.percentile(around, (15.87, 50, 84.13), axis=0)
        np.testing.assert_allclose(df.loc[k, ["background_ch0", "background_ch1"]].to_numpy(float), mid)
        np.testing.assert_allclose(df.loc[k, ["background_sd_ch0", "background_sd_ch1"]].to_numpy(float), (hi - lo) / 2)


def test_a_big_cells_ring_is_half_its_radius_and_a_packed_cell_has_none():
    from skimage.segmentation import expand_labels

    from core.cells.measure import measure_surroundings

    labels = np.zeros((80, 80), np.int32)
    labels[20:60, 20:60] = 1  # 1600 px: radius 22.6, ring 11.3 px
    labels[0:5, 0:80] = 2  # a strip...
    labels[5:8, 0:80] = 3  # ...and one packed against it and the edge: cell 2 keeps no free pixel
    labels[8:80, 0:3] = 3
    pixels = np.arange(80 * 80, dtype=np.float64).reshape(80, 80, 1)
    df = measure_surroundings(labels, pixels, default_channels(1)).set_index("label")
    big = np.where(labels == 0, expand_labels(labels, distance=0.5 * np.sqrt(1600 / np.pi)), 0) == 1
    assert df.loc[1, "ring_mean_ch0"] == pytest.approx(pixels[big, 0].mean())
    assert df.loc[2, ["ring_mean_ch0", "ring_sd_ch0", "background_ch0", "background_sd_ch0"]].isna().all()


def test_a_brighter_noisier_background_moves_the_surroundings_not_the_cell():
    from core.cells.measure import measure_surroundings

    rng = np.random.default_rng(1)
    labels = np.zeros((64, 64), np.int32)
    labels[20:30, 20:30] = 1
    clean = np.where(labels > 0, 500.0, 50.0)[:, :, None]
    noisy = np.where(labels > 0, 500.0, 80.0 + rng.normal(0, 15, labels.shape))[:, :, None]
    a, b = (measure_surroundings(labels, p, default_channels(1)).iloc[0] for p in (clean, noisy))
    cells = [measure_cells(labels, p, default_channels(1)).iloc[0]["mean_ch0"] for p in (clean, noisy)]
    assert cells[0] == cells[1] == 500.0
    assert (a["ring_mean_ch0"], a["ring_sd_ch0"], a["background_ch0"], a["background_sd_ch0"]) == (50, 0, 50, 0)
    assert b["ring_mean_ch0"] == pytest.approx(80, abs=5) and b["ring_sd_ch0"] == pytest.approx(15, abs=3)
    assert b["background_ch0"] == pytest.approx(80, abs=2) and b["background_sd_ch0"] == pytest.approx(15, abs=2)


def test_cells_filling_the_image_leave_no_background_and_get_nan_not_an_error():
    from core.cells.measure import measure_surroundings

    labels = np.zeros((20, 20), np.int32)
    labels[:, :10], labels[:, 10:19] = 1, 2  # one free column, all of it cell 2's ring; cell 1 has none
    df = measure_surroundings(labels, np.ones((20, 20, 1)), default_channels(1))
    assert np.isnan(df["ring_mean_ch0"][0]) and df["ring_mean_ch0"][1] == 1.0 and df["background_ch0"].isna().all()


def test_no_cells_gives_an_empty_surroundings_table():
    from core.cells.measure import measure_surroundings

    df = measure_surroundings(np.zeros((5, 5), np.int32), np.zeros((5, 5, 1), np.uint8), default_channels(1))
    assert len(df) == 0 and "ring_mean_ch0" in df.columns


def test_eccentricities_of_every_object_at_once_equal_scikit_images_per_object():
    from skimage.measure import label, regionprops_table

    from core.cells.measure import eccentricities

    rng = np.random.default_rng(4)
    labels = label(rng.random((120, 150)) > 0.6)  # thousands of odd shapes: lines, single pixels, blobs
    labels[labels == 7] = 0  # a gap in the ids
    ref = regionprops_table(labels, properties=("label", "eccentricity"))
    np.testing.assert_allclose(eccentricities(labels, ref["label"]), ref["eccentricity"], atol=1e-9)
