"""The Cell map's speed: table -> dataset scaling -> crops -> morphology features -> PCA -> t-SNE
for 1,000, 10,000 and 100,000 synthetic cells (issue 11: 10,000 under 60 s, 100,000 under 10 min).

Cells are ellipses on a jittered grid in 1024 x 1024 16-bit, 3-channel images (~2,100 a field),
three plates differing in background and exposure. Each size prints its row as soon as it is
done, so a run stopped by a timeout still reports the sizes it finished.

    python benchmarks/bench_cellmap.py            # 1k and 10k
    python benchmarks/bench_cellmap.py 1000 10000 100000
"""

from __future__ import annotations

import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402

from core.cells.cell_set import cell_table, crop_chunks, dataset_scaling, morphology_features  # noqa: E402
from core.cells.embed import embed_map  # noqa: E402
from core.data.images import CellImage, default_channels  # noqa: E402

FIELD = 1024
SPACING = 22  # px between cell centres: radii up to 9 px never touch
PLATES = (("plateA", 40.0, 1.0), ("plateB", 110.0, 0.7), ("plateC", 70.0, 1.5))  # background, exposure


def synthetic_field(rng: np.random.Generator, n: int, index: int) -> tuple[CellImage, np.ndarray]:
    """Up to ``n`` elliptical cells on a jittered grid, each with its own brightness per channel."""
    name, background, exposure = PLATES[index % len(PLATES)]
    labels = np.zeros((FIELD, FIELD), np.int32)
    level = np.zeros((n + 1, 3), np.float32)
    per_row = FIELD // SPACING
    for i in range(n):
        cy, cx = (i // per_row) * SPACING + SPACING // 2, (i % per_row) * SPACING + SPACING // 2
        centre = (int(cx + rng.integers(-1, 2)), int(cy + rng.integers(-1, 2)))
        axes = (int(rng.integers(5, 10)), int(rng.integers(4, 9)))
        cv2.ellipse(labels, centre, axes, float(rng.uniform(0, 180)), 0, 360, i + 1, -1)
        level[i + 1] = rng.lognormal(0.0, 0.4, 3) * (900, 250, 400)
    signal = cv2.GaussianBlur(level[labels], (0, 0), 1.0)
    photons = exposure * (signal + background)
    pixels = np.clip(photons + 100 + rng.normal(0, np.sqrt(photons + 16)), 0, 65535).astype(np.uint16)
    image = CellImage(f"{name}_field{index + 1}", pixels, default_channels(3), batch=name)
    return image, labels


def synthetic_pairs(n_cells: int, seed: int = 0) -> list[tuple[CellImage, np.ndarray]]:
    rng = np.random.default_rng(seed)
    per_field = (FIELD // SPACING) ** 2
    pairs = []
    while n_cells > 0:
        pairs.append(synthetic_field(rng, min(per_field, n_cells), len(pairs)))
        n_cells -= per_field
    return pairs


def timed(fn):
    """(result, seconds) with the shared timer, run once."""
    box = {}
    seconds = median_seconds(lambda: box.update(result=fn()), repeat=1)
    return box["result"], seconds


def crop_all(pairs, table, scaling) -> float:
    """Every crop, chunk by chunk, the way a feature extractor consumes them; returns the peak
    memory traced while cropping, MB."""
    tracemalloc.start()
    total = 0.0
    for chunk in crop_chunks(pairs, table, size=64, mode="scale", scaling=scaling):
        total += float(chunk.mean())  # touch the chunk, keep nothing
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def run(n_cells: int) -> None:
    pairs = synthetic_pairs(n_cells)
    row: dict[str, float] = {}
    table, row["table"] = timed(lambda: cell_table(pairs))
    scaling, row["scaling"] = timed(lambda: dataset_scaling([img for img, _ in pairs]))
    peak_mb, row["crops"] = timed(lambda: crop_all(pairs, table, scaling))
    (X, _), row["features"] = timed(lambda: morphology_features(table))
    _, row["pca"] = timed(lambda: embed_map(X, "pca"))
    reports: list[float] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    _, row["tsne"] = timed(lambda: embed_map(X, "tsne", progress=lambda f: reports.append(time.perf_counter())))
    # CPU seconds (all threads): on a shared machine wall time also counts other people's work.
    tsne_cpu = time.process_time() - cpu0
    # Progress is reported every 25 of 750 iterations; what comes before the first report, less
    # the next 25 (early exaggeration, as fast as the first), is the neighbour search and affinities.
    knn = (reports[1] - t0) - (reports[2] - reports[1])
    total = sum(row.values())
    steps = " | ".join(f"{row[k]:.1f} s" for k in ("table", "scaling", "crops", "features", "pca", "tsne"))
    slowest = max(row, key=row.get)
    print(f"| {len(table):,} | {len(pairs)} | {steps} | {knn:.1f} s | {tsne_cpu:.1f} s | {total:.1f} s | {slowest} "
          f"({row[slowest] / total:.0%}) | {peak_mb:.0f} MB | {os.getloadavg()[0]:.1f} |", flush=True)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    embed_map(np.random.default_rng(0).standard_normal((200, 10)), "tsne")  # imports, not timed
    print(f"{os.cpu_count()} CPUs; t-SNE: perplexity 30, 250 + 500 iterations, PCA init; crops 64 px, scale mode")
    print("| cells | images | table (measure) | scaling | crops | features | PCA | t-SNE | of which kNN "
          "| t-SNE CPU | total | slowest | crop peak memory | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        run(n)
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
