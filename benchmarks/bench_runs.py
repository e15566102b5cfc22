"""Saved runs at scale: save and open a synthetic run of 1,000,000 cells and 10,000 images.

The cells table is made up (ids, image, batch, condition, a few measurements, centroid, map x/y,
cluster, 32 f_ features) as a Cell map of that size would save it; the 10,000 images are small
(96 x 96 x 3, made one at a time as save_run asks for them), so every index row has its PNG but
the PNGs are small. No label images (their cost is one TIFF per image and model, as the PNGs).
`make bench` runs it; `python benchmarks/bench_runs.py` alone prints its table."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from timing import median_seconds  # noqa: E402

from core.analysis import Analysis, InputFile  # noqa: E402
from core.data.images import CellImage, default_channels  # noqa: E402
from core.run_images import cell_crops, image_index, run_image  # noqa: E402
from core.runs import list_runs, open_run, save_run  # noqa: E402

CELLS, IMAGES, SIDE, FEATURES = 1_000_000, 10_000, 96, 32


def image_name(i: int) -> str:
    return f"plate{i % 20:02d}_field{i:05d}"


def cells_table(rng: np.random.Generator) -> pd.DataFrame:
    image = np.sort(rng.integers(0, IMAGES, CELLS))
    label = np.ones(CELLS, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(image)) + 1]
    label = (np.arange(CELLS) - np.repeat(starts, np.diff(np.r_[starts, CELLS])) + 1).astype(np.int32)
    names = np.array([image_name(i) for i in range(IMAGES)], dtype=object)
    table = pd.DataFrame({
        "cell_id": [f"{n}:{lab}" for n, lab in zip(names[image], label, strict=True)],
        "image": names[image], "image_index": image.astype(np.int64),
        "batch": pd.Categorical([f"plate{i % 20:02d}" for i in image]).astype(str),
        "condition": np.where(image % 2 == 0, "control", "treated"), "label": label,
        "area": rng.gamma(3, 60, CELLS), "perimeter": rng.gamma(3, 10, CELLS),
        "mean_DNA": rng.random(CELLS, np.float32), "mean_tubulin": rng.random(CELLS, np.float32),
        "centroid_y": rng.random(CELLS) * SIDE, "centroid_x": rng.random(CELLS) * SIDE,
        "x": rng.normal(size=CELLS).astype(np.float32), "y": rng.normal(size=CELLS).astype(np.float32),
        "cluster": rng.integers(0, 12, CELLS).astype(np.int32),
    })
    features = pd.DataFrame(rng.random((CELLS, FEATURES), np.float32), columns=[f"f_{i}" for i in range(FEATURES)])
    return pd.concat([table, features], axis=1)


class SmallImages(Sequence[CellImage]):
    """10,000 small images made when asked for: save_run reads them one at a time."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._base = rng.integers(0, 4000, (SIDE, SIDE, 3), dtype=np.uint16)
        self._channels = default_channels(3)

    def __len__(self) -> int:
        return IMAGES

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(IMAGES))]
        if not 0 <= i < IMAGES:
            raise IndexError(i)
        pixels = np.roll(self._base, i, axis=1)
        return CellImage(image_name(i), pixels, self._channels, batch=f"plate{i % 20:02d}",
                         condition="control" if i % 2 == 0 else "treated")


def main() -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    cells = cells_table(rng)
    made = time.perf_counter() - t0
    inputs = tuple(InputFile(image_name(i), f"{i:032x}", None, f"plate{i % 20:02d}", "") for i in range(IMAGES))
    record = Analysis("cellmap", inputs, {"segmenter": "classical"}, {"device": "cpu"}, tables={"cells": cells})
    images = SmallImages(rng)
    rows = [(f"make the synthetic cells table ({CELLS:,} x {cells.shape[1]} columns)", made)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        save_run("cells-only", [record], root=root)
        rows.append((f"save_run: {CELLS:,} cells, no images", time.perf_counter() - t0))
        t0 = time.perf_counter()
        save_run("big", [record], images=images, root=root)
        rows.append((f"save_run: {CELLS:,} cells + {IMAGES:,} images (index + {SIDE} px PNGs)", time.perf_counter() - t0))
        def megabytes(folder: Path) -> float:
            return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6

        pngs = len(list((root / "big" / "images").glob("*.png")))
        print(f"run folder: {megabytes(root / 'big'):.0f} MB, of which the cells table "
              f"{megabytes(root / 'big' / 'analyses'):.0f} MB and {pngs:,} PNGs {megabytes(root / 'big' / 'images'):.0f} MB",
              file=sys.stderr)

        def open_first_column() -> pd.DataFrame:
            (info,) = [i for i in list_runs(root) if i.name == "big"]
            return open_run(info.name, root).table("cellmap", "cells", ["area"])

        open_first_column()  # the files in the OS cache, as on a server that has shown the run before
        rows.append(("open: list_runs + open_run (manifests only)",
                     median_seconds(lambda: open_run([i for i in list_runs(root) if i.name == "big"][0].name, root))))
        rows.append(("open: list_runs + open_run + cells table's 'area' column", median_seconds(open_first_column)))
        rows.append(("open: + the whole cells table (what opening cost before)",
                     median_seconds(lambda: open_run("big", root).analysis("cellmap").tables["cells"], 3)))
        run = open_run("big", root)
        rows.append((f"image_index: {IMAGES:,} rows (first read)", median_seconds(lambda: image_index(open_run("big", root)), 1)))
        rows.append(("run_image: one saved picture", median_seconds(lambda: run_image(run, image_name(4321)))))
        picked = run.table("cellmap", "cells", ["image", "centroid_y", "centroid_x"]).sample(48, random_state=0)
        rows.append(("cell_crops: 48 cells of 48 images", median_seconds(lambda: cell_crops(run, picked))))
    return rows


if __name__ == "__main__":
    print("| step | time |\n|---|---|")
    for name, seconds in main():
        print(f"| {name} | {seconds:.2f} s |" if seconds >= 0.1 else f"| {name} | {seconds * 1000:.0f} ms |")
