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
    overlap: int = 128

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

    @property
    def ok(self) -> bool:
        return self.error is None


# --- on the worker --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def worker_model(name: str, device: str) -> Any:
    """Model ``name`` loaded once in this process: every image a worker runs shares it."""
    from models.registry import load_model

    return load_model(name, device, allow_download=True)


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
    images, display picture, cells part and summary written into the run's folder. Any error on this
    image (unreadable, a model failing on it) comes back as its reason; nothing is written for it."""
    t0 = time.perf_counter()
    folder = Path(job.folder)
    try:
        image = item.source.read(plane=job.plane).with_(batch=item.batch, condition=item.condition)
        frames, counts, files = [], {}, {}
        for model, settings in job.models.items():
            labels = segment(image, model, settings, job.device)
            frames.append(image_cells(image, labels, item.number, model))
            counts[model] = int(len(frames[-1]))
            files[model] = label_file(model, item.number)
            from core.io.label_tiff import label_tiff_bytes

            write_atomic(folder / ANALYSIS / files[model], label_tiff_bytes(labels))
        display = write_display(folder, image, item.number)
        cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        summary = {"number": item.number, "image": item.name, "batch": item.batch, "condition": item.condition,
                   "hash": image.hash, "channels": [[c.name, c.role] for c in image.channels],
                   "cells": counts, "labels": files, "seconds": time.perf_counter() - t0, **display}
        write_part(folder, item.number, cells, summary)
    except Exception as exc:  # noqa: BLE001  one image's failure, whatever it is, is its reason, not the run's end
        return ImageDone(item.number, item.name, error=_reason(exc), seconds=time.perf_counter() - t0,
                         worker=os.getpid(), model_loads=worker_model.cache_info().currsize, peak_mb=_peak_mb())
    return ImageDone(item.number, item.name, cells=counts, seconds=time.perf_counter() - t0, worker=os.getpid(),
                     model_loads=worker_model.cache_info().currsize, peak_mb=_peak_mb())


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
