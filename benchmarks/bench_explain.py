"""The Explain page's speed on this machine (issue 12: CAMs for 1,000 cells in under 30 s, batched):
training the cell classifier on 1,000 cells, then each CAM method on those 1,000 cells, at 32 and
64 px crops; and the inside-mask statistics of the CAMs.

Cells come from :mod:`bench_cellmap`'s synthetic fields (ellipses on a jittered grid, 16-bit,
3 channels): six fields of about 167 cells, two per plate, so the target is the plate (3 classes)
and cross-validation by image has 2 folds. The classifier trains with the registry's defaults
(the Explain page's); CAMs are of its final model, for the predicted class, at the default layer,
in :func:`models.explain.compute_cams`' batches. Each row prints as soon as it is done.

    python benchmarks/bench_explain.py            # 32 and 64 px
    python benchmarks/bench_explain.py 32
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
from bench_cellmap import synthetic_field  # noqa: E402
from timing import median_seconds  # noqa: E402

from core.cells.cell_set import CellSet  # noqa: E402
from core.explain.cam_stats import cam_mask_stats  # noqa: E402
from models.classifier import training_rows  # noqa: E402
from models.device import CPU_THREADS  # noqa: E402
from models.explain import CAM_BATCH, CAM_METHOD_NAMES, SCORECAM_BATCH, compute_cams  # noqa: E402
from models.explain_cells import classifier_settings, train_cell_classifier  # noqa: E402

N_CELLS = 1000
FIELDS = 6  # two per plate: each class in 2 images, the fewest cross-validation by image takes
LIMIT_S = 30.0  # the target for 1,000 cells


def timed(fn):
    """(result, seconds) with the shared timer, run once."""
    box = {}
    seconds = median_seconds(lambda: box.update(result=fn()), repeat=1)
    return box["result"], seconds


def cells_of(size: int) -> CellSet:
    rng = np.random.default_rng(0)
    per_field = -(-N_CELLS // FIELDS)
    pairs = [synthetic_field(rng, min(per_field, N_CELLS - i * per_field), i) for i in range(FIELDS)]
    return CellSet.build(pairs, size=size)


def run(size: int) -> None:
    cells = cells_of(size)
    settings = {s.name: s.default for s in classifier_settings()}
    labels = cells.table["batch"].to_numpy(dtype=object)
    trained, train_s = timed(lambda: train_cell_classifier(cells, labels, settings))
    models_trained = trained.folds + 1
    print(f"\n{size} px: classifier on {len(trained.y):,} cells of {trained.n_images} images, {len(trained.classes)} "
          f"classes, {trained.epochs} epochs x {models_trained} models ({trained.folds} folds + final), batch "
          f"{trained.batch_size}: **{train_s:.1f} s** ({train_s / models_trained / trained.epochs:.2f} s an epoch); "
          f"balanced accuracy {trained.balanced_accuracy:.2f} (chance {trained.chance:.2f})", flush=True)
    rows = training_rows(len(cells), N_CELLS, 0)
    crops, crops_s = timed(lambda: cells.crops(rows))
    masks, masks_s = timed(lambda: cells.masks(rows))
    print(f"crops {crops_s:.1f} s, masks {masks_s:.1f} s for {len(rows):,} cells\n", flush=True)
    print("| crop | method | batch | CAMs, 1,000 cells | ms a cell | inside-mask stats | under 30 s |")
    print("|---|---|---|---|---|---|---|")
    compute_cams(trained.model, crops[:4], method="scorecam")  # imports and first-call set-up, not timed
    for method in CAM_METHOD_NAMES:
        result, cam_s = timed(lambda method=method: compute_cams(trained.model, crops, method=method))
        _, stats_s = timed(lambda result=result: cam_mask_stats(result.cams, masks))
        batch = SCORECAM_BATCH if method == "scorecam" else CAM_BATCH
        print(f"| {size} px | {method} | {batch} | {cam_s:.1f} s | {1000 * cam_s / len(rows):.1f} | "
              f"{1000 * stats_s:.0f} ms | {'yes' if cam_s < LIMIT_S else '**no**'} |", flush=True)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [32, 64]
    print(f"{os.cpu_count()} CPUs, torch on {CPU_THREADS} thread(s) (models.device.CPU_THREADS); "
          f"load avg {os.getloadavg()[0]:.1f}")
    warm = cells_of(32)  # imports (torch's optimiser pulls in torch._dynamo: seconds) and first calls, not timed
    train_cell_classifier(warm, warm.table["batch"].to_numpy(dtype=object),
                          {s.name: s.default for s in classifier_settings()} | {"epochs": 1})
    for size in sizes:
        run(size)
    print(f"\nmax RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load avg "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
