"""A batch job from start to run: the run's folder made or taken up again (:func:`start_job`), the
images not finished yet sent to the workers with the progress followed (:func:`run_job`), and the
finished parts made into a saved run (:func:`finish_run`): one Parquet table of every cell, the
summary, the label images, the display pictures, ``failures.csv``, ``run.json`` last.

Started again on the same folder with the same settings, a job skips the images finished before
(a killed job loses only the images that were running); failed images are tried again. With
other settings it is refused: a run is one set of settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.run_parts import (
    FAILURES_FILE,
    JOB_FILE,
    JobProgress,
    combine_parts,
    done_numbers,
    iter_summaries,
    write_atomic,
    write_progress,
)
from workflows.batch import ANALYSIS, BatchItem, BatchJob, ImageDone, process_image, run_items

PROGRESS_EVERY_S = 2.0  # progress.json at most this often (the Results page reads it)


def start_job(folder: Path, job: BatchJob, sources: Sequence[Any], batches: dict[str, tuple[str, str]], *,
              inputs: Sequence[str]) -> list[BatchItem]:
    """The run's folder ready for ``job``: made with ``job.json``, or taken up again when it holds the
    same job (a finished run too: it is written again with what is new). Each image keeps its number
    across restarts; images new since are numbered after the others. Returns every image's item."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOB_FILE
    settings = job.settings()
    numbers: dict[str, int] = {}
    if path.is_file():
        old = json.loads(path.read_text())
        before = old.get("settings", {})
        # The device is not the science: a run started on CPUs may be finished on GPUs.
        changed = sorted(k for k in set(before) | set(settings) if k != "device" and before.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"{folder} holds a job with other settings ({', '.join(changed)} differ): a run is one "
                             "set of settings; give another --out, or delete that folder to start over")
        numbers = {name: int(n) for name, n in old.get("images", {}).items()}
    elif (folder / "run.json").exists() or any(folder.iterdir()):
        raise ValueError(f"{folder} exists and is not a batch job's run; give a new --out")
    for source in sources:
        numbers.setdefault(source.name, len(numbers))
    write_atomic(path, json.dumps({"settings": settings, "inputs": list(inputs), "images": numbers,
                                   "started": time.time()}, indent=1).encode())
    (folder / "run.json").unlink(missing_ok=True)  # listed as being written until it is whole again
    return [BatchItem(numbers[s.name], s, *batches.get(s.name, (s.batch, ""))) for s in sources]


@dataclass
class JobReport:
    """How a job went: images done before it, done now, those that failed (with their reasons), and
    per worker process the models it loaded and its peak memory. Counts, not every image's result:
    a million images' results would be the job's largest memory."""

    skipped: int
    done: int = 0
    failed: list[ImageDone] = field(default_factory=list)
    workers: dict[int, tuple[int, float]] = field(default_factory=dict)  # pid -> (models loaded, peak MB)
    seconds: float = 0.0
    progress: ProgressFile | None = None  # progress.json, kept up to date while the run is made

    def add(self, result: ImageDone) -> None:
        if result.ok:
            self.done += 1
        else:
            self.failed.append(result)
        if result.worker:
            loads, peak = self.workers.get(result.worker, (0, 0.0))
            self.workers[result.worker] = (max(loads, result.model_loads), max(peak, result.peak_mb))


class ProgressFile:
    """``progress.json`` kept up to date as images finish (at most every :data:`PROGRESS_EVERY_S`)."""

    def __init__(self, folder: Path, total: int, done: int) -> None:
        self.folder, self.total, self.done, self.failed = folder, total, done, 0
        self._start, self._start_done, self._last = time.monotonic(), done, 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return (self.done + self.failed - self._start_done) / elapsed if elapsed > 0 else 0.0

    def finishing(self, fraction: float, what: str) -> None:
        """While the run is made (its map: minutes for a million cells): progress.json says so, and
        when, so the Results page does not take the job for dead."""
        self.update(state="finishing")

    def update(self, result: ImageDone | None = None, *, state: str = "running", force: bool = False) -> None:
        if result is not None:
            self.done += result.ok
            self.failed += not result.ok
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S:
            write_progress(self.folder, JobProgress(state, self.done, self.failed, self.total, self.rate, time.time()))
            self._last = now


