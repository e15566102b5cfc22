"""Whether a per-cell label (plate or condition) can be told from the features on images a
classifier never saw: linear discriminant analysis cross-validated by image, with a permutation
test of whether it beats what image-to-image variation alone gives.

Why by image: cells of one field share illumination, focus and density, so cells cluster by image.
With images nested in plates, a classifier tested on cells of images it was trained on learns
"which image" and reports any field-to-field difference as a plate difference. Held-out images
remove that: only a difference shared by *all* images of a plate carries over.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from core.plate_effect.metrics import ONE_BLAS_THREAD, check_features, class_codes
from core.text import plural

# The permutation test that the accuracy beats chance: level; random shuffles (19, the fewest that
# can give p = 0.05); up to how many groupings all are scored (an exact test) rather than drawn.
# When every image holds one label, the test can only regroup whole images, and a regrouping that
# only renames the labels (plates A and B swapped) scores as the observed one does: with P distinct
# partitions of the images the smallest p any such test gives is 1/P, so it needs P >= 1 / 0.05 =
# 20 (MIN_PARTITIONS). 3 + 3 images give 10, 4 + 4 give 35; 3 batches of 2 images give 15, of 3
# give 280; 4 batches of 2 give 105 (see :func:`min_images_per_label`).
SIGNIFICANCE = 0.05
N_PERMUTATIONS = 19
MIN_PARTITIONS = round(1 / SIGNIFICANCE)
EXACT_GROUPINGS = 100


def lda_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Linear discriminant analysis with equal class priors: the one classifier behind every accuracy here.

    The same model as scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", priors=uniform)``
    (the tests check the predictions agree): class means, the classes' covariances averaged with
    equal weight, linear scores. Equal priors put the boundary where balanced accuracy wants it,
    whatever the class sizes. Written out because the permutation test refits it 100 times per
    call: ~1 ms per fit at 8,000 cells x 32 features where scikit-learn's estimator (and a
    standardised logistic regression) spend 15-30 ms, mostly in input checks.
    Labels are integer codes; returns the predicted code of each test cell.
    """
    classes = np.unique(y_train)
    if len(classes) == 1:
        return np.full(len(X_test), classes[0])
    index = np.searchsorted(classes, y_train)
    counts = np.bincount(index)
    means = np.stack([X_train[index == c].mean(axis=0) for c in range(len(classes))])
    centred = X_train - means[index]
    weight = 1.0 / (len(classes) * counts[index])
    cov = (centred * weight[:, None]).T @ centred
    coef = np.linalg.lstsq(cov, means.T, rcond=None)[0].T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef)
    return classes[np.argmax(X_test @ coef.T + intercept, axis=1)]


