from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from core.cells.embed import cluster, composition, embed_map, pca, tsne, tsne_min_cells


def blobs(n_per: int = 100, dims: int = 10, centers: int = 2, spread: float = 8.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, dims)) * spread
    truth = np.repeat(np.arange(centers), n_per)
    return (means[truth] + rng.standard_normal((len(truth), dims))).astype(np.float32), truth


def knn_purity(Y: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest map neighbours that come from its own blob."""
    idx = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)[:, 1:]
    return float((truth[idx] == truth[:, None]).mean())


@pytest.mark.parametrize("method,params", [
    ("pca", {}),
    ("tsne", {"perplexity": 20, "n_iter": 250}),
    ("umap", {"n_neighbors": 10}),  # the first UMAP in a process spends ~10 s compiling (numba)
])
def test_embed_map_shapes_and_seed_determinism(method, params):
    X, _ = blobs(n_per=80)
    a = embed_map(X, method, seed=0, **params)
    b = embed_map(X, method, seed=0, **params)
    assert a.shape == (160, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert a[:, 0].std() > 0 and a[:, 1].std() > 0
    if method == "umap":  # the Cell map stops warning of the first UMAP's compilation
        from core.cells.embed import umap_compiled

        assert umap_compiled()


def test_tsne_seed_changes_the_map():
    X, _ = blobs(n_per=80)
    assert not np.allclose(tsne(X, perplexity=20, n_iter=250, seed=0), tsne(X, perplexity=20, n_iter=250, seed=1))


def test_tsne_separates_two_gaussian_blobs():
    X, truth = blobs(n_per=150, dims=20)
    Y = embed_map(X, "tsne", perplexity=30)
    assert knn_purity(Y, truth) > 0.95
    # The blobs are apart in the map: between-centre distance well above the within-blob spread.
    c0, c1 = Y[truth == 0].mean(axis=0), Y[truth == 1].mean(axis=0)
    assert np.linalg.norm(c0 - c1) > 3 * max(Y[truth == 0].std(), Y[truth == 1].std())


def test_many_dimensions_are_pca_reduced_to_50_before_tsne():
    X, _ = blobs(n_per=60, dims=120)
    direct = tsne(X, perplexity=15, n_iter=250)
    assert np.array_equal(direct, tsne(pca(X, 50), perplexity=15, n_iter=250))


def test_tsne_reports_progress_up_to_one():
    X, _ = blobs(n_per=60)
    seen: list[float] = []
    tsne(X, perplexity=15, n_iter=100, progress=seen.append)
    # 0 first, then every 25 of the 250 + 100 iterations, then 1.
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 2 + 350 // 25
    assert seen == sorted(seen) and seen[1] == pytest.approx(25 / 350)


def test_pca_map_is_the_top_two_components():
    X, _ = blobs(n_per=50, dims=6)
    Y = embed_map(X, "pca")
    centred = X - X.mean(axis=0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:2]
    assert np.allclose(np.abs(Y), np.abs(centred @ top.T), atol=1e-3)


def test_too_few_cells_name_the_minimum_and_the_fix():
    X, _ = blobs(n_per=15)  # 30 cells
    assert tsne_min_cells(30) == 91
    with pytest.raises(ValueError, match=r"perplexity 30 needs at least 91 cells, got 30: lower the perplexity to 9"):
        embed_map(X, "tsne", perplexity=30)
    with pytest.raises(ValueError, match=r"UMAP with 40 neighbours needs at least 41 cells, got 30: lower n_neighbors to 29"):
        embed_map(X, "umap", n_neighbors=40)
    with pytest.raises(ValueError, match="PCA needs at least 2 cells"):
        embed_map(X[:1], "pca")
    with pytest.raises(ValueError, match="k-means with k=40 needs at least 40 cells"):
        cluster(X, "kmeans", k=40)


def test_bad_inputs_and_misspelt_settings_are_errors():
    X, _ = blobs(n_per=50)
    with pytest.raises(ValueError, match="map method must be one of"):
        embed_map(X, "mds")
    with pytest.raises(TypeError):
        embed_map(X, "tsne", perplexty=10)
    with pytest.raises(ValueError, match="NaN"):
        embed_map(np.where(np.eye(100, 10) > 0, np.nan, X), "pca")
    with pytest.raises(ValueError, match="cluster method"):
        cluster(X, "dbscan")


def test_kmeans_and_hdbscan_recover_planted_blobs():
    X, truth = blobs(n_per=120, dims=5, centers=4, spread=6.0, seed=3)
    assert adjusted_rand_score(truth, cluster(X, "kmeans", k=4)) > 0.9
    found = cluster(X, "hdbscan", min_cluster_size=20)
    assert set(found) - {-1} == {0, 1, 2, 3}
    assert adjusted_rand_score(truth[found >= 0], found[found >= 0]) > 0.9 and (found == -1).mean() < 0.1
    assert np.array_equal(cluster(X, "kmeans", k=4, seed=1), cluster(X, "kmeans", k=4, seed=1))


def test_composition_gives_each_clusters_batch_shares():
    labels = np.array([0, 0, 0, 0, 1, 1, -1])
    groups = np.array(["A", "A", "A", "B", "B", "B", "A"])
    comp = composition(labels, groups)
    assert list(comp.index) == [-1, 0, 1] and list(comp.columns) == ["A", "B"]
    assert comp.loc[0, "A"] == 0.75 and comp.loc[0, "B"] == 0.25 and comp.loc[1, "B"] == 1.0
    assert np.allclose(comp.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="7 cluster labels but 6 groups"):
        composition(labels, groups[:6])
