"""workflows/blocks.py: a large image cut into overlapping blocks gives the cells it gives whole."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pandas as pd
import pytest

from core.cells.cell_set import cell_table
from core.data.images import CellImage, default_channels
from core.evaluation.matching import iou_matrix
from core.segmentation.preprocess import run_pipeline
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.block_levels import image_stats
from workflows.blocks import (
    BLOCK_SETTINGS,
    DEFAULT_DIAMETER,
    Block,
    BlockObject,
    BlockResult,
    ImageMeta,
    ModelSegmenter,
    default_overlap,
    merge,
    merge_blocks,
    plan_blocks,
    segment_in_blocks,
    typical_diameter,
)

H, W, BLOCK = 1200, 1500, 384
EMPTY = (720, 1200, 900, 1500)  # y0, y1, x0, x1: a region with no nucleus (background and noise only)


def nuclei_image(h: int = H, w: int = W, *, n: int = 420, empty=EMPTY, seed: int = 3) -> np.ndarray:
    """(h, w, 1) uint16: blurred elliptical nuclei of varied brightness on an uneven background with
    Poisson noise; none in ``empty``."""
    rng = np.random.default_rng(seed)
    signal = np.zeros((h, w), np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if empty and empty[0] - 12 < cy < empty[1] + 12 and empty[2] - 12 < cx < empty[3] + 12:
            continue
        axes = (int(rng.uniform(6, 11)), int(rng.uniform(6, 11)))
        cv2.ellipse(signal, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, float(rng.uniform(0.5, 1.5)), -1)
    signal = cv2.GaussianBlur(signal, (0, 0), 1.2)
    yy = np.arange(h, dtype=np.float32)[:, None]
    background = 100 + 30 * np.sin(yy / 300) + np.zeros((1, w), np.float32)
    photons = rng.poisson(background + 800 * signal).astype(np.float32) + rng.normal(0, 4, (h, w))
    return np.clip(photons, 0, 65535).astype(np.uint16)[:, :, None]


class reader:  # noqa: N801 (a function, as far as its callers know)
    """A picklable ``read_region`` over an array in memory."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def __call__(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.pixels[y0:y1, x0:x1]


class PicklingExecutor:
    """Runs each unit in this process, but only as a Dask worker would get it: the function, each
    item and each result go through pickle (a lambda or an open file anywhere in them fails here)."""

    def __init__(self) -> None:
        self.units = 0

    def map(self, fn, items):
        fn = pickle.loads(pickle.dumps(fn))
        for item in items:
            self.units += 1
            yield pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(item)))))


