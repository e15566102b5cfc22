"""Image-wide levels: the statistics the classical pipeline otherwise takes from the image it is
given, fixed so that a large image cut into blocks is segmented exactly as it would be whole.

:func:`core.segmentation.preprocess.run_pipeline` normalises by the image's percentiles, sets its
'auto' parameters from the typical cell diameter and area, scales the background-subtracted image
by its 99.9th percentile and floors the adaptive threshold at a fraction of its Otsu threshold.
Each block of a large image has other statistics, so blocks would not add up to the whole. Given
:class:`PipelineLevels` (computed once over the whole image, :mod:`workflows.block_levels`), the
pipeline uses them instead, and every step that depends on where a pixel lies works in the whole
image's coordinates (``origin``): the top-hat's coarse grid is anchored to the image's corner, the
adaptive window is sized from the image's shape, and only cells touching the image's own border are
removed. The rest of each step is local, so a block whose window holds a margin wider than the
steps' reach (:func:`workflows.block_levels.recipe_reach`) gives, in its core, the whole image's result pixel for pixel.

The per-block statistics that the levels are pooled from are here too (plain functions of a
window's pixels), so that an executor can compute them where the pixels are read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from core.segmentation.recipe import BackgroundStep, NormalizeStep, Recipe

# The top-hat's opening runs on a grid of k x k cells, k = radius / COARSE_RADIUS rounded (the
# whole-image pipeline's cv2.resize by radius / 12, made an integer anchored to the image's corner):
# an opening of radius 23 px took 80 ms on a 736 px window at full resolution, 16 ms on 2 x 2 cells.
COARSE_RADIUS = 12


@dataclass(frozen=True)
class PipelineLevels:
    """What the classical pipeline takes from the whole image, fixed (see the module doc)."""

    low: float  # raw value of the segmented plane mapped to 0 by the normalize step
    high: float  # ... and to 1
    diameter: float  # typical cell diameter (px): the 'auto' parameters
    top: float  # the background-subtracted image is divided by this (its 99.9th percentile); 0 = not scaled
    threshold: float  # otsu/triangle: the global threshold; adaptive: its floor (0 = off); manual: unused
    cell_area: float  # typical cell area (px): watershed seed distance and minimum area
    shape: tuple[int, int]  # the whole image's (height, width)
    origin: tuple[int, int] = (0, 0)  # where the pixels given to the pipeline start in the whole image

    def at(self, y0: int, x0: int) -> PipelineLevels:
        """The same levels for pixels starting at (y0, x0) of the image (a block's window)."""
        return replace(self, origin=(int(y0), int(x0)))

    def image_edges(self, shape: tuple[int, ...]) -> tuple[bool, bool, bool, bool]:
        """Which sides (top, bottom, left, right) of pixels of ``shape`` at ``origin`` are the image's border."""
        (y0, x0), (h, w) = self.origin, shape[:2]
        return y0 == 0, y0 + h >= self.shape[0], x0 == 0, x0 + w >= self.shape[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_fixed(plane: np.ndarray, levels: PipelineLevels) -> np.ndarray:
    """``plane`` with ``levels.low`` .. ``levels.high`` mapped to [0, 1] float32 (clipped)."""
    lo, hi = levels.low, levels.high if levels.high > levels.low else levels.low + 1.0
    out = (plane.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _grid_opening(img: np.ndarray, radius: int, origin: tuple[int, int]) -> np.ndarray:
    """The top-hat's background: a grey opening of ``radius`` px, run on k x k cell means of the
    whole image's grid (cells anchored at its corner), bilinearly brought back: the same numbers for
    a pixel wherever a window around it starts (far enough from the window's edges)."""
    k = max(1, int(radius / COARSE_RADIUS + 0.5))
    r = max(1, round(radius / k))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    if k == 1:
        return cv2.morphologyEx(img, cv2.MORPH_OPEN, kernel)
    h, w = img.shape
    py, px = origin[0] % k, origin[1] % k  # to the grid's cell edges before and after
    padded = np.pad(img, ((py, (-(py + h)) % k), (px, (-(px + w)) % k)), mode="edge")
    small = np.zeros((padded.shape[0] // k, padded.shape[1] // k), np.float32)
    for i in range(k):  # cell means summed in one fixed order: bit-identical wherever the window starts
        for j in range(k):
            small += padded[i::k, j::k]
    small *= np.float32(1.0 / (k * k))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, kernel)
    return _upsample(_upsample(opened, k, axis=0), k, axis=1)[py : py + h, px : px + w]


def _upsample(small: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Linear interpolation by an integer ``k`` along ``axis`` (cell centres as in cv2.resize), edges
    held. Each weight depends only on a pixel's place in its cell, so it is the same in any window."""
    n = small.shape[axis]
    index = np.arange(n * k)
    t = ((index % k) + 0.5) / k - 0.5  # offset from its cell's centre, in cells: (-0.5, 0.5)
    i0 = index // k - (t < 0)
    frac = np.where(t < 0, t + 1, t).astype(np.float32)
    i0c, i1c = np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1)
    shape = [1, 1]
    shape[axis] = -1
    f = frac.reshape(shape)
    return np.take(small, i0c, axis=axis) * (np.float32(1) - f) + np.take(small, i1c, axis=axis) * f


def background_removed(img: np.ndarray, step: BackgroundStep, diameter: float, origin: tuple[int, int]) -> np.ndarray:
    """The background step's image minus its background (not yet scaled), in whole-image coordinates."""
    if not step.enabled:
        return img
    radius = step.radius or max(3, round(1.5 * diameter))
    if step.method == "gaussian":
        background = cv2.GaussianBlur(img, (0, 0), radius)
    else:
        background = np.minimum(_grid_opening(img, radius, origin), img)
    return np.clip(img - background, 0, None)


def scale_by_top(out: np.ndarray, top: float) -> np.ndarray:
    return np.clip(out / np.float32(top), 0, 1) if top > 0 else out


def check_blockwise(recipe: Recipe) -> None:
    """ValueError unless ``recipe`` can run in blocks (its steps all local, given the levels)."""
    g = recipe.rotate
    if g.enabled and (g.angle % 360 or g.scale != 1 or g.flip_horizontal or g.flip_vertical):
        raise ValueError("the recipe's rotate step turns the whole image and cannot run in blocks: turn it off "
                         "(rotate.enabled false) to segment a large image in blocks")
    if recipe.normalize.enabled and recipe.normalize.clahe:
        raise ValueError("the recipe's CLAHE evens contrast over a grid of tiles of the whole image and cannot run "
                         "in blocks: turn it off (normalize.clahe false) to segment a large image in blocks")


# --- per-block statistics, pooled into levels by workflows.block_levels ----------------------------


def grid_values(values: np.ndarray, core: tuple[int, int, int, int], origin: tuple[int, int],
                stride: tuple[int, int]) -> np.ndarray:
    """``values`` (a window starting at ``origin``) at the pixels of ``core`` (y0, y1, x0, x1, image
    coordinates) whose coordinates are multiples of ``stride``: the cores partition the image, so the
    blocks' samples together are the whole image's strided sample."""
    y0, y1, x0, x1 = core
    sy, sx = stride
    first_y, first_x = -(-y0 // sy) * sy, -(-x0 // sx) * sx
    return values[first_y - origin[0] : y1 - origin[0] : sy, first_x - origin[1] : x1 - origin[1] : sx].ravel()


def owned_piece_areas(mask: np.ndarray, core: tuple[int, int, int, int], origin: tuple[int, int]) -> np.ndarray:
    """Areas of the 8-connected pieces of ``mask`` (a window at ``origin``) whose box centre lies
    in ``core``, specks under 10 px left out (as :func:`core.segmentation.preprocess.typical_cell_area`)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    cy, cx = origin[0] + y + h / 2, origin[1] + x + w / 2
    y0, y1, x0, x1 = core
    keep = (area >= 10) & (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    return area[keep].astype(np.int64)


def normalize_step_levels(sample: np.ndarray, lowest: float, highest: float, step: NormalizeStep) -> tuple[float, float]:
    """(low, high) of the normalize step from a strided sample of the plane (as core.data.images.normalize_channel)."""
    if not step.enabled:
        return lowest, highest
    lo, hi = (float(v) for v in np.percentile(sample, (step.clip_low, step.clip_high)))
    if hi <= lo:
        hi = lo + 1.0 if highest <= lo else highest
    return lo, hi
