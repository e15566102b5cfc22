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
MAX_HELD_OUT = 24  # images with ground truth left out of the search, scored once with the start and the tuned recipe
# A change is kept only if it raises the mean F1 by at least this much: on 4 images, a gain of a
# thousandth is one cell matched differently, not a better recipe.
MIN_GAIN = 0.005


@dataclass(frozen=True)
class TuneResult:
    best: Recipe
    best_f1: float  # mean F1 over ``images`` only
    start_f1: float  # the starting recipe's mean F1 over the same images
    trials: tuple[Trial, ...]
    images: tuple[str, ...] = ()  # the images every trial was scored on
    with_gt: int = 0  # how many images with ground truth there were to choose from
    held_out: tuple[str, ...] = ()  # images with ground truth the search did not see, scored after it
    held_start_f1: float | None = None  # the starting recipe's mean F1 on ``held_out`` (None: none held out)
    held_best_f1: float | None = None  # the tuned recipe's mean F1 on ``held_out``

    @property
    def held_out_worse(self) -> bool:
        """Whether the tuned recipe does worse (by :data:`MIN_GAIN` or more) on the held-out images."""
        return (self.held_start_f1 is not None and self.held_best_f1 is not None
                and self.held_best_f1 - self.held_start_f1 <= -MIN_GAIN)

    def held_out_reading(self) -> str | None:
        """What the images the search did not see say of the tuned recipe, in words (None when
        no image was held out or nothing was tuned): the F1 on the tuning images is the figure the
        search maximised, so only these say whether the gain carries over."""
        if not self.improved or not self.held_out or self.held_start_f1 is None or self.held_best_f1 is None:
            return None
        n = len(self.held_out)
        gain = self.held_best_f1 - self.held_start_f1
        where = (f"On the {n} image{'s' if n != 1 else ''} with ground truth the search did not use: "
                 f"F1 {self.held_start_f1:.3f} → {self.held_best_f1:.3f}")
        if gain >= MIN_GAIN:
            return f"{where}: the gain carries over to images it was not tuned on."
        if self.held_out_worse:
            return (f"{where}: worse on images it was not tuned on. The tuned recipe fits the tuning images; "
                    "keep the current one, or tune on more images.")
        return f"{where}: undetermined (a change under {MIN_GAIN} either way); the gain may not carry over."

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
    """Coordinate ascent: vary one parameter at a time, keep the best (a gain of at least
    :data:`MIN_GAIN`), repeat ``rounds`` times, scoring each trial on :func:`tuning_images` (at most
    ``max_images``, spread over the batches). The other images with ground truth (up to
    :data:`MAX_HELD_OUT`) then score the start and the tuned recipe once, as a check the search
    could not fit to.

    The rotate step is kept as it is: the pipeline's cells come back in the image's own frame,
    where the ground truth is.
    """
    all_images = list(images)
    with_gt = sum(img.gt is not None for img in all_images)
    images = tuning_images(all_images, max_images)
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
                if f1 >= best_f1 + MIN_GAIN:
                    current, best_f1, improved = candidate, f1, True
        if not improved:
            break
    tuned_on = {id(img) for img in images}
    held = [img for img in all_images if img.gt is not None and id(img) not in tuned_on][:MAX_HELD_OUT]
    held_start = held_best = None
    if held and current != start:
        if progress:
            progress(1.0, f"scoring on {len(held)} images the search did not use")
        held_start, held_best = mean_f1(held, start, cache), mean_f1(held, current, cache)
    if progress:
        progress(1.0, "done")
    return TuneResult(current, best_f1, start_f1, tuple(trials), tuple(img.name for img in images), with_gt,
                      tuple(img.name for img in held), held_start, held_best)
