"""The Cell map: cells -> features (an embedder of the registry) -> optional batch correction ->
a 2-D map and clusters, with batch-effect metrics before and after. The page and ``python -m core
embed`` both run these functions; each step is separate so the page can keep each one's result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from core.cells.cell_set import CellSet, Embedding, describe_morphology, feature_parts
from core.cells.embed import CLUSTER_METHODS, cluster, composition, embed_map, tsne_min_cells
from core.data.images import UNASSIGNED, CellImage
from core.plate_effect.correction import CORRECTION_METHODS, compare_correction, correct
from core.plate_effect.verdict import batch_effect_report
from core.schema import check_fields, setting
from core.text import plural
from models.registry import display_order, family_of, get_model_info, list_models, load_model

Progress = Callable[[float, str], None]
CROP_SIZES = (32, 48, 64, 96)
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
CORRECTION_NAMES = {"none": "none", "standardize": "per-batch standardisation", "harmony": "Harmony"}


@dataclass(frozen=True)
class MapSettings:
    """How features become the map, and what is corrected first; a validated value, like a Recipe."""

    # One declaration per setting (core.schema): the Cell map page's widgets, ``embed``'s options and
    # this validator read it. Where the page's sliders and the old validator disagreed, the wider
    # range was kept (k up to 50, perplexity 2-200, neighbours 2-200: runs that worked keep working),
    # except the t-SNE iterations (250-5000 in steps of 250: the slider's grid).
    method: str = setting("tsne", label="Map", options=("tsne", "umap", "pca"),
                          help="t-SNE (openTSNE) keeps neighbourhoods; UMAP also some global layout; PCA is "
                               "linear and instant.")
    perplexity: float = setting(30.0, label="t-SNE perplexity", low=2.0, high=200.0, step=1.0,
                                help="About how many neighbours each cell keeps close.")
    iterations: int = setting(500, label="t-SNE iterations", low=250, high=5000, step=250,
                              help="After 250 of early exaggeration.")
    n_neighbors: int = setting(15, label="UMAP neighbours", low=2, high=200, step=1, help="Local (small) vs global.")
    min_dist: float = setting(0.1, label="UMAP min distance", low=0.0, high=1.0, step=0.01,
                              help="How tightly points pack.")
    seed: int = setting(0, label="Seed", low=0, high=2**31 - 1, step=1,
                        help="The same seed and data give the same map.")
    clusters: str = setting("kmeans", label="Clusters", options=CLUSTER_METHODS,
                            help="k-means with k clusters, or HDBSCAN (finds its own number; grey = no cluster).")
    k: int = setting(6, label="k-means clusters", low=2, high=50, step=1, help="Number of clusters for k-means.")
    min_cluster_size: int = setting(25, label="HDBSCAN smallest cluster", low=5, high=1000, step=5,
                                    help="Fewer cells than this make no cluster.")
    correction: str = setting("none", label="Batch correction", options=CORRECTION_METHODS,
                              help="Standardise each batch's features (optionally to its control cells, as "
                                   "image-based profiling does), or Harmony. Metrics and maps are then shown before "
                                   "and after.")
    # "standardize": the condition whose cells set each batch's scale ("": all cells)
    control: str = setting("", label="Scale by the cells of", kind="text",
                           help="With per-batch standardisation: each batch is centred and scaled by these cells "
                                "(e.g. the controls, as image-based profiling does).")

    def __post_init__(self) -> None:
        check_fields(self)

    def map_params(self) -> dict[str, Any]:
        if self.method == "tsne":
            return {"perplexity": self.perplexity, "n_iter": self.iterations, "seed": self.seed}
        if self.method == "umap":
            return {"n_neighbors": self.n_neighbors, "min_dist": self.min_dist, "seed": self.seed}
        return {"seed": self.seed}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown map settings: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class CellMap:
    """The map of one embedding: row i = cell i of the CellSet."""

    coords: np.ndarray  # (N, 2)
    clusters: np.ndarray  # (N,) int, -1 = noise (HDBSCAN)
    report: dict[str, Any] | None  # batch effect on the (corrected) features; None with one batch
    report_map: dict[str, Any] | None  # the same on the 2-D map
    settings: MapSettings
    coords_before: np.ndarray | None = None  # the uncorrected map, when a correction ran
    report_before: dict[str, Any] | None = None  # batch effect before the correction
    comparison: dict[str, Any] | None = None  # what the correction did (condition erased?)
    notes: tuple[str, ...] = ()
    method: str = ""  # the map actually made: settings.method, or "pca" when there were too few cells


def embedders() -> list[str]:
    """The feature extractors in the registry (task "embed") in their families' order: the fast one first."""
    return [m.name for m in sorted(list_models("embed"), key=display_order)]


def uses_no_crops(features: str) -> bool:
    """Features measured on the whole cell (its mask and pixels), not on its crop: the crop size,
    mode and masking do not change them."""
    family = family_of(get_model_info(features))
    return family is not None and not family.uses_crops


