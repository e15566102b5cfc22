"""The classical pipeline: OpenCV steps in a fixed order, from image to cell instances, each step
run with its parameters from a :class:`core.segmentation.recipe.Recipe`:

channel -> rotate -> normalize -> denoise -> background -> threshold -> canny ->
morphology -> watershed -> filters
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.cache import BoundedCache
from core.data.images import ChannelInfo
from core.segmentation.levels import (
    PipelineLevels,
    background_removed,
    check_blockwise,
    normalize_fixed,
    scale_by_top,
)
from core.segmentation.recipe import (
    DEFAULT_RECIPE,
    STEP_ORDER,
    BackgroundStep,
    CannyStep,
    DenoiseStep,
    FilterStep,
    MorphologyStep,
    NormalizeStep,
    Recipe,
    RotateStep,
    ThresholdStep,
    WatershedStep,
)

_CV_KERNELS = {"ellipse": cv2.MORPH_ELLIPSE, "rect": cv2.MORPH_RECT, "cross": cv2.MORPH_CROSS}


# ---------------------------------------------------------------------------------------
# The steps. Each takes and returns plain arrays; intensities after `normalize` are [0, 1].


def select_plane(pixels: np.ndarray, channels: Sequence[ChannelInfo], source: str) -> tuple[np.ndarray, str]:
    """One float32 plane from (H, W, C) pixels; falls back to channel 0 when a role is missing."""
    if source == "mean":
        return pixels.astype(np.float32).mean(axis=2), "mean of all channels"
    if source == "max":
        return pixels.max(axis=2).astype(np.float32), "maximum of all channels"
    if source.startswith("index:"):
        i = int(source[6:])
        if i >= pixels.shape[2]:
            raise ValueError(f"channel index {i} out of range: the image has {pixels.shape[2]} channels")
        return pixels[:, :, i].astype(np.float32), f"channel {i}"
    idx = next((i for i, c in enumerate(channels) if c.role == source), None)
    if idx is None:
        return pixels[:, :, 0].astype(np.float32), f"no {source} channel: used channel 0 ({channels[0].name})"
    return pixels[:, :, idx].astype(np.float32), f"{source} channel ({channels[idx].name})"


def rotation_matrix(shape: tuple[int, int], step: RotateStep) -> np.ndarray:
    h, w = shape[:2]
    center = (step.center_x * (w - 1), step.center_y * (h - 1))
    return cv2.getRotationMatrix2D(center, step.angle, step.scale)


# A rotated or scaled image is drawn on a canvas that holds all of it (no corner is cut off) unless
# that canvas would exceed both this many times the image's area and MAX_CANVAS_PIXELS (a large zoom
# of a large image: every stage's array would be that big): then it keeps the image's size, and the
# part of the image outside it is not segmented (and the notes say how much).
MAX_CANVAS_GROWTH = 4.0
MAX_CANVAS_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class Geometry:
    """Where the recipe's rotate step puts the image: ``matrix`` maps the image's (x, y) to the
    canvas the pipeline works on (rotation, scale and flips in one affine map), ``size`` is that
    canvas's (width, height). The pipeline's cells are mapped back through it, so labels, counts,
    measurements and ground-truth scores are always in the image's own frame."""

    matrix: np.ndarray  # 2 x 3
    size: tuple[int, int]  # canvas (width, height)
    shape: tuple[int, int]  # the image's (height, width)
    kept: float  # share of the image's pixels that lie on the canvas (1.0: nothing lost)
    step: RotateStep
    full_size: tuple[int, int]  # the canvas that would hold the whole image (= size unless that is too large)

    @property
    def changes_shape(self) -> bool:
        return self.size != (self.shape[1], self.shape[0])

    def forward(self, image: np.ndarray, *, labels: bool = False, fill: float = 0.0) -> np.ndarray:
        """``image`` (H, W) or (H, W, 3) on the canvas; outside the image: ``fill`` (labels: 0)."""
        flags = cv2.INTER_NEAREST if labels else cv2.INTER_LINEAR
        src = image.astype(np.float32) if labels else image
        out = cv2.warpAffine(src, self.matrix, self.size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0 if labels else fill)
        return out.astype(image.dtype) if labels else out

    def back(self, labels: np.ndarray) -> np.ndarray:
        """Canvas labels in the image's frame (nearest neighbour), renumbered 1..N in order; an
        object too small to cover a pixel's centre there is dropped."""
        h, w = self.shape
        out = cv2.warpAffine(labels.astype(np.float32), self.matrix, (w, h),
                             flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0).astype(np.int32)
        ids = np.unique(out)
        lut = np.zeros(int(ids[-1]) + 1, np.int32)
        lut[ids[ids > 0]] = np.arange(1, int((ids > 0).sum()) + 1, dtype=np.int32)
        return lut[out]

    @property
    def what(self) -> str:
        """What the step does, in words: "rotated 30°, flipped left-right"."""
        s = self.step
        parts = [f"rotated {s.angle:g}°" if s.angle % 360 else "", f"scaled {s.scale:g}x" if s.scale != 1 else "",
                 "flipped left-right" if s.flip_horizontal else "", "flipped top-bottom" if s.flip_vertical else ""]
        return ", ".join(p for p in parts if p)

    def describe(self) -> str:
        """One line for the notes: what was done, on which canvas, and what (if anything) is lost."""
        what = self.what
        w, h = self.size
        w0, h0 = self.full_size
        if self.kept >= 0.999:
            where = f"on a {w} x {h} canvas that holds the whole image"
        else:
            where = (f"on a {w} x {h} canvas: {1 - self.kept:.0%} of the image lies outside it and is not "
                     f"segmented (a canvas holding all of it would be {w0} x {h0} px, too large)")
        return (f"geometry: the image was {what} for processing {where}; the cells are mapped "
                "back to the image's own frame (counts, measurements and ground-truth scores refer to the image "
                "as it is)")


