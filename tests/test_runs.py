"""Saved runs (core/runs.py) and the `runs` commands: round trip, names, atomic writes, deletion."""

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
from conftest import ROOT

from core.analysis import Analysis
from core.runs import RUN_FILE, delete_run, list_runs, open_run, runs_dir, save_run
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.compare import run_compare
from workflows.segmentation import run_segmentation


@pytest.fixture(scope="module")
def analyses(training_example):
    """A segmentation of six small fields and the classical model compared on them: real records."""
    images = training_example
    segmentation = run_segmentation(images, DEFAULT_RECIPE).analysis
    compare = run_compare(images, {"classical": {"recipe": DEFAULT_RECIPE}}, device="cpu").analysis
    return segmentation, compare


def test_a_saved_run_is_listed_and_reads_back_the_same_numbers(analyses, root, training_example):
    segmentation, compare = analyses
    info = save_run("plate-check.1", [segmentation, compare])
    assert runs_dir() == root and info.path == root / "plate-check.1"
    (listed,) = list_runs()
    assert listed == info
    assert listed.kinds == ("segmentation", "compare") and listed.images == len(training_example)
    assert listed.cells == len(segmentation.tables["cells"]) and listed.models == ("classical",)
    f1 = compare.tables["scores"].groupby("model")["f1"].mean()["classical"]
    assert listed.numbers["mean F1 classical"] == pytest.approx(f1, abs=1e-4)
    run = open_run("plate-check.1")
    assert [a.kind for a in run.analyses] == ["segmentation", "compare"]
    for saved, read in zip((segmentation, compare), run.analyses, strict=True):
        assert read.inputs == saved.inputs and read.settings == json.loads(json.dumps(saved.manifest()["settings"]))
        assert read.provenance == saved.provenance and read.created == saved.created
        for name, table in saved.tables.items():
            pd.testing.assert_frame_equal(read.tables[name], table.reset_index(drop=True), check_dtype=False)
        assert {name: read.files[name] for name in saved.files} == dict(saved.files)
    first = run.analyses[0].inputs[0]
    assert first.channels == tuple((c.name, c.role) for c in training_example[0].channels)  # roles kept
    assert run.analysis("compare") is run.analyses[1] and run.analysis("explain") is None


def test_names_are_file_safe_and_never_overwritten(analyses, root):
    segmentation, _ = analyses
    for bad, said in (("../escape", "uses letters, digits"), ("", "Give the run a name"), (".hidden", "uses letters"),
                      ("x" * 65, "at most 64 characters")):
        with pytest.raises(ValueError, match=said):
            save_run(bad, [segmentation])
    save_run("a", [segmentation])
    before = (root / "a" / RUN_FILE).read_bytes()
    with pytest.raises(ValueError, match="a run named 'a' exists already"):
        save_run("a", [segmentation])
    assert (root / "a" / RUN_FILE).read_bytes() == before and [i.name for i in list_runs()] == ["a"]
    with pytest.raises(ValueError, match="nothing to save"):
        save_run("b", [])


def test_a_save_that_fails_half_way_leaves_nothing(analyses, root, monkeypatch):
    segmentation, compare = analyses
    calls, real = [], Analysis.save

    def failing(self, where, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, where, **kwargs)

    monkeypatch.setattr(Analysis, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        save_run("half", [segmentation, compare])
    assert list_runs() == [] and list(root.iterdir()) == []  # nor a hidden leftover


def test_a_save_killed_mid_write_is_never_listed(root):
    """A real process killed (SIGKILL) while writing its run: the run is not listed, and the
    next save sweeps its leftover once it is old."""
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from core.analysis import Analysis
from core.io.example import make_example_dataset
from core.runs import save_run
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.segmentation import run_segmentation

record = run_segmentation(make_example_dataset(size=96, fields_per_plate=1), DEFAULT_RECIPE).analysis
real = Analysis.save
def slow(self, where, **kwargs):
    real(self, where, **kwargs)
    print("written", flush=True)
    time.sleep(60)
Analysis.save = slow
save_run("killed", [record, record])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "CELLSCOPE_RUNS_DIR": str(root)})
    try:
        assert proc.stdout.readline().strip() == "written"  # the first analysis is on disk
        leftovers = [p for p in root.iterdir()]
        assert len(leftovers) == 1 and leftovers[0].name.startswith(".partial-killed-")
        assert list_runs() == []  # half-written: not a run
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list_runs() == []
    with pytest.raises(ValueError, match="no run named 'killed'"):
        open_run("killed")
    old = time.time() - 2 * 24 * 3600
    os.utime(leftovers[0], (old, old))
    from core.runs import _sweep

    _sweep(root)
    assert not leftovers[0].exists()


