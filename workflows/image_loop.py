"""The one loop over images. The unit of work is a plain function of one image and a settings
record that returns a result record (:func:`segment_image`: labels, measurements, crops on
request); :func:`run_images` runs a unit over every image through an :class:`Executor` (the serial
one here; a Dask executor only has to implement ``map``), keeps the results in input order and
reports each image's failure with its name instead of stopping the run.

The Preprocess page's *Run on all images*, the Compare page's *All images* (:func:`run_on_images`:
segmenters x images), the Cell map's cells and the CLI's ``embed``/``explain`` all go through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pandas as pd

from core.data.images import CellImage
from core.data.instances import Instances

# What a model or the pipeline may raise on one image without the others being affected: a
# missing weights file (a RuntimeError), an image the settings do not fit, memory.
RUN_ERRORS = (RuntimeError, ValueError, MemoryError)

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


class Executor(Protocol):
    """Runs ``fn`` on every item; yields the results in the items' order (as they are ready)."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...


class SerialExecutor:
    """One item after the other, in this process: each result is made when the loop asks for it."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One item's result, or (``result`` None) what went wrong on it, in words."""

    name: str
    result: R | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Guarded(Generic[T, S, R]):
    """``unit(item, settings)`` with the run's errors caught and named: a plain picklable callable,
    so an executor in other processes can run it."""

    def __init__(self, unit: Callable[[T, S], R], settings: S, label: Callable[[T], str]) -> None:
        self.unit, self.settings, self.label = unit, settings, label

    def __call__(self, item: T) -> Outcome[R]:
        try:
            return Outcome(self.label(item), self.unit(item, self.settings))
        except RUN_ERRORS as exc:
            return Outcome(self.label(item), None, str(exc))


def _name(item: Any) -> str:
    return item.name


def run_images(images: Sequence[T], unit: Callable[[T, S], R], settings: S, *, executor: Executor | None = None,
               progress: Callable[[float, str], None] | None = None,
               label: Callable[[T], str] = _name) -> list[Outcome[R]]:
    """``unit(image, settings)`` for every image, through ``executor`` (serial by default): one
    :class:`Outcome` per image in input order; a failing image gives an outcome with its error and
    the others go on. ``progress(fraction, label(image))`` before each image's result is awaited,
    ``progress(1.0, "done")`` at the end. ``label`` names an item (an image's name by default)."""
    executor = executor or SerialExecutor()
    results = executor.map(_Guarded(unit, settings, label), images)
    outcomes: list[Outcome[R]] = []
    steps = max(len(images), 1)
    for i, image in enumerate(images):
        if progress:
            progress(i / steps, label(image))
        outcomes.append(next(results))
    if progress:
        progress(1.0, "done")
    return outcomes


# --- the per-image unit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentSettings:
    """What :func:`segment_image` does to one image: ``segment(image)`` gives its instances (a
    model with its settings, the classical recipe, or the ground truth); ``measure(image, result)``
    a row of numbers when given; ``crops`` each cell's crop geometry (size, mode, mask_background)
    when crops are asked for."""

    segment: Callable[[CellImage], Instances | np.ndarray]
    measure: Callable[[CellImage, Instances], dict[str, Any]] | None = None
    crops: dict[str, Any] | None = None


@dataclass
class ImageResult:
    """One image's work: its label image (0 = background), the instances when a segmenter made
    them, a row of measurements and the cells' crops when asked for."""

    image: str
    labels: np.ndarray
    instances: Instances | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    crops: np.ndarray | None = None


def segment_image(image: CellImage, settings: SegmentSettings) -> ImageResult:
    """The per-image unit: segment ``image``, then measure it and crop its cells as ``settings`` ask."""
    found = settings.segment(image)
    instances = found if isinstance(found, Instances) else None
    labels = found.labels if instances is not None else found
    measurements = settings.measure(image, instances) if settings.measure and instances is not None else {}
    crops = None
    if settings.crops is not None and labels.max() > 0:
        from core.cells.cell_set import CellSet

        cells = CellSet.build([(image, labels)], **settings.crops)
        crops = cells.crops(np.arange(len(cells)))
    return ImageResult(image.name, labels, instances, measurements, crops)


# --- segmenters x images (the Preprocess and Compare pages) ---------------------------------------------------------


@dataclass
class ModelsOnImagesRun:
    table: pd.DataFrame  # one row per (image, model) that ran: image, batch, condition, model, then the row's numbers
    results: dict[tuple[str, str], Instances]  # (image name, model name) -> result
    problems: list[str] = field(default_factory=list)  # one line per run that failed


@dataclass(frozen=True)
class _ModelOnImage:
    image: CellImage
    model: str

    @property
    def name(self) -> str:
        return f"{self.model} on {self.image.name}"


def run_on_images(images: Sequence[CellImage], names: Sequence[str],
                  compute: Callable[[CellImage, str], Instances],
                  row: Callable[[CellImage, Instances], dict[str, Any]], *,
                  progress: Callable[[float, str], None] | None = None,
                  executor: Executor | None = None) -> ModelsOnImagesRun:
    """``compute(image, name)`` for every image and name, in image order, through :func:`run_images`;
    ``row(image, result)`` gives each result's numbers. ``progress(fraction, what)`` before each run
    and at the end. A model failing alike on several images is one line of ``problems``."""
    jobs = [_ModelOnImage(image, name) for image in images for name in names]

    def unit(job: _ModelOnImage, _: None) -> ImageResult:
        return segment_image(job.image, SegmentSettings(segment=lambda img: compute(img, job.model), measure=row))

    outcomes = run_images(jobs, unit, None, executor=executor, progress=progress)
    results: dict[tuple[str, str], Instances] = {}
    rows: list[dict[str, Any]] = []
    failed: dict[tuple[str, str], list[str]] = {}  # (model, message) -> images: one line for a model failing alike
    for job, outcome in zip(jobs, outcomes, strict=True):
        image = job.image
        if outcome.result is None:
            failed.setdefault((job.model, outcome.error or ""), []).append(image.name)
            continue
        results[(image.name, job.model)] = outcome.result.instances
        rows.append({"image": image.name, "batch": image.batch, "condition": image.condition, "model": job.model,
                     **outcome.result.measurements})
    problems = [f"{name} on {where[0]}: {message}" if len(where) == 1 else
                f"{name} on {len(where)} images ({where[0]}, {where[1]}{', …' if len(where) > 2 else ''}): {message}"
                for (name, message), where in failed.items()]
    return ModelsOnImagesRun(pd.DataFrame(rows), results, problems)


def problems_of(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per failed image: ``image: what went wrong``."""
    return [f"{o.name}: {o.error}" for o in outcomes if not o.ok]
