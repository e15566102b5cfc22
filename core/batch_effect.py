"""Batch-effect metrics and corrections for per-cell features or 2-D map coordinates.

The PI's question: "are my plates comparable, and does my treatment separate cells more than my
plates do?" Each cell carries a batch (plate), a condition (control / treated) and an image (the
field it came from). The metrics are those of the single-cell integration benchmark (scIB,
Luecken et al. 2022), computed with scikit-learn, numpy and scipy:

- batch silhouette (ASW), raw and in scIB's ``1 - |s|`` form;
- iLISI, the Local Inverse Simpson's Index of batch labels (Korsunsky et al. 2019);
- kBET acceptance rate (Büttner et al. 2019);
- balanced accuracy of a linear classifier (LDA) predicting batch, cross-validated **by image**,
  with a permutation test of whether it beats what image-to-image variation alone gives.

The same silhouette and classifier on condition say how much biology is kept. Corrections:
per-batch standardisation (optionally on control cells) and Harmony (``harmonypy``).

Why the classifier is cross-validated by image: cells of one field share illumination, focus and
density, so cells cluster by image. With images nested in plates, a classifier tested on cells of
images it was trained on learns "which image" and reports any field-to-field difference as a plate
difference. Held-out images remove that: only a difference shared by *all* images of a plate
carries over. The neighbourhood metrics (iLISI, kBET, ASW) cannot make that distinction -- they
see clumps of same-image cells as clumps of same-batch cells -- so the verdict rests on the
classifier and they are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.text import plural

# Silhouette needs all pairwise distances: 3000 cells cost ~0.4 s for batch and condition together
# (one shared distance matrix); 5000 cost 1.8 s for one labelling. The mean over 3000 cells has a
# standard error well under 0.01.
SILHOUETTE_MAX_CELLS = 3000
# LISI's default in harmony / scIB; the neighbour search fetches 3 x perplexity cells, as theirs does.
LISI_PERPLEXITY = 30
# kBET's default neighbourhood is a quarter of the mean batch size (1250 cells at 10,000 cells in 2
# batches); with neighbourhoods that large the chi-square test rejects any bias at all (kBET's own
# README warns it is "very sensitive"), and the search would cost 10x more. Capped to the LISI
# neighbour set (the cell and its 90 neighbours), so one search serves both.
KBET_MIN_K = 10
KBET_MAX_K = 3 * LISI_PERPLEXITY + 1

# Verdict thresholds on the classifier's *skill*: (balanced accuracy - chance) / (1 - chance),
# 0 at chance and 1 when every cell of every unseen image is told apart. For two Gaussian batches
# a Mahalanobis distance d apart a linear classifier reaches Phi(d / 2): skill 0.1 is d ~ 0.25 (a
# quarter of the cell-to-cell spread), skill 0.5 is d ~ 1.35. Skill alone cannot tell an effect
# from image-to-image noise: with no batch effect it reached 0.48 with 4 images per batch, 0.20
# with 8, 0.18 with 20; hence "weak" and "strong" also need the permutation test (p <= 0.05).
# Measured with 150 cells per image, 32 features, 2 batches, per-image offsets of SD 0.5 (or 0.2),
# shifts on 8 features, 40 datasets each (skill range; verdicts):
#   no effect, plates = groupings of 8 + 8 images  -0.23 .. 0.20   no 39, weak 1
#   no effect, 4 + 4 / 20 + 20 images              -0.36 .. 0.48   no 39, weak 1 / no 38, weak 2
#   no effect, 8 images each split over plates     -0.07 .. 0.08   no 40
#   shift 0.3 SD (d 0.85), image SD 0.2             0.12 .. 0.36   weak 37, no 3
#   shift 0.3 SD, image SD 0.5 (fields vary more)  -0.17 .. 0.38   weak 8, no 32 (hidden by fields)
#   shift 0.3 SD, 8 images split over plates        0.18 .. 0.33   weak 40
#   shift 1.0 SD (d 2.8), 8 + 8 images, SD 0.5      0.50 .. 0.84   strong 39, weak 1
#   shift 1.0 SD, 4 + 4 / 5 + 5 images, SD 0.2      0.72 .. 0.88   strong 40 / strong 40
#   shift 1.0 SD, 3 + 3 images                                     undetermined 40 (untestable)
# So with no batch effect the verdict reads "weak" about 1 time in 20 (the test's level) and never
# "strong".
WEAK_SKILL = 0.1
STRONG_SKILL = 0.5
# After per-batch standardisation the by-image accuracy lands below chance (0.17 .. 0.41, skill
# -0.66 .. -0.18, measured on 3 planted datasets): centring makes each batch's mean equal over all
# its images, so held-out images sit on the far side of the training images. The reason says so
# below this skill, lest "0.2 accuracy" read as a new effect.
BELOW_CHANCE_SKILL = -0.2
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
FEW_CELLS = 100
# Wider features (CNN: 512) are measured on their leading principal components, as scIB measures
# integrations and Harmony corrects on PCs. At 10,000 cells x 512 features the classifier alone took
# 17 s (each fit is N x D^2); on 50 components the whole report takes the same ~3 s as 32 features.
REPORT_MAX_DIMS = 50

CORRECTION_METHODS = ("none", "standardize", "harmony")

# The classifier, silhouette and PCA multiply modest matrices ((8000 x 32)^T (8000 x 32), 3000 x
# 3000 x 32), the classifier hundreds of times. OpenBLAS's threads made each 8000-cell product 250 ms instead of 3 ms on a
# busy 2-core machine (a report took 55 s instead of 3 s), so those run single-threaded.
_ONE_BLAS_THREAD = {"limits": 1, "user_api": "blas"}
VERDICTS = ("no", "weak", "strong", "undetermined")


# ---------------------------------------------------------------------------------------------
# inputs


def _check_features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be (cells, features), got shape {X.shape}")
    if len(X) < 2:
        raise ValueError(f"batch metrics need at least 2 cells, got {len(X)}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    return X


def class_codes(labels: Sequence | np.ndarray, n: int, name: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes 0..L-1 and the label names (as strings, sorted) of one per-cell labelling."""
    values = pd.Series(np.asarray(labels, dtype=object))
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} labels for {n} cells")
    if values.isna().any():
        raise ValueError(f"{name} is missing for {int(values.isna().sum())} cells")
    codes, levels = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), [str(v) for v in levels]


