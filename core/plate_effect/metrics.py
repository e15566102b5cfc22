"""How well plates (batches) mix among per-cell features or 2-D map coordinates: the neighbourhood
and silhouette metrics of the single-cell integration benchmark (scIB, Luecken et al. 2022),
computed with scikit-learn, numpy and scipy:

- batch silhouette (ASW), raw and in scIB's ``1 - |s|`` form;
- iLISI, the Local Inverse Simpson's Index of batch labels (Korsunsky et al. 2019);
- kBET acceptance rate (Büttner et al. 2019).

They see clumps of same-image cells as clumps of same-batch cells, so the verdict
(:mod:`core.plate_effect.verdict`) rests on the by-image classifier (:mod:`core.plate_effect.classifier`) and
reports these beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

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

# The classifier, silhouette and PCA multiply modest matrices ((8000 x 32)^T (8000 x 32), 3000 x
# 3000 x 32), the classifier hundreds of times. OpenBLAS's threads made each 8000-cell product 250 ms instead of 3 ms on a
# busy 2-core machine (a report took 55 s instead of 3 s), so those run single-threaded.
ONE_BLAS_THREAD = {"limits": 1, "user_api": "blas"}


# ---------------------------------------------------------------------------------------------
# inputs


def check_features(X: np.ndarray) -> np.ndarray:
    """Per-cell features as a finite float64 (cells, features) array of at least 2 cells."""
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


def silhouettes(X: np.ndarray, labellings: Sequence[np.ndarray], sample: int | None, seed: int) -> list[np.ndarray]:
    """Per-cell silhouette widths of each labelling on one shared subsample and distance matrix."""
    from sklearn.metrics import pairwise_distances, silhouette_samples
    from threadpoolctl import threadpool_limits

    idx = _subsample(len(X), sample, seed)
    with threadpool_limits(**ONE_BLAS_THREAD):
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
    X = check_features(X)
    codes, _ = class_codes(labels, len(X), "labels")
    return float(np.mean(silhouettes(X, [codes], sample, seed)[0]))


def batch_asw(
    X: np.ndarray, batch: Sequence | np.ndarray, *, sample: int | None = SILHOUETTE_MAX_CELLS, seed: int = 0
) -> float:
    """scIB's batch ASW: the mean over cells of 1 - |s_i|, s_i the batch silhouette width, in [0, 1].

    1 = batches perfectly mixed (every s_i = 0), 0 = batches form separate clusters (|s_i| = 1).
    Unlike 1 - |mean s|, a cell sitting closer to the other batch (s_i < 0) counts as poorly mixed
    too. scIB computes it within each cell type and averages over types; cells here carry no type,
    so it is one group. Same subsample as :func:`silhouette_label`.
    """
    X = check_features(X)
    codes, _ = class_codes(batch, len(X), "batch")
    return float(np.mean(1.0 - np.abs(silhouettes(X, [codes], sample, seed)[0])))


# ---------------------------------------------------------------------------------------------
# neighbourhoods: one search, reused by LISI and kBET


def nearest_neighbours(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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


def lisi_neighbour_count(n: int, perplexity: float) -> int:
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


def lisi_from_neighbours(
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
    X = check_features(X)
    codes, levels = class_codes(labels, len(X), "labels")
    dist, idx = nearest_neighbours(X, lisi_neighbour_count(len(X), perplexity))
    return lisi_from_neighbours(dist, idx, codes, len(levels), perplexity)


def normalise_lisi(value: float, n_levels: int) -> float:
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
    X = check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    dist, idx = nearest_neighbours(X, lisi_neighbour_count(len(X), perplexity))
    value = float(np.median(lisi_from_neighbours(dist, idx, codes, len(levels), perplexity)))
    return normalise_lisi(value, len(levels)) if normalise else value


# ---------------------------------------------------------------------------------------------
# kBET


def default_kbet_k(batch_sizes: Sequence[int]) -> int:
    """kBET's neighbourhood size, a quarter of the mean batch size, held within [10, 91]."""
    return int(np.clip(np.floor(np.mean(batch_sizes) / 4), KBET_MIN_K, KBET_MAX_K))


def kbet_from_neighbours(
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
    X = check_features(X)
    codes, levels = class_codes(batch, len(X), "batch")
    if len(levels) < 2:
        raise ValueError("kBET needs at least 2 batches")
    k = default_kbet_k(np.bincount(codes)) if k is None else int(k)
    if not 2 <= k <= len(X):
        raise ValueError(f"kBET neighbourhood size must be 2..{len(X)} (the number of cells), got {k}")
    _, idx = nearest_neighbours(X, k - 1)
    return kbet_from_neighbours(idx, codes, len(levels), k, alpha, n_tests, seed)
