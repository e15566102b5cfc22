"""The batch job (`python -m core run`): on a local Dask cluster it gives exactly what the images give
one by one; it resumes after a kill, lists failed images with their reason, redoes a killed worker's
images, loads each model once per worker, and its run opens like any other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.io.example import make_example_dataset
from core.io.export import write_dataset
from core.segmentation.recipe import DEFAULT_RECIPE

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 6  # 3 plates x 2 fields, 96 px: a screen in miniature


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> Path:
    """A folder of generated images with two corrupt files among them: one whose header cannot be read
    (refused when listed) and one cut short (its header is whole: it fails on the worker)."""
    from conftest import tiff_bytes

    folder = tmp_path_factory.mktemp("screen")
    write_dataset(make_example_dataset(seed=3, size=96, fields_per_plate=2), folder)
    (folder / "images" / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)  # a TIFF header, no image
    whole = tiff_bytes(np.random.default_rng(0).integers(0, 4000, (96, 96), np.uint16))
    (folder / "images" / "cut.tif").write_bytes(whole[: len(whole) // 2])
    return folder


@pytest.fixture(scope="module")
def cluster():
    from workflows.dask_executor import DaskExecutor

    with DaskExecutor(workers=2) as executor:
        yield executor


def job_for(folder: Path):
    from core.segmentation.recipe import DEFAULT_RECIPE
    from workflows.batch import BatchJob
    from workflows.cli.inputs import model_settings

    return BatchJob(str(folder), {"classical": model_settings("classical", DEFAULT_RECIPE, 1024)})


def items_of(screen: Path, job, problems: list | None = None):
    from core.io.sources import find_sources
    from workflows.batch_run import start_job
    from workflows.cli.batch_commands import batches_of

    found = find_sources([str(screen)])
    if problems is not None:
        problems += found.problems
    return start_job(Path(job.folder), job, found.sources, batches_of(found.sources, None, [str(screen)]),
                     inputs=[str(screen)])


def one_by_one(screen: Path) -> pd.DataFrame:
    """Each image read, segmented and measured on its own, as the pages and `segment` do it."""
    from core.cells.cell_set import cell_table
    from core.io.load import load_paths
    from core.segmentation.recipe import DEFAULT_RECIPE
    from models.registry import load_model
    from models.runner import run_model

    model = load_model("classical")
    frames = []
    for image in load_paths([screen]).images:
        labels = run_model(model, image, recipe=DEFAULT_RECIPE).labels
        frames.append(cell_table([(image, labels)]))
    return pd.concat(frames, ignore_index=True)


def run_cells(folder: Path) -> pd.DataFrame:
    from core.runs import open_run

    run = open_run(folder.name, folder.parent)
    return run.table("segmentation", "cells")


def same_cells(batch: pd.DataFrame, plain: pd.DataFrame) -> None:
    columns = [c for c in plain.columns if c not in ("image_index", "batch", "condition")]
    a = batch[columns].sort_values(["image", "label"]).reset_index(drop=True)
    b = plain[columns].sort_values(["image", "label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_a_run_on_two_local_workers_equals_the_images_one_by_one_and_lists_the_corrupt_one(screen, tmp_path,
                                                                                           cluster):
    from workflows.batch_run import finish_run, run_job, write_failures
    from workflows.cli.batch_commands import unreadable

    folder = tmp_path / "screen-run"
    job = job_for(folder)
    problems: list = []
    items = items_of(screen, job, problems)
    report = run_job(folder, items, job, executor=cluster)
    assert report.done == N_IMAGES and [f.name for f in report.failed] == ["cut"]
    assert len(report.workers) == 2  # both workers took images
    assert all(loads == 1 for loads, _ in report.workers.values())  # the model loaded once per worker
    failures = write_failures(folder, items, report.failed + unreadable(problems))
    info = finish_run(folder, items, job, failures)
    same_cells(run_cells(folder), one_by_one(screen))
    listed = pd.read_csv(folder / "failures.csv").set_index("image")
    assert sorted(listed.index) == ["broken", "cut"]  # by image name, as the run names images
    assert listed.loc["cut", "file"] == "images/cut.tif" and listed.loc["broken", "file"] == "images/broken.tif"
    assert "corrupt or truncated" in listed.loc["cut", "reason"] and listed.loc["broken", "reason"]
    assert info.images == N_IMAGES and "2 of 8 images failed" in info.note


def test_the_run_opens_on_the_results_page_with_its_images_and_labels(screen, tmp_path, monkeypatch):
    from core.run_images import image_index, run_labels
    from core.run_tables import cells_per_image
    from core.runs import list_runs, open_run
    from workflows.batch_run import finish_run, run_job, write_failures

    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(tmp_path))
    folder = tmp_path / "plates"
    job = job_for(folder)
    items = items_of(screen, job)
    report = run_job(folder, items, job)  # in this process: the same files as on Dask
    finish_run(folder, items, job, write_failures(folder, items, report.failed))
    assert [i.name for i in list_runs()] == ["plates"]
    run = open_run("plates")
    per_image = cells_per_image(run)
    assert len(image_index(run)) == N_IMAGES and per_image["cells"].sum() == len(run_cells(folder))
    first = image_index(run).iloc[0]
    labels = run_labels(run, first["image"])["classical"]
    assert labels.shape == (first["height"], first["width"]) and labels.max() > 0


def kill_worker_once(item, job):
    """The unit, but the worker running the second image dies the first time it gets it."""
    from workflows.batch import process_image

    marker = Path(job.folder) / "killed-once"
    if item.number == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)  # the worker process dies, as if out of memory
    return process_image(item, job)


def test_local_workers_keep_glibcs_adaptive_malloc_not_dasks_fixed_trim_threshold(cluster):
    """Dask's default MALLOC_TRIM_THRESHOLD_=65536 made each worker 25% slower than a plain loop."""
    import os

    assert set(cluster.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}