# ---------------------------------------------------------------------------------------------
# silhouette


def _subsample(n: int, sample: int | None, seed: int) -> np.ndarray:
    if sample is None or n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _silhouettes(X: np.ndarray, labellings: Sequence[np.ndarray], sample: int | None, seed: int) -> list[np.ndarray]:
    """Per-cell silhouette widths of each labelling on one shared subsample and distance matrix."""
    from sklearn.metrics import pairwise_distances, silhouette_samples
    from threadpoolctl import threadpool_limits

    idx = _subsample(len(X), sample, seed)
    with threadpool_limits(**_ONE_BLAS_THREAD):
        dist = pairwise_distances(X[idx])
    out = []
    for codes in labellings:
        sub = codes[idx]
        n_levels = len(np.unique(sub))
        if not 2 <= n_levels < len(sub):
            raise ValueError(f"silhouette needs 2 to n_cells - 1 groups, the sample has {n_levels} in {len(sub)} cells")
        out.append(silhouette_samples(dist, sub, metric="precomputed"))
    return out


def silhouette_label(
    X: np.ndarray, labels: Sequence | np.ndarray, *, sample: int | None = SILHOUETTE_MAX_CELLS, seed: int = 0
) -> float:
    """Mean silhouette width of the grouping by ``labels`` (Euclidean), in [-1, 1].

    For each cell, s = (b - a) / max(a, b) with a the mean distance to cells of its own label and
    b the mean distance to the nearest other label. The mean is ~1 when the labels form separate
    clusters, ~0 when they overlap, negative when cells sit closer to another label than to their
    own. This is scikit-learn's ``silhouette_score`` on at most ``sample`` cells drawn at random
    with ``seed`` (None: all cells). For condition it says how well treatment separates cells;
    for batch, 0 is the goal.
    """
    X = _check_features(X)
    codes, _ = class_codes(labels, len(X), "labels")
    return float(np.mean(_silhouettes(X, [codes], sample, seed)[0]))


def batch_asw(
    X: np.ndarray, batch: Sequence | np.ndarray, *, sample: int | None = SILHOUETTE_MAX_CELLS, seed: int = 0
) -> float:
    """scIB's batch ASW: the mean over cells of 1 - |s_i|, s_i the batch silhouette width, in [0, 1].

    1 = batches perfectly mixed (every s_i = 0), 0 = batches form separate clusters (|s_i| = 1).
    Unlike 1 - |mean s|, a cell sitting closer to the other batch (s_i < 0) counts as poorly mixed
    too. scIB computes it within each cell type and averages over types; cells here carry no type,
    so it is one group. Same subsample as :func:`silhouette_label`.
    """
    X = _check_features(X)
    codes, _ = class_codes(batch, len(X), "batch")
    return float(np.mean(1.0 - np.abs(_silhouettes(X, [codes], sample, seed)[0])))


# ---------------------------------------------------------------------------------------------
# neighbourhoods: one search, reused by LISI and kBET


