"""``python -m core run``: a whole screen (or a slide) segmented and measured as a batch job on Dask,
written into a run that the Results page opens. Resumable: the same command again skips the images
finished before. Exit status 0 when every image went through, 3 when some failed (the last line
says how many, ``failures.csv`` why), 1 on an error before any work, 130 when interrupted."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from workflows.cli.inputs import check_batch_from, fetch_weights, load_recipe, model_settings
from workflows.cli.progress import ProgressPrinter

SOME_FAILED = 3


def add_run_command(sub: argparse._SubParsersAction) -> None:
    from models.cellmap import MapSettings
    from workflows.blocks import BLOCK_SETTINGS
    from workflows.cli_options import add_setting_options

    run = sub.add_parser("run", help="batch job: segment and measure every image of a screen on Dask (local "
                         "workers or a cluster), resumable; writes a run the Results page opens")
    run.add_argument("inputs", nargs="+", help="image files, folders (read recursively), zips, glob patterns "
                     "(quote them: 'plate*/*.tif') or OME-Zarr folders; read where they lie, a few at a time")
    run.add_argument("--out", required=True, help="the run: a name (kept in the runs folder, listed on the Results "
                     "page) or a folder path; the same --out again resumes it")
    run.add_argument("--models", default="classical", help="comma-separated segmenters, see `models` (default: "
                     "classical)")
    run.add_argument("--recipe", help="recipe JSON for the classical segmenter (default: the built-in one)")
    run.add_argument("--batch-from", default=None, help="folder, regex:PATTERN or csv:FILE (filename,batch[,condition]) "
                     "as for embed; default: each image's folder")
    run.add_argument("--scheduler", default=None, help="join the Dask cluster at this address (tcp://HOST:8786) "
                     "instead of starting local workers; the workers must see --out (a shared disk)")
    run.add_argument("--workers", type=int, default=2, help="local worker processes, one image each at a time "
                     "(default 2; ignored with --scheduler)")
    run.add_argument("--serial", action="store_true", help="no Dask: one image after the other in this process "
                     "(for debugging, and the plain loop Dask is measured against)")
    add_setting_options(run, BLOCK_SETTINGS)  # --block, --overlap (0 = from the cells' size): blocks.py declares them
    run.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or cuda:N; each "
                     "worker uses its machine's GPU")
    run.add_argument("--plane", type=int, default=None, help="for z/t stacks: this plane instead of a max projection")
    # The map of every cell's morphology at the end, as the Cell map page makes it: MapSettings' declarations.
    add_setting_options(run, MapSettings, only=("method", "correction", "perplexity", "iterations", "n_neighbors",
                                                "min_dist", "clusters", "k", "min_cluster_size", "seed"),
                        flags={"correction": "--correct", "method": "--map"})
    run.add_argument("--no-map", action="store_true", help="no cell map at the end (a million cells take minutes "
                     "with UMAP, longer with t-SNE)")
    run.set_defaults(func=cmd_run)


def run_folder(out: str) -> Path:
    """``--out``: a bare name is a run in the runs folder (the Results page lists it), else a folder path."""
    from core.names import name_problem
    from core.runs import runs_dir

    if "/" not in out and not out.startswith("."):
        if problem := name_problem(out, "run"):
            raise ValueError(f"--out {out}: {problem}")
        folder = runs_dir() / out
    else:
        folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out}: {folder} is a file; give a folder (a new one, or a run to go on with)")
    return folder


def check_arguments(args: argparse.Namespace) -> tuple[list[str], Any]:
    """Every argument checked before any image is listed: the segmenters, the blocks, the workers,
    ``--batch-from``, the map's settings, the device. Returns the models and the map's settings."""
    from models.cellmap import MapSettings
    from models.device import resolve_device
    from models.registry import list_models
    from workflows.blocks import BLOCK_SETTINGS
    from workflows.cli_options import settings_from_args

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    segmenters = [info.name for info in list_models() if info.task == "segment"]
    if not names:
        raise ValueError("--models names no model; give e.g. --models classical")
    for name in names:
        if name not in segmenters:
            raise ValueError(f"--models {name}: not a segmenter here; choose from {', '.join(segmenters)}")
    for setting in BLOCK_SETTINGS:
        try:
            setting.check(getattr(args, setting.name))  # the declared range, with its own message
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
    if args.workers < 1:
        raise ValueError(f"--workers must be 1 or more; got {args.workers}")
    check_batch_from(args.batch_from)
    map_settings = None if args.no_map else settings_from_args(MapSettings, args)  # out of range: refused now
    if args.scheduler is None:  # local workers: a device this machine lacks is refused now (a cluster's may have it)
        resolve_device(args.device)  # each worker resolves "auto" itself
    return names, map_settings


def cmd_run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from core.io.sources import find_sources
    from core.text import duration, plural
    from models.tiling import DEFAULT_TILE
    from workflows.batch import BatchJob
    from workflows.batch_run import finish_run, run_job, start_job, write_failures
    from workflows.dask_executor import DaskExecutor

    t0 = time.perf_counter()
    folder = run_folder(args.out)
    recipe = load_recipe(args.recipe)
    names, map_settings = check_arguments(args)
    found = find_sources(args.inputs)
    if not found.sources:
        raise ValueError("no images found in " + " ".join(args.inputs) +
                         (f" ({found.problems[0]})" if found.problems else ""))
    # Images up to --block run whole, as the pages run them (a model's own tiles: the pages' default size).
    job = BatchJob(str(folder), {name: model_settings(name, recipe, DEFAULT_TILE) for name in names}, args.device,
                   args.plane, args.block, args.overlap)
    for problem in found.problems:  # files whose header could not be read: said now, listed with the failures
        print(f"skipped: {problem}", file=sys.stderr)
    fetch_weights(names)  # once, here, before the workers start: not by every worker behind the user's back
    printer = ProgressPrinter("run", width=90)

    def on_done(done, progress) -> None:
        eta = f", {duration(left)} left" if (left := _eta(progress)) is not None else ""
        failed = f", {progress.failed} failed" if progress.failed else ""
        printer((progress.done + progress.failed) / max(progress.total, 1),
                f"{progress.done + progress.failed:,}/{progress.total:,} images, {progress.rate:.2f}/s{eta}{failed}")

    cluster = nullcontext(None) if args.serial else DaskExecutor(scheduler=args.scheduler, workers=args.workers)
    try:
        with cluster as executor:  # the cluster first: a run folder is made only once there is somewhere to work
            if executor is not None:
                folder.parent.mkdir(parents=True, exist_ok=True)
                executor.check_workers(str(folder if folder.is_dir() else folder.parent))
            items = start_job(folder, job, found.sources, batches_of(found.sources, args.batch_from, args.inputs),
                              inputs=args.inputs)
            batches = sorted({item.batch for item in items})
            print(f"{plural(len(items), 'image')} in {plural(len(batches), 'batch')} ({', '.join(batches[:6])}"
                  f"{', …' if len(batches) > 6 else ''}); models: {', '.join(names)}; run: {folder}", flush=True)
            if executor is not None:
                where = args.scheduler or plural(executor.n_workers, "local worker")
                print(f"Dask: {where}; dashboard: {executor.dashboard or 'none'}", flush=True)
            report = run_job(folder, items, job, executor=executor, on_done=on_done)
    except KeyboardInterrupt:
        printer.finish(keep=True)
        print(f"interrupted: the images finished so far are kept; run the same command again to go on ({folder})",
              file=sys.stderr)
        return 130
    printer.finish(keep=True)
    segmenting = time.perf_counter() - t0
    failures = write_failures(folder, items, report.failed + unreadable(found.problems))
    mapping = ProgressPrinter(f"map ({map_settings.method})") if map_settings is not None else None

    def finishing(fraction: float, what: str) -> None:
        mapping(fraction, what)
        report.progress.finishing(fraction, what)

    dropped: list[str] = []
    info = finish_run(folder, items, job, failures, extra={"inputs": list(args.inputs), "batch_from": args.batch_from},
                      map_settings=map_settings, progress=finishing if mapping else None, dropped=dropped)
    if mapping is not None:
        mapping.finish()
    for note in dropped:
        print(f"note: {note}")
    seconds = time.perf_counter() - t0
    peak = max((peak for _, peak in report.workers.values()), default=0.0)
    rate = f" ({report.done / report.seconds:.2f} images/s)" if report.done and report.seconds > 0 else ""
    print(f"{plural(report.done, 'image')} segmented now{rate}, {report.skipped} done before; "
          f"{duration(segmenting)} with start-up, {duration(seconds)} in all with the run's tables"
          f"{' and map' if map_settings is not None else ''}; workers' peak memory {peak:.0f} MB")
    listed = len(items) + len(found.problems)
    if len(failures):
        print(f"{len(failures)} of {listed} images failed ({len(found.problems)} could not be listed, "
              f"{len(report.failed)} failed while running; see {folder / 'failures.csv'}); run {info.name} written "
              f"with the {info.images} others, {info.cells or 0:,} cells")
        return SOME_FAILED
    print(f"run {info.name} written: {plural(info.images, 'image')}, {info.cells or 0:,} cells; 0 failed ({folder})")
    return 0


def _eta(progress) -> float | None:
    left = progress.total - progress.done - progress.failed
    return left / progress.rate if progress.rate > 0 and left > 0 else None


def unreadable(problems) -> list:
    """Files whose header could not be read, as failures (they have no number in the run)."""
    from core.io.roles import key_and_role
    from workflows.batch import ImageDone

    return [ImageDone(-1 - i, key_and_role(p.file)[0], error=p.message, file=p.file) for i, p in enumerate(problems)]


def batches_of(sources, batch_from: str | None, inputs=()) -> dict[str, tuple[str, str]]:
    """Each image's (batch, condition): by default its folder, then any batch table (CSV/TSV) in the
    input folders, as the Data page reads them; ``folder``: its folder only; ``regex:`` on its name;
    ``csv:FILE``: that table's rows."""
    from pathlib import PurePosixPath

    from core.data.images import UNASSIGNED
    from core.data.plates import batches_from_pattern, parse_batch_table

    out = {s.name: (s.batch or UNASSIGNED, "") for s in sources}
    tables: list[Path] = []
    if batch_from is None:
        tables = sorted(t for given in inputs if Path(given).is_dir() for t in Path(given).rglob("*")
                        if t.suffix.lower() in (".csv", ".tsv") and not t.name.startswith("."))
    elif batch_from.startswith("csv:"):
        tables = [Path(batch_from[4:])]
    elif batch_from.startswith("regex:"):
        found = batches_from_pattern([s.name for s in sources], batch_from[6:])
        out.update({name: (batch, "") for name, batch in found.items()})
    for table in tables:
        try:
            rows = parse_batch_table(table.read_bytes(), sep="\t" if table.suffix.lower() == ".tsv" else ",").rows
        except (OSError, ValueError) as exc:
            if batch_from is not None:
                raise ValueError(f"--batch-from {batch_from}: {exc}") from exc
            print(f"note: {table} is not a batch table ({exc}); not used", file=sys.stderr)
            continue
        for s in sources:
            key = next((k for k in (s.name, PurePosixPath(s.name).name) if k in rows), None)
            if key is not None:
                out[s.name] = rows[key]
    return out