def image_geometry(shape: tuple[int, ...], step: RotateStep) -> Geometry | None:
    """The canvas the rotate step puts an image of ``shape`` on; None when the step changes nothing."""
    if not step.enabled or (step.angle % 360 == 0 and step.scale == 1 and not step.flip_horizontal
                            and not step.flip_vertical):
        return None
    h, w = shape[:2]
    m = np.vstack([rotation_matrix((h, w), step), [0.0, 0.0, 1.0]])
    # The image's outer pixel edges, in pixel-centre coordinates.
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]]).T
    xs, ys = (m @ corners)[:2]
    cw, ch = full = max(1, int(round(xs.max() - xs.min()))), max(1, int(round(ys.max() - ys.min())))
    if cw * ch <= max(MAX_CANVAS_GROWTH * w * h, MAX_CANVAS_PIXELS):
        m[:2, 2] -= (xs.min() + 0.5, ys.min() + 0.5)  # the whole image on the canvas
    else:
        cw, ch = w, h  # a large zoom keeps the image's size, about the chosen centre
    if step.flip_horizontal:
        m = np.array([[-1.0, 0, cw - 1], [0, 1, 0], [0, 0, 1]]) @ m
    if step.flip_vertical:
        m = np.array([[1.0, 0, 0], [0, -1, ch - 1], [0, 0, 1]]) @ m
    # How much of the image lands on the canvas (pixel centres on a coarse grid).
    gy, gx = np.mgrid[0:h:max(1, h // 256), 0:w:max(1, w // 256)]
    px, py = (m @ np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)]))[:2]
    inside = (px > -0.5) & (px < cw - 0.5) & (py > -0.5) & (py < ch - 0.5)
    return Geometry(m[:2].astype(np.float64), (cw, ch), (h, w), float(inside.mean()), step, full)


def transform_geometry(image: np.ndarray, step: RotateStep, *, labels: bool = False, fill: float = 0.0) -> np.ndarray:
    """``image`` (H, W) or (H, W, 3) as the pipeline sees it after the rotate step: rotated and
    scaled about the chosen centre, then flipped, on a canvas that holds the whole image
    (:func:`image_geometry`); the input itself when the step changes nothing."""
    geometry = image_geometry(image.shape, step)
    return image if geometry is None else np.ascontiguousarray(geometry.forward(image, labels=labels, fill=fill))


