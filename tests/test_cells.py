from __future__ import annotations

import numpy as np
import pytest

from core.cells.cell_set import (
    IntensityScaling,
    cell_table,
    crop_chunks,
    crops_for,
    dataset_scaling,
    describe_morphology,
    feature_parts,
    morphology_features,
)
from core.cells.measure import measure_cells, measure_surroundings
from core.data.images import CellImage, default_channels
from core.io.example import make_example_dataset

# Raw 0..1000 -> 0..1, so crop values read as raw / 1000.
UNIT = IntensityScaling(("ch0",), (0.0,), (1000.0,))


@pytest.fixture(scope="module")
def example_pairs():
    return [(img, img.gt) for img in make_example_dataset(size=128, fields_per_plate=2)]


@pytest.fixture(scope="module")
def example_table(example_pairs):
    return cell_table(example_pairs)


def one_cell(rows: slice, cols: slice, shape=(100, 100), inside=1000, background=200) -> list:
    labels = np.zeros(shape, np.int32)
    labels[rows, cols] = 1
    pixels = np.where(labels > 0, inside, background).astype(np.uint16)[:, :, None]
    return [(CellImage("one", pixels, default_channels(1)), labels)]


def test_table_has_one_row_per_cell_with_ids_and_metadata(example_pairs, example_table):
    t = example_table
    assert len(t) == sum(img.n_cells_gt for img, _ in example_pairs)
    assert t["cell_id"].is_unique
    first, gt = example_pairs[0]
    rows = t[t["image"] == first.name]
    assert rows["cell_id"].iloc[0] == f"{first.name}:{rows['label'].iloc[0]}"
    assert set(rows["batch"]) == {first.batch} and set(rows["condition"]) == {first.condition}
    assert set(t["batch"]) == {"plateA", "plateB", "plateC"}
    ref = measure_cells(gt, first.pixels, first.channels)  # the one measurement path
    assert np.allclose(rows["y"], ref["centroid_y"]) and np.allclose(rows["area"], ref["area"])
    assert np.allclose(rows["mean_protein"], ref["mean_protein"])
    around = measure_surroundings(gt, first.pixels, first.channels)
    assert np.allclose(rows["ring_mean_protein"], around["ring_mean_protein"], equal_nan=True)
    # The example's plates differ in background (A darkest, C brightest): so do the cells' surroundings.
    levels = t.groupby("batch")["background_nucleus"].median()
    assert levels["plateA"] < 0.8 * levels["plateB"] and levels["plateB"] < levels["plateC"]


def test_table_refuses_ambiguous_or_mismatched_inputs(example_pairs):
    img, gt = example_pairs[0]
    with pytest.raises(ValueError, match="names must be unique"):
        cell_table([(img, gt), (img, gt)])
    with pytest.raises(ValueError, match="do not match the image"):
        cell_table([(img, gt[:64])])
    other = CellImage("other", img.pixels[:, :, :2], default_channels(2))
    layouts = ", ".join(c.name for c in other.channels), ", ".join(c.name for c in img.channels)
    with pytest.raises(ValueError, match=rf"^The images have different channels \({layouts[0]} \(1 image, e.g. other\); "
                                         rf"{layouts[1]} \(1 image, e.g. {img.name}\)\); cells of one map"):
        cell_table([(img, gt), (other, gt)])


# A 10 x 10 cell touching each border of a 100 x 100 image; in a 64 px pad crop the window starts
# 27 px before the cell, so the crop rows/cols that fall outside the image are known exactly.
BORDERS = {
    "top": ((slice(0, 10), slice(45, 55)), (slice(0, 27), slice(None))),
    "bottom": ((slice(90, 100), slice(45, 55)), (slice(37, 64), slice(None))),
    "left": ((slice(45, 55), slice(0, 10)), (slice(None), slice(0, 27))),
    "right": ((slice(45, 55), slice(90, 100)), (slice(None), slice(37, 64))),
}


@pytest.mark.parametrize("border", BORDERS)
def test_pad_crop_at_a_border_is_centred_native_and_zero_outside(border):
    cell, outside = BORDERS[border]
    pairs = one_cell(*cell)
    table = cell_table(pairs)
    crop = crops_for(pairs, table, [0], mode="pad", scaling=UNIT)[0, :, :, 0]
    ys, xs = np.nonzero(crop == 1.0)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 36, 27, 36)  # 10 x 10: native scale, centred
    assert (crop[outside] == 0).all()
    in_image = np.ones_like(crop, bool)
    in_image[outside] = False
    assert np.allclose(crop[in_image & (crop != 1.0)], 0.2)  # the background, scaled