def test_a_killed_workers_image_is_done_again_on_another_worker(screen, tmp_path, cluster):
    from core.run_parts import done_numbers
    from workflows.batch_run import run_job

    folder = tmp_path / "killed"
    job = job_for(folder)
    items = [item for item in items_of(screen, job) if item.name != "cut"]
    report = run_job(folder, items, job, executor=cluster, unit=kill_worker_once)
    assert (folder / "killed-once").exists()  # a worker did die
    assert report.done == len(items) and not report.failed
    assert done_numbers(folder) == {item.number for item in items}


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "run", "--map", "pca", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kwargs)


def test_a_killed_job_resumes_where_it_stopped_and_says_how_many_failed(screen, tmp_path):
    out = tmp_path / "resumed"
    first = cli(str(screen), "--out", str(out), "--serial")
    deadline = time.monotonic() + 60
    while len(list((out / "parts").glob("*.json"))) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no goodbye: as a lost machine or `kill -9`
    first.wait()
    done_before = len(list((out / "parts").glob("*.json")))
    assert 2 <= done_before < N_IMAGES and not (out / "run.json").exists()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "running"  # as the job last said; the page sees it is stale after a minute

    second = cli(str(screen), "--out", str(out), "--serial")
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 3, stderr  # finished, but an image failed
    assert f", {done_before} done before;" in stdout
    assert stdout.strip().splitlines()[-1].startswith("2 of 8 images failed (1 could not be listed, 1 failed while")
    same_cells(run_cells(out), one_by_one(screen))

    made = out / "analyses/01-cellmap/tables/cells.parquet"
    before = made.stat().st_mtime_ns
    third = cli(str(screen), "--out", str(out), "--serial")  # all done: only the cut image is tried again
    stdout, stderr = third.communicate(timeout=120)
    assert third.returncode == 3 and f", {N_IMAGES} done before;" in stdout
    assert made.stat().st_mtime_ns == before  # the same images and map settings: the map is kept, not made again


