"""The batch job behind ``python -m core run``: every image of a screen segmented by each model,
its cells measured, its labels and display picture kept, written into a run part by part, on Dask
or in this process; then made into a run the Results page opens like any other.

The unit of work is :func:`process_image` (one image, all models), run where Dask puts it: it
reads the image where it lies (:class:`core.io.sources.ImageSource`), loads each model once per
worker process (:func:`worker_model`), writes its own files into the run's folder and returns a
small summary, so no pixels or labels travel back. An image that fails is a summary with its
reason; the others go on. :func:`run_batch` sends the images not done yet, follows them as they
finish (progress, rate, ETA) and, when all are through, writes the run (:mod:`workflows.batch_run`).
"""

from __future__ import annotations

import functools
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.images import CellImage
from core.run_parts import part_path, write_atomic, write_part
from workflows.worker_models import worker_device, worker_model

ANALYSIS = "analyses/00-segmentation"  # the run's one analysis: its tables, files and label images


@dataclass(frozen=True)
class BatchJob:
    """What every image goes through: the models (name -> the settings ``predict`` gets, the classical
    one's recipe among them), the device, the plane of stacks, and the block size above which an
    image is segmented in overlapping blocks. Picklable: Dask sends it to the workers once."""

    folder: str
    models: Mapping[str, Mapping[str, Any]]
    device: str = "cpu"
    plane: int | None = None
    block: int = 2048
    overlap: int = 0  # 0: from the typical cell's diameter (workflows.blocks.default_overlap)

    def settings(self) -> dict[str, Any]:
        """The job's settings as the record keeps them (and as a resumed job must repeat)."""
        from core.analysis import jsonable

        return jsonable({"models": dict(self.models), "device": self.device, "plane": self.plane,
                         "block": self.block, "overlap": self.overlap})


@dataclass(frozen=True)
class BatchItem:
    """One image of the job: its number in the run, its source, and the batch and condition it was given."""

    number: int
    source: Any  # core.io.sources.ImageSource
    batch: str
    condition: str = ""

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True)
class ImageDone:
    """What came back of one image: its cells per model, or (``error`` set) why it failed."""

    number: int
    name: str
    error: str | None = None
    cells: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    worker: int = 0  # the process id of the worker that ran it
    model_loads: int = 0  # models that worker had loaded so far (once each, not once per image)
    peak_mb: float = 0.0  # the worker's peak resident memory so far
    file: str = ""  # for a file that could not even be listed: the file, as the listing named it

    @property
    def ok(self) -> bool:
        return self.error is None


# --- on the worker --------------------------------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def segment(image: CellImage, model: str, settings: Mapping[str, Any], device: str) -> np.ndarray:
    """``model``'s label image of ``image``, with the job's settings for it."""
    from models.runner import run_model

    return run_model(worker_model(model, device), image, **settings).labels


def image_cells(image: CellImage, labels: np.ndarray, number: int, model: str) -> pd.DataFrame:
    """The cells of one image by one model, as every cell table has them (core.cells.cell_set.cell_table),
    numbered by the image's number in the run, with the model's name."""
    from core.cells.cell_set import cell_table

    cells = cell_table([(image, labels)])
    cells["image_index"] = np.int64(number)
    cells.insert(cells.columns.get_loc("label"), "model", model)
    return cells


def write_display(folder: Path, image: CellImage, number: int) -> dict[str, Any]:
    """The image's display picture (the pages' colour merge, as a saved run keeps it), and its index row."""
    from core.figures.display import encode_image, image_rgb, thumbnail
    from core.runs import DISPLAY_SIDE

    shown = thumbnail(image_rgb(image), DISPLAY_SIDE)
    file = f"images/{number:05d}.png"
    write_atomic(folder / file, encode_image(shown, "png"))
    height, width = image.pixels.shape[:2]
    return {"height": height, "width": width, "scale": shown.shape[1] / width, "file": file}


def label_file(model: str, number: int) -> str:
    from core.saved_record import model_folder

    return f"labels/{model_folder(model)}/{number:05d}.tif"


