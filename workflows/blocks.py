"""Large images in blocks: an image larger than a block is cut into a regular grid of block *cores*
(which partition it); each block is segmented on its *window*, the core with ``overlap`` px of margin
on every side, read from the image on its own (``read_region``: never the whole image in memory). An
object belongs to the block whose core holds its box centre, so an object across a face is taken
whole from one block and never twice, provided it is smaller than the margin; blocks holding only
background are not segmented at all. The blocks' objects are painted into one label image and their
measurements (taken in each block, positions in image coordinates) form one cell table.

Any registered segmenter runs this way (:class:`ModelSegmenter`). The classical recipe gets the whole
image's levels (:mod:`core.segmentation.levels`, streamed by :mod:`workflows.block_levels`), so that
its blocks are the whole image run with the same levels, cell for cell. A model's ``predict`` sees
each window as an image of its own: the families normalise their input per image (the nucleus
plane's percentiles, :func:`core.data.images.nucleus_plane`), so per window here, and cells in a
window of mostly faint or mostly bright nuclei may differ a little from a whole-image run.

This is the unit of work the batch job (:mod:`workflows.batch`) gives Dask for a large image, as
cellpose's ``distributed_segmentation`` does, without its failure of cells split or doubled at seams.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.data.images import UNASSIGNED, CellImage, ChannelInfo
from core.data.instances import Instances
from core.schema import Field
from core.segmentation.levels import PipelineLevels, check_blockwise
from core.segmentation.recipe import Recipe
from workflows.block_levels import ReadRegion, image_stats, recipe_reach

BLOCK_SETTINGS = (
    Field("block", "Block size (px)", 2048, "Images larger than this are segmented in blocks of this size, read one "
          "at a time, with their cells merged across the blocks' faces.", kind="int", low=128, high=16384, step=128),
    Field("overlap", "Block overlap (px, 0 = auto)", 0, "Margin each block reads beyond its own area: cells up to "
          "this size are never cut by a face. 0 = at least twice the typical cell diameter, and the recipe's reach.",
          kind="int", low=16, high=4096, step=16, special=(0,)),
)
DEFAULT_DIAMETER = 20.0  # px, when nothing says otherwise (core.segmentation.preprocess.estimate_cell_diameter's)


@dataclass(frozen=True)
class Block:
    """One block: its core (the part it owns) and its read window (core + overlap margin, clipped to the image)."""

    iy: int
    ix: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    window: tuple[int, int, int, int]


def plan_blocks(height: int, width: int, *, block: int, overlap: int) -> list[Block]:
    """Cores: a regular grid of ``block`` px (the last row and column shorter); windows reach
    ``overlap`` px beyond each core side, clipped to the image. Row by row."""
    if height < 1 or width < 1:
        raise ValueError(f"an image of {height} x {width} px has no pixel to segment")
    if block < 1 or overlap < 0:
        raise ValueError(f"block must be at least 1 px and overlap at least 0; got {block} and {overlap}")
    out = []
    for iy, y0 in enumerate(range(0, height, block)):
        for ix, x0 in enumerate(range(0, width, block)):
            y1, x1 = min(y0 + block, height), min(x0 + block, width)
            window = (max(y0 - overlap, 0), min(y1 + overlap, height), max(x0 - overlap, 0), min(x1 + overlap, width))
            out.append(Block(iy, ix, (y0, y1, x0, x1), window))
    return out


def typical_diameter(*, levels: PipelineLevels | None = None, recipe: Recipe | None = None,
                     scale: Any = None, measured: float = 0.0) -> float:
    """The typical cell diameter (px) the overlap is sized from, the best source first: the image's
    own (``levels``, or ``measured`` by :func:`workflows.block_levels.image_stats`), the largest cell
    the recipe keeps (its maximum area), the nuclei a model was trained on
    (:class:`core.segmentation.object_scale.ObjectScale`), else 20 px."""
    if levels is not None:
        return float(levels.diameter)
    if measured > 0:
        return float(measured)
    if recipe is not None and recipe.filters.max_area:
        return float(2 * np.sqrt(recipe.filters.max_area / np.pi))
    if scale is not None and getattr(scale, "diameter", 0) > 0:
        return float(scale.diameter)
    return DEFAULT_DIAMETER


def default_overlap(diameter: float, recipe: Recipe | None = None) -> int:
    """At least twice the typical diameter; for the recipe also a cell plus the reach of its steps
    (:func:`workflows.block_levels.recipe_reach`), so its blocks equal the whole image. A multiple of 16."""
    need = 2 * diameter
    if recipe is not None:
        need = max(need, diameter + recipe_reach(recipe, diameter))
    return int(16 * np.ceil(need / 16))


@dataclass(frozen=True)
class ImageMeta:
    """What a block's pixels need to be a :class:`CellImage` (the image's name, channels, batch,
    condition), and the whole image's (height, width)."""

    name: str
    channels: tuple[ChannelInfo, ...]
    shape: tuple[int, int]
    batch: str = UNASSIGNED
    condition: str = ""