@pytest.mark.parametrize("border", BORDERS)
def test_scale_crop_at_a_border_is_centred_and_zero_outside(border):
    cell, _ = BORDERS[border]
    pairs = one_cell(*cell)
    crop = crops_for(pairs, cell_table(pairs), [0], mode="scale", scaling=UNIT)[0, :, :, 0]
    # The window is 14 px (10 px box x 1.25, rounded up to even) starting 2 px outside the image:
    # 2/14 of the 64 px crop, about 9 px, is zero; the cell fills 10/14, centred.
    cell_rows, cell_cols = np.nonzero(crop > 0.6)
    assert abs(cell_rows.mean() - 31.5) < 0.6 and abs(cell_cols.mean() - 31.5) < 0.6
    assert 44 <= cell_rows.max() - cell_rows.min() + 1 <= 47  # 10/14 x 64 = 45.7
    edge = {"top": np.s_[:8], "bottom": np.s_[-8:], "left": np.s_[:, :8], "right": np.s_[:, -8:]}
    opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[border]
    assert (crop[edge[border]] == 0).all()
    assert np.allclose(crop[edge[opposite]], 0.2)  # the other side is the image's background


def test_pad_keeps_cell_size_and_scale_fills_the_crop():
    labels = np.zeros((200, 200), np.int32)
    labels[20:26, 20:26] = 1  # 6 x 6
    labels[100:130, 100:130] = 2  # 30 x 30
    labels[140:200, 10:90] = 3  # 60 x 80: larger than a 32 px window
    pairs = [(CellImage("sizes", (labels > 0).astype(np.uint16)[:, :, None] * 1000, default_channels(1)), labels)]
    table = cell_table(pairs)
    pad = crops_for(pairs, table, [0, 1, 2], size=32, mode="pad", scaling=UNIT)[..., 0]
    scale = crops_for(pairs, table, [0, 1, 2], size=32, mode="scale", scaling=UNIT)[..., 0]
    assert [int((c == 1).sum()) for c in pad] == [36, 900, 32 * 32]  # the big one is cut
    filled = [float(c.sum()) for c in scale]
    assert filled[0] == pytest.approx(filled[1], rel=0.1)  # same share of the crop whatever the size


def test_mask_background_zeros_everything_outside_the_cell(example_pairs, example_table):
    rows = np.arange(0, len(example_table), 17)
    scaling = dataset_scaling([img for img, _ in example_pairs])
    plain = crops_for(example_pairs, example_table, rows, scaling=scaling, mode="pad")
    masked = crops_for(example_pairs, example_table, rows, scaling=scaling, mode="pad", mask_background=True)
    for r, p, m in zip(rows, plain, masked, strict=True):
        img, gt = example_pairs[example_table["image_index"][r]]
        label = example_table["label"][r]
        # The crop's own mask, rebuilt from the label image: pad crops are native pixels.
        y0 = int((example_table["bbox_min_y"][r] + example_table["bbox_max_y"][r]) / 2) - 32
        x0 = int((example_table["bbox_min_x"][r] + example_table["bbox_max_x"][r]) / 2) - 32
        padded = np.pad(gt, 64)[y0 + 64 : y0 + 128, x0 + 64 : x0 + 128] == label
        assert (m[~padded] == 0).all()
        assert np.array_equal(m[padded], p[padded])
        assert (p[~padded] > 0).any()  # there was background to remove


