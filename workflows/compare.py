"""The Compare page's *All images*: every chosen model on every image through the one image loop,
scored against the ground truth where an image has one (F1 and the rest at IoU 0.5), each score
marked when the model was trained or validated on that image; returned as an
:class:`~core.analysis.Analysis` of kind ``compare`` with the per-image table ``scores`` and the
whole run as ``results.zip`` (label TIFFs, objects, COCO JSON, metrics, provenance); each model's
label images also as the record's ``labels`` (saved into a run, never into the CLI's folder, where
``results.zip`` holds them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.analysis import Analysis, LazyFiles, inputs_of
from core.data.images import CellImage
from core.data.instances import Instances
from core.evaluation.ranking import rank_models
from core.evaluation.score_tables import SEEN, seen_label, summary_row
from core.io.export import results_zip
from models.registry import images_seen
from workflows.image_loop import Executor, run_on_images
from workflows.provenance import provenance

Compute = Callable[[CellImage, str], Instances]


@dataclass(frozen=True)
class CompareRun:
    analysis: Analysis
    results: dict[tuple[str, str], Instances]  # (image name, model name) -> its result
    problems: list[str] = field(default_factory=list)  # one line per model failing (alike) on images


def model_runner(models: Mapping[str, Mapping[str, Any]], device: str) -> Compute:
    """``compute(image, name)``: the registry's model ``name`` (loaded once) run with its ``models``
    settings on ``image``. The page passes its cached one instead."""
    from models.registry import load_model
    from models.runner import run_model

    loaded: dict[str, Any] = {}

    def compute(image: CellImage, name: str) -> Instances:
        if name not in loaded:
            loaded[name] = load_model(name, device)
        return run_model(loaded[name], image, **models[name])

    return compute


def ranking_of(scores: Any) -> dict[str, Any]:
    """``{"ranking": table}`` where an image has ground truth (which model for these images; see
    :mod:`core.evaluation.ranking`), else nothing."""
    ranking = rank_models(scores)
    return {"ranking": ranking.table} if ranking.recommended is not None else {}


def run_compare(images: Sequence[CellImage], models: Mapping[str, Mapping[str, Any]], *, device: str,
                compute: Compute | None = None, progress: Callable[[float, str], None] | None = None,
                executor: Executor | None = None) -> CompareRun:
    """Every model of ``models`` (name -> the settings it runs with, tiling included) on every image:
    table ``scores`` (one row per image and model: image, batch, condition, model, the scores of
    :func:`core.evaluation.score_tables.summary_row` and :data:`SEEN`), ``ranking`` where an image
    has ground truth (:func:`ranking_of`), file ``results.zip``.
    ``compute(image, name)`` defaults to :func:`model_runner`."""
    images, names = list(images), list(models)
    compute = compute or model_runner(models, device)
    seen = {name: images_seen(name) for name in names}

    def row(image: CellImage, result: Instances) -> dict[str, Any]:
        return summary_row(result, image.gt) | {SEEN: seen_label(seen.get(result.model), image)}

    run = run_on_images(images, names, compute, row, progress=progress, executor=executor)
    settings = {name: dict(models[name]) for name in names}
    prov = provenance(models=settings, device=device)
    files = LazyFiles({"results.zip": lambda: results_zip(images, run.results, run.table, provenance=prov)})
    record = Analysis("compare", inputs_of(images), {"models": settings, "device": device}, prov,
                      tables={"scores": run.table, **ranking_of(run.table)}, files=files,
                      labels={key: result.labels for key, result in run.results.items()})
    return CompareRun(record, run.results, run.problems)
