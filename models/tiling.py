"""Tiled inference for images larger than a model should see at once, for every model.

The image is cut into overlapping tiles. The middle of each overlap is the border between two
tiles' *cores*; the cores partition the image. An object is kept from the tile whose core holds
its box centre, so an object cut by one tile's edge is taken whole from its neighbour, provided
it is smaller than half the overlap in radius (the default overlap, 128 px, fits nuclei up to
~60 px across several times over).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from core.data.images import CellImage
from core.data.instances import Instances, boxes_from_labels, compact_labels, labels_from_boxes
from models.registry import Setting

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
TILING_SETTINGS = (
    Setting("tile", "Tile size (px)", DEFAULT_TILE, "Larger images run in overlapping tiles of this size, merged "
            "across the seams.", kind="choice", options=(512, 768, 1024, 1536, 2048)),
    Setting("overlap", "Tile overlap (px)", DEFAULT_OVERLAP, "Objects up to about half this across are never cut "
            "by a seam.", kind="choice", options=(32, 64, 128, 192, 256)),
)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: as few tiles as keep every overlap >= ``overlap``, evenly spread."""
    if tile <= overlap:
        raise ValueError(f"tile size ({tile}) must be larger than the overlap ({overlap})")
    if length <= tile:
        return [0]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    return [int(round(s)) for s in np.linspace(0, length - tile, n)]


def core_bounds(starts: list[int], tile: int, length: int) -> list[int]:
    """Borders between tile cores: the middle of each overlap; ``len(starts) + 1`` values."""
    inner = [(nxt + prev + tile) // 2 for prev, nxt in itertools.pairwise(starts)]
    return [0, *inner, length]


def n_tiles(shape: tuple[int, ...], tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> int:
    return len(tile_starts(shape[0], tile, overlap)) * len(tile_starts(shape[1], tile, overlap))


def predict_tiled(model: Any, image: CellImage, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                  progress: Callable[[int, int], None] | None = None, **params: Any) -> Instances:
    """``model.predict`` tile by tile, objects merged across the seams into one :class:`Instances`."""
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    ycore, xcore = core_bounds(ys, tile, h), core_bounds(xs, tile, w)
    labels = np.zeros((h, w), np.int32)
    boxes: list[np.ndarray] = []
    scores: list[float] = []
    box_only, device, names, touching = False, getattr(model, "device", "cpu"), ("cell",), 0
    tile_notes: dict[str, None] = {}  # the models' own notes, each once (a U-Net resizing every tile alike)
    total = len(ys) * len(xs)
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            sub = image.with_(pixels=image.pixels[y0 : y0 + tile, x0 : x0 + tile], gt=None)
            found = model.predict(sub, **params)
            box_only, device, names = found.box_only, found.device, found.class_names
            tile_notes.update(dict.fromkeys(found.notes))
            th, tw = sub.shape[:2]
            for k, (bx0, by0, bx1, by1) in enumerate(found.boxes):
                cx, cy = x0 + (bx0 + bx1) / 2, y0 + (by0 + by1) / 2
                if not (xcore[ix] <= cx < xcore[ix + 1] and ycore[iy] <= cy < ycore[iy + 1]):
                    continue  # its centre is in a neighbour's core: taken from there
                inner_edge = ((bx0 <= 0 and ix > 0) or (by0 <= 0 and iy > 0)
                              or (bx1 >= tw and ix < len(xs) - 1) or (by1 >= th and iy < len(ys) - 1))
                touching += bool(inner_edge)
                scores.append(float(found.scores[k]))
                boxes.append(np.array([bx0 + x0, by0 + y0, bx1 + x0, by1 + y0], np.float32))
                if not box_only:
                    r0, c0 = max(int(by0), 0), max(int(bx0), 0)
                    r1, c1 = min(int(np.ceil(by1)) + 1, th), min(int(np.ceil(bx1)) + 1, tw)
                    mask = found.labels[r0:r1, c0:c1] == k + 1
                    target = labels[y0 + r0 : y0 + r1, x0 + c0 : x0 + c1]
                    target[mask & (target == 0)] = len(boxes)  # never paint over a kept neighbour
            if progress:
                progress(iy * len(xs) + ix + 1, total)
    box_arr = np.array(boxes, np.float32).reshape(-1, 4)
    score_arr = np.array(scores, np.float32)
    if box_only:
        labels = labels_from_boxes(box_arr, (h, w), score_arr)
    else:  # renumber 1..N (an object may vanish under its neighbours) and recompute its box
        labels, score_arr = compact_labels(labels, score_arr)
        box_arr = boxes_from_labels(labels)
    notes = [f"tiled: {total} tiles of {tile} px with {overlap} px overlap", *tile_notes]
    if touching:
        notes.append(f"{touching} objects touch a tile edge: larger than the overlap allows, they may be cut")
    result = Instances(labels, box_arr, score_arr, names, getattr(model, "name", "model"), device,
                       time.perf_counter() - t0, box_only=box_only, notes=tuple(notes))
    return replace(result, tiles=total)