def run_job(folder: Path, items: Sequence[BatchItem], job: BatchJob, *, executor: Any = None,
            unit: Callable[[BatchItem, BatchJob], ImageDone] = process_image,
            on_done: Callable[[ImageDone, ProgressFile], None] | None = None) -> JobReport:
    """Every item not finished before through ``unit`` (on ``executor``, or here); progress.json kept;
    an interruption (Ctrl-C, a kill) leaves the finished images for the next start."""
    finished = done_numbers(folder)
    todo = [item for item in items if item.number not in finished]
    report = JobReport(skipped=len(items) - len(todo))
    progress = ProgressFile(folder, len(items), report.skipped)
    progress.update(force=True)
    t0 = time.perf_counter()

    def heard(done: ImageDone) -> None:
        report.add(done)
        progress.update(done)
        if on_done is not None:
            on_done(done, progress)

    try:
        run_items(todo, job, executor=executor, unit=unit, on_done=heard)
    except BaseException:
        progress.update(state="interrupted", force=True)
        raise
    report.seconds = time.perf_counter() - t0
    progress.update(state="finishing", force=True)  # the run is made next (finish_run): not whole yet
    report.progress = progress
    return report


def write_failures(folder: Path, items: Sequence[BatchItem], failed: Sequence[ImageDone]) -> pd.DataFrame:
    """``failures.csv``: each failed image, its file and why (empty, with its header, when none failed)."""
    by_number = {item.number: item for item in items}
    rows = [{"image": f.name, "file": by_number[f.number].source.source if f.number in by_number else f.file,
             "reason": f.error}
            for f in sorted(failed, key=lambda f: (f.number < 0, f.number))]
    table = pd.DataFrame(rows, columns=["image", "file", "reason"])
    write_atomic(folder / FAILURES_FILE, table.to_csv(index=False).encode())
    return table