def test_delete_removes_a_run_and_names_the_known_ones_when_asked_for_another(analyses, root):
    segmentation, _ = analyses
    save_run("keep", [segmentation])
    save_run("drop", [segmentation])
    delete_run("drop")
    assert [i.name for i in list_runs()] == ["keep"] and not (root / "drop").exists()
    with pytest.raises(ValueError, match=r"no run named 'drop' in .* \(runs: keep\)"):
        delete_run("drop")


def test_an_unreadable_run_is_listed_with_a_note(analyses, root):
    save_run("fine", [analyses[0]])
    (root / "broken").mkdir()
    (root / "broken" / RUN_FILE).write_text("{not json")
    by_name = {i.name: i for i in list_runs()}
    assert by_name["fine"].note == "" and by_name["broken"].note.startswith(f"unreadable {RUN_FILE}")


def test_the_runs_commands_and_save_run(root, tmp_path, capsys):
    from core.io.example import make_example_dataset
    from core.io.export import write_dataset
    from workflows.cli import main

    write_dataset(make_example_dataset(size=96, fields_per_plate=1), tmp_path / "ex")
    image = str(tmp_path / "ex" / "images" / "plateA_field1.tif")
    gt = str(tmp_path / "ex" / "masks" / "plateA_field1.tif")
    args = ["compare", image, "--models", "classical", "--gt", gt, "--out", str(tmp_path / "c"), "--save-run", "cli-1"]
    assert main(args) == 0
    assert "saved run cli-1 (compare, 1 image kept) in " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    from core.run_images import image_index, run_labels

    assert image_index(open_run("cli-1"))["image"].tolist() == ["plateA_field1"]  # the image kept for the browser
    assert set(run_labels(open_run("cli-1"), "plateA_field1")) == {"classical"}
    assert not any(p.suffix == ".tif" and p.parent != tmp_path / "c" for p in (tmp_path / "c").rglob("*"))  # no second copy
    assert main(["runs", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "cli-1" and listed["numbers"]["mean F1 classical"] == pytest.approx(
        metrics["classical"]["f1"], abs=1e-4)
    assert main(["runs", "show", "cli-1"]) == 0
    shown = capsys.readouterr().out
    assert "compare: 1 images; tables labels (1 rows), ranking (1 rows), scores (1 rows); 1 label images;" in shown
    assert "1 image kept" in shown
    # Taken and unsafe names are refused before any work: nothing is written to --out.
    for name, said in (("cli-1", "exists already"), ("a/b", "uses letters")):
        assert main([*args[:-4], "--out", str(tmp_path / "never"), "--save-run", name]) == 1
        assert said in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert main(["runs", "delete", "cli-1"]) == 0 and main(["runs", "list"]) == 0
    assert "no saved runs in" in capsys.readouterr().out
    assert main(["runs", "delete", "cli-1"]) == 1 and "no run named 'cli-1'" in capsys.readouterr().err


def _cellmap_record(images):
    from core.segmentation.recipe import DEFAULT_RECIPE
    from models.cellmap import MapSettings
    from models.registry import load_model
    from models.runner import run_model
    from workflows.cellmap import CellMapRequest, run_cellmap

    classical = load_model("classical", "cpu")
    request = CellMapRequest("classical", {}, {"size": 32, "mode": "scale", "mask_background": False}, "morphology",
                             {}, MapSettings(method="pca"), "cpu", recipe=DEFAULT_RECIPE)
    return run_cellmap(images, request, segment=lambda image: run_model(classical, image)).analysis


def test_the_report_is_one_file_with_every_figure_and_no_outside_reference(analyses, root, training_example):
    import re

    from core.figures.report import run_report_html

    cellmap = _cellmap_record(training_example)
    save_run("report-me", [*analyses, cellmap])
    page = run_report_html(open_run("report-me"))
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page)  # nothing fetched from a network
    assert page.count("Plotly.newPlot(") == 4  # cells per image (twice), F1 per model, the map
    verdict = json.loads(cellmap.files["batch_effect.json"])["verdict"]
    assert f"<b>{verdict}</b>" in page and "mean F1 classical" in page and "report-me" in page
    for f in analyses[0].inputs:
        assert f.name in page and f.pixels_hash[:16] in page  # the inputs, by content hash


@pytest.mark.e2e
def test_the_report_draws_its_figures_with_the_network_blocked(analyses, root, tmp_path):
    from browser import BROWSER_ARGS, CHROMIUM, require_chromium
    from playwright.sync_api import sync_playwright

    from workflows.cli import main

    require_chromium()
    save_run("offline", list(analyses))
    assert main(["report", "offline", "-o", str(tmp_path / "report.html")]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        asked = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                   else (asked.append(route.request.url), route.abort()))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        assert page.locator(".js-plotly-plot").count() == 2 and asked == []
        browser.close()


def test_opening_a_run_reads_no_table_until_one_is_asked_for(analyses, root, monkeypatch):
    """open_run reads manifests only; Run.table reads the columns asked for, and a table read whole
    is read once; columns and rows come from the manifest."""
    import pyarrow.parquet as pq

    segmentation, compare = analyses
    save_run("lazy", [segmentation, compare])
    reads, real = [], pq.read_table

    def counted(path, *args, columns=None, **kwargs):
        reads.append((Path(path).name, None if columns is None else tuple(columns)))
        return real(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq, "read_table", counted)
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("pd.read_parquet called"))
    run = open_run("lazy")
    seg = run.analysis("segmentation")
    assert reads == [] and "cells" in seg.tables and set(seg.tables) == {"summary", "cells", "labels"}
    assert seg.manifest()["tables"]["cells"]["rows"] == len(segmentation.tables["cells"])
    assert "cells.csv" in seg.files and reads == []
    assert run.table_columns("segmentation", "cells") == [str(c) for c in segmentation.tables["cells"].columns]
    assert run.table_rows("segmentation", "cells") == len(segmentation.tables["cells"]) and reads == []
    assert run.table_rows("explain", "cells") == 0 and run.table_columns("segmentation", "nope") == []
    area = run.table("segmentation", "cells", ["image", "area"])
    assert reads == [("cells.parquet", ("image", "area"))] and list(area.columns) == ["image", "area"]
    pd.testing.assert_frame_equal(area, segmentation.tables["cells"][["image", "area"]], check_dtype=False)
    assert run.table("explain", "cells") is None and run.table("segmentation", "nope") is None
    with pytest.raises(KeyError, match="has no column 'volume'"):
        run.table("segmentation", "cells", ["image", "volume"])
    whole = seg.tables["cells"]
    assert seg.tables["cells"] is whole and reads[-1] == ("cells.parquet", None) and len(reads) == 2
    assert run.table("segmentation", "cells", ["area"])["area"].tolist() == whole["area"].tolist() and len(reads) == 2
    assert seg.files["cells.csv"] == segmentation.files["cells.csv"]  # read from disk when asked


