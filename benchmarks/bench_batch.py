"""The batch job (`python -m core run`) at scale: images per second of the classical recipe on
512 x 512 fields with a plain loop, 1 and 2 local Dask workers; Dask's overhead over the plain
loop; peak memory per worker; a 4096 x 4096 image in blocks against whole; and a projection to
10^5 and 10^6 images on N machines, checked against the 2-worker measurement.

The screen is ``--distinct`` generated fields (the example dataset's generator) written once as
TIFF and linked ``--images`` times under 20 plate folders: every file is read, decoded,
segmented, measured and written as a distinct image; only the disk cache sees repeats.
``python benchmarks/bench_batch.py [--images 10000]`` prints a table and writes JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/test_blocks.py's synthetic nuclei, for the slide

from core.io.example import make_example_dataset  # noqa: E402
from core.segmentation.recipe import DEFAULT_RECIPE  # noqa: E402


def make_screen(folder: Path, images: int, distinct: int, size: int) -> None:
    import tifffile

    pool = folder / "_pool"
    pool.mkdir(parents=True)
    fields = make_example_dataset(seed=11, size=size, fields_per_plate=max(1, -(-distinct // 3)))[:distinct]
    for i, img in enumerate(fields):
        tifffile.imwrite(pool / f"{i}.tif", img.pixels[..., 0] if img.pixels.shape[2] == 1 else
                         img.pixels.transpose(2, 0, 1), photometric="minisblack")
    for i in range(images):
        plate = folder / "screen" / f"plate{i % 20:02d}"
        plate.mkdir(parents=True, exist_ok=True)
        os.link(pool / f"{i % distinct}.tif", plate / f"field{i:06d}.tif")


def warm() -> None:
    """What a worker does once before its first image: import the pipeline, load the model."""
    from workflows.batch import worker_model

    worker_model("classical", "cpu")


def one_run(screen: Path, out: Path, *, workers: int | None) -> dict:
    """One job over the screen: ``workers`` None is the plain loop in this process."""
    from core.io.sources import find_sources
    from workflows.batch import BatchJob
    from workflows.batch_run import run_job, start_job
    from workflows.cli.batch_commands import batches_of
    from workflows.cli.inputs import model_settings
    from workflows.dask_executor import DaskExecutor

    found = find_sources([str(screen)])
    job = BatchJob(str(out), {"classical": model_settings("classical", DEFAULT_RECIPE, 1024)})
    items = start_job(out, job, found.sources, batches_of(found.sources, None, [str(screen)]), inputs=[str(screen)])
    t0 = time.perf_counter()
    if workers is None:
        warm()
        startup = time.perf_counter() - t0
        report = run_job(out, items, job)
    else:
        with DaskExecutor(workers=workers) as executor:
            executor.client.run(warm)  # imports and the model, once per worker: timed as start-up, not per image
            startup = time.perf_counter() - t0
            report = run_job(out, items, job, executor=executor)
    wall = time.perf_counter() - t0
    peaks = [peak for _, peak in report.workers.values()]
    return {"workers": workers or 0, "images": report.done, "failed": len(report.failed),
            "wall_s": round(wall, 2), "startup_s": round(startup, 2), "work_s": round(report.seconds, 2),
            "images_per_s": round(report.done / report.seconds, 3),
            "peak_mb_per_worker": round(max(peaks), 1), "model_loads": sorted(n for n, _ in report.workers.values())}


def large_image(base: Path, side: int) -> list[dict]:
    """A ``side`` x ``side`` slide of nuclei (a tiled TIFF) through ``python -m core run``: whole
    (one piece, as the pages would), in blocks of 1024 px on one worker, and on two; each in a
    process of its own, its time, cells and peak memory (the process's and its workers')."""
    import subprocess

    import tifffile
    from test_blocks import nuclei_image

    slide = base / "slide"
    slide.mkdir()
    n = int(420 * side * side / (1200 * 1500))  # the test image's density of nuclei
    tifffile.imwrite(slide / "slide.tif", nuclei_image(side, side, n=n, empty=None, seed=1)[..., 0],
                     tile=(512, 512), compression="zlib")
    rows = []
    for label, extra in (("whole (tiles of 1024 px, as the pages)", ["--serial", "--block", "16384"]), ("blocks of 1024, 1 worker", ["--serial"]),
                         ("blocks of 1024, 2 workers", ["--workers", "2"])):
        out = base / f"slide-{len(rows)}"
        args = [sys.executable, "-m", "core", "run", str(slide), "--out", str(out), "--no-map", *extra]
        if "--block" not in extra:
            args += ["--block", "1024"]
        t0 = time.perf_counter()
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        said = done.stdout.strip().splitlines()
        peak = next((line.split("workers' peak memory ")[1] for line in said if "workers' peak memory" in line), "")
        rows.append({"how": label, "seconds": round(seconds, 1), "cells": run.get("cells"), "exit": done.returncode,
                     "peak_per_worker": peak, "last_lines": said[-2:]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def projection(per_image_s: float, efficiency: float, n_images: int, machines: int, cores: int) -> float:
    """Hours for ``n_images`` on ``machines`` x ``cores`` workers at ``per_image_s`` per image on one
    core, each added worker adding ``efficiency`` of one (measured here for 2 workers on 2 cores)."""
    return n_images * per_image_s / (machines * cores * efficiency) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slide", type=int, default=4096, help="side of the large image (0: none)")
    parser.add_argument("--configs", default="plain,1,2",
                        help="which runs: plain (the loop without Dask) and numbers of local workers")
    parser.add_argument("--quarter", action=argparse.BooleanOptionalAction, default=True,
                        help="also a quarter-size screen on 2 workers (memory per worker against screen size)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        t0 = time.perf_counter()
        make_screen(base, args.images, args.distinct, args.size)
        print(f"screen of {args.images} images ({args.size} px) written in {time.perf_counter() - t0:.0f} s", flush=True)
        slide = large_image(base, args.slide) if args.slide else []
        runs = {}
        for config in args.configs.split(","):
            workers = None if config == "plain" else int(config)
            runs[config] = one_run(base / "screen", base / f"run-{config}", workers=workers)
            print(json.dumps(runs[config]), flush=True)
        results = list(runs.values())
        summary: dict = {}
        if args.quarter:
            quarter = base / "quarter"
            make_screen(quarter, args.images // 4, args.distinct, args.size)
            small = one_run(quarter / "screen", base / "run-quarter", workers=2)  # memory per worker vs screen size
            print(json.dumps(small), flush=True)
            results.append(small)
            summary["peak_mb_per_worker"] = {f"{args.images // 4} images": small["peak_mb_per_worker"]}
            if "2" in runs:
                summary["peak_mb_per_worker"][f"{args.images} images"] = runs["2"]["peak_mb_per_worker"]
        plain, one, two = runs.get("plain"), runs.get("1"), runs.get("2")
        if plain and one:
            summary["dask_overhead_1_worker"] = round(one["work_s"] / plain["work_s"] - 1, 4)
        if plain and two:
            speedup = plain["work_s"] / two["work_s"]
            per_image = plain["work_s"] / plain["images"]
            eff = speedup / 2
            summary.update({"speedup_2_workers": round(speedup, 3), "per_image_s_one_core": round(per_image, 4),
                            "two_workers_predicted_s_if_perfect": round(plain["work_s"] / 2, 1),
                            "two_workers_measured_s": two["work_s"], "efficiency_per_worker": round(eff, 3)})
            summary["projection_hours"] = {
                f"{n:.0e} images on {m} x {c} cores": round(projection(per_image, eff, n, m, c), 2)
                for n in (10**5, 10**6) for m, c in ((1, 2), (1, 16), (10, 16), (100, 16))}
        print(json.dumps(summary, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": results, "slide": slide, "summary": summary},
                                                  indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