@dataclass(frozen=True)
class BlockObject:
    """One object a block owns: its box in image coordinates, its mask inside the box, its score."""

    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    mask: np.ndarray  # bool, (y1 - y0, x1 - x0)
    score: float


@dataclass
class BlockResult:
    """What one block gives back: small and picklable. Row i of ``cells`` is ``objects[i]``."""

    block: Block
    skipped: bool
    objects: list[BlockObject] = field(default_factory=list)
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # cell_table's columns, image coordinates
    notes: tuple[str, ...] = ()


Segment = Callable[[CellImage, PipelineLevels | None], Instances | np.ndarray]



@dataclass(frozen=True)
class ModelSegmenter:
    """A registered segmenter with its settings, as a picklable ``segment(image, levels)``: the
    classical recipe gets the image-wide levels, a model runs through :func:`models.runner.run_model`."""

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def recipe(self) -> Recipe | None:
        """The recipe when the model takes image-wide levels (the classical one), else None."""
        from core.segmentation.recipe import DEFAULT_RECIPE
        from models.registry import get_model_info

        return (self.params.get("recipe") or DEFAULT_RECIPE) if "levels" in get_model_info(self.model).inputs else None

    def __call__(self, image: CellImage, levels: PipelineLevels | None) -> Instances:
        from models.runner import run_model
        from workflows.worker_models import worker_model  # one model cache per process

        model = worker_model(self.model, self.device)
        if levels is not None:  # the recipe: its own steps are local; run_model's tiles would not know the levels
            return model.predict(image, **self.params, levels=levels)
        return run_model(model, image, **self.params)


def _owner(labels: np.ndarray, block: Block) -> tuple[np.ndarray, list, np.ndarray]:
    """Labels present, their slices, and whether the block owns each (box centre in its core)."""
    from scipy import ndimage as ndi

    slices = ndi.find_objects(labels)
    ids = np.array([i + 1 for i, s in enumerate(slices) if s is not None], np.int64)
    wy, wx = block.window[0], block.window[2]
    y0, y1, x0, x1 = block.core
    owned = np.array([y0 <= wy + (slices[i - 1][0].start + slices[i - 1][0].stop) / 2 < y1
                      and x0 <= wx + (slices[i - 1][1].start + slices[i - 1][1].stop) / 2 < x1 for i in ids], bool)
    return ids, slices, owned