def by_first_pixel(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 1..N by each object's first pixel in raster order (the blocks' numbering)."""
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    ids, first = np.unique(flat[nz], return_index=True)
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids[np.argsort(nz[first])]] = np.arange(1, len(ids) + 1)
    return lut[labels]


@pytest.mark.parametrize(("h", "w", "block", "overlap"), [(1200, 1500, 384, 96), (100, 70, 256, 32), (513, 512, 128, 0)])
def test_plan_blocks_cores_partition_the_image_and_windows_reach_the_overlap_beyond_them(h, w, block, overlap):
    blocks = plan_blocks(h, w, block=block, overlap=overlap)
    covered = np.zeros((h, w), np.int32)
    for b in blocks:
        y0, y1, x0, x1 = b.core
        covered[y0:y1, x0:x1] += 1
        assert b.core == (b.iy * block, min((b.iy + 1) * block, h), b.ix * block, min((b.ix + 1) * block, w))
        assert b.window == (max(y0 - overlap, 0), min(y1 + overlap, h), max(x0 - overlap, 0), min(x1 + overlap, w))
    assert (covered == 1).all()
    assert len(blocks) == -(-h // block) * -(-w // block)
    with pytest.raises(ValueError, match="block must be at least 1 px"):
        plan_blocks(h, w, block=0, overlap=8)


def test_the_overlap_is_at_least_twice_the_typical_diameter_and_the_recipe_reach():
    assert default_overlap(40.0) == 80 and default_overlap(41.0) == 96  # 2 x 41 = 82, up to a multiple of 16
    assert default_overlap(16.0, DEFAULT_RECIPE) >= 16 + 2 * 24 + 33  # a cell + the top-hat + half the adaptive window
    recipe = DEFAULT_RECIPE.with_step("filters", max_area=1257)
    assert typical_diameter(recipe=recipe) == pytest.approx(40.0, abs=0.01)  # the largest cell the recipe keeps
    assert typical_diameter(measured=12.0, recipe=recipe) == 12.0 and typical_diameter() == 20.0
    block, overlap = BLOCK_SETTINGS
    assert overlap.check(0) == 0 and block.default >= 1024
    with pytest.raises(ValueError, match="overlap"):
        overlap.check(8)


@pytest.fixture(scope="module")
def big():
    pixels = nuclei_image()
    meta = ImageMeta("big", default_channels(1), (H, W), batch="plate1", condition="treated")
    executor = PicklingExecutor()
    labels, cells, notes, skipped = segment_in_blocks(reader(pixels), meta, ModelSegmenter("classical"), block=BLOCK,
                                                      executor=executor)
    assert executor.units > 16  # the statistics' passes and the blocks, each a picklable unit
    # The levels segment_in_blocks streamed: the same passes over the same first plan.
    first = plan_blocks(H, W, block=BLOCK, overlap=default_overlap(DEFAULT_DIAMETER, DEFAULT_RECIPE))
    stats = image_stats(reader(pixels), H, W, meta.channels, DEFAULT_RECIPE, first)
    return pixels, meta, labels, cells, notes, skipped, stats


def test_blocks_give_the_cells_of_the_whole_image_run_with_the_same_levels(big):
    pixels, meta, labels, cells, notes, skipped, stats = big
    whole = run_pipeline(pixels, meta.channels, levels=stats.levels).labels
    assert labels.dtype == np.int32 and labels.shape == (H, W)
    assert labels.max() == whole.max() > 300
    # Exactly the same cells, pixel for pixel, numbered alike (by first pixel).
    np.testing.assert_array_equal(labels, by_first_pixel(whole))
    iou, _, _ = iou_matrix(whole, labels)
    assert ((iou >= 0.95).sum(axis=1) == 1).all() and ((iou > 0).sum(axis=1) == 1).all()  # none covered by two
    # Many cells lie across the blocks' faces: they were taken whole, once.
    faces = np.arange(BLOCK, max(H, W), BLOCK)
    across = ((cells["bbox_min_y"].to_numpy()[:, None] < faces) & (cells["bbox_max_y"].to_numpy()[:, None] > faces)).any(1) \
        | ((cells["bbox_min_x"].to_numpy()[:, None] < faces) & (cells["bbox_max_x"].to_numpy()[:, None] > faces)).any(1)
    assert across.sum() >= 20
    assert "384 px" in notes[0]


def test_the_blocks_measurements_are_the_whole_images_in_image_coordinates(big):
    pixels, meta, labels, cells, _, _, _ = big
    image = CellImage("big", pixels, meta.channels, meta.batch, meta.condition)
    whole = cell_table([(image, labels)])
    assert list(cells.columns) == list(whole.columns) and len(cells) == len(whole)
    numbers = whole.select_dtypes("number").columns
    pd.testing.assert_frame_equal(cells[numbers], whole[numbers], check_exact=False, rtol=1e-9, atol=1e-9)
    assert (cells.drop(columns=numbers) == whole.drop(columns=numbers)).all().all()
    assert cells["cell_id"].iloc[0] == "big:1" and (cells["condition"] == "treated").all()


def test_blocks_of_pure_background_are_skipped_and_counted(big):
    pixels, meta, labels, _, notes, skipped, stats = big
    blocks = plan_blocks(H, W, block=BLOCK, overlap=default_overlap(stats.levels.diameter, DEFAULT_RECIPE))
    inside = [b for b in blocks if b.window[0] >= EMPTY[0] and b.window[2] >= EMPTY[2]]
    assert inside and skipped == len([b for b in blocks if not stats.holds_foreground(b.window)]) >= len(inside)
    assert all(not stats.holds_foreground(b.window) for b in inside)
    assert f"{skipped} held only background and were skipped" in notes[0]
    assert not labels[EMPTY[0]:EMPTY[1], EMPTY[2]:EMPTY[3]].any()


@pytest.mark.parametrize("remove_border", [False, True])
def test_an_object_larger_than_the_overlap_is_named_in_the_notes_and_kept_once(remove_border):
    pixels = nuclei_image(400, 400, n=30, empty=None, seed=5)
    big_disc = np.zeros((400, 400), np.uint16)
    cv2.circle(big_disc, (200, 200), 100, 1200, -1)  # 200 px across, as bright as the nuclei
    pixels = np.maximum(pixels, big_disc[:, :, None])
    recipe = (DEFAULT_RECIPE.with_step("background", enabled=False).with_step("threshold", method="otsu")
              .with_step("filters", remove_border=remove_border))  # only the image's border, not a window's
    meta = ImageMeta("disc", default_channels(1), (400, 400))
    labels, cells, notes, _ = segment_in_blocks(reader(pixels), meta, ModelSegmenter("classical", {"recipe": recipe}),
                                                block=128, overlap=32)
    assert any("touch the edge of block" in n and "raise the overlap" in n for n in notes), notes
    assert len(cells) == labels.max()
    disc = big_disc > 0
    assert (labels[disc] == labels[200, 200]).mean() > 0.9  # the block owning its centre saw most of it ...
    assert any("seen by two blocks were kept once" in n for n in notes)  # ... a neighbour's part of it is dropped


def test_a_recipe_that_cannot_run_in_blocks_is_refused_with_the_fix():
    pixels = nuclei_image(200, 200, n=10, empty=None)
    recipe = DEFAULT_RECIPE.with_step("normalize", clahe=True)
    with pytest.raises(ValueError, match=r"CLAHE .* \(normalize.clahe false\)"):
        segment_in_blocks(reader(pixels), ImageMeta("x", default_channels(1), (200, 200)),
                          ModelSegmenter("classical", {"recipe": recipe}), block=128)


def _object(y0, x0, mask, score=1.0):
    return BlockObject((y0, y0 + mask.shape[0], x0, x0 + mask.shape[1]), mask, score)


def _result(iy, objects, image="m"):
    cells = pd.DataFrame({"cell_id": "", "image": image, "label": np.arange(1, len(objects) + 1, dtype=np.int32),
                          "area": [int(o.mask.sum()) for o in objects]})
    return BlockResult(Block(iy, 0, (0, 1, 0, 1), (0, 1, 0, 1)), False, objects, cells)


def test_an_object_seen_by_two_blocks_is_kept_once_and_never_painted_over_a_neighbour():
    disc = np.zeros((20, 20), bool)
    cv2.circle(disc.view(np.uint8), (10, 10), 8, 1, -1)
    shifted = np.roll(disc, 1, axis=1)  # the same cell as another block's model drew it
    neighbour = np.ones((5, 15), bool)  # at x 26-40: its first 3 columns lie on the first cell's edge
    results = [_result(0, [_object(10, 10, disc, 0.9)]), _result(1, [_object(10, 10, shifted, 0.8),
                                                                      _object(18, 26, neighbour, 0.7)])]
    merged = merge(results, 50, 50)
    assert merged.labels.max() == 2 and len(merged.cells) == 2 and merged.duplicates == 1 and merged.trimmed == 1
    first = merged.labels == merged.labels[20, 20]
    np.testing.assert_array_equal(first[10:30, 10:30], disc)  # the confident one whole, nothing over it
    second = merged.labels == merged.labels[20, 35]
    assert second.sum() == neighbour.sum() - (disc[8:13, 16:] & neighbour[:, :4]).sum() > 60  # where it is free
    assert list(merged.cells["label"]) == [1, 2] and list(merged.cells["cell_id"]) == ["m:1", "m:2"]
    labels, cells = merge_blocks(results, 50, 50)
    np.testing.assert_array_equal(labels, merged.labels)


def test_a_network_family_runs_in_blocks_and_owns_each_object_once(tmp_path):
    import torch

    from models.unet_checkpoint import save_checkpoint
    from models.unet_network import UNetConfig, build_unet

    torch.manual_seed(0)
    config = UNetConfig()
    path = save_checkpoint(tmp_path / "random.unet.pt", build_unet(config).state_dict(), config, {})
    pixels = nuclei_image(256, 320, n=40, empty=(0, 256, 160, 320), seed=2)
    segment = ModelSegmenter(f"unet:{path}", {"foreground_threshold": 0.3, "seed_threshold": 0.35, "min_area": 4})
    labels, cells, notes, skipped = segment_in_blocks(reader(pixels), ImageMeta("u", default_channels(1), (256, 320)),
                                                      segment, block=128, overlap=32)
    assert skipped >= 1  # the right-hand third holds no nucleus
    assert any("normalises each block's window" in n for n in notes)
    assert any(n.startswith("the overlap (32 px) is under 48 px (twice the typical cell)") for n in notes), notes
    assert labels.max() == len(cells) and set(np.unique(labels[labels > 0])) == set(cells["label"])
    assert cells["cell_id"].is_unique


def window_threshold(image: CellImage, levels) -> np.ndarray:
    """A segmenter that, like the networks, normalises each image (window) it is given to its own
    percentiles: its masks of one nucleus differ a little between two windows."""
    from core.data.images import nucleus_plane

    return cv2.connectedComponents((nucleus_plane(image) > 0.25).astype(np.uint8), connectivity=8)[1].astype(np.int32)


def test_a_per_window_segmenter_in_blocks_finds_each_whole_image_cell_once():
    pixels = nuclei_image(600, 700, n=160, empty=None, seed=4)
    labels, cells, notes, _ = segment_in_blocks(reader(pixels), ImageMeta("p", default_channels(1), (600, 700)),
                                                window_threshold, block=160, overlap=48)
    whole = window_threshold(CellImage("p", pixels, default_channels(1)), None)
    iou, _, _ = iou_matrix(whole, labels)
    assert abs(labels.max() - whole.max()) <= 0.02 * whole.max()
    assert (iou.max(axis=1) >= 0.8).mean() >= 0.97  # each whole-image cell found ...
    assert ((iou >= 0.5).sum(axis=1) <= 1).all() and ((iou >= 0.5).sum(axis=0) <= 1).all()  # ... once
    assert len(cells) == labels.max()