def test_other_settings_on_the_same_run_are_refused(screen, tmp_path, capsys):
    from core.segmentation.recipe import DEFAULT_RECIPE
    from workflows.cli.parser import main

    out = tmp_path / "one-recipe"
    plate = [str(screen / "images" / f"plateA_field{i}.tif") for i in (1, 2)]
    assert main(["run", *plate, "--out", str(out), "--serial", "--no-map", "--block", "4096"]) == 0  # above a tile
    recipe = tmp_path / "recipe.json"
    recipe.write_text(DEFAULT_RECIPE.with_step("denoise", enabled=False).to_json())
    capsys.readouterr()
    assert main(["run", *plate, "--out", str(out), "--serial", "--no-map", "--block", "4096", "--recipe",
                 str(recipe)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "other settings (models differ)" in err and len(err.splitlines()) == 1


def test_a_run_being_written_is_listed_with_its_progress(tmp_path):
    from core.run_parts import JOB_FILE, JobProgress, write_progress
    from core.runs import list_runs, open_run

    folder = tmp_path / "big-screen"
    folder.mkdir()
    (folder / JOB_FILE).write_text(json.dumps({"settings": {"models": {"classical": {}}}, "images": {"a": 0}}))
    write_progress(folder, JobProgress("running", 340, 2, 10_000, 12.5, time.time()))
    (info,) = list_runs(tmp_path)
    assert info.progress is not None and info.images == 10_000
    assert info.note.startswith("being written: 340 of 10000 images (3%), 2 failed, 13 min left")
    write_progress(folder, JobProgress("running", 340, 2, 10_000, 12.5, time.time() - 3600))
    assert "run the same command again" in list_runs(tmp_path)[0].note  # silent for an hour: the job is gone
    write_progress(folder, JobProgress("finishing", 9_998, 2, 10_000, 12.5, time.time()))
    assert "every image through" in list_runs(tmp_path)[0].note  # making its map: alive, not "stopped part-way"
    with pytest.raises(ValueError, match="'big-screen' is not whole yet: being written"):
        open_run("big-screen", tmp_path)


def test_combine_parts_widens_parts_of_other_columns(tmp_path):
    from core.run_parts import combine_parts, write_part

    write_part(tmp_path, 0, pd.DataFrame({"cell_id": ["a:1"], "image": ["a"], "mean_dna": [1.0]}), {"number": 0})
    write_part(tmp_path, 1, pd.DataFrame({"cell_id": pd.Series([], dtype=str), "image": pd.Series([], dtype=str)}),
               {"number": 1})
    write_part(tmp_path, 2, pd.DataFrame({"cell_id": ["c:1"], "image": ["c"], "mean_er": [np.float32(2)]}),
               {"number": 2})
    rows, columns = combine_parts(tmp_path, [0, 1, 2], tmp_path / "cells.parquet")
    table = pd.read_parquet(tmp_path / "cells.parquet")
    assert rows == 2 and columns == ["cell_id", "image", "mean_dna", "mean_er"]
    assert table["mean_dna"].isna().tolist() == [False, True] and table["mean_er"].tolist()[1] == 2.0


def test_the_results_page_shows_a_run_being_written_and_opens_it_once_whole(screen, root):
    from conftest import open_page

    from core.run_parts import JOB_FILE, JobProgress, write_progress
    from workflows.batch_run import finish_run, run_job, write_failures

    folder = root / "overnight"
    job = job_for(folder)
    items = items_of(screen, job)
    write_progress(folder, JobProgress("running", 3, 1, 7, 0.5, time.time()))  # as a job would
    app = open_page("pages/results.py", run="overnight").run(timeout=60)
    assert not app.exception
    bar = app.get("progress")[0]
    assert "being written: 3 of 7 images (57%), 1 failed" in bar.proto.text and (folder / JOB_FILE).exists()
    assert "overnight" in app.dataframe[0].value["name"].tolist()  # in the list of runs too

    report = run_job(folder, items, job)
    finish_run(folder, items, job, write_failures(folder, items, report.failed))
    app = open_page("pages/results.py", run="overnight").run(timeout=60)
    assert not app.exception and not app.get("progress")
    assert [m.value for m in app.metric][:2] == [f"{N_IMAGES:,}", app.metric[1].value] and app.metric[1].value != "–"


def test_a_large_image_in_a_screen_is_segmented_in_blocks_on_the_workers_as_it_is_alone(tmp_path, cluster):
    import tifffile
    from test_blocks import nuclei_image

    from core.data.images import default_channels
    from core.io.sources import find_sources
    from core.run_parts import iter_summaries
    from workflows.batch import BatchJob
    from workflows.batch_run import finish_run, run_job, start_job, write_failures
    from workflows.blocks import ImageMeta, ModelSegmenter, segment_in_blocks
    from workflows.cli.inputs import model_settings

    pixels = nuclei_image(900, 1100, n=240, empty=None, seed=8)
    screen = tmp_path / "slides"
    screen.mkdir()
    tifffile.imwrite(screen / "slide.tif", pixels[..., 0], tile=(256, 256), compression="zlib")
    tifffile.imwrite(screen / "field.tif", pixels[:300, :300, 0])  # a small image beside it: whole
    folder = tmp_path / "run"
    job = BatchJob(str(folder), {"classical": model_settings("classical", DEFAULT_RECIPE, 1024)}, block=384)
    found = find_sources([str(screen)])
    items = start_job(folder, job, found.sources, {}, inputs=[str(screen)])
    report = run_job(folder, items, job, executor=cluster)
    assert report.done == 2 and not report.failed
    finish_run(folder, items, job, write_failures(folder, items, []))
    cells = run_cells(folder)
    slide = next(s for s in found.sources if s.name == "slide")
    alone = segment_in_blocks(slide.read_region, ImageMeta("slide", default_channels(1), (900, 1100)),
                              ModelSegmenter("classical", {"recipe": DEFAULT_RECIPE}), block=384)
    assert (cells["image"] == "slide").sum() == len(alone[1]) > 200
    summary = {s["image"]: s for s in iter_summaries(folder, [item.number for item in items])}
    assert any("blocks of 384 px" in note for note in summary["slide"]["notes"])
    assert not summary["field"]["notes"]  # 300 px: whole, as the pages segment it
    labels = tifffile.imread(folder / "analyses/00-segmentation" / summary["slide"]["labels"]["classical"])
    np.testing.assert_array_equal(labels, alone[0])


def test_two_models_give_each_image_a_row_per_model_and_the_overview_counts_each(screen, tmp_path):
    import importlib

    from core.run_tables import cells_per_image
    from core.runs import open_run
    from models import registry
    from workflows.batch import BatchJob
    from workflows.batch_run import finish_run, run_job, write_failures
    from workflows.cli.inputs import model_settings

    kept = dict(registry._FAMILIES), dict(registry._REGISTRY), list(registry._PROVIDERS)
    sys.modules.pop("toy_family", None)
    importlib.import_module("toy_family")  # a second segmenter, registered in this process only
    try:
        folder = tmp_path / "two-models"
        job = BatchJob(str(folder), {name: model_settings(name, DEFAULT_RECIPE, 1024)
                                     for name in ("classical", "toy-blobs")})
        items = [item for item in items_of(screen, job) if item.name.startswith("plateA")]
        report = run_job(folder, items, job)
        finish_run(folder, items, job, write_failures(folder, items, report.failed), map_settings=None)
    finally:
        for live, saved in zip((registry._FAMILIES, registry._REGISTRY, registry._PROVIDERS), kept, strict=True):
            live.clear()
            live.update(saved) if isinstance(live, dict) else live.extend(saved)
        sys.modules.pop("toy_family", None)
    run = open_run(folder.name, folder.parent)
    per_image = cells_per_image(run)
    cells = run_cells(folder)
    assert sorted(per_image["model"].unique()) == ["classical", "toy-blobs"] and len(per_image) == 2 * len(items)
    assert per_image.groupby("model")["cells"].sum().to_dict() == cells.groupby("model").size().to_dict()


def test_the_job_joins_a_cluster_started_with_dask_scheduler_and_dask_worker(screen, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        out = tmp_path / "on-a-cluster"
        plate = [str(screen / "images" / f"plateB_field{i}.tif") for i in (1, 2)]
        job = cli(*plate, "--out", str(out), "--scheduler", address)
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, stderr
        assert f"Dask: {address}; dashboard: http" in stdout and "run on-a-cluster written: 2 images" in stdout
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=30)


def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path, screen):
    job = cli(str(screen / "images" / "plateA_field1.tif"), "--out", str(tmp_path / "x"), "--scheduler",
              "tcp://127.0.0.1:9", env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 1 and stderr.startswith("error: --scheduler tcp://127.0.0.1:9: no Dask scheduler")
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # no run was started: none is listed as being written


def test_a_scheduler_or_worker_without_cellscope_is_said_before_any_image_is_sent():
    from workflows.dask_executor import DaskExecutor

    class Client:  # as a scheduler started without CellScope on its path answers
        def run_on_scheduler(self, fn):
            raise ModuleNotFoundError("No module named 'workflows'")

    executor = DaskExecutor(scheduler="tcp://elsewhere:8786")
    executor.client = Client()
    with pytest.raises(ValueError, match=r"scheduler cannot read CellScope's tasks .*PYTHONPATH=\. "):
        executor.check_workers("/tmp")


def test_an_out_that_is_a_file_is_refused_in_one_line(tmp_path, screen, capsys):
    from workflows.cli.parser import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["run", str(screen), "--out", str(tmp_path / "notes.txt"), "--serial"]) == 1
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'notes.txt'}: ") and \
        (tmp_path / "notes.txt").read_text() == "mine"
