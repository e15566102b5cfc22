"""Editing an instance label image (2-D int32, 0 = background, 1..N = cells): the Train page's
curation tool. Delete, add by polygon or brush, erase, merge, split by a line, renumber; and an
undo/redo history that stores each edit as a compressed diff.

Every operation takes a label image, never changes it, and returns an :class:`Edit`: a new int32
label image plus a description for the history list. New objects get ``max + 1``. An edit the
user cannot make (clicking the background, a polygon with no area, a line that cuts nothing)
raises :class:`LabelEditError`, a ``ValueError`` with a message meant for the user, so a page
catches that one type and shows it.

Coordinates: points are ``(x, y)`` in image pixels as a browser canvas gives them, pixel
``labels[i, j]`` covering ``[j, j + 1) x [i, i + 1)``; a pixel is inside a shape when its centre
``(j + 0.5, i + 0.5)`` is. ``delete_at`` takes ``(y, x)`` like array indexing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_STEPS = 50


class LabelEditError(ValueError):
    """An edit that cannot be made; the message says why, in words for the user."""


@dataclass(frozen=True, eq=False)
class Edit:
    """The result of one operation: the new label image, what was done, and the ids it made or changed."""

    labels: np.ndarray  # (H, W) int32, a new array
    description: str  # e.g. "deleted cell 12", "added cell 31 (polygon, 245 px)"
    ids: tuple[int, ...] = ()  # cells created or changed (after the edit); for a delete, the id removed


def delete(labels: np.ndarray, label_id: int) -> Edit:
    """Remove one cell (its pixels become background)."""
    labels = _as_labels(labels)
    label_id = _existing_id(labels, label_id)
    out = labels.copy()
    out[out == label_id] = 0
    return Edit(out, f"deleted cell {label_id}", (label_id,))


def delete_at(labels: np.ndarray, y: float, x: float) -> Edit:
    """Remove the cell under pixel (y, x), a click; clicking the background raises LabelEditError."""
    labels = _as_labels(labels)
    i, j = int(np.floor(y)), int(np.floor(x))
    if not (0 <= i < labels.shape[0] and 0 <= j < labels.shape[1]):
        raise LabelEditError(f"({x:g}, {y:g}) is outside the image")
    label_id = int(labels[i, j])
    if label_id == 0:
        raise LabelEditError(f"no cell at ({x:g}, {y:g}): click inside a cell to delete it")
    return delete(labels, label_id)


def add_polygon(labels: np.ndarray, points_xy: Sequence[Sequence[float]] | np.ndarray, *,
                overwrite: bool = False) -> Edit:
    """A new cell from a polygon (x, y vertices). Parts outside the image are clipped; by default
    only background is painted, existing cells keep their pixels (``overwrite`` paints over them)."""
    from skimage.draw import polygon

    labels = _as_labels(labels)
    pts = _points(points_xy, "polygon")
    if len(pts) < 3:
        raise LabelEditError(f"a polygon needs at least 3 points, got {len(pts)}")
    x, y = pts[:, 0], pts[:, 1]
    if abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) < 1e-9:
        raise LabelEditError("the polygon has no area (its points lie on one line)")
    # skimage treats integer coordinates as pixel centres; canvas coordinates put them at +0.5
    rr, cc = polygon(y - 0.5, x - 0.5, shape=labels.shape)
    if len(rr) == 0:
        raise LabelEditError("the polygon covers no pixel of the image")
    new_id = _next_id(labels)
    out = labels.copy()
    paint = np.ones(len(rr), bool) if overwrite else labels[rr, cc] == 0
    n = int(paint.sum())
    if n == 0:
        raise LabelEditError("the polygon lies on existing cells only; nothing to add")
    out[rr[paint], cc[paint]] = new_id
    return Edit(out, f"added cell {new_id} (polygon, {n} px)", (new_id,))


def add_brush(labels: np.ndarray, stroke_xy: Sequence[Sequence[float]] | np.ndarray, radius: float, *,
              label_id: int | None = None, overwrite: bool = False) -> Edit:
    """Paint with a round brush of ``radius`` pixels along a polyline (x, y): a new cell, or more of
    cell ``label_id``. Only background is painted unless ``overwrite``."""
    labels = _as_labels(labels)
    if label_id is not None:
        label_id = _existing_id(labels, label_id)
    (y0, x0, y1, x1), mask = _stroke_mask(labels.shape, stroke_xy, radius)
    window = labels[y0:y1, x0:x1]
    target = _next_id(labels) if label_id is None else label_id
    paint = mask & (window != target) if overwrite else mask & (window == 0)
    n = int(paint.sum())
    if n == 0:
        raise LabelEditError("the brush stroke covers no background; nothing to paint")
    out = labels.copy()
    out[y0:y1, x0:x1][paint] = target
    what = f"added cell {target} (brush, {n} px)" if label_id is None else f"extended cell {target} (brush, +{n} px)"
    return Edit(out, what, (target,))


def erase_brush(labels: np.ndarray, stroke_xy: Sequence[Sequence[float]] | np.ndarray, radius: float,
                label_id: int | None = None) -> Edit:
    """Erase with a round brush along a polyline (x, y): every cell under it, or only ``label_id``.
    A cell erased through into pieces becomes one cell per piece (the largest keeps the id, the
    others get new ids): one id over two blobs would be a wrong training example."""
    labels = _as_labels(labels)
    if label_id is not None:
        label_id = _existing_id(labels, label_id)
    (y0, x0, y1, x1), mask = _stroke_mask(labels.shape, stroke_xy, radius)
    window = labels[y0:y1, x0:x1]
    erase = mask & (window > 0) if label_id is None else mask & (window == label_id)
    n = int(erase.sum())
    if n == 0:
        raise LabelEditError("no cell under the eraser" if label_id is None else f"the eraser misses cell {label_id}")
    hit = tuple(int(i) for i in np.unique(window[erase]))
    out = labels.copy()
    out[y0:y1, x0:x1][erase] = 0
    pieces = _separate_pieces(out, hit)
    text = f"erased {n} px from {_cells(hit)}" + (f"; what was left came apart, into {_cells(pieces)} as well"
                                                  if pieces else "")
    return Edit(out, text, hit + pieces)


def _separate_pieces(labels: np.ndarray, ids: Iterable[int]) -> tuple[int, ...]:
    """In place: give each extra 8-connected piece of the cells ``ids`` a new id (the largest piece
    keeps the old one); the new ids."""
    from scipy import ndimage as ndi

    new: list[int] = []
    next_id = int(labels.max()) + 1
    for cell in ids:
        where = ndi.find_objects((labels == cell).astype(np.int32))
        if not where or where[0] is None:
            continue
        box = where[0]
        parts, n = ndi.label(labels[box] == cell, structure=np.ones((3, 3), bool))
        if n < 2:
            continue
        sizes = np.bincount(parts.ravel())[1:]
        for part in [p for p in np.argsort(-sizes) + 1][1:]:
            labels[box][parts == part] = next_id
            new.append(next_id)
            next_id += 1
    return tuple(new)


def merge(labels: np.ndarray, ids: Iterable[int]) -> Edit:
    """Two or more cells become one (they need not touch), keeping the smallest id."""
    labels = _as_labels(labels)
    wanted = sorted({_existing_id(labels, i) for i in ids})
    if len(wanted) < 2:
        raise LabelEditError("choose at least two different cells to merge")
    keep = wanted[0]
    out = labels.copy()
    out[np.isin(out, wanted[1:])] = keep
    return Edit(out, f"merged {_cells(wanted)} into cell {keep}", (keep,))


def split_line(labels: np.ndarray, label_id: int, p0_xy: Sequence[float], p1_xy: Sequence[float], *,
               width: int = 1) -> Edit:
    """Cut cell ``label_id`` along the segment p0-p1 (x, y) into its connected parts.

    The largest part keeps the id, the others get ``max + 1``, ``max + 2``...; the pixels under the
    line go to the nearest part, so no pixel is lost. A line that leaves the cell in no more parts
    than before (it misses the cell or stops inside it) raises LabelEditError.
    """
    import cv2
    from scipy import ndimage as ndi

    labels = _as_labels(labels)
    label_id = _existing_id(labels, label_id)
    if int(width) < 1:
        raise LabelEditError(f"the cut width must be at least 1 pixel, got {width}")
    (p0, p1) = _points([p0_xy, p1_xy], "cut line")
    if np.array_equal(p0, p1):
        raise LabelEditError("the cut line has no length: drag across the cell")
    rows, cols = np.nonzero(labels == label_id)
    y0, x0, y1, x1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    cell = labels[y0:y1, x0:x1] == label_id
    cut = np.zeros(cell.shape, np.uint8)
    # A 4-connected line separates 8-connected regions (an 8-connected one would leak diagonally)
    a = (int(np.floor(p0[0])) - int(x0), int(np.floor(p0[1])) - int(y0))
    b = (int(np.floor(p1[0])) - int(x0), int(np.floor(p1[1])) - int(y0))
    cv2.line(cut, a, b, 1, thickness=int(width), lineType=cv2.LINE_4)
    eight = np.ones((3, 3), bool)
    parts, n_parts = ndi.label(cell & (cut == 0), structure=eight)
    n_before = ndi.label(cell, structure=eight)[1]
    if n_parts <= n_before:
        raise LabelEditError(f"the line does not cut cell {label_id} into two parts: draw it right across the cell")
    # nearest part for every pixel of the window, then keep only the cell's own pixels
    nearest = ndi.distance_transform_edt(parts == 0, return_distances=False, return_indices=True)
    parts = np.where(cell, parts[tuple(nearest)], 0)
    sizes = np.bincount(parts.ravel(), minlength=n_parts + 1)[1:]
    order = np.argsort(-sizes, kind="stable") + 1  # part numbers, largest first
    ids = [label_id] + list(range(_next_id(labels), _next_id(labels) + n_parts - 1))
    lut = np.zeros(n_parts + 1, np.int32)
    lut[order] = ids
    out = labels.copy()
    out[y0:y1, x0:x1][cell] = lut[parts[cell]]
    return Edit(out, f"split cell {label_id} into {_cells(sorted(ids))}", tuple(sorted(ids)))


def relabel_sequential(labels: np.ndarray) -> Edit:
    """Renumber the cells 1..N in id order (after deletions), keeping each cell's pixels."""
    from skimage.segmentation import relabel_sequential as renumber

    labels = _as_labels(labels)
    # skimage's Cython loop refuses read-only input (EditHistory.current), so it gets a copy
    out = renumber(labels.copy())[0].astype(np.int32, copy=False)
    n = int(out.max(initial=0))
    return Edit(out, f"renumbered cells 1..{n}", tuple(range(1, n + 1)))