def cell_set(images: list[CellImage], labels: dict[str, np.ndarray], *, size: int = 32, mode: str = "scale",
             mask_background: bool = False) -> CellSet:
    """Every cell of ``images`` (labels by image name) with its crop geometry. Images without cells
    are left out; none at all is an error that says what to do."""
    pairs = [(img, labels[img.name]) for img in images if img.name in labels and labels[img.name].max() > 0]
    if not pairs:
        raise ValueError("no cells were found in any image: check the segmentation (Preprocess or Compare page)")
    return CellSet.build(pairs, size=size, mode=mode, mask_background=mask_background)


def features_of(cells: CellSet, name: str, settings: dict[str, Any], *, device: str = "cpu",
                progress: Progress | None = None, allow_download: bool = False) -> Embedding:
    """``name``'s features of every cell; raises WeightsUnavailable (with what to do) when offline."""
    info = get_model_info(name)
    if info.task != "embed":
        raise ValueError(f"{name} does not give features; choose one of {', '.join(embedders())}")
    model = load_model(name, device, allow_download=allow_download)
    return model.embed(cells, progress=progress, **settings)


def _assigned(cells: CellSet) -> np.ndarray:
    """Which cells have a batch: images nobody assigned one to are no plate, so the batch metrics
    leave them out rather than count them as a batch called "unassigned"."""
    return (cells.table["batch"] != UNASSIGNED).to_numpy()


def _measurable(cells: CellSet) -> bool:
    return cells.table["batch"][_assigned(cells)].nunique() >= 2


def _evidence(cells: CellSet, embedding: Embedding) -> tuple[str, dict[str, list[int]] | None]:
    """What the features are, in words, and their parts (morphology: the cell vs its surroundings)."""
    n = embedding.features.shape[1]
    if uses_no_crops(embedding.model):
        return describe_morphology(embedding.names), feature_parts(embedding.names)
    seen = "with the background masked out" if cells.mask_background else "the cell and some of its surroundings"
    return f"{n} {embedding.model} features of each cell's {cells.size} px crop ({seen})", None


def _report(X: np.ndarray, cells: CellSet, seed: int, *, features: str = "",
            parts: dict[str, list[int]] | None = None) -> dict[str, Any] | None:
    if not _measurable(cells):
        return None
    keep = _assigned(cells)
    table = cells.table[keep]
    report = batch_effect_report(X[keep], table["batch"].to_numpy(), table["condition"].to_numpy(),
                                 table["image"].to_numpy(), seed=seed, features=features, parts=parts)
    if not keep.all():
        images = cells.table.loc[~keep, "image"].nunique()
        report["warnings"].insert(0, f"{plural(images, 'image')} without a batch ({plural(int((~keep).sum()), 'cell')}) "
                                     f"{'is' if images == 1 else 'are'} left out of the batch metrics: give "
                                     f"{'it' if images == 1 else 'them'} a batch to count them.")
    return report


def make_map(cells: CellSet, embedding: Embedding, settings: MapSettings, *,
             progress: Progress | None = None) -> CellMap:
    """Correct (if asked), map to 2-D, cluster, and measure the batch effect before and after."""
    report = progress or (lambda f, m: None)
    table, X = cells.table, embedding.features
    notes: list[str] = []
    if not _measurable(cells):
        notes.append("All cells are in one batch: batch effects cannot be measured. Assign batches on the Data page."
                     if table["batch"].nunique() < 2 else
                     "Besides the images without a batch, all cells are in one batch: batch effects cannot be "
                     "measured. Assign batches on the Data page.")
    method, params = settings.method, settings.map_params()
    if ((method == "tsne" and len(X) < tsne_min_cells(settings.perplexity))
            or (method == "umap" and len(X) <= settings.n_neighbors)):  # still a map and metrics: PCA has no minimum
        notes.append(f"Only {len(X)} cells: too few for {'t-SNE' if method == 'tsne' else 'UMAP'} with these settings "
                     f"(t-SNE needs 3 × perplexity + 1 cells, UMAP more than its neighbours), so this map is PCA. Add "
                     "images, or lower the perplexity / neighbours.")
        method, params = "pca", {"seed": settings.seed}
    corrected, before, coords_before = X, None, None
    features, parts = _evidence(cells, embedding)
    if settings.correction != "none":
        if table["batch"].nunique() < 2:
            raise ValueError("a batch correction needs at least 2 batches; assign batches on the Data page")
        control = None
        if settings.correction == "standardize" and settings.control:
            control = (table["condition"] == settings.control).to_numpy()
        report(0.02, "measuring the batch effect before correction")
        before = _report(X, cells, settings.seed, features=features, parts=parts)
        report(0.1, f"correcting ({settings.correction})")
        corrected = correct(X, table["batch"].to_numpy(), settings.correction, control_mask=control, seed=settings.seed)
        report(0.15, "mapping the uncorrected features")
        coords_before = embed_map(X, method, **params,
                                  progress=lambda f: report(0.15 + 0.3 * f, "mapping the uncorrected features"))
    start = 0.45 if coords_before is not None else 0.0
    doing = ("mapping (UMAP reports no progress; its first run after a server start also compiles its code: up to "
             "a minute)" if method == "umap" else f"mapping ({METHOD_NAMES[method]})")
    coords = embed_map(corrected, method, **params, progress=lambda f: report(start + (0.8 - start) * f, doing))
    report(0.82, "clustering")
    if settings.clusters == "kmeans":
        labels = cluster(corrected, "kmeans", k=min(settings.k, len(corrected)), seed=settings.seed)
    else:
        labels = cluster(corrected, "hdbscan", min_cluster_size=settings.min_cluster_size, seed=settings.seed)
        if (np.asarray(labels) < 0).all():
            notes.append(f"HDBSCAN found no cluster of at least {settings.min_cluster_size} cells in the features: every "
                         "cell is 'no cluster' (-1). Lower the smallest cluster (Map settings), or use k-means.")
    report(0.86, "measuring the batch effect")
    after_correction = f", after {CORRECTION_NAMES[settings.correction]}" if settings.correction != "none" else ""
    after = _report(corrected, cells, settings.seed, features=features + after_correction, parts=parts)
    on_map = _report(coords, cells, settings.seed,
                     features=f"the 2-D {METHOD_NAMES[method]} map of {features}{after_correction}")
    comparison = compare_correction(before, after) if before is not None and after is not None else None
    report(1.0, "done")
    return CellMap(coords.astype(np.float32), np.asarray(labels), after, on_map, settings, coords_before, before,
                   comparison, tuple(notes), method)


