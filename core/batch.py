"""One loop for "run on every image": segmenters × images with progress, a row of numbers per
result, and a message (not a crash) for each run that fails. The Preprocess page's *Run on all
images*, the Compare page's *All images* and the Cell map's cells all go through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.images import CellImage
from core.instances import Instances

# What a model or the pipeline may raise on one image without the others being affected: a
# missing weights file (a RuntimeError), an image the settings do not fit, memory.
RUN_ERRORS = (RuntimeError, ValueError, MemoryError)


@dataclass
class BatchRun:
    table: pd.DataFrame  # one row per (image, model) that ran: image, batch, condition, model, then the row's numbers
    results: dict[tuple[str, str], Instances]  # (image name, model name) -> result
    problems: list[str] = field(default_factory=list)  # one line per run that failed


def run_on_images(images: Sequence[CellImage], names: Sequence[str],
                  compute: Callable[[CellImage, str], Instances],
                  row: Callable[[CellImage, Instances], dict[str, Any]], *,
                  progress: Callable[[float, str], None] | None = None) -> BatchRun:
    """``compute(image, name)`` for every image and name, in image order; ``row(image, result)``
    gives each result's numbers. ``progress(fraction, what)`` before each run and at the end."""
    results: dict[tuple[str, str], Instances] = {}
    rows: list[dict[str, Any]] = []
    failed: dict[tuple[str, str], list[str]] = {}  # (model, message) -> images: one line for a model failing alike
    steps = max(len(images) * len(names), 1)
    for i, image in enumerate(images):
        for j, name in enumerate(names):
            if progress:
                progress((i * len(names) + j) / steps, f"{name} on {image.name}")
            try:
                result = compute(image, name)
            except RUN_ERRORS as exc:
                failed.setdefault((name, str(exc)), []).append(image.name)
                continue
            results[(image.name, name)] = result
            rows.append({"image": image.name, "batch": image.batch, "condition": image.condition, "model": name,
                         **row(image, result)})
    if progress:
        progress(1.0, "done")
    problems = [f"{name} on {where[0]}: {message}" if len(where) == 1 else
                f"{name} on {len(where)} images ({where[0]}, {where[1]}{', …' if len(where) > 2 else ''}): {message}"
                for (name, message), where in failed.items()]
    return BatchRun(pd.DataFrame(rows), results, problems)