class EditHistory:
    """Undo/redo over a label image as plain data (it can live in a page's session state).

    Each edit is stored as the box of pixels it changed with the before and after values,
    zlib-compressed; the original image is kept compressed too, so the full-size cost is the
    current image alone. At most ``max_steps`` edits are kept; the oldest is dropped first.
    ``current`` is read-only and is replaced, never written, so an array handed out earlier
    (e.g. to a display cache) never changes under its holder.
    """

    def __init__(self, original: np.ndarray, *, max_steps: int = MAX_STEPS) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        current = _as_labels(original).copy()
        current.setflags(write=False)
        self.max_steps = max_steps
        self._shape = current.shape
        self._original = _pack(current)
        self._current = current
        self._done: list[_Step] = []
        self._undone: list[_Step] = []

    @property
    def current(self) -> np.ndarray:
        return self._current

    @property
    def original(self) -> np.ndarray:
        """The label image the history started from (decompressed on each call)."""
        return _unpack(self._original, self._shape)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def n_edits(self) -> int:
        """Edits that can be undone."""
        return len(self._done)

    @property
    def descriptions(self) -> list[str]:
        """What each edit that can be undone did, oldest first."""
        return [s.description for s in self._done]

    @property
    def nbytes(self) -> int:
        """Memory held: the current image, the compressed original and every stored edit."""
        steps = sum(s.nbytes for s in self._done) + sum(s.nbytes for s in self._undone)
        return int(self._current.nbytes) + len(self._original) + steps

    def apply(self, edit: Edit) -> bool:
        """Make ``edit`` (from an operation on ``current``) the current state; False, and nothing
        recorded, when it changes no pixel. Clears the redo list."""
        new = np.asarray(edit.labels)
        if new.shape != self._shape:
            raise ValueError(f"edit is {new.shape}, the history holds {self._shape}")
        changed = self._current != new
        if not changed.any():
            return False
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = (y0, x0, y1, x1)
        step = _Step(box, _pack(self._current[y0:y1, x0:x1]), _pack(new[y0:y1, x0:x1]), edit.description)
        self._current = _frozen(new.astype(np.int32, copy=True))
        self._done.append(step)
        del self._done[: max(0, len(self._done) - self.max_steps)]
        self._undone.clear()
        return True

    def undo(self) -> str:
        """Step back one edit; returns its description."""
        if not self._done:
            raise LabelEditError("nothing to undo")
        step = self._done.pop()
        self._current = self._patched(step, step.before)
        self._undone.append(step)
        return step.description

    def redo(self) -> str:
        """Make the last undone edit again; returns its description."""
        if not self._undone:
            raise LabelEditError("nothing to redo")
        step = self._undone.pop()
        self._current = self._patched(step, step.after)
        self._done.append(step)
        return step.description

    def _patched(self, step: _Step, patch: bytes) -> np.ndarray:
        y0, x0, y1, x1 = step.box
        out = self._current.copy()
        out[y0:y1, x0:x1] = _unpack(patch, (y1 - y0, x1 - x0))
        return _frozen(out)


