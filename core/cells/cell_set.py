"""Cells of a whole dataset: one table row per cell, crops for embeddings, morphology features.

The Cell map page, the CLI and the feature extractors share these. Crops come in bounded
chunks (never all of a 100,000-cell dataset at once) and in the table's row order, so row ``i``
of the table, of the features and of the map is the same cell.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.cells.measure import CROP_MODES, SURROUNDING_PREFIXES, crop_cells, measure_cells, measure_surroundings
from core.data.images import CellImage, ChannelInfo
from core.text import plural

# Where a cell is in its image: kept in the table, never used as a feature (position is not biology).
POSITION_COLUMNS = ("y", "x", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")
SHAPE_FEATURES = ("area", "perimeter", "eccentricity", "solidity")
# Sizes and summed intensities are log-normal-ish (a few huge cells dominate a z-score otherwise).
LOG_FEATURES_PREFIXES = ("area", "integrated_")

Pairs = Sequence[tuple[CellImage, np.ndarray]]


def _check_pairs(pairs: Pairs) -> None:
    names = [img.name for img, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("image names must be unique: a cell is identified as 'image:label'")
    for img, labels in pairs:
        if labels.shape != img.pixels.shape[:2]:
            raise ValueError(f"{img.name}: labels {labels.shape} do not match the image {img.pixels.shape[:2]}")
    check_one_channel_layout([img for img, _ in pairs])


def check_one_channel_layout(images: Sequence[CellImage]) -> None:
    """ValueError unless every image has the same channels (by name): one map, one classifier."""
    layouts: dict[tuple[str, ...], list[str]] = {}
    for img in images:
        layouts.setdefault(tuple(c.name for c in img.channels), []).append(img.name)
    if len(layouts) > 1:
        said = "; ".join(f"{', '.join(layout)} ({plural(len(names), 'image')}, e.g. {names[0]})"
                         for layout, names in sorted(layouts.items()))
        raise ValueError(f"The images have different channels ({said}); cells of one map need one channel layout. "
                         "Remove the others on the Data page, or name their channels alike.")


def cell_table(pairs: Pairs) -> pd.DataFrame:
    """One row per cell of every ``(image, labels)`` pair, image by image, label order.

    Columns: ``cell_id`` ("image:label"), ``image``, ``image_index`` (position in ``pairs``),
    ``batch``, ``condition``, ``label``, ``y``, ``x`` (centroid), ``bbox_*``, then
    :func:`core.cells.measure.measure_cells`' shape and per-channel intensity columns and
    :func:`core.cells.measure.measure_surroundings`' ring and image-background columns.
    """
    _check_pairs(pairs)
    frames = []
    for index, (img, labels) in enumerate(pairs):
        labels = labels.astype(np.int32, copy=False)
        df = measure_cells(labels, img.pixels, img.channels)
        around = measure_surroundings(labels, img.pixels, img.channels)
        df = pd.concat([df, around.drop(columns="label").set_axis(df.index)], axis=1)
        df = df.rename(columns={"centroid_y": "y", "centroid_x": "x"})
        df.insert(0, "condition", img.condition)
        df.insert(0, "batch", img.batch)
        df.insert(0, "image_index", index)
        df.insert(0, "image", img.name)
        df.insert(0, "cell_id", [f"{img.name}:{int(lab)}" for lab in df["label"]])
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["cell_id", "image", "image_index", "batch", "condition", "label", *POSITION_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    table["label"] = table["label"].astype(np.int32)
    table["image_index"] = table["image_index"].astype(np.int64)
    return table


@dataclass(frozen=True)
class IntensityScaling:
    """Per-channel raw intensities mapped to 0 and 1 in every crop of a dataset."""

    channels: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = (0.5, 99.8)

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.low) == len(self.high):
            raise ValueError("one low and one high value per channel")
        if any(h <= lo for lo, h in zip(self.low, self.high, strict=True)):
            raise ValueError("each channel needs high > low")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, C) raw pixels -> float32 in [0, 1]."""
        if pixels.shape[2] != len(self.channels):
            raise ValueError(f"scaling has {len(self.channels)} channels, pixels have {pixels.shape[2]}")
        low = np.asarray(self.low, np.float32)
        scale = np.float32(1.0) / (np.asarray(self.high, np.float32) - low)
        out = (pixels.astype(np.float32) - low) * scale
        return np.clip(out, 0.0, 1.0, out=out)

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "low": list(self.low), "high": list(self.high),
                "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: dict) -> IntensityScaling:
        return cls(tuple(d["channels"]), tuple(map(float, d["low"])), tuple(map(float, d["high"])),
                   tuple(map(float, d.get("percentiles", (0.5, 99.8)))))  # type: ignore[arg-type]


