"""A saved run's images read back, one at a time: its index, an image's display picture, each
model's label image of it, and a cell's crop. A run saved without images (before runs had them, or
by a caller that passed none) gives None or {} everywhere: never an error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from core.cache import BoundedCache
from core.runs import IMAGE_INDEX, INDEX_COLUMNS, Run

_INDEXES = BoundedCache(max_entries=16)  # a 10,000-image index is ~0.5 MB; read once per saved file


def image_index(run: Run) -> pd.DataFrame | None:
    """One row per saved image (image, batch, condition, height, width, scale, file), or None
    where the run has no images or its index cannot be read."""
    path = run.info.path / IMAGE_INDEX
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None

    def read() -> pd.DataFrame | None:
        try:
            index = pd.read_parquet(path)
        except (OSError, ValueError):
            return None
        return index if set(INDEX_COLUMNS) <= set(index.columns) else None

    return _INDEXES.get_or_compute((str(path), stamp), read)


def _row(run: Run, image_name: str) -> pd.Series | None:
    index = image_index(run)
    if index is None:
        return None
    found = index[index["image"] == image_name]
    return None if found.empty else found.iloc[0]


def run_image(run: Run, image_name: str) -> np.ndarray | None:
    """The display picture of ``image_name`` (uint8 RGB, its longer side at most the saved one),
    or None where the run did not keep it."""
    row = _row(run, image_name)
    if row is None:
        return None
    return _read_png(run.info.path / str(row["file"]))


def _read_png(path: Path) -> np.ndarray | None:
    data = np.fromfile(path, np.uint8) if path.is_file() else None
    if data is None or not len(data):
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run_labels(run: Run, image_name: str) -> dict[str, np.ndarray]:
    """Each model's label image of ``image_name`` at full size, by model (the first analysis that
    kept a model's labels of it); {} where none were kept."""
    found: dict[str, np.ndarray] = {}
    for analysis in run.analyses:
        for image, model in analysis.labels:
            if image == image_name and model not in found:
                try:
                    found[model] = analysis.labels[(image, model)]
                except (OSError, ValueError):  # a TIFF gone or unreadable: that model is left out
                    continue
    return found


def display_scale(run: Run, image_name: str) -> float | None:
    """Display pixels per full-size pixel of ``image_name`` (None without it)."""
    row = _row(run, image_name)
    return None if row is None else float(row["scale"])


def crop_around(rgb: np.ndarray, cy: float, cx: float, side: float, size: int) -> np.ndarray:
    """A ``side``-pixel square of ``rgb`` centred on (``cy``, ``cx``), black beyond its borders,
    returned at ``size`` x ``size``."""
    side_px = max(1, round(side))
    y0, x0 = round(cy - side_px / 2), round(cx - side_px / 2)
    out = np.zeros((side_px, side_px, 3), np.uint8)
    h, w = rgb.shape[:2]
    top, left, bottom, right = max(y0, 0), max(x0, 0), min(y0 + side_px, h), min(x0 + side_px, w)
    if top < bottom and left < right:
        out[top - y0:bottom - y0, left - x0:right - x0] = rgb[top:bottom, left:right]
    if side_px == size:
        return out
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interpolation)


def cell_crop(run: Run, image_name: str, y: float, x: float, size: int = 64) -> np.ndarray | None:
    """The cell at (``y``, ``x``) (its centroid in full-size pixels) as a ``size`` px RGB crop of
    the display picture covering ``size`` full-size pixels around it, black beyond the image's
    borders; None where the run did not keep that image."""
    rgb, scale = run_image(run, image_name), display_scale(run, image_name)
    if rgb is None or scale is None:
        return None
    return crop_around(rgb, y * scale, x * scale, size * scale, size)


def cell_crops(run: Run, cells: pd.DataFrame, size: int = 64) -> list[np.ndarray | None]:
    """:func:`cell_crop` of each row of ``cells`` (columns ``image``, ``centroid_y``,
    ``centroid_x``), in row order, each image's picture read once."""
    crops: list[np.ndarray | None] = [None] * len(cells)
    positions = np.arange(len(cells))
    for image, where in pd.Series(positions).groupby(cells["image"].to_numpy(), sort=False):
        rgb, scale = run_image(run, str(image)), display_scale(run, str(image))
        if rgb is None or scale is None:
            continue
        for i in where.to_numpy():
            y, x = float(cells["centroid_y"].iat[i]), float(cells["centroid_x"].iat[i])
            crops[i] = crop_around(rgb, y * scale, x * scale, size * scale, size)
    return crops