@dataclass(frozen=True)
class _Step:
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 of the changed pixels
    before: bytes  # zlib-compressed int32 patch
    after: bytes
    description: str

    @property
    def nbytes(self) -> int:
        return len(self.before) + len(self.after)


def _pack(patch: np.ndarray) -> bytes:
    # level 1: label patches are long runs, so the fastest level already shrinks them 50-200x;
    # a 2048 x 2048 image takes ~40 ms on this CPU
    return zlib.compress(np.ascontiguousarray(patch, np.int32).tobytes(), 1)


def _unpack(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), np.int32).reshape(shape).copy()


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise ValueError("labels must be 0 (background) or positive int32 ids")
    return labels.astype(np.int32, copy=False)


def _existing_id(labels: np.ndarray, label_id: int) -> int:
    label_id = int(label_id)
    if label_id <= 0 or not (labels == label_id).any():
        raise LabelEditError(f"there is no cell {label_id}")
    return label_id


def _next_id(labels: np.ndarray) -> int:
    return int(labels.max(initial=0)) + 1


def _cells(ids: Sequence[int]) -> str:
    return f"cell {ids[0]}" if len(ids) == 1 else "cells " + ", ".join(str(i) for i in ids)


def _points(points_xy: Sequence[Sequence[float]] | np.ndarray, what: str) -> np.ndarray:
    pts = np.asarray(points_xy, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise LabelEditError(f"the {what} needs (x, y) points, got an array of shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise LabelEditError(f"the {what} has a point that is not a number")
    return pts


def _stroke_mask(shape: tuple[int, int], stroke_xy: Sequence[Sequence[float]] | np.ndarray,
                 radius: float) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Pixels whose centre is within ``radius`` of the polyline, as (y0, x0, y1, x1) and a mask of that box."""
    pts = _points(stroke_xy, "brush stroke")
    if not radius > 0:
        raise LabelEditError(f"the brush radius must be positive, got {radius}")
    h, w = shape
    lo, hi = pts.min(axis=0) - radius, pts.max(axis=0) + radius
    x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    x1, y1 = min(int(np.ceil(hi[0])) + 1, w), min(int(np.ceil(hi[1])) + 1, h)
    if x0 >= x1 or y0 >= y1:
        raise LabelEditError("the brush stroke is outside the image")
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    segments = zip(pts, pts[1:], strict=False) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        # each segment is tested only inside its own box: a long stroke costs its length, not its box
        slo, shi = np.minimum(a, b) - radius, np.maximum(a, b) + radius
        sx0, sy0 = max(int(np.floor(slo[0])), x0), max(int(np.floor(slo[1])), y0)
        sx1, sy1 = min(int(np.ceil(shi[0])) + 1, x1), min(int(np.ceil(shi[1])) + 1, y1)
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        px = np.arange(sx0, sx1)[None, :] + 0.5 - a[0]
        py = np.arange(sy0, sy1)[:, None] + 0.5 - a[1]
        d = b - a
        length2 = float(d @ d)
        t = np.clip((px * d[0] + py * d[1]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2
        mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] |= dist2 <= radius * radius
    return (y0, x0, y1, x1), mask
