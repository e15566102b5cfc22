"""Training pairs exported to the YOLO segmentation format (what ultralytics trains YOLO-seg on).

Layout under the output folder::

    images/train/<name>.png   labels/train/<name>.txt   (and the same under val/)
    data.yaml                 path, train, val, names: {0: cell}

Each label line is ``0 x1 y1 x2 y2 ...``: class 0 and one object's outer contour, coordinates
divided by the image's width and height. A vertex is a boundary pixel's centre, ``(x + 0.5) / w``,
so ultralytics' own rasterisation (``cv2.fillPoly`` on the coordinates times the size, truncated
to integers) gives back that pixel: :func:`polygon_mask` does exactly that, and the round trip
is tested.

Images are cut into square tiles of ``tile`` px (smaller images are padded to it with their
background level), because ultralytics resizes every training image so that its long side is
``imgsz``: with tiles of exactly ``imgsz`` the nuclei keep the size they have when the adapter
segments a whole image at its native resolution. Pixels are the nucleus plane as 8-bit grey,
``(plane * 255).astype(uint8)``, as :class:`models.yolo.YoloModel` feeds it.

numpy and OpenCV only: no ultralytics import here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.training.data import TrainingPair, pad_to

CLASS_NAMES = ("cell",)
MIN_AREA = 4  # px: smaller fragments (a nucleus cut by a tile edge) have no useful polygon


@dataclass(frozen=True)
class YoloDataset:
    """Where an export went and what is in it."""

    root: Path
    data_yaml: Path
    tile: int
    images: dict[str, int]  # tiles written per subset: {"train": n, "val": m}
    objects: dict[str, int]  # polygons written per subset
    dropped: int  # objects with no usable polygon (under MIN_AREA px, or a contour of under 3 points)


def tile_origins(length: int, tile: int) -> list[int]:
    """Start positions of windows of ``tile`` covering ``length``, evenly overlapping, first at 0
    and last flush with the end (one window at 0 when ``length <= tile``)."""
    if length <= tile:
        return [0]
    n = -(-length // tile)  # ceil
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def object_polygons(labels: np.ndarray, min_area: int = MIN_AREA) -> tuple[list[np.ndarray], int]:
    """One (K, 2) float32 polygon in normalised (x, y) per object of an (H, W) label image, and how
    many objects were left out. An object in several pieces keeps its largest piece's contour."""
    h, w = labels.shape
    polygons: list[np.ndarray] = []
    dropped = 0
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    for obj, area in zip(ids, counts, strict=True):
        if area < min_area:
            dropped += 1
            continue
        ys, xs = np.nonzero(labels == obj)
        y0, x0 = ys.min(), xs.min()
        crop = (labels[y0:ys.max() + 1, x0:xs.max() + 1] == obj).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)[:, 0, :] if contours else np.zeros((0, 2), np.int32)
        if len(contour) < 3:  # a line of pixels: no area to draw
            dropped += 1
            continue
        points = (contour + (x0, y0) + 0.5) / np.array([w, h], np.float64)
        polygons.append(points.astype(np.float32))
    return polygons, dropped


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) boolean mask a normalised polygon rasterises to, as ultralytics draws it."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    points = (np.asarray(polygon, np.float64) * (w, h)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def label_lines(labels: np.ndarray, min_area: int = MIN_AREA) -> tuple[list[str], int]:
    """The label file's lines for one (H, W) label image, and how many objects were left out."""
    polygons, dropped = object_polygons(labels, min_area)
    return [" ".join(["0", *(f"{v:.6f}" for v in poly.ravel())]) for poly in polygons], dropped


def _gray8(plane: np.ndarray) -> np.ndarray:
    return (np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)  # truncating, as YoloModel.predict does


def export_yolo_dataset(train: Sequence[TrainingPair], val: Sequence[TrainingPair], out: str | Path, *,
                        tile: int = 256) -> YoloDataset:
    """Write ``train`` and ``val`` (each image's first plane, the nucleus) under ``out`` as
    ``tile`` px tiles with polygon labels, and a ``data.yaml`` naming them; ``out`` is emptied of
    a previous export's images and labels first."""
    if not train or not val:
        raise ValueError(f"a YOLO dataset needs images to train on and to validate on; got {len(train)} and {len(val)}")
    if tile < 32 or tile % 32:
        raise ValueError(f"the YOLO tile must be a multiple of 32 (the network's stride), at least 32; got {tile}")
    root = Path(out).expanduser().resolve()
    counts: dict[str, int] = {}
    objects: dict[str, int] = {}
    dropped = 0
    for subset, pairs in (("train", train), ("val", val)):
        image_dir, label_dir = root / "images" / subset, root / "labels" / subset
        for folder in (image_dir, label_dir):
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                if old.suffix in {".png", ".txt"}:
                    old.unlink()
        counts[subset] = objects[subset] = 0
        for index, pair in enumerate(pairs):
            image, labels = pad_to(pair.image[:, :, :1], tile, tile, pair.labels)
            h, w = labels.shape
            for y in tile_origins(h, tile):
                for x in tile_origins(w, tile):
                    lines, lost = label_lines(labels[y:y + tile, x:x + tile])
                    stem = f"{index:04d}_{_safe(pair.name)}_y{y}_x{x}"
                    if not cv2.imwrite(str(image_dir / f"{stem}.png"), _gray8(image[y:y + tile, x:x + tile, 0])):
                        raise OSError(f"could not write {image_dir / stem}.png")
                    (label_dir / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
                    counts[subset] += 1
                    objects[subset] += len(lines)
                    dropped += lost
    data_yaml = root / "data.yaml"
    # JSON strings are valid YAML scalars: paths with spaces or colons stay intact.
    data_yaml.write_text(f"path: {json.dumps(str(root))}\ntrain: images/train\nval: images/val\n"
                         f"nc: {len(CLASS_NAMES)}\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES)))
    return YoloDataset(root, data_yaml, tile, counts, objects, dropped)


def _safe(name: str) -> str:
    """An image name as a file stem: ultralytics pairs images and labels by stem."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