def process_image(item: BatchItem, job: BatchJob) -> ImageDone:
    """The unit: ``item``'s image read, segmented by each of the job's models, measured; its label
    images, display picture, cells part and summary written into the run's folder. An image larger
    than the job's block on either side is read and segmented block by block (:func:`large_image`).
    Any error on this image (unreadable, a model failing on it) comes back as its reason; nothing
    is written for it."""
    t0 = time.perf_counter()
    folder = Path(job.folder)
    try:
        if max(item.source.height, item.source.width) > job.block:
            found, display, image_hash, channels = large_image(item, job)
        else:
            image = item.source.read(plane=job.plane).with_(batch=item.batch, condition=item.condition)
            found = {model: (labels, image_cells(image, labels, item.number, model), ())
                     for model, labels in ((m, segment(image, m, s, job.device)) for m, s in job.models.items())}
            display, image_hash, channels = write_display(folder, image, item.number), image.hash, image.channels
        frames, counts, files, notes = [], {}, {}, []
        for model, (labels, cells, said) in found.items():
            from core.io.label_tiff import label_tiff_bytes

            frames.append(cells)
            counts[model], files[model] = int(len(cells)), label_file(model, item.number)
            write_atomic(folder / ANALYSIS / files[model], label_tiff_bytes(labels))
            notes += [f"{model}: {n}" for n in said]
        cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        summary = {"number": item.number, "image": item.name, "batch": item.batch, "condition": item.condition,
                   "hash": image_hash, "channels": [[c.name, c.role] for c in channels], "cells": counts,
                   "labels": files, "notes": notes, "device": worker_device(job.device),
                   "seconds": time.perf_counter() - t0, **display}
        write_part(folder, item.number, cells, summary)
    except Exception as exc:  # noqa: BLE001  one image's failure, whatever it is, is its reason, not the run's end
        return ImageDone(item.number, item.name, error=_reason(exc), seconds=time.perf_counter() - t0,
                         worker=os.getpid(), model_loads=worker_model.cache_info().currsize, peak_mb=_peak_mb())
    return ImageDone(item.number, item.name, cells=counts, seconds=time.perf_counter() - t0, worker=os.getpid(),
                     model_loads=worker_model.cache_info().currsize, peak_mb=_peak_mb())


def large_image(item: BatchItem, job: BatchJob) -> tuple[dict, dict, str, tuple]:
    """An image larger than the job's block: each model's labels, cells and notes from
    :func:`workflows.blocks.segment_in_blocks` (the blocks spread over the cluster's workers when
    run on one), and its display picture and content hash made a block at a time."""
    from core.data.images import channels_from_names, default_channels
    from workflows.blocks import ImageMeta, ModelSegmenter, segment_in_blocks

    source = item.source
    channels = channels_from_names(source.channel_names) if source.channel_names else default_channels(source.channels)
    meta = ImageMeta(item.name, channels, (source.height, source.width), item.batch, item.condition)
    read = functools.partial(_read_plane, source, job.plane)
    found = {}
    for model, settings in job.models.items():
        params = {k: v for k, v in settings.items() if k not in ("tile", "overlap")}
        labels, cells, notes, _ = segment_in_blocks(read, meta, ModelSegmenter(model, params, worker_device(job.device)),
                                                    block=job.block, overlap=job.overlap, executor=block_executor())
        if len(cells):
            cells["image_index"] = np.int64(item.number)
            cells.insert(cells.columns.get_loc("label"), "model", model)
        found[model] = (labels, cells, notes)
    display, image_hash = display_in_blocks(Path(job.folder), read, meta, item.number, job.block)
    return found, display, image_hash, channels


