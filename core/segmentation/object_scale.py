"""Object size: how large a model's training nuclei were, and by how much to resize an image so
that its nuclei match them.

A segmenter trained from scratch learns nuclei of the sizes it saw. The U-Net trained on the
example dataset (nuclei about 20 px across) scored 0.86 on the real DSB image as it is, 0.48 with
that image enlarged 1.6x and 0.15 at 2x: a microscope with another objective or camera gives
other sizes. Resizing the image so its nuclei come out the training size, segmenting, and
resizing the result back (what Cellpose does with its ``diameter``) fixes that.

The size of an image's nuclei is estimated without any model (:func:`core.segmentation.preprocess.estimate_cell_diameter`:
a quick Otsu mask's typical piece), and compared with the same estimate on the training images,
so that the estimator's own bias cancels. It is rough (about ±20 % between fields of one plate),
so images are only resized when the ratio is clearly off (beyond :data:`TOLERANCE`); a diameter
the user knows replaces the estimate and is compared with the training labels' own diameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TOLERANCE = 1.6  # estimated sizes within this factor of the training size are left alone
# The most an image is shrunk or enlarged. Enlarging costs the square in time (4x would turn a
# 1024 px image into 4096 px: minutes on a CPU, for a diameter of 1-5 px that no nucleus has).
LIMITS = (0.25, 2.0)


@dataclass(frozen=True)
class ObjectScale:
    """Training nuclei's size: the labels' median equivalent diameter, and the median of
    :func:`estimated_diameter` over the training images (the yardstick for new images)."""

    diameter: float  # px, from the labels: median of 2 * sqrt(area / pi)
    estimated: float  # px, the label-free estimate on the training images (median over images)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ObjectScale | None:
        """The recorded scale, or None for metadata written before sizes were recorded."""
        try:
            scale = cls(float(data["diameter"]), float(data["estimated"]))
        except (KeyError, TypeError, ValueError):
            return None
        return scale if scale.diameter > 0 and scale.estimated > 0 else None


def estimated_diameter(plane: np.ndarray) -> float:
    """Typical object diameter (px) of one normalised plane, from no model: see the module doc."""
    from core.segmentation.preprocess import estimate_cell_diameter

    return estimate_cell_diameter(np.asarray(plane, np.float32))


def training_scale(planes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> ObjectScale:
    """The :class:`ObjectScale` of training images ((H, W, C) planes, the first plane estimated)
    and their labels (all objects pooled)."""
    pooled = np.concatenate([np.bincount(np.asarray(lab).ravel())[1:] for lab in labels])
    pooled = pooled[pooled > 0]
    diameter = float(2 * np.sqrt(np.median(pooled) / np.pi)) if len(pooled) else 0.0
    estimated = float(np.median([estimated_diameter(p[:, :, 0]) for p in planes])) if len(planes) else 0.0
    return ObjectScale(diameter, estimated)


def resize_factor(scale: ObjectScale | None, plane: np.ndarray, diameter: float = 0.0) -> float:
    """By how much to resize an image (plane: its first normalised plane) so its nuclei match the
    training ones: 1.0 when they already do (within :data:`TOLERANCE`, for an estimate) or when
    the training size is unknown.

    ``diameter`` > 0 is the nuclei's diameter in px as the user knows it, compared with the
    training labels' diameter and always applied; 0 estimates it from ``plane``.
    """
    if scale is None:
        return 1.0
    if diameter > 0:
        factor = scale.diameter / diameter
    else:
        ratio = estimated_diameter(plane) / scale.estimated
        factor = 1.0 if 1 / TOLERANCE <= ratio <= TOLERANCE else 1.0 / ratio
    return float(np.clip(factor, *LIMITS))


def resize_planes(planes: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, C) planes resized by ``factor`` (area averaging to shrink, bilinear to enlarge)."""
    import cv2

    h, w, c = planes.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(planes, np.float32), size, interpolation=method).reshape(size[1], size[0], c)


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, h, w) float maps (class probabilities) resized back to (K, height, width), bilinear."""
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(m, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
                     for m in maps])