def normalize(plane: np.ndarray, step: NormalizeStep, levels: PipelineLevels | None = None) -> np.ndarray:
    """Percentile clip to [0, 1] (off: min to max), then optional CLAHE (computed on 16 bits).
    With image-wide ``levels``: their low and high instead of this plane's."""
    from core.data.images import normalize_channel

    if levels is not None:
        out = normalize_fixed(plane, levels)
    elif step.enabled:
        out = normalize_channel(plane, step.clip_low, step.clip_high)
    else:
        lo, hi = float(plane.min()), float(plane.max())
        out = (plane - np.float32(lo)) * np.float32(1.0 / (hi - lo)) if hi > lo else np.zeros_like(plane)
    if step.enabled and step.clahe:
        tiles = max(1, min(step.clahe_tiles, min(plane.shape) // 8 or 1))
        clahe = cv2.createCLAHE(clipLimit=step.clahe_clip_limit, tileGridSize=(tiles, tiles))
        out = clahe.apply((out * 65535).astype(np.uint16)).astype(np.float32) / 65535
    return out


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def denoise(img: np.ndarray, step: DenoiseStep) -> np.ndarray:
    if not step.enabled:
        return img
    if step.method == "gaussian":
        return cv2.GaussianBlur(img, (0, 0), step.sigma)
    if step.method == "median":
        if step.ksize <= 5:  # OpenCV's median keeps float32 only for 3 and 5
            return cv2.medianBlur(img, step.ksize)
        return cv2.medianBlur(_to_u8(img), step.ksize).astype(np.float32) / 255
    if step.method == "bilateral":
        return cv2.bilateralFilter(img, step.bilateral_d, step.bilateral_sigma_color, step.bilateral_d)
    out = cv2.fastNlMeansDenoising(_to_u8(img), None, h=step.nlmeans_h * 255, templateWindowSize=7, searchWindowSize=21)
    return out.astype(np.float32) / 255


def subtract_background(img: np.ndarray, step: BackgroundStep, cell_diameter: float = 20.0,
                        levels: PipelineLevels | None = None) -> np.ndarray:
    """Remove slowly varying background, then rescale so the brightest 0.1% map to 1. With
    image-wide ``levels``: on the whole image's grid, scaled by their ``top``."""
    if not step.enabled:
        return img
    if levels is not None:
        return scale_by_top(background_removed(img, step, cell_diameter, levels.origin), levels.top)
    radius = step.radius or max(3, round(1.5 * cell_diameter))
    if step.method == "gaussian":
        background = cv2.GaussianBlur(img, (0, 0), radius)
    else:  # white top-hat = image - opening; the opening runs on a downscaled copy when large
        factor = max(1.0, radius / 12)
        size = (max(1, round(img.shape[1] / factor)), max(1, round(img.shape[0] / factor)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if factor > 1 else img
        r = max(1, round(radius / factor))
        opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        background = cv2.resize(opened, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR) if factor > 1 else opened
        background = np.minimum(background, img)
    out = np.clip(img - background, 0, None)
    top = float(np.percentile(out[:: max(1, out.shape[0] // 512), :: max(1, out.shape[1] // 512)], 99.9))
    return np.clip(out / top, 0, 1) if top > 0 else out


def adaptive_block_size(shape: tuple[int, ...], step: ThresholdStep, cell_diameter: float) -> int:
    """The adaptive threshold's odd neighbourhood size: the step's, or a few cells across; below 3
    the image is too small for a local threshold."""
    block = step.block_size or int(4 * cell_diameter) // 2 * 2 + 1
    return min(max(block, 15), (min(shape[:2]) // 2) * 2 - 1)


def threshold_floor(source: np.ndarray, step: ThresholdStep) -> float:
    """The adaptive threshold's floor in [0, 1] units (``floor`` x Otsu); 0 when off or the image is flat."""
    from skimage.filters import threshold_otsu

    if step.floor <= 0 or float(source.max()) - float(source.min()) <= 1e-6:
        return 0.0
    return float(step.floor * threshold_otsu(source, nbins=256))


def adaptive_local_mean(source: np.ndarray, method: str, block: int) -> np.ndarray:
    """The 8-bit local mean that ``cv2.adaptiveThreshold`` compares each pixel of the 8-bit
    ``source`` with: box or Gaussian window of ``block`` px, edges replicated, rounded as OpenCV does."""
    border = cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED
    if method == "adaptive_mean":
        return cv2.boxFilter(source, -1, (block, block), normalize=True, borderType=border)
    mean = cv2.GaussianBlur(source.astype(np.float32), (block, block), 0, borderType=border)
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class AdaptiveReference:
    """What an adaptive threshold compares pixels with. It does not depend on the offset, so the
    pipeline keeps it while the offset slider moves (the Gaussian window costs ~15 ms at 1024 px)."""

    source: np.ndarray  # the 8-bit image being thresholded (inverted if the step says so)
    local_mean: np.ndarray  # its 8-bit local mean
    floor: float  # threshold_floor, [0, 1] units; 0 = off


def adaptive_reference(img: np.ndarray, step: ThresholdStep, cell_diameter: float,
                       levels: PipelineLevels | None = None) -> AdaptiveReference | None:
    """The reference for an adaptive ``step`` on ``img``; None when the image is too small for one.
    With image-wide ``levels``: the window sized from the whole image, their floor."""
    block = adaptive_block_size(levels.shape if levels is not None else img.shape, step, cell_diameter)
    if block < 3:
        return None
    source = 1.0 - img if step.invert else img
    u8 = _to_u8(source)
    floor = (levels.threshold if step.floor > 0 else 0.0) if levels is not None else threshold_floor(source, step)
    return AdaptiveReference(u8, adaptive_local_mean(u8, step.method, block), floor)


def threshold(img: np.ndarray, step: ThresholdStep, cell_diameter: float = 20.0,
              reference: AdaptiveReference | None = None,
              levels: PipelineLevels | None = None) -> tuple[np.ndarray, float | None]:
    """Foreground mask and the global threshold used (None for adaptive methods). ``reference``:
    the adaptive methods' :func:`adaptive_reference`, when the caller has it already. With
    image-wide ``levels``: their global threshold (or floor)."""
    from skimage.filters import threshold_otsu, threshold_triangle

    source = 1.0 - img if step.invert else img
    value: float | None
    if step.method == "manual":
        value = step.value
    elif step.method in ("otsu", "otsu_gaussian", "triangle"):
        base = cv2.GaussianBlur(source, (0, 0), step.blur_sigma) if step.method == "otsu_gaussian" else source
        if levels is not None:
            return base > levels.threshold, levels.threshold
        if float(base.max()) - float(base.min()) < 1e-6:
            return np.zeros(img.shape, bool), float(base.max())  # flat image: nothing stands out
        value = float((threshold_otsu if step.method != "triangle" else threshold_triangle)(base, nbins=256))
        return base > value, value
    else:
        ref = reference or adaptive_reference(img, step, cell_diameter, levels)
        if ref is None:
            return np.zeros(img.shape, bool), None
        # cv2.adaptiveThreshold's rule: pixel - mean > -ceil(offset in grey levels)
        mask = ref.source.astype(np.int16) - ref.local_mean > -math.ceil(step.offset * 255)
        if ref.floor:
            mask &= source > ref.floor
        return mask, None
    return source > value, value


def canny_edges(img: np.ndarray, step: CannyStep) -> np.ndarray | None:
    if not step.enabled:
        return None
    # OpenCV's Canny thresholds are gradient magnitudes of the 8-bit image; the Sobel kernel
    # grows with the aperture, so scale by its gain to keep the sliders meaningful.
    gain = {3: 4, 5: 48, 7: 640}[step.aperture] * 255
    return cv2.Canny(_to_u8(img), step.low * gain, step.high * gain, apertureSize=step.aperture,
                     L2gradient=step.l2_gradient) > 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border (OpenCV flood fill: fast)."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return mask | (flood[1:-1, 1:-1] == 0)


def morphology(mask: np.ndarray, step: MorphologyStep) -> np.ndarray:
    out = mask
    if step.operation != "none":
        kernel = cv2.getStructuringElement(_CV_KERNELS[step.shape], (step.ksize, step.ksize))
        op = {"open": cv2.MORPH_OPEN, "close": cv2.MORPH_CLOSE, "erode": cv2.MORPH_ERODE, "dilate": cv2.MORPH_DILATE}
        out = cv2.morphologyEx(mask.astype(np.uint8), op[step.operation], kernel, iterations=step.iterations) > 0
    if step.fill_holes:
        out = fill_holes(out)
    return out


def typical_cell_area(mask: np.ndarray) -> float:
    """Area of a single cell, estimated from the mask's connected pieces.

    Clumps of touching cells are single pieces too, so a low quantile of piece areas stands
    for one cell; specks under 10 pixels are ignored.
    """
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    areas = areas[areas >= 10]
    return float(np.percentile(areas, 35)) if len(areas) else 0.0


def estimate_cell_diameter(img: np.ndarray) -> float:
    """Typical cell diameter in pixels from a quick Otsu mask; sets the scale of 'auto' parameters."""
    from skimage.filters import threshold_otsu

    if float(img.max()) - float(img.min()) < 1e-6:
        return 20.0
    mask = img > threshold_otsu(img, nbins=256)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    area = typical_cell_area(mask)
    return float(np.clip(2 * np.sqrt(area / np.pi), 4, 400)) if area else 20.0


def watershed_seeds(dist: np.ndarray, pieces: np.ndarray, min_distance: int) -> np.ndarray:
    """One marker per local maximum of ``dist`` (no higher value within ``min_distance`` px,
    Chebyshev); touching maxima of equal height form one marker; every piece of ``pieces`` with
    no maximum of its own (a neighbour's was higher) gets one at its highest point.

    The same maxima as ``skimage.feature.peak_local_max`` but found with one grey dilation
    (~2 ms at 1024 px instead of ~40 ms); this is what keeps the split slider fast.
    """
    from scipy import ndimage as ndi

    size = 2 * min_distance + 1
    peaks = (dist >= cv2.dilate(dist, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))) & (dist > 0)
    _, markers = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    n_pieces = int(pieces.max())
    seeded = np.zeros(n_pieces + 1, bool)
    seeded[pieces[markers > 0]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if len(unseeded):
        top = markers.max()
        for i, (y, x) in enumerate(ndi.maximum_position(dist, pieces, unseeded), start=1):
            markers[y, x] = top + i
    return markers


def split_touching(mask: np.ndarray, step: WatershedStep, cell_area: float) -> tuple[np.ndarray, int]:
    """Instances from a mask: watershed on the distance transform, or connected components.
    Labels are unique but need not be consecutive; :func:`filter_instances` numbers them 1..N."""
    if not mask.any():
        return np.zeros(mask.shape, np.int32), 0
    _, pieces, boxes, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if not step.enabled:
        return pieces, 0
    distance = step.seed_distance or max(2, round(0.5 * np.sqrt(max(cell_area, 1.0) / np.pi)))
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    if step.smoothing > 0:
        dist = cv2.GaussianBlur(dist, (0, 0), step.smoothing)
    markers = watershed_seeds(dist, pieces, distance)
    return flood_pieces(dist, markers, pieces, boxes), distance


def flood_pieces(dist: np.ndarray, markers: np.ndarray, pieces: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Watershed of ``-dist`` from ``markers`` inside each piece of ``pieces`` (``boxes``: each
    piece's x, y, w, h, as ``cv2.connectedComponentsWithStats`` gives them, row 0 background).

    Pieces do not touch, so each is flooded on its own crop, with the same result as one
    watershed over the whole mask (tested), and a piece holding a single marker is one cell as
    it is: ~3 ms instead of ~10 ms at 1024 px. Labels are unique, not consecutive.
    """
    from skimage.segmentation import watershed

    seeds_per_piece = np.bincount(pieces[markers > 0], minlength=len(boxes))
    labels = pieces.copy()
    next_label = len(boxes)
    for piece in np.flatnonzero(seeds_per_piece > 1):
        x, y, w, h = boxes[piece, :4]
        box = np.s_[y:y + h, x:x + w]
        inside = pieces[box] == piece
        flooded = watershed(-dist[box], np.where(inside, markers[box], 0), mask=inside)
        # Every marker's region gets a label after all the pieces' labels; unreached pixels 0.
        ids = np.unique(flooded[inside])
        ids = ids[ids > 0]
        lut = np.zeros(int(ids[-1]) + 1, np.int32)
        lut[ids] = np.arange(next_label, next_label + len(ids), dtype=np.int32)
        labels[box][inside] = lut[flooded[inside]]
        next_label += len(ids)
    return labels


def filter_instances(labels: np.ndarray, step: FilterStep, cell_area: float,
                     edges: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> tuple[np.ndarray, int]:
    """Drop objects outside the size range or touching the border (``edges``: which of the top,
    bottom, left and right sides are the image's border; a block's inner sides are not); relabel 1..N."""
    min_area = step.min_area if step.min_area >= 0 else max(5, round(0.2 * cell_area))
    if labels.max() == 0:
        return labels, min_area
    areas = np.bincount(labels.ravel())
    drop = areas < min_area
    if step.max_area:
        drop |= areas > step.max_area
    if step.remove_border:
        sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
        border = np.unique(np.concatenate([side for side, edge in zip(sides, edges, strict=True) if edge] or [[0]]))
        drop[border] = True
    drop[0] = True
    lut = np.zeros(len(areas), np.int32)  # old label -> new label, 0 for dropped ones
    keep = ~drop
    lut[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return np.take(lut, labels), min_area  # take: ~1 ms faster than lut[labels] at 1024 px


# ---------------------------------------------------------------------------------------
# Running the pipeline


@dataclass
class PipelineResult:
    """What the pipeline made, stage by stage, for views, measurements and the Compare page."""

    normalized: np.ndarray  # selected channel after geometry (on its canvas), [0, 1]
    processed: np.ndarray  # after background subtraction: what is thresholded, [0, 1]
    threshold: float | None
    mask: np.ndarray
    edges: np.ndarray | None
    labels: np.ndarray  # int32 instances, 0 = background, in the image's own frame (whatever the geometry)
    notes: list[str]
    cell_diameter: float = 20.0  # estimated typical cell diameter (px) that set the 'auto' parameters
    geometry: Geometry | None = None  # the rotate step's canvas: ``normalized`` to ``edges`` lie on it

    @property
    def n_cells(self) -> int:
        return int(self.labels.max())


def run_pipeline(
    pixels: np.ndarray,
    channels: Sequence[ChannelInfo],
    recipe: Recipe = DEFAULT_RECIPE,
    *,
    image_hash: str | None = None,
    cache: BoundedCache | None = None,
    levels: PipelineLevels | None = None,
) -> PipelineResult:
    """Run every step of ``recipe`` on (H, W, C) pixels. ``levels``: the whole image's statistics
    (:mod:`core.segmentation.levels`) instead of these pixels' own, for a block of a large image
    at ``levels.origin`` or for the whole image segmented as its blocks are; None: today's pipeline."""
    if levels is not None:
        check_blockwise(recipe)
        image_hash = None  # the stages' cache keys do not hold the levels

    def stage(name: str, upto: int, compute, also: tuple = ()):
        """``compute()``, cached by image, the steps up to ``upto`` and ``also``."""
        if cache is None or image_hash is None:
            return compute()
        key = (image_hash, name, tuple(getattr(recipe, s) for s in STEP_ORDER[: upto + 1]), also)
        return cache.get_or_compute(key, compute)

    notes: list[str] = []
    plane, how = stage("channel", 0, lambda: select_plane(pixels, channels, recipe.channel.source))
    notes.append(f"input: {how}")
    geometry = image_geometry(plane.shape, recipe.rotate)
    # The canvas around a rotated image is filled with the image's median (its background), not 0:
    # a black margin would pull the normalisation and Otsu's threshold towards it.
    source = plane if geometry is None else stage("rotate", 1, lambda: geometry.forward(plane, fill=float(np.median(plane))))
    normalized = stage("normalize", 2, lambda: normalize(source, recipe.normalize, levels))
    denoised = stage("denoise", 3, lambda: denoise(normalized, recipe.denoise))
    diameter = levels.diameter if levels is not None else stage("scale", 3, lambda: estimate_cell_diameter(denoised))
    processed = stage("background", 4, lambda: subtract_background(denoised, recipe.background, diameter, levels))
    step = recipe.threshold
    reference = stage("adaptive_reference", 4, lambda: adaptive_reference(processed, step, diameter, levels),
                      also=(step.method, step.block_size, step.invert, step.floor)) if step.method.startswith("adaptive") else None
    mask, value = stage("threshold", 5, lambda: threshold(processed, step, diameter, reference, levels))
    edges = stage("canny", 6, lambda: canny_edges(denoised, recipe.canny))
    if edges is not None and recipe.canny.cut_mask:
        mask = mask & ~cv2.dilate(edges.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    mask = stage("morphology", 7, lambda: morphology(mask, recipe.morphology))
    cell_area = levels.cell_area if levels is not None else stage("cell_area", 7, lambda: typical_cell_area(mask))
    labels, distance = stage("watershed", 8, lambda: split_touching(mask, recipe.watershed, cell_area))
    if geometry is not None:  # back to the image's frame before the size and border filters, which are in its pixels
        canvas_labels = labels
        labels = stage("back", 8, lambda: geometry.back(canvas_labels))
        cell_area /= recipe.rotate.scale ** 2
    sides = levels.image_edges(labels.shape) if levels is not None else (True, True, True, True)
    labels, min_area = stage("filters", 9, lambda: filter_instances(labels, recipe.filters, cell_area, sides))
    scaled = " in the scaled image" if geometry is not None and recipe.rotate.scale != 1 else ""
    notes.append(f"typical cell diameter about {diameter:.0f} px{scaled} (sets the 'auto' parameters)")
    if recipe.watershed.enabled and distance:
        notes.append(f"watershed seed distance {distance} px" + (" (auto)" if not recipe.watershed.seed_distance else ""))
    notes.append(f"minimum area {min_area} px" + (" (auto)" if recipe.filters.min_area < 0 else ""))
    if labels.max() == 0 and recipe.filters.max_area and recipe.filters.max_area < min_area:
        notes.append(f"no cells found: the maximum area ({recipe.filters.max_area} px) is below the minimum area "
                     f"({min_area} px), so the size filter removes every cell; raise the maximum (0 = off)")
    elif labels.max() == 0:
        notes.append(
            "no cells found: the image may be empty or flat, or the threshold excludes everything; "
            "try another threshold method or channel"
        )
    elif mask.mean() > 0.9:
        notes.append("over 90% of the image is foreground: the threshold is probably too low (or invert it)")
    if geometry is not None:
        notes.insert(1, geometry.describe())
    return PipelineResult(normalized, processed, value, mask, edges, labels, notes, diameter, geometry)


def compare_thresholds(img: np.ndarray, blur_sigma: float = 2.0) -> list[tuple[str, np.ndarray, float, np.ndarray]]:
    """The OpenCV tutorial's comparison: (name, input, threshold, mask) for a global threshold
    at mid-grey, Otsu, and Otsu after Gaussian filtering."""
    from skimage.filters import threshold_otsu

    blurred = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    rows = []
    for name, source, value in (
        ("Global (v = 0.5)", img, 0.5),
        ("Otsu", img, None),
        ("Gaussian blur + Otsu", blurred, None),
    ):
        if value is None:
            value = float(threshold_otsu(source, nbins=256)) if float(source.max()) > float(source.min()) else 0.5
        rows.append((name, source, float(value), source > value))
    return rows