def _read_plane(source: Any, plane: int | None, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    return source.read_region(y0, y1, x0, x1, plane=plane)


def block_executor() -> Any:
    """Where a large image's blocks run: on the cluster's workers when this unit runs on one
    (:class:`WorkerClientExecutor`), else one after the other here."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return None
    return WorkerClientExecutor()


class WorkerClientExecutor:
    """An executor for tasks started by a task: the blocks are sent to the cluster from inside the
    worker (``distributed.worker_client``, which lets this worker's slot go to them while it waits)."""

    def map(self, fn: Callable, items: Sequence) -> Any:
        from distributed import worker_client

        with worker_client() as client:
            futures = client.map(fn, items, pure=False)
            yield from client.gather(futures)


def display_in_blocks(folder: Path, read: Callable, meta: Any, number: int, block: int) -> tuple[dict, str]:
    """A large image's display picture (at most :data:`core.runs.DISPLAY_SIDE` px), each block read,
    shrunk and placed in turn, and a content hash of its pixels taken in the same pass."""
    import hashlib

    import cv2

    from core.data.images import CellImage
    from core.figures.display import encode_image, image_rgb
    from core.runs import DISPLAY_SIDE

    height, width = meta.shape
    scale = min(1.0, DISPLAY_SIDE / max(height, width))
    small = None
    digest = hashlib.blake2b(digest_size=16)
    for y0 in range(0, height, block):
        for x0 in range(0, width, block):
            y1, x1 = min(y0 + block, height), min(x0 + block, width)
            pixels = read(y0, y1, x0, x1)
            digest.update(f"{y0},{x0},{pixels.dtype.str}{pixels.shape}".encode())
            digest.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
            if small is None:
                small = np.zeros((max(1, round(height * scale)), max(1, round(width * scale)), pixels.shape[2]),
                                 np.float32)
            ty0, ty1 = round(y0 * scale), max(round(y1 * scale), round(y0 * scale) + 1)
            tx0, tx1 = round(x0 * scale), max(round(x1 * scale), round(x0 * scale) + 1)
            ty1, tx1 = min(ty1, small.shape[0]), min(tx1, small.shape[1])
            shrunk = cv2.resize(pixels.astype(np.float32), (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_AREA)
            small[ty0:ty1, tx0:tx1] = shrunk.reshape(ty1 - ty0, tx1 - tx0, -1)
    shown = image_rgb(CellImage(meta.name, small, meta.channels))
    file = f"images/{number:05d}.png"
    write_atomic(folder / file, encode_image(shown, "png"))
    return {"height": height, "width": width, "scale": shown.shape[1] / width, "file": file}, \
        "blocks-" + digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """An error in words: our own errors' messages as they are, a library's with its type."""
    from core.io.guards import ImageReadError, error_text

    text = error_text(exc)
    return text if isinstance(exc, ImageReadError | ValueError | RuntimeError) else f"{type(exc).__name__}: {text}"


def is_done(folder: Path, number: int) -> bool:
    return part_path(folder, number, ".json").is_file()


# --- the job as a whole --------------------------------------------------------------------------------


class _Unit:
    """``unit(item, job)`` as a one-argument callable Dask can pickle."""

    def __init__(self, unit: Callable[[BatchItem, BatchJob], ImageDone], job: BatchJob) -> None:
        self.unit, self.job = unit, job

    def __call__(self, item: BatchItem) -> ImageDone:
        return self.unit(item, self.job)


def run_items(items: Sequence[BatchItem], job: BatchJob, *, executor: Any = None,
              unit: Callable[[BatchItem, BatchJob], ImageDone] = process_image,
              on_done: Callable[[ImageDone], None] | None = None) -> list[ImageDone]:
    """``unit`` on every item, on ``executor`` (a :class:`~workflows.dask_executor.DaskExecutor`; in
    this process without one); ``on_done`` hears of each image as it finishes, in finishing order."""
    call = _Unit(unit, job)
    results: list[ImageDone] = []
    if executor is None:
        stream = ((i, call(item)) for i, item in enumerate(items))
    else:
        stream = executor.as_completed(call, items, on_lost=lambda item, why: ImageDone(item.number, item.name,
                                                                                          error=why))
    for _, done in stream:
        results.append(done)
        if on_done is not None:
            on_done(done)
    return results