def finish_run(folder: Path, items: Sequence[BatchItem], job: BatchJob, failures: pd.DataFrame, *,
               extra: dict[str, Any] | None = None, map_settings: Any = None,
               progress: Callable[[float, str], None] | None = None, dropped: list[str] | None = None) -> Any:
    """The finished images' parts made into a run in ``folder`` (``run.json`` last): the analysis
    ``segmentation`` with tables ``cells`` (every cell, one Parquet file), ``summary`` (image x model),
    ``labels``, and files ``failures.csv``, ``provenance.json``; the images' index and thumbnail.
    With ``map_settings`` (a :class:`models.cellmap.MapSettings`), also the cell map of the first
    model's cells (:mod:`workflows.batch_map`), kept as it is when the images and settings are those it
    was made of. What was dropped is said in ``dropped``. Returns its :class:`~core.runs.RunInfo`."""
    dropped = dropped if dropped is not None else []
    from core.analysis import MANIFEST_FILE, PROVENANCE_FILE, Analysis, InputFile, provenance_json
    from core.runs import IMAGE_INDEX, INDEX_COLUMNS, RUN_FILE, THUMBNAIL, THUMBNAIL_SIDE, run_info, summary_of
    from core.saved_record import LABELS_TABLE, SavedFiles, SavedTables
    from workflows.provenance import provenance

    total = len({item.name for item in items} | set(failures["image"]))  # with the files that could not be listed
    wanted = {item.number for item in items}
    numbers = sorted(done_numbers(folder) & wanted)
    done = [_compact(s) for s in iter_summaries(folder, numbers)]  # one image's summary at a time, kept small
    where = folder / ANALYSIS
    tables: dict[str, dict[str, Any]] = {}
    rows, columns = combine_parts(folder, numbers, where / "tables" / "cells.parquet")
    tables["cells"] = {"rows": rows, "columns": columns}
    summary = pd.DataFrame([{"image": s["image"], "batch": s["batch"], "condition": s["condition"], "model": model,
                             "cells": n, "seconds": round(s["seconds"], 3),
                             "notes": "; ".join(n for n in s["notes"] if n.startswith(f"{model}: "))}
                            for s in done for model, n in s["cells"].items()],
                           columns=["image", "batch", "condition", "model", "cells", "seconds", "notes"])
    labels = pd.DataFrame([(s["image"], model, file) for s in done for model, file in s["labels"].items()],
                          columns=["image", "model", "file"])
    for name, table in (("summary", summary), (LABELS_TABLE, labels)):
        (where / "tables").mkdir(parents=True, exist_ok=True)
        table.to_parquet(where / "tables" / f"{name}.parquet", index=False)
        tables[name] = {"rows": len(table), "columns": list(table.columns)}
    settings = job.settings()
    recipe = next((s.get("recipe") for s in job.models.values() if s.get("recipe") is not None), None)
    used = sorted({s["device"] for s in done if s["device"]})  # what "auto" became on each worker
    prov = provenance(recipe=recipe, models=job.models, device=", ".join(used) or job.device, extra=extra)
    files = {FAILURES_FILE: failures.to_csv(index=False).encode(), PROVENANCE_FILE: provenance_json(prov).encode()}
    for name, data in files.items():
        write_atomic(where / "files" / name, data)
    inputs = tuple(InputFile(s["image"], s["hash"], None, s["batch"], s["condition"], tuple(map(tuple, s["channels"])))
                   for s in done)
    analysis = Analysis("segmentation", inputs, settings, prov, tables=SavedTables(where, tables),
                        files=SavedFiles(where, {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}))
    write_atomic(where / MANIFEST_FILE, json.dumps(analysis.manifest(), indent=2, sort_keys=True).encode())
    index = pd.DataFrame([[s["image"], s["batch"], s["condition"], s["height"], s["width"], s["scale"], s["file"]]
                          for s in done], columns=list(INDEX_COLUMNS))
    index.astype({"height": "int64", "width": "int64", "scale": "float64"}).to_parquet(folder / IMAGE_INDEX,
                                                                                      index=False)
    if done:
        _thumbnail(folder / done[0]["file"], folder / THUMBNAIL, THUMBNAIL_SIDE)
    import shutil

    from workflows.batch_map import MAP_ANALYSIS, map_of_run

    analyses = [analysis]
    key = hashlib.sha256(json.dumps([numbers, None if map_settings is None else map_settings.to_json()]).encode())
    made = folder / MAP_ANALYSIS / "made_of.txt"  # the images and settings the map was made of
    if map_settings is not None and rows and made.is_file() and made.read_text() == key.hexdigest():
        analyses.append(Analysis.load(folder / MAP_ANALYSIS))  # the same images, the same settings: kept as it is
    else:
        if (folder / MAP_ANALYSIS).exists() and map_settings is None:
            dropped.append("the run's earlier cell map was dropped (--no-map); run again without it to make one")
        shutil.rmtree(folder / MAP_ANALYSIS, ignore_errors=True)  # of other images or settings: made again
        if map_settings is not None and rows:
            if map_of_run(folder, next(iter(job.models)), map_settings, prov, inputs, progress=progress):
                write_atomic(made, key.hexdigest().encode())
                analyses.append(Analysis.load(folder / MAP_ANALYSIS))
    blocked = sum(any("blocks of" in n for n in s["notes"]) for s in done)
    notes = [f"{len(failures)} of {total} images failed: see {FAILURES_FILE}" if len(failures) else "",
             f"{blocked} large {'image' if blocked == 1 else 'images'} segmented in blocks (see the summary's notes)"
             if blocked else ""]
    note = "; ".join(filter(None, notes))
    data = summary_of(folder.name, analyses, note=note)
    data["images"] = len(done)
    write_atomic(folder / RUN_FILE, json.dumps(data, indent=2, sort_keys=True).encode())
    return run_info(folder, data)


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    """What the run's tables need of an image's summary (the rest stays in its part's file)."""
    keep = ("image", "batch", "condition", "hash", "channels", "cells", "labels", "seconds", "height", "width",
            "scale", "file", "device", "notes")
    out = {k: summary.get(k) for k in keep}
    out["notes"] = out["notes"] or []
    return out


def _thumbnail(display: Path, target: Path, side: int) -> None:
    import cv2

    from core.figures.display import encode_image, thumbnail

    rgb = cv2.cvtColor(cv2.imread(str(display), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    write_atomic(target, encode_image(thumbnail(rgb, side), "png"))