@pytest.mark.parametrize("mode", ["scale", "pad"])
def test_chunks_concatenate_to_the_crops_of_the_same_rows(example_pairs, example_table, mode):
    scaling = dataset_scaling([img for img, _ in example_pairs])
    chunks = list(crop_chunks(example_pairs, example_table, size=32, mode=mode, scaling=scaling, chunk=50))
    n = len(example_table)
    assert [len(c) for c in chunks] == [50] * (n // 50) + ([n % 50] if n % 50 else [])
    assert all(c.dtype == np.float32 and c.shape[1:] == (32, 32, 3) for c in chunks)
    all_crops = np.concatenate(chunks)
    assert 0.0 <= all_crops.min() and all_crops.max() <= 1.0
    rows = np.random.default_rng(0).permutation(n)[:40]
    picked = crops_for(example_pairs, example_table, rows, size=32, mode=mode, scaling=scaling)
    assert np.array_equal(picked, all_crops[rows])


def test_chunks_follow_a_filtered_table(example_pairs, example_table):
    scaling = dataset_scaling([img for img, _ in example_pairs])
    big = example_table[example_table["area"] > 300].reset_index(drop=True)
    assert 0 < len(big) < len(example_table)
    crops = np.concatenate(list(crop_chunks(example_pairs, big, mode="pad", scaling=scaling, mask_background=True)))
    # Masked pad crops hold the cell's own pixels: their count is the area, cell by cell.
    assert np.array_equal((crops[..., 0] > 0).sum(axis=(1, 2)), big["area"].to_numpy())
    assert list(crop_chunks(example_pairs, big.iloc[:0], scaling=scaling)) == []


def test_dataset_wide_scaling_keeps_a_brighter_plate_brighter(example_pairs):
    img, gt = example_pairs[0]
    bright = img.with_(name="bright", pixels=(img.pixels.astype(np.float32) * 1.8).astype(np.uint16), batch="bright")
    pairs = [(img, gt), (bright, gt)]
    table = cell_table(pairs)
    dim_rows, bright_rows = np.flatnonzero(table["image"] == img.name), np.flatnonzero(table["image"] == "bright")
    shared = dataset_scaling([img, bright])
    crops = crops_for(pairs, table, np.r_[dim_rows, bright_rows], scaling=shared)
    ratio = crops[len(dim_rows):].mean() / crops[: len(dim_rows)].mean()
    assert ratio > 1.4  # the exposure difference survives the scaling
    # Per-image scaling (what the batch analysis must not see) erases it:
    own = [crops_for(pairs, table, rows, scaling=dataset_scaling([im])) for rows, im in ((dim_rows, img), (bright_rows, bright))]
    assert own[1].mean() / own[0].mean() == pytest.approx(1.0, abs=0.02)


def test_dataset_scaling_matches_percentiles_of_all_pixels(example_pairs):
    images = [img for img, _ in example_pairs]
    scaling = dataset_scaling(images, samples=400_000)
    everything = np.concatenate([img.pixels.reshape(-1, 3) for img in images]).astype(np.float64)
    lo, hi = np.percentile(everything, (0.5, 99.8), axis=0)
    assert scaling.channels == ("nucleus", "cytoplasm", "protein")
    assert np.allclose(scaling.low, lo, rtol=0.02) and np.allclose(scaling.high, hi, rtol=0.05)
    assert IntensityScaling.from_dict(scaling.to_dict()) == scaling


def test_morphology_features_are_z_scored_shape_intensity_and_surroundings(example_table):
    X, names = morphology_features(example_table)
    channels = ("nucleus", "cytoplasm", "protein")
    assert names == (["area", "perimeter", "eccentricity", "solidity", "mean_nucleus", "integrated_nucleus",
                      "mean_cytoplasm", "integrated_cytoplasm", "mean_protein", "integrated_protein"]
                     + [f"{p}{c}" for p in ("ring_mean_", "ring_sd_", "background_", "background_sd_") for c in channels])
    assert X.shape == (len(example_table), 4 + 6 * 3) and X.dtype == np.float32
    assert feature_parts(names) == {"the cells themselves": list(range(10)), "their surroundings": list(range(10, 22))}
    assert describe_morphology(names) == ("22 morphology features per cell: 10 of the cells themselves (shape, "
                                          "intensity), 12 of their surroundings (a ring around each cell, the image "
                                          "background)")
    assert np.allclose(X.mean(axis=0), 0, atol=1e-5) and np.allclose(X.std(axis=0), 1, atol=1e-4)
    log_area = np.log1p(example_table["area"].to_numpy())
    assert np.allclose(X[:, 0], (log_area - log_area.mean()) / log_area.std(), atol=1e-5)


def test_a_constant_column_becomes_zeros_not_nan(example_table):
    table = example_table.copy()
    table["solidity"] = 1.0
    table.loc[3, "eccentricity"] = np.nan  # a degenerate object
    X, names = morphology_features(table)
    assert np.isfinite(X).all()
    assert (X[:, names.index("solidity")] == 0).all()
    assert np.allclose(X[:, names.index("area")].std(), 1, atol=1e-4)


def test_surroundings_missing_for_every_cell_become_zeros_without_a_warning(example_table):
    import warnings

    table = example_table.copy()
    table["ring_mean_nucleus"] = np.nan  # packed cells: no free pixel around any of them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X, names = morphology_features(table)
    assert (X[:, names.index("ring_mean_nucleus")] == 0).all() and np.isfinite(X).all()


def test_a_flat_channel_gets_a_usable_range_and_mixed_channels_are_refused():
    flat = CellImage("flat", np.full((20, 20, 1), 7, np.uint16), default_channels(1))
    scaling = dataset_scaling([flat])
    assert (scaling.low, scaling.high) == ((7.0,), (8.0,))
    assert (scaling.apply(flat.pixels) == 0).all()
    two = CellImage("two", np.zeros((20, 20, 2), np.uint16), default_channels(2))
    with pytest.raises(ValueError, match="same channels"):
        dataset_scaling([flat, two])


def test_crop_geometry_is_checked_however_a_cell_set_is_made():
    from dataclasses import replace

    from core.cells.cell_set import CellSet

    image = make_example_dataset(size=64, fields_per_plate=1)[0]
    cells = CellSet.build([(image, image.gt)])
    with pytest.raises(ValueError, match="crop mode must be one of"):
        replace(cells, mode="fixed")  # how a pipeline applies a request's crops
    with pytest.raises(ValueError, match="crop size must be at least 4"):
        replace(cells, size=2)
