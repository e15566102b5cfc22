"""The Results page through AppTest, on runs saved from real pipeline records: the list and its
search, a run opened from a link (the numbers shown are the saved tables'), a link naming no run,
the views, the zip, and deleting a run after the confirmation."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from core.runs import list_runs, save_run
from core.segmentation.recipe import DEFAULT_RECIPE

TIMEOUT = 120


@pytest.fixture(scope="module")
def records(training_example):
    """Real records of six small fields: a segmentation, the classical model compared, a cell map
    (classical cells, morphology, t-SNE) and an explanation (a short classifier of the batch)."""
    from models.cellmap import MapSettings
    from models.registry import load_model
    from models.runner import run_model
    from workflows.cellmap import CellMapRequest, find_cells, ground_truth, run_cellmap
    from workflows.compare import run_compare
    from workflows.explain import ExplainRequest, run_explain
    from workflows.segmentation import run_segmentation

    images = training_example
    crop = {"size": 32, "mode": "scale", "mask_background": False}
    classical = load_model("classical", "cpu")
    request = CellMapRequest("classical", {}, crop, "morphology", {}, MapSettings(), "cpu", recipe=DEFAULT_RECIPE)
    cells = find_cells(images, ground_truth, crop=crop)
    explain = ExplainRequest("batch", {"epochs": 2, "batch_size": 32, "lr": 0.003, "folds": 2, "seed": 0,
                                       "max_train_cells": 2000}, per_class=10)
    return {"segmentation": run_segmentation(images, DEFAULT_RECIPE).analysis,
            "compare": run_compare(images, {"classical": {"recipe": DEFAULT_RECIPE}}, device="cpu").analysis,
            "cellmap": run_cellmap(images, request, segment=lambda image: run_model(classical, image)).analysis,
            "explain": run_explain(images, cells, explain).analysis}


@pytest.fixture
def saved(records, root):
    """Three runs: a plate check (segmentation + compare), a map, an explanation."""
    save_run("plate-check", [records["segmentation"], records["compare"]], note="classical on the example")
    save_run("map-morphology", [records["cellmap"]])
    save_run("explain-batch", [records["explain"]])
    return records


def open_results(**params: str | list[str]) -> AppTest:
    """The whole app on the Results page, its address holding ``params`` (a link)."""
    return open_page("pages/results.py", **params)


def runs_listed(at: AppTest) -> list[str]:
    return list(at.dataframe[-1].value["name"])


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_with_no_runs_the_page_says_where_runs_come_from(root):
    at = open_results()
    (info,) = [i.value for i in at.info if "No saved runs" in i.value]
    assert "`--save-run NAME`" in info and "**Save as run**" in info and str(root) in info
    assert not [s for s in at.selectbox if s.key == "res.run"] and not at.dataframe


def test_the_list_shows_every_run_and_the_search_keeps_the_rows_with_every_word(saved):
    at = open_results()
    table = at.dataframe[-1].value
    assert sorted(table["name"]) == ["explain-batch", "map-morphology", "plate-check"]
    row = table.set_index("name").loc["plate-check"]
    cells = len(saved["segmentation"].tables["cells"])
    assert (row["kinds"], row["images"], row["cells"], row["models"], row["note"]) == (
        "segmentation, compare", 6, cells, "classical", "classical on the example")
    f1 = saved["compare"].tables["scores"]["f1"].mean()
    assert f"mean F1 classical {round(f1, 4):.3f}" in row["key numbers"]
    verdict = json.loads(saved["cellmap"].files["batch_effect.json"])["verdict"]
    assert f"plate effect {verdict}" in table.set_index("name").loc["map-morphology", "key numbers"]
    for text, expected in (("morphology", ["map-morphology"]), ("CLASSICAL example", ["plate-check"]),
                           (verdict, ["map-morphology"]), ("explain", ["explain-batch"]), ("no-such-thing", []),
                           ("", sorted(table["name"]))):
        at.text_input(key="res.search").set_value(text).run()
        assert sorted(runs_listed(at)) == expected, text
    at.text_input(key="res.search").set_value("map").run()
    assert any(c.value.startswith("1 of 3 runs") for c in at.caption)


def test_a_link_opens_the_run_with_the_numbers_of_its_saved_tables(saved):
    at = open_results(run="plate-check")
    assert at.selectbox(key="res.run").value == "plate-check"
    seg, compare = saved["segmentation"], saved["compare"]
    assert metrics(at) | {"Saved": ""} == {"Images": "6", "Cells": f"{len(seg.tables['cells']):,}", "Models": "1",
                                          "Analyses": "2", "Saved": ""}
    summary = seg.tables["summary"]
    by_plate = at.dataframe[0].value.set_index(["batch", "condition"])
    expected = summary.groupby(["batch", "condition"])["cells"].agg(["size", "sum"])
    assert list(by_plate["images"]) == list(expected["size"]) and list(by_plate["cells"]) == list(expected["sum"])
    assert at.segmented_control(key="res.view").value == "Overview"

    at = open_results(run="plate-check", view="Models")  # the view too comes from the link
    assert at.segmented_control(key="res.view").value == "Models"
    shown = at.dataframe[0].value.set_index("model")
    scores = compare.tables["scores"].dropna(subset=["f1"]).groupby("model")
    for column in ("precision", "recall", "f1"):
        assert shown.loc["classical", column] == pytest.approx(scores[column].mean()["classical"], abs=5e-4)
    assert shown.loc["classical", "images"] == 6


def test_choosing_a_run_and_a_view_writes_them_into_the_address_beside_the_workspace(saved):
    at = open_results()
    ws = at.query_params["ws"]
    at.selectbox(key="res.run").set_value("map-morphology").run()
    assert at.query_params["run"] == "map-morphology" and at.query_params["ws"] == ws
    at.segmented_control(key="res.view").set_value("Cell map").run()
    assert not at.exception and at.query_params["view"] == "Cell map"
    again = open_results(run="map-morphology", view="Cell map")  # the same address in another browser
    assert [s.value for s in again.subheader] == [s.value for s in at.subheader]


def test_a_link_naming_no_run_says_so_and_lists_the_runs(saved, root):
    at = open_results(run="gone-run", view="Models")
    (error,) = [e.value for e in at.error]
    assert "No saved run is named “gone-run”" in error and str(root) in error
    assert at.selectbox(key="res.run").value is None and not at.metric
    assert sorted(runs_listed(at)) == ["explain-batch", "map-morphology", "plate-check"]


def _values(array) -> list[float]:
    """A plotly JSON array: a list, or typed binary data ({"dtype", "bdata"})."""
    import base64

    import numpy as np

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_the_cell_map_view_shows_the_saved_verdict_numbers_and_map(saved):
    effect = json.loads(saved["cellmap"].files["batch_effect.json"])
    at = open_results(run="map-morphology", view="Cell map")
    assert f"Plate effect: {effect['verdict']}" in [s.value for s in at.subheader]
    assert any(m.value == effect["reason"] for m in at.markdown)
    assert metrics(at)["silhouette"] == f"{effect['silhouette']:.2f}" and metrics(at)["kBET"] == f"{effect['kbet']:.2f}"
    # The saved map, interactive: every cell at its saved coordinates, coloured as the link says.
    table = saved["cellmap"].tables["cells"]
    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    points = sorted((x, y) for trace in figure["data"] for x, y in zip(_values(trace["x"]), _values(trace["y"]), strict=True))
    expected = sorted(zip(table["x"].tolist(), table["y"].tolist(), strict=True))
    assert len(points) == len(expected) and all(p == pytest.approx(e, abs=1e-5) for p, e in zip(points, expected, strict=True))
    assert {t["name"] for t in figure["data"]} == set(table["batch"].astype(str))
    at.selectbox(key="res.color").set_value("cluster").run()
    assert at.query_params["color"] == "cluster" and not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"] for t in figure["data"]} == set(table["cluster"].astype(str))
    at = open_results(run="map-morphology")  # the overview: cells per image from the cells table
    table = saved["cellmap"].tables["cells"]
    assert at.dataframe[0].value["cells"].sum() == len(table)
    assert at.selectbox(key="res.measure").value == "area"


def test_the_explain_view_shows_the_classifier_and_each_classs_cam_reading(saved):
    report = json.loads(saved["explain"].files["classifier.json"])
    at = open_results(run="explain-batch", view="Explain")
    assert any(f"balanced accuracy {report['balanced_accuracy']:.2f} (chance {report['chance']:.2f})" in s.value
               for s in at.subheader)
    table = at.dataframe[0].value
    assert list(table["class"]) == list(report["cams"]["classes"])
    assert list(table["median inside-mask share"]) == [c["median_inside"] for c in report["cams"]["classes"].values()]
    readings = "\n".join(f"- {c['reading']}" for c in report["cams"]["classes"].values())
    assert readings in [m.value for m in at.markdown]
    assert "Models" not in at.segmented_control(key="res.view").options  # no comparison in this run


def test_provenance_names_the_version_device_and_date_of_each_analysis(saved):
    from components.results_state import date_text
    from core.analysis import cellscope_version

    at = open_results(run="plate-check", view="Provenance")
    lines = [m.value for m in at.markdown if m.value.startswith("**")]
    for analysis in (saved["segmentation"], saved["compare"]):
        assert any(line.startswith(f"**{analysis.kind}** · CellScope {cellscope_version(analysis.provenance)}")
                   and date_text(analysis.created) in line for line in lines), lines
    settings = json.loads(at.code[1].value)["settings"]
    assert settings["models"] == json.loads(json.dumps(saved["compare"].manifest()["settings"]))["models"]


def test_the_run_as_a_zip_holds_its_folder(saved, root):
    from components.results_state import run_zip

    at = open_results(run="plate-check", view="Files")
    assert not at.exception and len(at.get("download_button")) == 2  # the run (zip) and its report (HTML)
    with zipfile.ZipFile(io.BytesIO(run_zip(root / "plate-check"))) as zf:
        names = set(zf.namelist())
        assert "plate-check/run.json" in names
        assert json.loads(zf.read("plate-check/run.json"))["name"] == "plate-check"
        scores = pd.read_parquet(io.BytesIO(zf.read("plate-check/analyses/01-compare/tables/scores.parquet")))
    assert len(scores) == len(saved["compare"].tables["scores"])


def test_a_run_is_deleted_only_after_the_confirmation(saved, root):
    at = open_results(run="map-morphology", view="Files")
    delete = at.button(key="res.delete")
    assert delete.disabled
    assert any("shared by everyone" in w.value for w in at.warning)
    at.checkbox(key="res.sure").check().run()
    assert not at.button(key="res.delete").disabled and (root / "map-morphology").is_dir()
    at.button(key="res.delete").click().run()
    assert not at.exception
    assert sorted(i.name for i in list_runs()) == ["explain-batch", "plate-check"]
    assert not (root / "map-morphology").exists()
    assert "Deleted the run “map-morphology”." in [s.value for s in at.success]
    assert "run" not in at.query_params and at.selectbox(key="res.run").value is None
    assert sorted(runs_listed(at)) == ["explain-batch", "plate-check"]


def test_a_run_is_read_from_disk_once_however_often_it_is_shown(saved, monkeypatch):
    import components.results_state as state

    calls = []
    real = state.open_run
    monkeypatch.setattr(state, "open_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    fresh = state.BoundedCache(8)  # not the server's: other tests may have read this run already
    monkeypatch.setattr(state, "run_store", lambda: fresh)
    at = open_results(run="plate-check")
    for view in ("Models", "Provenance", "Overview"):
        at.segmented_control(key="res.view").set_value(view).run()
    assert not at.exception and len(calls) == 1


def test_spread_gives_the_percentiles_of_each_batch_and_condition():
    from core.run_tables import spread

    rng = np.random.default_rng(0)
    cells = pd.DataFrame({"batch": np.repeat(["a", "b"], 500), "condition": np.tile(["x", "y"], 500),
                          "area": rng.gamma(3, 50, 1000)})
    stats = spread(cells, "area").set_index(["batch", "condition"])
    part = cells[(cells.batch == "b") & (cells.condition == "y")]["area"]
    assert stats.loc[("b", "y"), "n"] == 250
    assert list(stats.loc[("b", "y"), ["p5", "q1", "median", "q3", "p95"]]) == pytest.approx(
        np.percentile(part, [5, 25, 50, 75, 95]))


def test_a_view_the_run_lacks_falls_back_to_the_overview_in_the_address_too(saved):
    at = open_results(run="map-morphology", view="Models")  # a map has no comparison
    assert at.segmented_control(key="res.view").value == "Overview" and at.query_params["view"] == "Overview"
    assert at.query_params["measure"] == "area"


def test_an_unreadable_run_is_listed_with_why_and_opening_it_says_so(saved, root):
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    at = open_results(run="broken")
    table = at.dataframe[-1].value.set_index("name")
    assert table.loc["broken", "note"].startswith("unreadable run.json")
    assert any(e.value.startswith("The run “broken” could not be read") for e in at.error), [e.value for e in at.error]


def test_a_damaged_run_is_said_by_name_and_the_rest_of_the_page_is_drawn(saved, root):
    """A run missing a Parquet file, or with one cut short, drew Streamlit's 'This app has
    encountered an error' box (its views, and Compare runs with it among the runs)."""
    (root / "plate-check" / "analyses" / "00-segmentation" / "tables" / "cells.parquet").unlink()
    at = open_results(run="plate-check")
    error = next(e.value for e in at.error if "plate-check" in e.value)
    assert "is damaged: tables/cells.parquet is missing" in error and "runs delete plate-check" in error
    names = sorted(runs_listed(at))
    assert names == ["explain-batch", "map-morphology", "plate-check"]  # the list is still drawn

    table = root / "map-morphology" / "analyses" / "00-cellmap" / "tables" / "cells.parquet"
    table.write_bytes(table.read_bytes()[:1000])  # cut short: present, unreadable
    for view in ("Overview", "Cell map"):
        at = open_results(run="map-morphology", view=view)
        assert any("“map-morphology” could not be read" in e.value for e in at.error), [e.value for e in at.error]
        assert sorted(runs_listed(at)) == names

    save_run("map-again", [saved["cellmap"]])
    at = open_results(compare="map-morphology,map-again,explain-batch")
    assert any("“map-morphology” could not be read" in e.value for e in at.error)
    assert "map-again" in at.multiselect(key="res.cmp.runs").value and not at.exception


