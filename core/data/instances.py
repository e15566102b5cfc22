"""The one result type every segmenter returns (plain data: a label image, boxes, scores, timing), and
the conversions between masks, boxes and label images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Instances:
    """Cells found in one image.

    ``labels`` is an (H, W) int32 label image (0 = background, 1..N = cells; for box-only
    detectors the boxes are filled). ``boxes`` are (N, 4) x0, y0, x1, y1 in pixels, row i
    belonging to label i + 1.
    """

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    model: str
    device: str
    runtime_s: float
    box_only: bool = False
    notes: tuple[str, ...] = field(default=())
    tiles: int = 1  # > 1: the image was processed in overlapping tiles (models.tiling)
    peak_memory_mb: float | None = None  # growth of process RSS (CPU) or CUDA allocation during the run

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.labels.ndim != 2:
            raise ValueError(f"labels must be (H, W), got {self.labels.shape}")
        if self.boxes.shape != (n, 4) or len(self.scores) != n:
            raise ValueError("boxes must be (N, 4) and scores (N,)")

    @property
    def count(self) -> int:
        return len(self.boxes)


def instances_from_labels(labels: np.ndarray, model: str, *, device: str = "cpu", runtime_s: float = 0.0,
                          notes: tuple[str, ...] = ()) -> Instances:
    """A label image (1..N) from a segmenter without scores (the classical pipeline) as Instances."""
    boxes = boxes_from_labels(labels)
    return Instances(labels, boxes, np.ones(len(boxes), np.float32), ("cell",), model, device, runtime_s, notes=notes)


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Bounding boxes (x0, y0, x1, y1), row i for label i + 1; labels must be 1..N."""
    from core.cells.measure import bounding_boxes

    return bounding_boxes(labels)[1]


def labels_from_boxes(boxes: np.ndarray, shape: tuple[int, int], scores: np.ndarray | None = None) -> np.ndarray:
    """Fill boxes into a label image; where boxes overlap the higher-scoring one wins."""
    labels = np.zeros(shape, np.int32)
    order = np.argsort(scores) if scores is not None else np.arange(len(boxes))
    h, w = shape
    for i in order:  # ascending: the best box is painted last
        x0, y0, x1, y1 = np.round(boxes[i]).astype(int)
        labels[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = i + 1
    return labels


def compact_labels(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber a label image 1..N in label order, dropping ids that no longer appear (objects
    hidden under others); ``scores[i]`` belongs to label ``i + 1`` before and after."""
    present = np.unique(labels[labels > 0])
    lut = np.zeros(max(int(labels.max(initial=0)), len(scores)) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1)
    kept = np.asarray(scores, np.float32)[present - 1] if len(present) else np.zeros(0, np.float32)
    return lut[labels], kept


def labels_from_masks(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, H, W) boolean masks -> label image, boxes and scores (row i = label i + 1).

    Where masks overlap the more confident one wins; masks left with no pixel are dropped.
    Labels are numbered from the most confident object down.
    """
    scores = np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind="stable")
    labels = np.zeros(masks.shape[1:], np.int32)
    for rank in range(len(order) - 1, -1, -1):  # least confident first: the best mask is painted last
        labels[masks[order[rank]]] = rank + 1
    labels, kept = compact_labels(labels, scores[order])
    return labels, boxes_from_labels(labels), kept


def split_concave(labels: np.ndarray, min_solidity: float = 0.9, *, h: float = 1.0, min_part: int = 20) -> np.ndarray:
    """``labels`` with each object less convex than ``min_solidity`` (its area over its convex
    hull's) cut along its waist, when that leaves parts each more convex than the whole.

    Two touching round nuclei drawn as one object have a waist, so the distance to the object's
    edge has a maximum in each: seeds are those maxima standing ``h`` pixels above the ridge
    between them (an h-maxima transform, scale-free), grown back by a watershed of the distance.
    A single nucleus, however elongated, has one such maximum and is left alone; so is a cut that
    would leave a part under ``min_part`` pixels. 0 turns it off. New parts get new ids after the
    largest; the others keep theirs.
    """
    import cv2
    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if min_solidity <= 0 or not labels.any():
        return labels
    out = labels.copy()
    next_id = int(labels.max()) + 1
    for region in regionprops(labels):
        if region.area < 2 * min_part or region.solidity >= min_solidity:
            continue
        mask = region.image
        distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        n, seeds = cv2.connectedComponents((h_maxima(distance, h) & mask).astype(np.uint8), connectivity=8)
        if n - 1 < 2:
            continue
        parts = watershed(-distance, seeds, mask=mask)
        pieces = regionprops(parts)
        if min(p.area for p in pieces) < min_part or min(p.solidity for p in pieces) <= region.solidity:
            continue
        window = out[region.slice]
        for piece in pieces[1:]:  # the first part keeps the object's id
            window[parts == piece.label] = next_id
            next_id += 1
    return out