def _measure(window: CellImage, labels: np.ndarray, owned: np.ndarray, boxes: list, block: Block) -> pd.DataFrame:
    """The owned cells' cell-table rows, positions in image coordinates. Measured on the part of the
    window around them that their surroundings can depend on (a cell's background reaches
    BACKGROUND_REACH ring widths; whoever else is nearer to such a pixel lies within twice that)."""
    from core.cells.cell_set import cell_table
    from core.cells.measure import BACKGROUND_REACH, RING_MIN_WIDTH, RING_WIDTH_OF_RADIUS

    wy0, wy1, wx0, wx1 = block.window
    y0, y1, x0, x1 = block.core
    for by0, by1, bx0, bx1 in boxes:
        y0, y1, x0, x1 = min(y0, by0), max(y1, by1), min(x0, bx0), max(x1, bx1)
    areas = np.bincount(labels.ravel())[owned] if len(owned) else np.zeros(1)
    reach = BACKGROUND_REACH * max(RING_MIN_WIDTH, RING_WIDTH_OF_RADIUS * float(np.sqrt(areas.max() / np.pi)))
    m = int(np.ceil(2 * reach)) + 2
    y0, y1, x0, x1 = max(y0 - m, wy0), min(y1 + m, wy1), max(x0 - m, wx0), min(x1 + m, wx1)
    part = window.with_(pixels=window.pixels[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
    cells = cell_table([(part, labels[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])])
    cells = cells[cells["label"].isin(owned)].reset_index(drop=True)
    for column, shift in (("y", y0), ("x", x0), ("bbox_min_y", y0), ("bbox_max_y", y0),
                          ("bbox_min_x", x0), ("bbox_max_x", x0)):
        cells[column] = cells[column] + shift
    return cells


def segment_block(block: Block, read_region: ReadRegion, image: ImageMeta, segment: Segment,
                  levels: PipelineLevels | None = None) -> BlockResult:
    """Segment one block's window and keep the objects whose box centre its core holds, each with
    its cell-table row (measured in the window, positions in image coordinates)."""
    wy0, wy1, wx0, wx1 = block.window
    pixels = read_region(wy0, wy1, wx0, wx1)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[:2] != (wy1 - wy0, wx1 - wx0):
        raise ValueError(f"{image.name}: read_region{block.window} gave {pixels.shape[:2]} pixels, not "
                         f"{(wy1 - wy0, wx1 - wx0)}: the reader does not match the image's size")
    window = CellImage(image.name, pixels, image.channels, image.batch, image.condition)
    found = segment(window, levels.at(wy0, wx0) if levels is not None else None)
    labels = (found.labels if isinstance(found, Instances) else found).astype(np.int32, copy=False)
    scores = found.scores if isinstance(found, Instances) else np.ones(int(labels.max(initial=0)), np.float32)
    ids, slices, owned = _owner(labels, block)
    h, w = labels.shape
    height, width = image.shape
    inner = (wy0 > 0, wy1 < height, wx0 > 0, wx1 < width)  # the window's sides inside the image
    objects, touching = [], 0
    for i in ids[owned]:
        sy, sx = slices[i - 1]
        box = (wy0 + sy.start, wy0 + sy.stop, wx0 + sx.start, wx0 + sx.stop)
        objects.append(BlockObject(box, labels[sy, sx] == i, float(scores[i - 1])))
        touching += bool((sy.start == 0 and inner[0]) or (sy.stop == h and inner[1])
                         or (sx.start == 0 and inner[2]) or (sx.stop == w and inner[3]))
    cells = _measure(window, labels, ids[owned], [o.box for o in objects], block)
    notes = (f"{touching} objects touch the edge of block ({block.iy}, {block.ix})'s window: larger than the "
             "overlap allows, they may be cut; raise the overlap",) if touching else ()
    return BlockResult(block, False, objects, cells, notes)


def _first_pixel(obj: BlockObject) -> tuple[int, int]:
    """The object's first pixel in raster order, in image coordinates: numbers cells the same
    however the image was cut."""
    flat = int(np.argmax(obj.mask.ravel()))
    return obj.box[0] + flat // obj.mask.shape[1], obj.box[2] + flat % obj.mask.shape[1]


@dataclass(frozen=True)
class Merged:
    """The blocks of one image merged (:func:`merge`)."""

    labels: np.ndarray  # int32, 0 = background, 1..N in raster order of each cell's first pixel
    cells: pd.DataFrame  # one row per label, label order
    duplicates: int  # objects dropped as another block's object seen again (half of either covered)
    trimmed: int  # objects overlapping a kept neighbour a little: painted where it is not


def merge(results: Sequence[BlockResult], height: int, width: int, image: str = "") -> Merged:
    """The blocks' objects in one label image, the most confident first: an object is painted whole
    where no kept neighbour lies; one covering half of a kept neighbour, or covered half by it, is
    the same cell seen twice and dropped."""
    objects = [(obj, r.cells.iloc[[i]]) for r in results if not r.skipped for i, obj in enumerate(r.objects)]
    order = sorted(range(len(objects)), key=lambda k: (-objects[k][0].score, _first_pixel(objects[k][0])))
    labels = np.zeros((height, width), np.int32)
    areas = [0]
    kept, duplicates, trimmed = [], 0, 0
    for k in order:
        obj = objects[k][0]
        y0, y1, x0, x1 = obj.box
        target = labels[y0:y1, x0:x1]
        under = target[obj.mask]
        hit = under[under > 0]
        if len(hit):
            counts = np.bincount(hit)
            other = int(np.argmax(counts))
            if counts[other] >= 0.5 * min(len(under), areas[other]):
                duplicates += 1
                continue
            trimmed += 1
        target[obj.mask & (target == 0)] = len(areas)
        areas.append(int(obj.mask.sum()))
        kept.append(k)
    # Renumber 1..N by each cell's first pixel (its painted id is its rank in confidence).
    firsts = [_first_pixel(objects[k][0]) for k in kept]
    rank = np.argsort(np.array([y * width + x for y, x in firsts], np.int64), kind="stable")
    lut = np.zeros(len(kept) + 1, np.int32)
    lut[rank + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    labels = lut[labels]
    rows = [objects[kept[r]][1] for r in rank]
    cells = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if len(cells):
        cells["label"] = np.arange(1, len(cells) + 1, dtype=np.int32)
        cells["cell_id"] = [f"{image or cells['image'].iloc[0]}:{lab}" for lab in cells["label"]]
    return Merged(labels, cells, duplicates, trimmed)


def merge_blocks(results: Sequence[BlockResult], height: int, width: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The label image (int32, 1..N by each cell's first pixel in raster order) and the cell table
    with labels matching it (see :func:`merge`)."""
    merged = merge(results, height, width)
    return merged.labels, merged.cells


def segment_in_blocks(read_region: ReadRegion, image: ImageMeta, segment: Segment, *, block: int,
                      overlap: int = 0, levels: PipelineLevels | None = None, recipe: Recipe | None = None,
                      executor=None) -> tuple[np.ndarray, pd.DataFrame, tuple[str, ...], int]:
    """Every block of one image through ``executor`` (serial by default): its label image, cell
    table, notes and how many blocks were skipped as background.

    ``recipe``: the classical recipe ``segment`` runs (a :class:`ModelSegmenter`'s own when None),
    whose image-wide levels are streamed unless ``levels`` are given. ``overlap`` 0: from the
    typical cell diameter (:func:`default_overlap`)."""
    from workflows.image_loop import SerialExecutor

    BLOCK_SETTINGS[0].check(block)
    BLOCK_SETTINGS[1].check(overlap)
    executor = executor or SerialExecutor()
    height, width = image.shape
    if recipe is None and isinstance(segment, ModelSegmenter):
        recipe = segment.recipe
    if recipe is not None:
        check_blockwise(recipe)
    used = overlap or default_overlap(levels.diameter if levels is not None else DEFAULT_DIAMETER, recipe)
    stats = image_stats(read_region, height, width, image.channels, recipe,
                        plan_blocks(height, width, block=block, overlap=used), executor=executor,
                        levels=levels if recipe is not None else None)
    levels = stats.levels if recipe is not None else None
    diameter = typical_diameter(levels=levels, measured=stats.diameter, recipe=recipe)
    used = overlap or default_overlap(diameter, recipe)
    blocks = plan_blocks(height, width, block=block, overlap=used)
    skip = {i for i, b in enumerate(blocks) if not stats.holds_foreground(b.window)}
    work = [b for i, b in enumerate(blocks) if i not in skip]
    unit = functools.partial(segment_block, read_region=read_region, image=image, segment=segment, levels=levels)
    results = list(executor.map(unit, work)) + [BlockResult(blocks[i], True) for i in sorted(skip)]
    merged = merge(results, height, width, image.name)
    notes = [f"segmented in {len(blocks)} blocks of {block} px with {used} px overlap (typical cell about "
             f"{diameter:.0f} px across); {len(skip)} held only background and were skipped"]
    if used < default_overlap(diameter, recipe):
        notes.append(f"the overlap ({used} px) is under {default_overlap(diameter, recipe)} px (twice the typical "
                     "cell" + (", or a cell and the recipe's reach" if recipe is not None else "")
                     + "): cells near the blocks' faces may differ from a whole-image run")
    notes += [n for r in results for n in r.notes]
    if recipe is None:
        notes.append("the model normalises each block's window to its own percentiles, as it does a whole image: "
                     "cells may differ a little from a whole-image run")
    if merged.duplicates:
        notes.append(f"{merged.duplicates} objects seen by two blocks were kept once")
    if merged.trimmed:
        notes.append(f"{merged.trimmed} objects overlapped a neighbour across a face: painted where it is not")
    return merged.labels, merged.cells, tuple(notes), len(skip)

