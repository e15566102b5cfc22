"""Search a recipe's key parameters for the best F1 at IoU 0.5 against ground truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.cache import BoundedCache
from core.data.images import CellImage
from core.evaluation.matching import match_instances
from core.segmentation.preprocess import run_pipeline
from core.segmentation.recipe import Recipe

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


MAX_TUNING_IMAGES = 4  # each trial runs the pipeline on every tuning image: ~60 trials x 4 images


@dataclass(frozen=True)
class TuneResult:
    best: Recipe
    best_f1: float  # mean F1 over ``images`` only
    start_f1: float  # the starting recipe's mean F1 over the same images
    trials: tuple[Trial, ...]
    images: tuple[str, ...] = ()  # the images every trial was scored on
    with_gt: int = 0  # how many images with ground truth there were to choose from

    @property
    def start(self) -> Recipe:
        return self.trials[0].recipe

    @property
    def improved(self) -> bool:
        """Whether a setting in the search beat the starting recipe (else ``best`` is the start)."""
        return self.best != self.start

    def scope(self) -> str:
        """Which images the F1s are means over, in words: the search does not score them all."""
        if not self.images:  # a result kept from before the images were recorded
            return "mean over the tuning images"
        names = ", ".join(self.images[:4]) + (", …" if len(self.images) > 4 else "")
        of = f" of the {self.with_gt} with ground truth" if self.with_gt > len(self.images) else ""
        return f"mean over {len(self.images)} tuning image{'s' if len(self.images) != 1 else ''}{of} ({names})"


def tuning_images(images: Sequence[CellImage], limit: int = MAX_TUNING_IMAGES) -> list[CellImage]:
    """Up to ``limit`` images with ground truth, taken in turn from each batch (the first of each
    batch, then the second, ...), so that a search does not tune to one plate."""
    by_batch: dict[str, list[CellImage]] = {}
    for img in images:
        if img.gt is not None:
            by_batch.setdefault(img.batch, []).append(img)
    chosen: list[CellImage] = []
    for i in range(max((len(v) for v in by_batch.values()), default=0)):
        chosen += [group[i] for group in by_batch.values() if i < len(group)]
    return chosen[:limit]


def recipe_changes(before: Recipe, after: Recipe) -> list[dict[str, object]]:
    """The parameters that differ: one ``{"parameter", "was", "tuned"}`` per change."""
    a, b = before.to_dict()["steps"], after.to_dict()["steps"]
    return [{"parameter": f"{step}.{k}", "was": a[step][k], "tuned": v}
            for step, params in b.items() for k, v in params.items() if a[step][k] != v]


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
    max_images: int = MAX_TUNING_IMAGES,
    progress: Callable[[float, str], None] | None = None,
) -> TuneResult:
    """Coordinate ascent: vary one parameter at a time, keep the best, repeat ``rounds`` times,
    scoring each trial on :func:`tuning_images` (at most ``max_images``, spread over the batches).

    The rotate step is kept as it is: the pipeline's cells come back in the image's own frame,
    where the ground truth is.
    """
    with_gt = sum(img.gt is not None for img in images)
    images = tuning_images(images, max_images)
    if not images:
        raise ValueError("auto-tune needs at least one image with ground truth")
    cache = BoundedCache(max_entries=256)
    current = start
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
    return TuneResult(current, best_f1, start_f1, tuple(trials), tuple(img.name for img in images), with_gt)