def map_title(cells: CellSet, embedding: Embedding, cell_map: CellMap) -> str:
    """What a saved figure shows, in words: "t-SNE of morphology features · 1,234 cells, 12 images"."""
    method = METHOD_NAMES[cell_map.method or cell_map.settings.method]
    correction = cell_map.settings.correction
    return (f"{method} of {embedding.model} features · {len(cells):,} cells, {len(cells.pairs):,} images"
            + (f" · after {CORRECTION_NAMES[correction]}" if correction != "none" else ""))


def verdict_line(cell_map: CellMap) -> str:
    """The batch verdict in a line a saved figure carries beside its title ("" with one batch)."""
    r = cell_map.report
    if r is None:
        return ""
    accuracy = r.get("classifier_accuracy")
    told = (f": batches told apart at {accuracy:.2f} balanced accuracy on unseen images, chance {r['chance']:.2f}"
            if accuracy is not None and r.get("chance") is not None else "")
    where = "after correction" if cell_map.settings.correction != "none" else "in these features"
    return f"Batch effect {where}: {r['verdict']}{told}"


def cells_frame(cells: CellSet, embedding: Embedding | None, cell_map: CellMap, *, with_features: bool = True) -> pd.DataFrame:
    """The per-cell table to export: ids, batch, condition, position, measurements, map
    coordinates ``x``, ``y`` (the cell's centroid becomes ``centroid_x``, ``centroid_y``), cluster,
    and the features."""
    out = cells.table.rename(columns={"x": "centroid_x", "y": "centroid_y"}).copy()
    out["x"], out["y"] = cell_map.coords[:, 0], cell_map.coords[:, 1]
    out["cluster"] = cell_map.clusters
    if cell_map.coords_before is not None:
        out["x_uncorrected"], out["y_uncorrected"] = cell_map.coords_before[:, 0], cell_map.coords_before[:, 1]
    if with_features and embedding is not None:
        feats = pd.DataFrame(embedding.features, columns=[f"f_{n}" for n in embedding.names], index=out.index)
        out = pd.concat([out, feats], axis=1)
    return out


def compositions(cells: CellSet, cell_map: CellMap) -> dict[str, pd.DataFrame]:
    """Per cluster, the share of each batch and of each condition."""
    return {by: composition(cell_map.clusters, cells.table[by].to_numpy()) for by in ("batch", "condition")}


def metrics_json(cell_map: CellMap, embedding: Embedding, cells: CellSet) -> dict[str, Any]:
    """What ``batch_effect.json`` holds: the features' report (its top-level keys are the numbers a
    reader looks for first), the map's, the uncorrected one and the comparison, and how it was made."""
    top = dict(cell_map.report or {"verdict": "undetermined", "reason": "one batch only: nothing to compare"})
    top.update({
        "on_map": cell_map.report_map, "before_correction": cell_map.report_before,
        "correction": cell_map.comparison, "features": embedding.model, "n_features": int(embedding.features.shape[1]),
        "map": asdict(cell_map.settings), "crop": {"size": cells.size, "mode": cells.mode,
                                                  "mask_background": cells.mask_background},
        "intensity_scaling": asdict(cells.scaling), "notes": list(cell_map.notes),
    })
    return top