def _cv_predictions(X: np.ndarray, y: np.ndarray, g: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions, folds by image (StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    pred = np.empty_like(y)
    with threadpool_limits(**ONE_BLAS_THREAD):
        for train, test in cv.split(X, y, g):
            pred[test] = lda_predict(X[train], y[train], X[test])
    return pred


def _pure_images(y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: whether all its cells share one label, and that label (-1 where mixed)."""
    n_images = int(g.max()) + 1
    first = np.full(n_images, -1)
    first[g[::-1]] = y[::-1]
    pure = np.ones(n_images, bool)
    pure[g[y != first[g]]] = False
    return pure, np.where(pure, first, -1)


def _permute_labels(y: np.ndarray, g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels shuffled the ways the null hypothesis allows: among the cells of each image, and
    among whole images that hold one label (images nested in plates)."""
    by_image = np.argsort(g, kind="stable")
    shuffled = np.lexsort((rng.random(len(y)), g))
    out = np.empty_like(y)
    out[by_image] = y[shuffled]
    pure, label = _pure_images(y, g)
    ids = np.flatnonzero(pure)
    new = label.copy()
    new[ids] = rng.permutation(label[ids])
    cells = pure[g]
    out[cells] = new[g[cells]]
    return out


def _groupings(y: np.ndarray, g: np.ndarray) -> int | None:
    """Distinct ways to deal the labels over the images when every image holds one label; None
    when some image holds several (then cells within it can be shuffled: plenty of ways)."""
    pure, label = _pure_images(y, g)
    if not pure.all():
        return None
    counts = np.bincount(label)
    return math.factorial(int(counts.sum())) // math.prod(math.factorial(int(c)) for c in counts)


def _partitions(counts: Sequence[int]) -> int:
    """Distinct ways to split images into groups of these sizes when the groups have no names:
    the groupings (multinomial) over the relabellings that keep every group's size."""
    counts = [int(c) for c in counts]
    groupings = math.factorial(sum(counts)) // math.prod(math.factorial(c) for c in counts)
    renamings = math.prod(math.factorial(same) for same in np.unique(counts, return_counts=True)[1])
    return groupings // renamings


def min_images_per_label(n_labels: int) -> int:
    """The fewest images per label (each image of one label, all labels alike) whose partitions let
    a permutation test reach p <= SIGNIFICANCE: 4 for 2 labels, 3 for 3, 2 for 4 or more."""
    n = 2
    while _partitions([n] * n_labels) < MIN_PARTITIONS:
        n += 1
    return n


def _arrangements(counts: list[int]) -> Iterator[tuple[int, ...]]:
    """Every distinct sequence holding label c counts[c] times (multiset permutations)."""
    if sum(counts) == 0:
        yield ()
        return
    for c, left in enumerate(counts):
        if left:
            counts[c] -= 1
            for rest in _arrangements(counts):
                yield (c, *rest)
            counts[c] += 1


def _partition(y: np.ndarray, g: np.ndarray) -> tuple[int, ...]:
    """Which images share a label, whatever the labels are called (single-label images)."""
    _, label = _pure_images(y, g)
    _, first, inverse = np.unique(label, return_index=True, return_inverse=True)
    return tuple(np.argsort(np.argsort(first))[inverse].tolist())


def _null_labellings(
    y: np.ndarray, g: np.ndarray, groupings: int | None, n_permutations: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], bool]:
    """Labellings the null hypothesis allows, and whether they are all of them (exact test)."""
    if groupings is not None and groupings <= EXACT_GROUPINGS:
        _, label = _pure_images(y, g)
        return [np.asarray(a)[g] for a in _arrangements(list(np.bincount(label)))], True
    draws: list[np.ndarray] = []
    # With single-label images a random draw can regroup the images exactly as observed (or swap
    # the names): 2 of 252 groupings for 5 + 5 images, which with 19 draws would cost a plain
    # effect its significance 14% of the time. Such draws are redrawn.
    observed = _partition(y, g) if groupings is not None else None
    while len(draws) < n_permutations:
        y_perm = _permute_labels(y, g, rng)
        if observed is None or _partition(y_perm, g) != observed:
            draws.append(y_perm)
    return draws, False


def classifier_accuracy(
    X: np.ndarray,
    target: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    *,
    seed: int = 0,
    folds: int = 5,
    n_permutations: int = N_PERMUTATIONS,
    noun: str = "label",
) -> dict[str, Any]:
    """Balanced accuracy of predicting ``target`` (batch or condition) on images never trained on.

    Cross-validation is StratifiedGroupKFold by ``groups`` (image): no image has cells in both the
    training and the test fold. Out-of-fold predictions of all folds are pooled into one balanced
    accuracy. Whether it beats chance is a permutation test of the whole procedure: labels are
    shuffled among the cells of each image and among whole single-label images, the way they
    could fall if the label had no effect, and the cross-validation is rerun. Returns a
    JSON-ready dict:

    - ``balanced_accuracy``: float, or None with ``reason`` when a label has cells in fewer than
      2 images (one image cannot be both trained on and held out; there is no fallback to cell-level
      CV, which scores field-to-field differences as label differences);
    - ``chance``: 1 / n_classes, what any guess ignoring the features scores;
    - ``skill``: (accuracy - chance) / (1 - chance): 0 at chance, 1 perfect;
    - ``chance_permuted`` (mean) and ``chance_upper`` (95th percentile) of the shuffled runs: the
      accuracy that image-to-image noise alone reaches; ``p_value`` and ``significant``
      (p <= 0.05). With ``n_permutations`` random shuffles p = (1 + runs scoring at least as high)
      / (1 + runs). When every image holds one label and there are at most 100 groupings of the
      images, every grouping is scored instead (``exact_test``; p = share scoring at least as high,
      the observed grouping included). With fewer than 20 distinct partitions of the images no test
      can reach p <= 0.05: p and significance stay None and ``reason`` says so, and how many images
      per label would do (:func:`min_images_per_label`);
    - ``images_per_class``, ``n_cells``, ``n_images``, ``n_classes``, ``folds``, ``permutations``,
      ``partitions`` (distinct partitions of single-label images; None when an image holds several).

    ``noun`` names the labels in ``reason`` ("batch", "condition").
    """
    from sklearn.metrics import balanced_accuracy_score

    X = check_features(X)
    y, levels = class_codes(target, len(X), "target")
    g, images = class_codes(groups, len(X), "groups")
    n_classes = len(levels)
    per_class = {levels[c]: int(len(np.unique(g[y == c]))) for c in range(n_classes)}
    out: dict[str, Any] = {
        "balanced_accuracy": None,
        "chance": 1.0 / n_classes,
        "skill": None,
        "chance_permuted": None,
        "chance_upper": None,
        "p_value": None,
        "significant": None,
        "images_per_class": per_class,
        "n_cells": int(len(X)),
        "n_images": int(len(images)),
        "n_classes": int(n_classes),
        "folds": 0,
        "permutations": 0,
        "exact_test": False,
        "partitions": None,
        "reason": None,
    }
    if n_classes < 2:
        out["reason"] = f"only one {noun} ({levels[0]!r}): there is nothing to tell apart"
        return out
    short = [name for name, count in per_class.items() if count < 2]
    if short:
        named = ", ".join(f"{name!r} has cells in {per_class[name]} image" for name in short)
        out["reason"] = (
            f"not enough images per {noun}: {named}; each needs cells in at least 2 images so one can be "
            "held out while the others train"
        )
        return out

    n_splits = int(min(folds, min(per_class.values())))
    acc = float(balanced_accuracy_score(y, _cv_predictions(X, y, g, n_splits, seed)))
    chance = 1.0 / n_classes
    out.update(balanced_accuracy=acc, skill=(acc - chance) / (1.0 - chance), folds=n_splits)

    groupings = _groupings(y, g)
    if groupings is not None:
        _, label = _pure_images(y, g)
        out["partitions"] = partitions = _partitions(np.bincount(label))
        if partitions < MIN_PARTITIONS:
            counts = sorted(set(per_class.values()))
            sizes = f"{counts[0]} images each" if len(counts) == 1 else f"{', '.join(map(str, counts))} images"
            need = min_images_per_label(n_classes)
            out["reason"] = (
                f"too few images to test: {plural(n_classes, noun)} of {sizes} can be split into only {partitions} "
                f"distinct groupings, so a permutation test can give no p-value below 1/{partitions} = "
                f"{1 / partitions:.3f} and image-to-image variation cannot be ruled out; {plural(n_classes, noun)} "
                f"need at least {need} images each"
            )
            return out
    if n_permutations > 0:
        candidates, exact = _null_labellings(y, g, groupings, n_permutations, np.random.default_rng(seed))
        null = np.array([balanced_accuracy_score(c, _cv_predictions(X, c, g, n_splits, seed)) for c in candidates])
        exceed = int(np.sum(null >= acc - 1e-12))
        p = exceed / len(null) if exact else (1 + exceed) / (1 + len(null))
        out.update(
            chance_permuted=float(null.mean()),
            chance_upper=float(np.quantile(null, 0.95)),
            p_value=p,
            significant=bool(p <= SIGNIFICANCE),
            permutations=len(null),
            exact_test=bool(exact),
        )
    return out