def test_a_visit_to_another_page_and_back_keeps_the_view(saved):
    """The sidebar's links carry only ?ws=: coming back to Results showed the bare list, the run,
    view and image gone (a reload or a copied link kept them)."""
    at = open_results(run="plate-check", view="Images", image=saved["compare"].inputs[1].name)
    at.switch_page("pages/data.py")
    for name in [k for k in at.query_params if k != "ws"]:
        del at.query_params[name]  # what the sidebar's link does
    at.run()
    at.switch_page("pages/results.py")
    at.run()
    assert not at.exception
    assert at.query_params["run"] == "plate-check" and at.query_params["view"] == "Images"
    assert at.selectbox(key="res.run").value == "plate-check"
    assert at.session_state["res.view"] == "Images" and at.query_params["image"] == saved["compare"].inputs[1].name


def test_the_overview_of_a_comparison_counts_each_models_objects_apart(saved):
    """The batch x condition table summed both models' objects and counted each image twice."""
    import dataclasses

    compare = saved["compare"]
    scores = compare.tables["scores"]
    other = scores.assign(model="other", objects=scores["objects"] * 2)
    two = dataclasses.replace(compare, tables={"scores": pd.concat([scores, other], ignore_index=True)},
                              settings={"models": {"classical": {}, "other": {}}, "device": "cpu"}, labels={})
    save_run("two-models", [two])
    at = open_results(run="two-models")
    table = at.dataframe[0].value.set_index(["batch", "condition", "model"])
    expected = scores.groupby(["batch", "condition"])["objects"].agg(["size", "sum"])
    for (batch, condition), (images, cells) in expected.iterrows():
        assert table.loc[(batch, condition, "classical"), "images"] == images
        assert table.loc[(batch, condition, "classical"), "cells"] == cells
        assert table.loc[(batch, condition, "other"), "cells"] == 2 * cells


def test_a_preprocess_runs_f1_shows_in_its_models_view(saved, root):
    """The list showed the segmentation run's mean F1, its views nowhere."""
    save_run("seg-only", [saved["segmentation"]])
    at = open_results(run="seg-only", view="Models")
    assert at.segmented_control(key="res.view").value == "Models"
    shown = at.dataframe[0].value.set_index("model")
    summary = saved["segmentation"].tables["summary"]
    assert shown.loc["classical", "f1"] == pytest.approx(summary["f1"].mean(), abs=5e-4)
    assert shown.loc["classical", "images"] == summary["f1"].notna().sum()