def test_the_overview_and_comparison_tables_read_only_the_columns_they_need(analyses, root, monkeypatch):
    """The Overview read the whole cells table (features and all: hundreds of MB at a million cells)
    to count cells per image and plot one measurement."""
    import pyarrow.parquet as pq

    from core.run_compare import measure_options, measure_spread
    from core.run_tables import cells_per_image, cells_table, measurement_columns, measurements, spread

    segmentation, _ = analyses
    save_run("narrow", [segmentation])
    reads, real = [], pq.read_table

    def counted(path, *args, columns=None, **kwargs):
        reads.append((Path(path).name, None if columns is None else tuple(columns)))
        return real(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq, "read_table", counted)
    run = open_run("narrow")
    whole = segmentation.tables["cells"]
    assert measurement_columns(run) == measurements(whole) and "area" in measurement_columns(run) and reads == []
    assert measure_options([run]) == measurements(whole) and reads == []
    cells_per_image(run)
    stats = spread(cells_table(run, ["batch", "condition", "area"]), "area")
    pd.testing.assert_frame_equal(stats, spread(whole, "area"), check_dtype=False)
    measure_spread([run], "area")
    assert reads and all(columns is not None and len(columns) <= 4 for name, columns in reads if name == "cells.parquet")


def test_embed_saves_its_images_and_the_segmenters_labels_into_the_run_only(root, tmp_path, capsys):
    from core.io.example import make_example_dataset
    from core.io.export import write_dataset
    from core.run_images import image_index, run_labels
    from workflows.cli import main

    images = make_example_dataset(size=96, fields_per_plate=1)
    write_dataset(images, tmp_path / "ex")
    assert main(["embed", str(tmp_path / "ex"), "--out", str(tmp_path / "out"), "--save-run", "emb"]) == 0
    assert "saved run emb (cellmap, 3 images kept)" in capsys.readouterr().out
    run = open_run("emb")
    assert sorted(image_index(run)["image"]) == sorted(img.name for img in images)
    cells = run.table("cellmap", "cells", ["image", "label"])
    for name, labels in ((n, run_labels(run, n)) for n in cells["image"].unique()):
        assert set(labels) == {"classical"}
        assert set(np.unique(labels["classical"])) - {0} == set(cells[cells["image"] == name]["label"])  # the cells' ids
    assert not list((tmp_path / "out").rglob("*.tif"))  # --out gets the command's files, not the labels
