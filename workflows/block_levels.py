"""A large image's image-wide statistics, streamed block by block (never the whole image in memory):
the classical recipe's :class:`core.segmentation.levels.PipelineLevels`, the typical cell diameter
that sets the blocks' overlap, and the level under which a block holds only background.

Three passes through the executor, each a plain picklable function of one block:

1. every block's core: the segmented plane's minimum, maximum and a strided sample (the stride that
   :func:`core.data.images.normalize_channel` uses on the whole image, so the normalisation levels are
   the whole image's, exactly);
2. sampled blocks' windows (up to ``sample_blocks``, evenly spread; all of them in a smaller image):
   the areas of the pieces of the cell-size estimate's mask (denoised above the image-wide Otsu
   threshold, opened) whose centre the core holds: the typical diameter and area;
3. (the recipe only) the same blocks: the background-subtracted image sampled on the whole-image
   pipeline's stride, for its 99.9th percentile (``top``) and Otsu or triangle threshold.

Where the whole-image pipeline takes Otsu's threshold of the denoised image (pass 2) or of the
blurred processed image (``otsu_gaussian``), these take it of the undenoised sample, and the typical
cell area is the size estimate's rather than the final mask's: close, not identical, and the same
numbers for every block and for the whole image run with them, which is what makes them add up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.data.images import ChannelInfo
from core.segmentation.levels import (
    COARSE_RADIUS,
    PipelineLevels,
    background_removed,
    grid_values,
    normalize_fixed,
    normalize_step_levels,
    owned_piece_areas,
)
from core.segmentation.preprocess import adaptive_block_size, denoise, select_plane
from core.segmentation.recipe import DEFAULT_RECIPE, Recipe

ReadRegion = Callable[[int, int, int, int], np.ndarray]  # (y0, y1, x0, x1) -> (h, w, C) pixels
SAMPLE_BLOCKS = 36  # blocks whose windows the size and background statistics are pooled from
SAMPLE_PIXELS = 250_000  # pass 1's sample: normalize_channel's, for the same percentiles
# Pass 1 keeps the plane's maximum per square of this many px (anchored at the image's corner): a
# window's maximum is bounded by the squares it touches, 64 px beyond it at most (3 MB for 50,000 px).
MAX_GRID = 64
# A block with no pixel above this fraction of the image's Otsu threshold (normalised) is background
# for a model: the recipe's default threshold floor (0.3 x Otsu), which keeps empty areas empty.
MODEL_SKIP_FRACTION = 0.3


@dataclass(frozen=True)
class PlaneStats:
    """What pass 1 gives back for one core."""

    lowest: float
    highest: float
    sample: np.ndarray
    grid_max: np.ndarray  # the maxima of the MAX_GRID squares the core touches (its part of them)


@dataclass(frozen=True)
class ImageStats:
    """A large image's statistics: its levels (the recipe's; None for a model), typical diameter, its
    normalised maximum per square and the level a block's window must reach to be segmented."""

    levels: PipelineLevels | None
    diameter: float
    grid_max: np.ndarray  # the normalised plane's maximum per MAX_GRID x MAX_GRID square of the image
    foreground: float  # a window whose maximum stays below this (normalised) holds no cell
    low: float
    high: float

    def holds_foreground(self, window: tuple[int, int, int, int]) -> bool:
        """Whether a block's ``window`` (y0, y1, x0, x1) may hold a cell: the MAX_GRID squares it touches
        (which bound its maximum) reach the foreground level, with 1/255 of slack for the 8-bit steps' rounding."""
        y0, y1, x0, x1 = window
        g = MAX_GRID
        return float(self.grid_max[y0 // g : (y1 - 1) // g + 1, x0 // g : (x1 - 1) // g + 1].max()) + 1.0 / 255 \
            >= self.foreground


def segmented_plane(pixels: np.ndarray, channels: Sequence[ChannelInfo], recipe: Recipe | None) -> np.ndarray:
    """The plane the recipe segments (its channel), or the models' (the nucleus channel, else the first)."""
    return select_plane(pixels, channels, recipe.channel.source if recipe else "nucleus")[0]


def _plane_stats(core: tuple[int, int, int, int], read_region: ReadRegion, channels: tuple[ChannelInfo, ...],
                 recipe: Recipe | None, stride: tuple[int, int]) -> PlaneStats:
    plane = segmented_plane(read_region(*core), channels, recipe)
    y0, y1, x0, x1 = core
    g = MAX_GRID
    edges_y = np.r_[y0, np.arange((y0 // g + 1) * g, y1, g)] - y0  # where each square starts in the core
    edges_x = np.r_[x0, np.arange((x0 // g + 1) * g, x1, g)] - x0
    grid = np.maximum.reduceat(np.maximum.reduceat(plane, edges_y, axis=0), edges_x, axis=1)
    return PlaneStats(float(plane.min()), float(plane.max()), grid_values(plane, core, core[::2], stride), grid)


def _piece_areas(window_core: tuple[tuple[int, int, int, int], tuple[int, int, int, int]], read_region: ReadRegion,
                 channels: tuple[ChannelInfo, ...], recipe: Recipe | None, partial: PipelineLevels,
                 otsu: float) -> np.ndarray:
    window, core = window_core
    plane = segmented_plane(read_region(*window), channels, recipe)
    mask = estimate_mask(normalize_fixed(plane, partial), recipe or DEFAULT_RECIPE, otsu)
    return owned_piece_areas(mask, core, window[::2])


def _background_sample(window_core: tuple[tuple[int, int, int, int], tuple[int, int, int, int]],
                       read_region: ReadRegion, channels: tuple[ChannelInfo, ...], recipe: Recipe,
                       partial: PipelineLevels, stride: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    window, core = window_core
    plane = segmented_plane(read_region(*window), channels, recipe)
    out = background_removed(denoise(normalize_fixed(plane, partial), recipe.denoise), recipe.background,
                             partial.diameter, window[::2])
    blurred = cv2.GaussianBlur(out, (0, 0), recipe.threshold.blur_sigma)
    return grid_values(out, core, window[::2], stride), grid_values(blurred, core, window[::2], stride)


def estimate_mask(normalized: np.ndarray, recipe: Recipe, otsu: float) -> np.ndarray:
    """The cell-size estimate's mask (:func:`core.segmentation.preprocess.estimate_cell_diameter`)
    with an image-wide Otsu threshold: denoised above it, opened by 3 x 3."""
    mask = denoise(normalized, recipe.denoise) > otsu
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0


def recipe_reach(recipe: Recipe, diameter: float) -> int:
    """How far (px) the pixels one pixel's result depends on reach, through every local step: a
    block's margin must exceed this plus a cell's size for the block to equal the whole image."""
    d = recipe.denoise
    reach = {"gaussian": 4 * d.sigma, "median": d.ksize // 2, "bilateral": d.bilateral_d,
             "nlmeans": 13}[d.method] if d.enabled else 0
    b = recipe.background
    if b.enabled:
        radius = b.radius or max(3, round(1.5 * diameter))
        reach += 4 * radius if b.method == "gaussian" else 2 * radius + 3 * max(1, int(radius / COARSE_RADIUS + 0.5))
    t = recipe.threshold
    if t.method.startswith("adaptive"):
        reach += adaptive_block_size((10**6, 10**6), t, diameter) // 2 + 1
    m = recipe.morphology
    reach += (m.ksize // 2) * m.iterations if m.operation != "none" else 0
    reach += 4 * recipe.watershed.smoothing + 2
    return int(np.ceil(reach))


def _otsu(values: np.ndarray) -> float | None:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values, nbins=256)) if len(values) and np.ptp(values) > 1e-6 else None


def image_stats(read_region: ReadRegion, height: int, width: int, channels: Sequence[ChannelInfo],
                recipe: Recipe | None, blocks: Sequence, *, executor=None, sample_blocks: int = SAMPLE_BLOCKS,
                levels: PipelineLevels | None = None) -> ImageStats:
    """The statistics of the image behind ``read_region`` (see the module doc), through
    ``executor`` (serial by default). ``recipe`` None: for a model (no levels, only the diameter,
    the normalisation and the background level). ``blocks``: :func:`workflows.blocks.plan_blocks`'s.
    ``levels`` given (with the recipe): those, and only pass 1 for the background level."""
    from workflows.image_loop import SerialExecutor

    executor = executor or SerialExecutor()
    channels = tuple(channels)
    stride = max(1, int(np.sqrt(height * width / SAMPLE_PIXELS)))
    pass1 = list(executor.map(functools.partial(_plane_stats, read_region=read_region, channels=channels,
                                                recipe=recipe, stride=(stride, stride)), [b.core for b in blocks]))
    lowest, highest = min(s.lowest for s in pass1), max(s.highest for s in pass1)
    sample = np.concatenate([s.sample for s in pass1]).astype(np.float32)
    normalize_step = (recipe or DEFAULT_RECIPE).normalize
    low, high = normalize_step_levels(sample, lowest, highest, normalize_step) if levels is None \
        else (levels.low, levels.high)
    partial = PipelineLevels(low, high, 20.0, 0.0, 0.0, 0.0, (height, width))
    otsu_n = _otsu(normalize_fixed(sample, partial))
    g = MAX_GRID
    grid_max = np.full((-(-height // g), -(-width // g)), -np.inf, np.float32)
    for b, s in zip(blocks, pass1, strict=True):
        part = grid_max[b.core[0] // g : b.core[0] // g + s.grid_max.shape[0],
                        b.core[2] // g : b.core[2] // g + s.grid_max.shape[1]]
        np.maximum(part, s.grid_max, out=part)
    grid_max = normalize_fixed(grid_max, partial)
    if levels is not None and recipe is not None:
        return ImageStats(levels, levels.diameter, grid_max, _recipe_foreground(recipe, levels), low, high)
    if otsu_n is None:  # a flat image: no cell anywhere
        return ImageStats(None, 20.0, grid_max, np.inf, low, high)
    picked = [blocks[i] for i in np.unique(np.linspace(0, len(blocks) - 1, min(sample_blocks, len(blocks))).round()
                                            .astype(int))]
    jobs = [(b.window, b.core) for b in picked]
    areas = np.concatenate([np.zeros(0, np.int64), *executor.map(functools.partial(
        _piece_areas, read_region=read_region, channels=channels, recipe=recipe, partial=partial, otsu=otsu_n), jobs)])
    area = float(np.percentile(areas, 35)) if len(areas) else 0.0
    diameter = float(np.clip(2 * np.sqrt(area / np.pi), 4, 400)) if area else 20.0
    if recipe is None:
        return ImageStats(None, diameter, grid_max, MODEL_SKIP_FRACTION * otsu_n, low, high)
    levels = _recipe_levels(read_region, channels, recipe, jobs, executor,
                            PipelineLevels(low, high, diameter, 0.0, 0.0, area or np.pi * diameter**2 / 4,
                                           (height, width)))
    return ImageStats(levels, diameter, grid_max, _recipe_foreground(recipe, levels), low, high)


def _recipe_levels(read_region: ReadRegion, channels: tuple[ChannelInfo, ...], recipe: Recipe, jobs: list,
                   executor, partial: PipelineLevels) -> PipelineLevels:
    """Pass 3: ``top`` and the threshold (global value or adaptive floor) of the recipe."""
    from dataclasses import replace

    from skimage.filters import threshold_triangle

    h, w = partial.shape
    stride = (max(1, h // 512), max(1, w // 512))  # the whole-image pipeline's sample for `top`
    parts = list(executor.map(functools.partial(_background_sample, read_region=read_region, channels=channels,
                                                recipe=recipe, partial=partial, stride=stride), jobs))
    out = np.concatenate([np.zeros(0, np.float32), *(p[0] for p in parts)])
    blurred = np.concatenate([np.zeros(0, np.float32), *(p[1] for p in parts)])
    top = float(np.percentile(out, 99.9)) if recipe.background.enabled and len(out) else 0.0
    scale = (lambda v: np.clip(v / np.float32(top), 0, 1)) if top > 0 else (lambda v: v)
    step = recipe.threshold
    source = scale(blurred if step.method == "otsu_gaussian" else out)
    source = 1.0 - source if step.invert else source
    value = 0.0
    if step.method == "triangle" and len(source) and np.ptp(source) > 1e-6:
        value = float(threshold_triangle(source, nbins=256))
    elif step.method in ("otsu", "otsu_gaussian") or (step.method.startswith("adaptive") and step.floor > 0):
        otsu = _otsu(source)
        value = 0.0 if otsu is None else otsu * (step.floor if step.method.startswith("adaptive") else 1.0)
        if otsu is None and not step.method.startswith("adaptive"):
            value = float(source.max()) if len(source) else 1.0  # flat: nothing stands out
    return replace(partial, top=top, threshold=value)


def _recipe_foreground(recipe: Recipe, levels: PipelineLevels) -> float:
    """The normalised level a window's maximum must exceed for the recipe to find anything in it.

    Denoising averages and background subtraction only removes, so the thresholded image is at most
    the window's maximum (over ``top``); its mask needs a pixel above the threshold (or floor). No
    such bound holds for dark objects (invert) or an adaptive threshold without a floor: never skip."""
    step = recipe.threshold
    if step.invert or (step.method.startswith("adaptive") and step.floor <= 0):
        return -np.inf
    value = step.value if step.method == "manual" else levels.threshold
    return value * (levels.top if recipe.background.enabled and levels.top > 0 else 1.0)