def _neighbours(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (n, k) of each cell's k nearest other cells, nearest first."""
    from sklearn.neighbors import NearestNeighbors

    n = len(X)
    k = min(k, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    # The cell itself normally comes first; with duplicate points a twin may take that place, so
    # drop the cell's own index wherever it is, or the farthest neighbour where it is absent.
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def _lisi_k(n: int, perplexity: float) -> int:
    # 3 x perplexity neighbours besides the cell itself: with that, per-cell values match
    # harmonypy.compute_lisi (its C++ code) to 1e-14; with one fewer they differ by up to 0.005.
    return max(1, min(int(3 * perplexity), n - 1))


def _entropy(dist: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entropy H and normalised weights P of exp(-beta * d) over each row of neighbour distances."""
    # Measured from each row's nearest neighbour: P and H are unchanged (the shift cancels), but
    # the nearest weight is exp(0) = 1, so a large beta cannot underflow every weight to 0 (where
    # harmonypy gives the cell a LISI of -1).
    shifted = dist - dist[:, :1]
    P = np.exp(-shifted * beta[:, None])
    total = P.sum(axis=1)
    H = np.log(total) + beta * (shifted * P).sum(axis=1) / total
    return H, P / total[:, None]


def _lisi_from_neighbours(
    dist: np.ndarray, idx: np.ndarray, codes: np.ndarray, n_levels: int, perplexity: float, tol: float = 1e-5
) -> np.ndarray:
    """Per-cell LISI: harmonypy's ``compute_simpson`` (the R lisi package), vectorised over cells.

    Gaussian weights exp(-beta * d) on the neighbours' Euclidean distances d (sorted, nearest
    first), beta found per cell by bisection (50 steps at most) so the weights' entropy equals
    log(perplexity); the index is 1 / sum over labels of (weight of that label)^2.
    """
    n = len(dist)
    beta = np.ones(n)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    H, P = _entropy(dist, beta)
    target = np.log(perplexity)
    for _ in range(50):
        diff = H - target
        active = np.abs(diff) >= tol
        if not active.any():
            break
        up = active & (diff > 0)
        down = active & ~(diff > 0)
        lo[up] = beta[up]
        beta[up] = np.where(np.isfinite(hi[up]), (beta[up] + hi[up]) / 2, beta[up] * 2)
        hi[down] = beta[down]
        beta[down] = np.where(np.isfinite(lo[down]), (beta[down] + lo[down]) / 2, beta[down] / 2)
        H[active], P[active] = _entropy(dist[active], beta[active])
    neighbour_codes = codes[idx]
    simpson = np.zeros(n)
    for level in range(n_levels):
        simpson += np.where(neighbour_codes == level, P, 0.0).sum(axis=1) ** 2
    return 1.0 / simpson


def lisi_per_cell(X: np.ndarray, labels: Sequence | np.ndarray, *, perplexity: float = LISI_PERPLEXITY) -> np.ndarray:
    """Each cell's LISI: the effective number of labels among its neighbours, 1 .. n_labels.

    Gaussian-kernel version with perplexity calibration, as in harmony and scIB (not the uniform
    kNN simplification): matches ``harmonypy.compute_lisi`` on the same data.
    """
    X = _check_features(X)
    codes, levels = class_codes(labels, len(X), "labels")
    dist, idx = _neighbours(X, _lisi_k(len(X), perplexity))
    return _lisi_from_neighbours(dist, idx, codes, len(levels), perplexity)


def _normalise_lisi(value: float, n_levels: int) -> float:
    # scIB's scaling: 0 = one batch in every neighbourhood, 1 = all batches equally present.
    if n_levels < 2:
        raise ValueError("normalised LISI needs at least 2 labels")
    return float((value - 1.0) / (n_levels - 1))


def ilisi(
    X: np.ndarray, batch: Sequence | np.ndarray, *, perplexity: float = LISI_PERPLEXITY, normalise: bool = False
) -> float:
    """Median iLISI over cells: ~n_batches when batches are mixed, 1 when each neighbourhood is one batch.

    ``normalise=True`` gives scIB's (median - 1) / (n_batches - 1), in [0, 1].
    """
    X = _check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    dist, idx = _neighbours(X, _lisi_k(len(X), perplexity))
    value = float(np.median(_lisi_from_neighbours(dist, idx, codes, len(levels), perplexity)))
    return _normalise_lisi(value, len(levels)) if normalise else value


# ---------------------------------------------------------------------------------------------
# kBET


def default_kbet_k(batch_sizes: Sequence[int]) -> int:
    """kBET's neighbourhood size, a quarter of the mean batch size, held within [10, 91]."""
    return int(np.clip(np.floor(np.mean(batch_sizes) / 4), KBET_MIN_K, KBET_MAX_K))


def _kbet_from_neighbours(
    idx: np.ndarray, codes: np.ndarray, n_levels: int, k: int, alpha: float, n_tests: int | None, seed: int
) -> float:
    from scipy.stats import chi2

    n = len(codes)
    cells = np.arange(n)
    if n_tests is not None and n_tests < n:
        cells = np.sort(np.random.default_rng(seed).choice(n, size=n_tests, replace=False))
    # kBET's neighbourhood: the cell itself and its k - 1 nearest neighbours.
    env = np.concatenate([cells[:, None], idx[cells, : k - 1]], axis=1)
    counts = np.stack([(codes[env] == level).sum(axis=1) for level in range(n_levels)], axis=1)
    expected = np.bincount(codes, minlength=n_levels) / n * env.shape[1]
    stat = ((counts - expected) ** 2 / expected).sum(axis=1)
    p = chi2.sf(stat, df=n_levels - 1)
    return float(np.mean(p >= alpha))


def kbet(
    X: np.ndarray,
    batch: Sequence | np.ndarray,
    *,
    k: int | None = None,
    alpha: float = 0.05,
    n_tests: int | None = None,
    seed: int = 0,
) -> float:
    """kBET acceptance rate: share of cells whose neighbourhood's batch mix passes a chi-square test.

    For each tested cell, the batch counts among itself and its k - 1 nearest neighbours are
    compared with k x the global batch frequencies (Pearson chi-square, n_batches - 1 degrees of
    freedom); the acceptance rate is the share of tests with p >= ``alpha``. Well mixed: about
    1 - alpha; separated: 0. ``k=None`` takes :func:`default_kbet_k`. kBET tests a random 10%
    of cells, 100 times; here every cell is tested once (``n_tests`` draws that many with
    ``seed`` instead), which averages the same tests.
    """
    X = _check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if len(levels) < 2:
        raise ValueError("kBET needs at least 2 batches")
    k = default_kbet_k(np.bincount(codes)) if k is None else int(k)
    if not 2 <= k <= len(X):
        raise ValueError(f"kBET neighbourhood size must be 2..{len(X)} (the number of cells), got {k}")
    _, idx = _neighbours(X, k - 1)
    return _kbet_from_neighbours(idx, codes, len(levels), k, alpha, n_tests, seed)


# ---------------------------------------------------------------------------------------------
# classifier cross-validated by image


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
    with threadpool_limits(**_ONE_BLAS_THREAD):
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

    X = _check_features(X)
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


# ---------------------------------------------------------------------------------------------
# report and verdict


def _leading_components(X: np.ndarray, max_dims: int, seed: int) -> np.ndarray:
    if X.shape[1] <= max_dims or len(X) <= max_dims:
        return X
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(**_ONE_BLAS_THREAD):  # 0.5 s single-threaded, 2.5-3.7 s with threads here
        return PCA(n_components=max_dims, svd_solver="randomized", random_state=seed).fit_transform(X)


def _verdict(clf: dict[str, Any]) -> str:
    """Verdict from the by-image classifier and its permutation test alone.

    undetermined: no test possible (a batch in fewer than 2 images, or too few images to group);
    no: p > 0.05 (within what image-to-image noise gives) or skill < WEAK_SKILL;
    weak: p <= 0.05 and WEAK_SKILL <= skill < STRONG_SKILL;  strong: p <= 0.05 and skill >= STRONG_SKILL.
    The neighbourhood metrics stay out of it: they read clumps of same-image cells as batch clumps.
    """
    if clf["significant"] is None:
        return "undetermined"
    if not clf["significant"] or clf["skill"] < WEAK_SKILL:
        return "no"
    return "strong" if clf["skill"] >= STRONG_SKILL else "weak"


def _mixed_locally(kbet_value: float, ilisi_norm: float) -> bool:
    # Half the neighbourhoods accepted and half the possible iLISI: below either, cells sit mostly
    # among cells of their own batch.
    return kbet_value >= 0.5 and ilisi_norm >= 0.5


def _reason(verdict: str, clf: dict[str, Any], ilisi_value: float, n_batches: int, kbet_value: float,
            evidence: str) -> str:
    """The verdict in one paragraph: the classifier's numbers, the neighbourhoods' in the same
    breath (so no separate note contradicts the headline), and what features it rests on."""
    acc, chance = clf["balanced_accuracy"], clf["chance"]
    neighbours = f"kBET accepts {kbet_value:.0%} of neighbourhoods and iLISI is {ilisi_value:.2f} of a possible {n_batches}"
    mixed = _mixed_locally(kbet_value, _normalise_lisi(ilisi_value, n_batches))
    tail = f" {evidence}" if evidence else ""
    if verdict == "undetermined":
        seen = "" if acc is None else f"; on held-out images a classifier scores {acc:.2f} balanced accuracy (chance {chance:.2f})"
        local = (
            f" Locally {neighbours}; these cannot tell cells that cluster by image from cells that cluster by batch, "
            "so they do not decide it either." if not mixed else f" Locally {neighbours}."
        )
        return f"Cannot tell whether the batches differ: {clf['reason']}{seen}.{local}{tail}"
    told = f"a classifier tells the batches apart at {acc:.2f} balanced accuracy on images it never saw"
    if verdict == "no":
        if clf["skill"] < BELOW_CHANCE_SKILL:
            noise = (
                f"below chance ({chance:.2f}): held-out images sit on the far side of the training images, "
                "as per-batch centring makes them"
            )
        elif not clf["significant"]:
            noise = f"no more than shuffled batch labels reach (up to {clf['chance_upper']:.2f}, chance {chance:.2f})"
        else:
            noise = f"barely above chance ({chance:.2f})"
        if mixed:
            return f"No batch effect: {told}, {noise}; {neighbours}.{tail}"
        return (
            f"No batch effect: {told}, {noise}. Locally the batches are not well mixed ({neighbours}), but that does not "
            "carry over from a batch's images to its others: cells cluster by image (field-to-field variation), not "
            f"by batch -- or the batches differ in a way no linear boundary draws.{tail}"
        )
    lead = "Strong" if verdict == "strong" else "Weak"
    return (
        f"{lead} batch effect: {told} (chance {chance:.2f}, shuffled labels up to {clf['chance_upper']:.2f}); "
        f"{neighbours}.{tail}"
    )


def _evidence(verdict: str, features: str, parts: dict[str, dict[str, Any]]) -> str:
    """What the verdict rests on: the features, and how well each part of them alone tells the
    batches apart on unseen images (e.g. the cells themselves vs their surroundings)."""
    if not features and not parts:
        return ""
    text = f"It rests on {features or 'the features'}."
    scored = {name: r for name, r in parts.items() if r["balanced_accuracy"] is not None}
    if not scored:
        return text
    standing = {True: "beyond what shuffled labels reach", False: "within what shuffled labels reach",
                None: "untestable with these images"}
    readings = [f"{name} alone {'tell the batches apart ' if k == 0 else ''}at {r['balanced_accuracy']:.2f} "
                f"({standing[r['significant']]})" for k, (name, r) in enumerate(scored.items())]
    text += " On unseen images " + ", ".join(readings)
    hits = [name for name, r in scored.items() if r["significant"] and r["skill"] >= WEAK_SKILL]
    rest = [name for name in parts if name not in hits]
    if verdict in ("weak", "strong") and hits and rest:
        text += f": the difference lies in {' and '.join(hits)}, not in {' and '.join(rest)}"
    elif verdict in ("weak", "strong") and len(hits) > 1:
        text += ": the difference shows in both"
    elif verdict == "no" and hits:
        text += (f"; {' and '.join(hits)} alone go beyond shuffled labels where all features "
                 f"together do not (one of {len(parts) + 1} looks at the same cells, so it may be chance: add "
                 "images to decide)")
    return text + "."


def _comparison(batch_clf: dict[str, Any], cond_clf: dict[str, Any]) -> str | None:
    """Answer to "does my treatment separate cells more than my plates do?" in skill terms."""
    if batch_clf["skill"] is None or cond_clf["skill"] is None:
        return None
    b, c = batch_clf, cond_clf
    numbers = (
        f"on unseen images condition is told apart at {c['balanced_accuracy']:.2f} balanced accuracy "
        f"(chance {c['chance']:.2f}), batch at {b['balanced_accuracy']:.2f} (chance {b['chance']:.2f})"
    )
    untested = [name for name, clf in (("condition", c), ("batch", b)) if clf["significant"] is None]
    if untested:  # an accuracy its permutation test could not judge must not win or lose a comparison
        return (f"Undetermined whether condition or batch separates cells more: {' and '.join(untested)} cannot be "
                f"tested on so few images ({numbers}, which image-to-image variation alone could give).")
    if b["significant"] is False and c["significant"] is False:
        return f"Neither condition nor batch separates cells beyond image-to-image variation: {numbers}."
    condition_wins = c["significant"] is not False and (b["significant"] is False or c["skill"] > b["skill"])
    if condition_wins:
        return f"Condition separates cells more than batch does: {numbers}."
    return f"Batch separates cells as much as condition or more: {numbers}."


def _confounded(b_codes: np.ndarray, c_codes: np.ndarray, n_cond: int) -> bool:
    if n_cond < 2:
        return False
    per_batch = pd.crosstab(b_codes, c_codes).gt(0).sum(axis=1)
    return bool((per_batch == 1).all())


def batch_effect_report(
    X: np.ndarray,
    batch: Sequence | np.ndarray,
    condition: Sequence | np.ndarray,
    image: Sequence | np.ndarray,
    *,
    seed: int = 0,
    perplexity: float = LISI_PERPLEXITY,
    features: str = "",
    parts: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """All batch metrics, the same for condition, and a plain-language verdict; JSON-ready.

    ``features`` says in words what ``X`` is ("10 morphology features per cell"), and ``parts``
    names groups of its columns (e.g. the cell itself vs its surroundings): the by-image
    classifier is also run on each part alone, and the reason says which part a difference lies
    in. The verdict itself rests on all columns together (one test, at one level).

    Top-level keys: ``verdict`` ("no" | "weak" | "strong" | "undetermined", see :func:`_verdict`),
    ``reason`` (the verdict with its numbers, the neighbourhood metrics', and what it rests on),
    ``comparison`` (condition vs batch, or None),
    ``silhouette`` (scIB batch ASW, 1 mixed .. 0 separated), ``silhouette_raw`` (mean batch
    silhouette), ``ilisi`` (median), ``ilisi_norm`` (scIB scaling, 0..1), ``kbet`` (acceptance rate),
    ``kbet_k``, ``classifier_accuracy`` (balanced, CV by image; None when impossible), ``chance``,
    ``skill``, ``classifier`` (the full :func:`classifier_accuracy` dict), ``condition`` (its
    ``silhouette``, ``classifier_accuracy``, ``chance``, ``skill``, ``significant``, ``classifier``;
    None values when there is one condition), ``n_cells``, ``n_features``, ``dims_measured``
    (features wider than REPORT_MAX_DIMS are measured on that many principal components),
    ``n_images``, ``n_batches``, ``batch_sizes``, ``mixed_locally`` (kBET >= 0.5 and normalised
    iLISI >= 0.5), ``evidence`` (``features`` and, per part, its ``n_features``,
    ``balanced_accuracy``, ``chance_upper``, ``p_value``, ``significant``, ``skill``), ``warnings``.
    """
    X = _check_features(X)
    n, n_features = X.shape
    b_codes, b_levels = class_codes(batch, n, "batch")
    c_codes, c_levels = class_codes(condition, n, "condition")
    i_codes, i_levels = class_codes(image, n, "image")
    if len(b_levels) < 2:
        raise ValueError(f"a batch effect needs at least 2 batches, all cells are in {b_levels[0]!r}")
    columns = {name: [int(j) for j in cols] for name, cols in (parts or {}).items()}
    if any(not cols or min(cols) < 0 or max(cols) >= n_features for cols in columns.values()):
        raise ValueError(f"feature parts must name columns 0..{n_features - 1}, got {columns}")
    raw = X
    X = _leading_components(X, REPORT_MAX_DIMS, seed)
    sizes = np.bincount(b_codes)
    warnings: list[str] = []

    lisi_k = _lisi_k(n, perplexity)
    kbet_k = min(default_kbet_k(sizes), n)
    dist, idx = _neighbours(X, max(lisi_k, kbet_k - 1))
    lisi_values = _lisi_from_neighbours(dist[:, :lisi_k], idx[:, :lisi_k], b_codes, len(b_levels), perplexity)
    ilisi_value = float(np.median(lisi_values))
    kbet_value = _kbet_from_neighbours(idx, b_codes, len(b_levels), kbet_k, 0.05, None, seed)

    has_condition = len(c_levels) >= 2
    sils = _silhouettes(X, [b_codes, c_codes] if has_condition else [b_codes], SILHOUETTE_MAX_CELLS, seed)
    batch_names = np.asarray(b_levels, dtype=object)[b_codes]
    batch_clf = classifier_accuracy(X, batch_names, i_codes, seed=seed, noun="batch")
    verdict = _verdict(batch_clf)
    part_results = {}
    for name, cols in columns.items() if len(columns) > 1 else ():
        r = classifier_accuracy(_leading_components(raw[:, cols], REPORT_MAX_DIMS, seed), batch_names, i_codes,
                                seed=seed, noun="batch")
        part_results[name] = {"n_features": len(cols), **{k: r[k] for k in (
            "balanced_accuracy", "chance_upper", "p_value", "significant", "skill")}}
    condition_part: dict[str, Any] = {
        "silhouette": None,
        "classifier_accuracy": None,
        "chance": None,
        "skill": None,
        "significant": None,
        "classifier": None,
        "levels": c_levels,
    }
    comparison = None
    if has_condition:
        cond_clf = classifier_accuracy(X, np.asarray(c_levels, dtype=object)[c_codes], i_codes, seed=seed,
                                       noun="condition")
        condition_part.update(
            silhouette=float(np.mean(sils[1])),
            classifier_accuracy=cond_clf["balanced_accuracy"],
            chance=cond_clf["chance"],
            skill=cond_clf["skill"],
            significant=cond_clf["significant"],
            classifier=cond_clf,
        )
        comparison = _comparison(batch_clf, cond_clf)
        if cond_clf["reason"]:
            warnings.append(f"Condition cannot be scored on unseen images: {cond_clf['reason']}.")
    elif c_levels == [""]:
        warnings.append("No cell has a condition: there is no treatment difference to keep.")
    else:
        warnings.append(f"Only one condition ({c_levels[0]!r}): there is no treatment difference to keep.")

    if n < FEW_CELLS:
        warnings.append(f"The verdict rests on only {n} cells; below {FEW_CELLS} every metric is noisy.")
    need = min_images_per_label(len(b_levels))
    few = {name: c for name, c in batch_clf["images_per_class"].items() if c < need}
    if few and verdict != "undetermined":  # undetermined: the reason says why already
        listed = ", ".join(f"{name!r}: {c}" for name, c in few.items())
        split = ("" if batch_clf["partitions"] is None
                 else f"; these images split into only {batch_clf['partitions']} groupings")
        warnings.append(
            f"Few images per batch ({listed}): {plural(len(b_levels), 'batch')} need {need} images each for a "
            f"permutation test to be sure of reaching p <= {SIGNIFICANCE}{split}, so a batch effect that varies "
            "from field to field can hide."
        )
    if _confounded(b_codes, c_codes, len(c_levels)):
        warnings.append(
            "Every batch holds a single condition: batch and condition are confounded, so a batch difference "
            "cannot be told from a treatment effect, and correcting batch would erase the treatment."
        )
    ilisi_norm = _normalise_lisi(ilisi_value, len(b_levels))
    evidence = _evidence(verdict, features, part_results)
    return {
        "verdict": verdict,
        "reason": _reason(verdict, batch_clf, ilisi_value, len(b_levels), kbet_value, evidence),
        "comparison": comparison,
        "silhouette": float(np.mean(1.0 - np.abs(sils[0]))),
        "silhouette_raw": float(np.mean(sils[0])),
        "ilisi": ilisi_value,
        "ilisi_norm": ilisi_norm,
        "kbet": kbet_value,
        "kbet_k": int(kbet_k),
        "classifier_accuracy": batch_clf["balanced_accuracy"],
        "chance": batch_clf["chance"],
        "skill": batch_clf["skill"],
        "classifier": batch_clf,
        "condition": condition_part,
        "n_cells": int(n),
        "n_features": int(n_features),
        "dims_measured": int(X.shape[1]),
        "n_images": int(len(i_levels)),
        "n_batches": int(len(b_levels)),
        "batch_sizes": {b_levels[i]: int(s) for i, s in enumerate(sizes)},
        "mixed_locally": _mixed_locally(kbet_value, ilisi_norm),
        "evidence": {"features": features, "parts": part_results},
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------
# corrections


def standardize_per_batch(
    X: np.ndarray, batch: Sequence | np.ndarray, *, reference: Sequence[bool] | np.ndarray | None = None
) -> np.ndarray:
    """Z-score each feature within each batch: (x - mean) / std of that batch's cells.

    With ``reference`` (a boolean mask, e.g. control cells) each batch is centred and scaled by its
    reference cells' mean and std, as image-based profiling normalises plates to their controls: a
    treatment shift then survives as a shift from the controls. A feature constant among those cells
    is only centred (scale 1, as scikit-learn's StandardScaler does).
    """
    X = _check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if reference is None:
        ref = np.ones(len(X), bool)
    else:
        ref = np.asarray(reference)
        if ref.dtype != bool or ref.shape != (len(X),):
            raise ValueError(f"reference must be a boolean mask of {len(X)} cells, got {ref.dtype} {ref.shape}")
    out = np.empty_like(X)
    for b, name in enumerate(levels):
        in_batch = codes == b
        basis = X[in_batch & ref]
        if len(basis) < 2:
            raise ValueError(
                f"batch {name!r} has {len(basis)} reference cells; standardising it needs at least 2"
            )
        mean = basis.mean(axis=0)
        std = basis.std(axis=0)
        std[std == 0] = 1.0
        out[in_batch] = (X[in_batch] - mean) / std
    return out


def harmony(X: np.ndarray, batch: Sequence | np.ndarray, *, seed: int = 0, max_iter: int = 10) -> np.ndarray:
    """Harmony (Korsunsky et al. 2019) via ``harmonypy.run_harmony``: corrected features (cells, features)."""
    import harmonypy

    X = _check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if len(levels) < 2:
        raise ValueError(f"Harmony needs at least 2 batches, all cells are in {levels[0]!r}")
    # run_harmony takes features x cells or cells x features and guesses which from the cell count,
    # taking the first axis as features when both match: pass features x cells so a square matrix
    # is read the right way too.
    result = harmonypy.run_harmony(
        X.T, {"batch": codes}, "batch", max_iter_harmony=max_iter, random_state=seed, verbose=False
    )
    Z = np.asarray(result.Z_corr, dtype=np.float64)
    # Z_corr came back (cells, features) in harmonypy 2.1.0 where older releases gave (features,
    # cells); decide by Z_orig, which is the input in one of the two orientations.
    Z_orig = np.asarray(result.Z_orig)
    if Z_orig.shape == X.shape and np.allclose(Z_orig, X):
        corrected = Z
    elif Z_orig.shape == X.T.shape and np.allclose(Z_orig, X.T):
        corrected = Z.T
    else:
        raise RuntimeError(f"harmonypy returned Z_orig {Z_orig.shape} that matches neither orientation of {X.shape}")
    if corrected.shape != X.shape:
        raise RuntimeError(f"harmonypy returned Z_corr {Z.shape} for input {X.shape}")
    return corrected


def correct(
    X: np.ndarray,
    batch: Sequence | np.ndarray,
    method: str,
    *,
    control_mask: Sequence[bool] | np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The one entry point to the corrections: "none" | "standardize" | "harmony".

    ``control_mask`` is for "standardize" only (scale each batch by its control cells).
    """
    if method not in CORRECTION_METHODS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTION_METHODS)}")
    if control_mask is not None and method != "standardize":
        raise ValueError(f"control_mask applies to 'standardize' only, not {method!r}")
    if method == "none":
        return _check_features(X).copy()
    if method == "standardize":
        return standardize_per_batch(X, batch, reference=control_mask)
    return harmony(X, batch, seed=seed)


def compare_correction(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a correction did to batch and condition, from two :func:`batch_effect_report` results.

    The condition difference counts as *erased* when before it was a signal (significant, skill >=
    WEAK_SKILL) and after it is not; as *weakened* when it survives but its classifier skill or its
    silhouette (when that was >= 0.05) fell by more than half.
    """
    cb, ca = before["condition"], after["condition"]
    out: dict[str, Any] = {
        "batch_accuracy_before": before["classifier_accuracy"],
        "batch_accuracy_after": after["classifier_accuracy"],
        "batch_chance": before["chance"],
        "verdict_before": before["verdict"],
        "verdict_after": after["verdict"],
        "condition_accuracy_before": cb["classifier_accuracy"],
        "condition_accuracy_after": ca["classifier_accuracy"],
        "condition_chance": cb["chance"],
        "condition_silhouette_before": cb["silhouette"],
        "condition_silhouette_after": ca["silhouette"],
        "condition_erased": False,
        "condition_weakened": False,
    }
    if before["classifier_accuracy"] is not None and after["classifier_accuracy"] is not None:
        batch_msg = (
            f"Batch effect {before['verdict']} before, {after['verdict']} after: batches told apart at "
            f"{before['classifier_accuracy']:.2f} then {after['classifier_accuracy']:.2f} balanced accuracy "
            f"(chance {before['chance']:.2f})."
        )
    else:
        batch_msg = f"Batch effect {before['verdict']} before, {after['verdict']} after."

    had_signal = cb["skill"] is not None and cb["significant"] and cb["skill"] >= WEAK_SKILL
    if not had_signal or ca["skill"] is None:
        out["message"] = f"{batch_msg} There was no condition difference to keep."
        return out
    numbers = (
        f"condition told apart at {cb['classifier_accuracy']:.2f} before and {ca['classifier_accuracy']:.2f} after "
        f"(chance {cb['chance']:.2f}); condition silhouette {cb['silhouette']:.2f} then {ca['silhouette']:.2f}"
    )
    erased = not ca["significant"] or ca["skill"] < WEAK_SKILL
    silhouette_halved = cb["silhouette"] >= 0.05 and ca["silhouette"] < cb["silhouette"] / 2
    weakened = not erased and (ca["skill"] < cb["skill"] / 2 or silhouette_halved)
    out["condition_erased"] = bool(erased)
    out["condition_weakened"] = bool(weakened)
    if erased:
        cond_msg = f"Correction also erased the condition difference: {numbers}."
    elif weakened:
        cond_msg = f"Correction weakened the condition difference: {numbers}."
    else:
        cond_msg = f"Correction kept the condition difference: {numbers}."
    out["message"] = f"{batch_msg} {cond_msg}"
    return out