def dataset_scaling(
    images: Sequence[CellImage], *, percentiles: tuple[float, float] = (0.5, 99.8),
    samples: int = 2_000_000, seed: int = 0,
) -> IntensityScaling:
    """Per-channel percentiles over the pixels of ALL ``images`` together (a random sample).

    Deliberately not per image: scaling each image to its own percentiles would map a dim,
    high-background plate and a bright, clean one to the same range, erasing the exposure and
    background differences between plates that the batch-effect analysis exists to detect. One
    dataset-wide range keeps a brighter plate brighter in every crop.
    """
    if not images:
        raise ValueError("no images to compute an intensity scaling from")
    names = [c.name for c in images[0].channels]
    if any(img.pixels.shape[2] != len(names) for img in images):
        raise ValueError("all images need the same channels to share one intensity scaling")
    rng = np.random.default_rng(seed)
    per_image = max(1, samples // len(images))  # each image weighs the same, whatever its size
    sampled = []
    for img in images:
        flat = img.pixels.reshape(-1, img.pixels.shape[2])
        take = rng.integers(0, len(flat), min(per_image, len(flat)))
        sampled.append(flat[take].astype(np.float32))
    values = np.concatenate(sampled)
    lo, hi = np.percentile(values, percentiles, axis=0)
    low, high = [], []
    for c in range(values.shape[1]):
        bottom, top = float(lo[c]), float(hi[c])
        if top <= bottom:  # a flat channel: keep its level mappable instead of dividing by zero
            top = bottom + 1.0 if values[:, c].max() <= bottom else float(values[:, c].max())
        low.append(bottom)
        high.append(top)
    return IntensityScaling(tuple(names), tuple(low), tuple(high), tuple(map(float, percentiles)))  # type: ignore[arg-type]


def check_crop_settings(size: int, mode: str) -> None:
    """ValueError unless ``size`` and ``mode`` make crops (the command line asks before any work)."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    if size < 4:
        raise ValueError(f"crop size must be at least 4; got {size}")


def _check_crop_args(pairs: Pairs, table: pd.DataFrame, size: int, mode: str, chunk: int) -> None:
    check_crop_settings(size, mode)
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    if len(table) and int(table["image_index"].max()) >= len(pairs):
        raise ValueError("the table refers to more images than were given: build it from the same pairs")


def _crop(scaled: np.ndarray, labels: np.ndarray, ids: np.ndarray, size: int, mode: str,
          mask_background: bool) -> np.ndarray:
    crops = crop_cells(scaled, labels, size, mode=mode, ids=ids)
    images = crops.images
    if mask_background:
        images *= crops.masks[..., None]
    return images


def crop_chunks(
    pairs: Pairs, table: pd.DataFrame, *, size: int = 64, mode: str = "scale",
    mask_background: bool = False, scaling: IntensityScaling, chunk: int = 2048,
) -> Iterator[np.ndarray]:
    """Crops of the table's cells, in row order, as float32 (n, size, size, C) arrays in [0, 1]
    of ``chunk`` cells (the last may be shorter).

    Images are scaled with the dataset-wide ``scaling`` one at a time and cropped with
    :func:`core.cells.measure.crop_cells`, so memory holds one image and one chunk however many cells
    there are (2048 x 64 x 64 x 3 float32 = 100 MB).
    """
    _check_crop_args(pairs, table, size, mode, chunk)
    order = table["image_index"].to_numpy()
    labels = table["label"].to_numpy()
    n_channels = len(scaling.channels)
    if not len(order):
        return
    # Runs of consecutive rows from one image: each image is scaled once per run.
    bounds = np.r_[0, np.flatnonzero(np.diff(order)) + 1, len(order)]
    out, filled = None, 0
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        img, lab = pairs[int(order[start])]
        scaled = scaling.apply(img.pixels)
        lab = lab.astype(np.int32, copy=False)
        pos = start
        while pos < stop:  # an image's cells may straddle chunks
            if out is None:
                out = np.empty((min(chunk, len(order) - pos), size, size, n_channels), np.float32)
            take = min(stop - pos, len(out) - filled)
            out[filled : filled + take] = _crop(scaled, lab, labels[pos : pos + take], size, mode, mask_background)
            filled += take
            pos += take
            if filled == len(out):
                yield out
                out, filled = None, 0


def crops_for(
    pairs: Pairs, table: pd.DataFrame, rows: Sequence[int] | np.ndarray, *, size: int = 64,
    mode: str = "scale", mask_background: bool = False, scaling: IntensityScaling,
) -> np.ndarray:
    """Crops of a few cells (table positions ``rows``, e.g. a lasso selection), in that order;
    the same values :func:`crop_chunks` gives for those rows."""
    _check_crop_args(pairs, table, size, mode, 1)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.zeros((len(rows), size, size, len(scaling.channels)), np.float32)
    if not len(rows):
        return out
    images = table["image_index"].to_numpy()[rows]
    labels = table["label"].to_numpy()[rows]
    for index in np.unique(images):
        img, lab = pairs[int(index)]
        where = np.flatnonzero(images == index)
        out[where] = _crop(scaling.apply(img.pixels), lab.astype(np.int32, copy=False), labels[where], size, mode,
                           mask_background)
    return out


def masks_for(
    pairs: Pairs, table: pd.DataFrame, rows: Sequence[int] | np.ndarray, *, size: int = 64, mode: str = "scale",
) -> np.ndarray:
    """Each cell's own mask (bool (n, size, size)) in the geometry of :func:`crops_for`'s crops of
    the same ``rows``: :func:`core.cells.measure.crop_cells`' masks, so a pixel of a crop and of its mask
    are the same place (for CAM statistics)."""
    _check_crop_args(pairs, table, size, mode, 1)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.zeros((len(rows), size, size), bool)
    images = table["image_index"].to_numpy()[rows]
    labels = table["label"].to_numpy()[rows]
    for index in np.unique(images):
        _, lab = pairs[int(index)]
        where = np.flatnonzero(images == index)
        # The masks depend on the labels alone: a zero-stride blank stands in for the pixels (no copy, no scaling).
        blank = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (*lab.shape, 1))
        out[where] = crop_cells(blank, lab.astype(np.int32, copy=False), size, mode=mode, ids=labels[where]).masks
    return out


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The table's shape, intensity and surroundings columns, in table order; never position or identity."""
    return [c for c in table.columns
            if c in SHAPE_FEATURES or c.startswith(("mean_", "integrated_", *SURROUNDING_PREFIXES))]


# What the morphology features see, in two parts: the batch-effect verdict says which part a
# batch difference lies in (a plate's brighter background is in the second, not in the cells).
CELL_PART = "the cells themselves"
SURROUNDINGS_PART = "their surroundings"
_PART_CONTENTS = {CELL_PART: "shape, intensity", SURROUNDINGS_PART: "a ring around each cell, the image background"}


def feature_parts(names: Sequence[str]) -> dict[str, list[int]]:
    """Column indices of morphology feature ``names`` by what they describe: the cell itself, or
    what surrounds it; parts with no column are left out."""
    around = [j for j, n in enumerate(names) if n.startswith(SURROUNDING_PREFIXES)]
    own = [j for j in range(len(names)) if j not in set(around)]
    return {part: cols for part, cols in ((CELL_PART, own), (SURROUNDINGS_PART, around)) if cols}


def describe_morphology(names: Sequence[str]) -> str:
    """The morphology features in words: "10 morphology features per cell: 6 of the cells
    themselves (shape, intensity), 4 of their surroundings (a ring around each cell, the image
    background)"."""
    parts = feature_parts(names)
    return (f"{len(names)} morphology features per cell: "
            + ", ".join(f"{len(cols)} of {part} ({_PART_CONTENTS[part]})" for part, cols in parts.items()))


def morphology_features(table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Shape, intensity and surroundings features, z-scored per column: (N, F) float32 and the
    column names (4 + 6 per channel: see :func:`feature_columns`).

    Area and integrated intensities are log-transformed first. A constant column (no spread
    across cells) becomes zeros rather than NaN, so the feature set stays the same for one
    channel layout whatever the data; a missing value (a degenerate object, a cell with no ring)
    becomes the column's median.
    """
    names = feature_columns(table)
    X = table[names].to_numpy(np.float64, copy=True).reshape(len(table), len(names))
    for j, name in enumerate(names):
        if name.startswith(LOG_FEATURES_PREFIXES):
            X[:, j] = np.log1p(np.clip(X[:, j], 0, None))
    if len(X):
        # regionprops gives NaN for a few degenerate (1-2 px) objects; the median is neutral.
        bad = ~np.isfinite(X)
        if bad.any():
            # A column with no value at all (no cell has a free pixel around it) becomes 0s below.
            med = np.zeros(X.shape[1])
            seen = ~bad.all(axis=0)
            med[seen] = np.nanmedian(np.where(bad, np.nan, X)[:, seen], axis=0)
            X[bad] = np.take(med, np.nonzero(bad)[1])
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        flat = std <= 1e-9 * np.maximum(1.0, np.abs(mean))
        X = (X - mean) / np.where(flat, 1.0, std)
        X[:, flat] = 0.0
    return X.astype(np.float32), names


@dataclass(frozen=True, eq=False)
class CellSet:
    """Every cell of a dataset with what its crops need: the images and their label images, the
    table (row i = cell i everywhere), the dataset-wide intensity scaling and the crop geometry."""

    pairs: tuple[tuple[CellImage, np.ndarray], ...]
    table: pd.DataFrame
    scaling: IntensityScaling
    size: int = 32
    mode: str = "scale"
    mask_background: bool = False

    def __post_init__(self) -> None:
        check_crop_settings(self.size, self.mode)  # also on dataclasses.replace(cells, mode=...)

    @classmethod
    def build(cls, pairs: Pairs, *, size: int = 32, mode: str = "scale", mask_background: bool = False) -> CellSet:
        pairs = tuple((img, labels) for img, labels in pairs)
        return cls(pairs, cell_table(pairs), dataset_scaling([img for img, _ in pairs]), size, mode, mask_background)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def channels(self) -> tuple[ChannelInfo, ...]:
        return self.pairs[0][0].channels if self.pairs else ()

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def chunks(self, chunk: int = 2048) -> Iterator[np.ndarray]:
        """Every cell's crop, in table order, ``chunk`` at a time (a fresh iterator each call)."""
        return crop_chunks(self.pairs, self.table, size=self.size, mode=self.mode,
                           mask_background=self.mask_background, scaling=self.scaling, chunk=chunk)

    def crops(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The crops of the cells at table positions ``rows`` (a selection on the map)."""
        return crops_for(self.pairs, self.table, rows, size=self.size, mode=self.mode,
                         mask_background=self.mask_background, scaling=self.scaling)

    def masks(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each cell's own mask in its crop, bool (n, size, size): the geometry of :meth:`crops`."""
        return masks_for(self.pairs, self.table, rows, size=self.size, mode=self.mode)


@dataclass(frozen=True, eq=False)
class Embedding:
    """Features of every cell of a :class:`CellSet` (row i = cell i) from one embedder."""

    features: np.ndarray  # (N, D) float32
    names: tuple[str, ...]  # one per column
    model: str
    seconds: float
    extra: dict = field(default_factory=dict)  # e.g. the autoencoder's loss curve and reconstructions
