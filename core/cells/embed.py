"""2-D maps of per-cell features (PCA, t-SNE, UMAP) and clusters on them.

scikit-learn for PCA and clustering, openTSNE for t-SNE, umap-learn for UMAP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

METHODS = ("pca", "tsne", "umap")
CLUSTER_METHODS = ("kmeans", "hdbscan")
# t-SNE and UMAP see at most this many PCA components: the usual practice (the tail is mostly
# noise), and the neighbour search's time grows with the dimension (CNN features: 512-2048).
PRE_PCA_DIMS = 50
# openTSNE's early exaggeration phase, run before the ``n_iter`` normal iterations.
TSNE_EXAGGERATION_ITER = 250
# Cells from which t-SNE runs on all cores. Threads meet at a barrier every iteration, which on
# a busy 2-core machine cost more than they saved at 10,000 cells (optimisation 67 s on one
# thread, 81 s on two) and saved a quarter at 100,000 (225 s vs 172 s); 160 cells: 1.9 s vs 16.5 s.
TSNE_THREADS_FROM = 50_000
# Exact neighbours (scikit-learn) up to this many cells, openTSNE's approximate (Annoy) above.
# Measured for 100,000 cells here: 10-D morphology features 27 s exact vs 90 s Annoy; 50-D
# 32 s vs 66 s. Brute force grows as N^2, so far larger maps go back to Annoy.
TSNE_EXACT_KNN_UP_TO = 100_000

Progress = Callable[[float], None]


def _check_features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"features must be (cells, features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    return X


def pca(X: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """The first ``n`` principal components (N, n) float32; fewer when X has fewer dims or cells."""
    from sklearn.decomposition import PCA

    X = _check_features(X)
    if len(X) < 2:
        raise ValueError(f"PCA needs at least 2 cells, got {len(X)}: add images or loosen the segmentation")
    n = min(n, X.shape[1], len(X))
    return PCA(n_components=n, random_state=seed).fit_transform(X.astype(np.float32)).astype(np.float32)


def _reduce(X: np.ndarray, seed: int) -> np.ndarray:
    return pca(X, PRE_PCA_DIMS, seed=seed) if X.shape[1] > PRE_PCA_DIMS else X.astype(np.float32)


def tsne_min_cells(perplexity: float) -> int:
    """Fewest cells t-SNE accepts at ``perplexity`` (each cell needs ~3 x perplexity neighbours)."""
    return int(np.floor(3 * perplexity)) + 1


class _TsneProgress:
    """openTSNE callback: reports the fraction of all optimisation iterations done.

    openTSNE restarts its iteration count for the normal phase, so calls are counted instead."""

    def __init__(self, report: Progress, every: int, total: int) -> None:
        self.report, self.every, self.total, self.done = report, every, total, 0

    def __call__(self, iteration: int, error: float, embedding: np.ndarray) -> bool:
        self.done += self.every
        self.report(min(1.0, self.done / self.total))
        return False  # True would stop the optimisation


def tsne(
    X: np.ndarray, *, perplexity: float = 30, n_iter: int = 500, seed: int = 0, n_jobs: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """openTSNE t-SNE to (N, 2) float32: PCA initialisation, ``n_iter`` iterations after 250 of
    early exaggeration. ``progress(fraction)`` is called as the optimisation runs (the nearest-
    neighbour search before it is not counted). ``n_jobs=None``: one thread below 50,000 cells,
    all cores from there."""
    from openTSNE import TSNE

    X = _check_features(X)
    need = tsne_min_cells(perplexity)
    if len(X) < need:
        raise ValueError(
            f"t-SNE with perplexity {perplexity:g} needs at least {need} cells, got {len(X)}: "
            f"lower the perplexity to {max(1, (len(X) - 1) // 3)} or less, or add images")
    if n_jobs is None:
        n_jobs = 1 if len(X) < TSNE_THREADS_FROM else -1
    X = _reduce(X, seed)
    every = 25
    callback = None
    if progress is not None:
        progress(0.0)
        callback = _TsneProgress(progress, every, TSNE_EXAGGERATION_ITER + n_iter)
    model = TSNE(
        n_components=2, perplexity=perplexity, n_iter=n_iter, early_exaggeration_iter=TSNE_EXAGGERATION_ITER,
        initialization="pca", random_state=seed, n_jobs=n_jobs,
        neighbors="exact" if len(X) <= TSNE_EXACT_KNN_UP_TO else "auto",
        # openTSNE's "auto": FFT-interpolated gradients (linear in N) from 10,000 cells, Barnes-Hut
        # below. FFT's interpolation grid costs as much for 1,000 cells as for 10,000: 1,000 cells
        # took 27 s with FFT and 8 s with Barnes-Hut (one thread, busy 2-core machine).
        negative_gradient_method="auto",
        callbacks=callback, callbacks_every_iters=every, verbose=False,
    )
    out = np.asarray(model.fit(X), dtype=np.float32)
    if progress is not None:
        progress(1.0)
    return out


_umap_ran = False  # umap-learn compiles its code (numba) on the first UMAP in a process


def umap_compiled() -> bool:
    """Whether a UMAP has run in this process (the next ones skip umap-learn's compilation)."""
    return _umap_ran


def umap_map(
    X: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """umap-learn UMAP to (N, 2) float32. ``seed=None`` runs multi-threaded but not reproducibly
    (umap-learn turns parallelism off when given a random state). umap-learn has no progress
    callback, so ``progress`` hears only 0 and 1."""
    import umap

    X = _check_features(X)
    if len(X) <= n_neighbors:
        raise ValueError(
            f"UMAP with {n_neighbors} neighbours needs at least {n_neighbors + 1} cells, got {len(X)}: "
            f"lower n_neighbors to {max(2, len(X) - 1)} or less, or add images")
    X = _reduce(X, seed or 0)
    if progress is not None:
        progress(0.0)
    model = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                      n_jobs=1 if seed is not None else -1)
    out = np.asarray(model.fit_transform(X), dtype=np.float32)
    global _umap_ran
    _umap_ran = True
    if progress is not None:
        progress(1.0)
    return out


def embed_map(X: np.ndarray, method: str, *, progress: Progress | None = None, **params) -> np.ndarray:
    """(N, 2) map of features ``X`` by ``method`` ("pca", "tsne" or "umap"); ``params`` go to
    :func:`pca` (``seed``), :func:`tsne` or :func:`umap_map`; a misspelt one is a TypeError."""
    if method == "pca":
        if progress is not None:
            progress(0.0)
        out = pca(X, 2, **params)
        if out.shape[1] < 2:  # a single feature: the map is a line
            out = np.hstack([out, np.zeros((len(out), 2 - out.shape[1]), np.float32)])
        if progress is not None:
            progress(1.0)
        return out
    if method == "tsne":
        return tsne(X, progress=progress, **params)
    if method == "umap":
        return umap_map(X, progress=progress, **params)
    raise ValueError(f"map method must be one of {METHODS}, got {method!r}")


def cluster(
    X: np.ndarray, method: str, *, k: int = 8, min_cluster_size: int = 15, seed: int = 0,
) -> np.ndarray:
    """Cluster id per cell (N,) int: k-means with ``k`` clusters, or HDBSCAN with clusters of at
    least ``min_cluster_size`` cells and -1 for cells in none (noise)."""
    X = _check_features(X)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        if not 1 <= k <= len(X):
            raise ValueError(f"k-means with k={k} needs at least {k} cells, got {len(X)}: lower k")
        # n_init fixed so results do not change with scikit-learn's "auto" default.
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X).astype(np.int64)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        if min_cluster_size < 2:
            raise ValueError("HDBSCAN needs min_cluster_size of at least 2")
        if len(X) < min_cluster_size:
            raise ValueError(f"HDBSCAN with min_cluster_size={min_cluster_size} needs at least that many cells, "
                             f"got {len(X)}: lower it or add images")
        return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(X).astype(np.int64)
    raise ValueError(f"cluster method must be one of {CLUSTER_METHODS}, got {method!r}")


def composition(labels: Sequence[int] | np.ndarray, groups: Sequence[str] | np.ndarray) -> pd.DataFrame:
    """Per cluster (rows, -1 = noise), the share of its cells in each group (columns, e.g.
    batches); each row sums to 1. Ready for a stacked bar chart."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.shape != groups.shape:
        raise ValueError(f"{len(labels)} cluster labels but {len(groups)} groups")
    table = pd.crosstab(pd.Series(labels, name="cluster"), pd.Series(groups, name="group"), normalize="index")
    table.columns = table.columns.astype(str)
    table.columns.name = "group"
    return table
