"""Search a recipe's key parameters for the best F1 at IoU 0.5 against ground truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.cache import BoundedCache
from core.images import CellImage
from core.metrics import match_instances
from core.preprocess import run_pipeline
from core.recipe import Recipe

# (step, parameter, candidate values): the knobs that matter most for nuclei.
SEARCH_SPACE: tuple[tuple[str, str, tuple], ...] = (
    ("threshold", "method", ("adaptive_gaussian", "otsu", "otsu_gaussian", "triangle")),
    ("denoise", "sigma", (0.5, 1.0, 2.0)),
    ("watershed", "seed_distance", (0, 3, 5, 8, 12)),
    ("filters", "min_area", (-1, 10, 30, 80)),
)


@dataclass(frozen=True)
class Trial:
    recipe: Recipe
    f1: float
    changed: str  # which parameter this trial varied, e.g. "threshold.method=otsu"


@dataclass(frozen=True)
class TuneResult:
    best: Recipe
    best_f1: float
    start_f1: float
    trials: tuple[Trial, ...]


def mean_f1(images: Sequence[CellImage], recipe: Recipe, cache: BoundedCache | None = None) -> float:
    """Mean F1 at IoU 0.5 of the classical pipeline over images that have ground truth."""
    scores = [
        match_instances(img.gt, run_pipeline(img.pixels, img.channels, recipe, image_hash=img.hash, cache=cache).labels).f1
        for img in images
        if img.gt is not None
    ]
    if not scores:
        raise ValueError("auto-tune needs at least one image with ground truth")
    return float(np.mean(scores))


def autotune(
    images: Sequence[CellImage],
    start: Recipe,
    *,
    rounds: int = 2,
    progress: Callable[[float, str], None] | None = None,
) -> TuneResult:
    """Coordinate ascent: vary one parameter at a time, keep the best, repeat ``rounds`` times.

    Geometry (rotation) is switched off: ground truth is in the image's own geometry.
    """
    images = [img for img in images if img.gt is not None]
    if not images:
        raise ValueError("auto-tune needs at least one image with ground truth")
    cache = BoundedCache(max_entries=256)
    current = start.with_step("rotate", enabled=False)
    best_f1 = start_f1 = mean_f1(images, current, cache)
    trials = [Trial(current, best_f1, "start")]
    total = rounds * sum(len(values) for _, _, values in SEARCH_SPACE)
    done = 0
    for _ in range(rounds):
        improved = False
        for step, param, values in SEARCH_SPACE:
            for value in values:
                done += 1
                candidate = current.with_step(step, **{param: value})
                if candidate == current:
                    continue
                if progress:
                    progress(done / total, f"{step}.{param} = {value}")
                f1 = mean_f1(images, candidate, cache)
                trials.append(Trial(candidate, f1, f"{step}.{param}={value}"))
                if f1 > best_f1 + 1e-9:
                    current, best_f1, improved = candidate, f1, True
        if not improved:
            break
    if progress:
        progress(1.0, "done")
    return TuneResult(current, best_f1, start_f1, tuple(trials))
