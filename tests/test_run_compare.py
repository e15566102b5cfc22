"""Comparing saved runs (core/run_compare.py) and the Results page's *Compare runs*
(components/results_compare.py): the tables hold the runs' own numbers, the settings diff finds
exactly the keys that differ, images are matched by their pixels across renamed names, and the
page shows what a ``?compare=`` link names (a missing run said, too few or too many explained)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from core import run_compare as rc
from core.analysis import Analysis, InputFile
from core.runs import open_run, save_run

TIMEOUT = 60
IMAGES = [("img0", "plateA", "control"), ("img1", "plateA", "treated"), ("img2", "plateB", "control"),
          ("img3", "plateB", "treated"), ("img4", "plateC", "control"), ("img5", "plateC", "treated")]


def _provenance(device: str = "cpu", torch: str = "2.1.0") -> dict:
    return {"cellscope": {"version": "0.4.0", "commit": None}, "created": "2026-12-07T10:00:00+00:00",
            "python": "3.11.7", "platform": "Linux", "packages": {"numpy": "2.0.0", "torch": torch},
            "device": device, "device description": None, "recipe": None, "extra": {"inputs": ["/somewhere"]},
            "models": {"classical": {"family": "classical", "settings": {}, "weights": None}}}


def _inputs(names: dict[str, str] | None = None, hashes: dict[str, str] | None = None) -> tuple[InputFile, ...]:
    """The six images; ``names`` renames some, ``hashes`` gives some other pixels."""
    names, hashes = names or {}, hashes or {}
    return tuple(InputFile(names.get(n, n), hashes.get(n, f"hash-{n}"), None, b, c) for n, b, c in IMAGES)


def _segmentation(rng, inputs, offset: float, device: str = "cpu", torch: str = "2.1.0") -> Analysis:
    """A segmentation record: random cells (area, eccentricity) per image, its summary counting them."""
    rows = []
    for f in inputs:
        for label in range(1, int(rng.integers(5, 40)) + 1):
            rows.append({"image": f.name, "batch": f.batch, "condition": f.condition, "label": label,
                         "area": float(rng.gamma(3, 60)), "eccentricity": float(rng.uniform(0, 1))})
    cells = pd.DataFrame(rows)
    summary = cells.groupby(["image", "batch", "condition"], sort=False).size().rename("cells").reset_index()
    settings = {"recipe": {"steps": {"threshold": {"offset": offset, "method": "adaptive_gaussian"}}},
                "model": "classical"}
    return Analysis("segmentation", inputs, settings, _provenance(device, torch),
                    tables={"summary": summary, "cells": cells})


def _compare(rng, inputs, models=("classical", "yolo11n-nuclei")) -> Analysis:
    rows = [{"image": f.name, "batch": f.batch, "condition": f.condition, "model": m,
             "objects": int(rng.integers(5, 40)), "precision": float(rng.uniform()), "recall": float(rng.uniform()),
             "f1": float(rng.uniform())} for f in inputs for m in models]
    return Analysis("compare", inputs, {"models": {m: {} for m in models}, "device": "cpu"}, _provenance(),
                    tables={"scores": pd.DataFrame(rows)})


def _cellmap(inputs, verdict: str) -> Analysis:
    effect = {"verdict": verdict, "reason": f"the reason for {verdict}", "silhouette": 0.31, "ilisi": 1.2,
              "kbet": 0.05, "classifier_accuracy": 0.9, "chance": 0.33}
    return Analysis("cellmap", inputs, {"features": "morphology", "map": {"method": "pca"}}, _provenance(),
                    files={"batch_effect.json": json.dumps(effect).encode()})


@pytest.fixture
def saved(root):
    """Run a: segmentation + comparison of two models. Run b: the same images, img0 renamed
    "renamed0" and img5 other pixels under the same name; another threshold offset, device and
    torch; a cell map with its verdict. Runs c, d, e: a segmentation alone. Run f: a comparison alone
    (each model's object counts)."""
    rng = np.random.default_rng(7)
    plain = _inputs()
    b_inputs = _inputs(names={"img0": "renamed0"}, hashes={"img5": "hash-other5"})
    save_run("a", [_segmentation(rng, plain, -0.01), _compare(rng, plain)])
    save_run("b", [_segmentation(rng, b_inputs, -0.02, device="cuda", torch="2.2.0"), _cellmap(b_inputs, "strong")])
    save_run("c", [_segmentation(rng, plain, -0.01)])
    save_run("d", [_segmentation(rng, plain, -0.01)])
    save_run("e", [_segmentation(rng, plain, -0.01)])
    save_run("f", [_compare(rng, plain)])
    return {name: open_run(name) for name in "abcdef"}


# ---- the tables ----------------------------------------------------------------------------------------------------


def test_counts_per_condition_and_batch_are_the_runs_own(saved):
    a, b = saved["a"], saved["b"]
    table = rc.counts_by([a, b], ("batch", "condition")).set_index(["run", "batch", "condition"])
    for run in (a, b):
        summary = run.analysis("segmentation").tables["summary"]
        expected = summary.groupby(["batch", "condition"])["cells"].agg(["size", "sum", "mean"])
        for (batch, condition), row in expected.iterrows():
            shown = table.loc[(run.info.name, batch, condition)]
            assert (shown["images"], shown["cells"]) == (row["size"], row["sum"])
            assert shown["cells per image"] == pytest.approx(row["mean"])
    by_condition = rc.counts_by([a, b]).set_index(["run", "condition"])
    cells = a.analysis("segmentation").tables["cells"]
    assert by_condition.loc[("a", "control"), "cells"] == (cells["condition"] == "control").sum()
    per_image = rc.per_image_counts([a, b])
    assert per_image.loc[per_image["image"] == "renamed0", "pixels_hash"].tolist() == ["hash-img0"]


def test_measurement_quantiles_per_run_and_condition(saved):
    runs = [saved["a"], saved["b"]]
    assert rc.measure_options(runs) == ["area", "eccentricity"]
    stats = rc.measure_spread(runs, "area").set_index(["run", "condition"])
    for run in runs:
        cells = run.analysis("segmentation").tables["cells"]
        for condition, part in cells.groupby("condition"):
            row = stats.loc[(run.info.name, condition)]
            assert row["n"] == len(part)
            assert list(row[["p5", "q1", "median", "q3", "p95"]]) == pytest.approx(
                np.percentile(part["area"], [5, 25, 50, 75, 95]))
    medians = rc.image_medians(runs, "area", {"b": ["renamed0"]})
    cells = saved["b"].analysis("segmentation").tables["cells"]
    assert medians[["run", "image"]].values.tolist() == [["b", "renamed0"]]
    assert medians["median"].iloc[0] == pytest.approx(cells.loc[cells["image"] == "renamed0", "area"].median())


def test_f1_per_model_and_the_verdicts(saved):
    a, b = saved["a"], saved["b"]
    f1 = rc.f1_table([a, b])
    scores = a.analysis("compare").tables["scores"].groupby("model")["f1"].mean()
    assert set(f1["run"]) == {"a"} and dict(zip(f1["model"], f1["f1"], strict=True)) == pytest.approx(dict(scores))
    verdicts = rc.verdicts([a, b]).set_index("run")
    assert verdicts.loc["b", "verdict"] == "strong" and verdicts.loc["b", "kbet"] == 0.05
    assert pd.isna(verdicts.loc["a", "verdict"])


def test_the_settings_diff_holds_exactly_the_keys_that_differ_or_are_missing(saved):
    diff = rc.settings_diff([saved["a"], saved["b"]]).set_index("setting")
    cellmap = {"cellmap.features", "cellmap.map.method", *(f"cellmap.provenance.{k}" for k in (
        "cellscope.version", "cellscope.commit", "python", "packages.numpy", "packages.torch", "device",
        "device description", "weights.classical"))}
    compare = {k.replace("cellmap.", "compare.", 1) for k in cellmap if "provenance" in k} | {
        "compare.models.classical", "compare.models.yolo11n-nuclei", "compare.device"}
    assert set(diff.index) == {"segmentation.recipe.steps.threshold.offset", "segmentation.provenance.device",
                               "segmentation.provenance.packages.torch"} | cellmap | compare
    assert diff.loc["segmentation.recipe.steps.threshold.offset"].tolist() == ["-0.01", "-0.02"]
    assert diff.loc["segmentation.provenance.packages.torch"].tolist() == ["2.1.0", "2.2.0"]
    assert pd.isna(diff.loc["cellmap.map.method", "a"]) and diff.loc["cellmap.map.method", "b"] == "pca"
    assert diff.loc["compare.models.classical", "a"] == "{}" and pd.isna(diff.loc["compare.models.classical", "b"])
    assert rc.settings_diff([saved["c"], saved["d"]]).empty  # the same settings: nothing differs


def test_images_are_matched_by_their_pixels_across_renamed_names(saved):
    a, b = saved["a"], saved["b"]
    shared = rc.shared_images([a, b]).set_index("pixels_hash")
    assert shared.loc["hash-img0", ["a", "b"]].tolist() == ["img0", "renamed0"]
    assert shared.loc["hash-img5", "runs"] == 1 and shared.loc["hash-other5", "b"] == "img5"
    assert (shared["runs"] == 2).sum() == 5
    matches = rc.image_matches([a, b], ["img0", "img3", "img5"])
    found = {(m.picked, m.run): (m.image, m.match) for m in matches.itertuples()}
    assert found[("img0", "b")] == ("renamed0", rc.RENAMED) and found[("img0", "a")] == ("img0", rc.SAME)
    assert found[("img3", "b")] == ("img3", rc.SAME) and found[("img5", "b")] == ("img5", rc.OTHER_PIXELS)
    # picked by its name in b, renamed0 is img0 in a
    assert rc.matched_images([a, b], ["renamed0"]) == {"a": ["img0"], "b": ["renamed0"]}


def test_flatten_keeps_lists_and_empty_dicts_as_values():
    assert rc.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}


# ---- the page ------------------------------------------------------------------------------------------------------


def open_compare(**params: str | list[str]) -> AppTest:
    """The whole app on the Results page, its address holding ``params`` (a link)."""
    return open_page("pages/results.py", **params)


def _values(array) -> list[float]:
    """A plotly JSON array: a list, or typed binary data ({"dtype", "bdata"})."""
    import base64

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_a_compare_link_shows_both_runs_side_by_side(saved):
    at = open_compare(compare="a,b")
    assert at.toggle(key="res.cmp.on").value and at.multiselect(key="res.cmp.runs").value == ["a", "b"]
    counts = at.dataframe[0].value.set_index(["run", "batch", "condition"])
    expected = rc.counts_by([saved["a"], saved["b"]], ("batch", "condition")).set_index(["run", "batch", "condition"])
    assert counts["cells"].to_dict() == expected["cells"].to_dict()
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert [t["name"] for t in bars] == ["a", "b"]  # a segmentation's counts, not each compared model's
    subheaders = [s.value for s in at.subheader]
    assert "Plate effect" in subheaders and "Settings that differ" in subheaders
    assert [m.value for m in at.metric] == ["–", "strong"]
    diff = at.dataframe[-2].value.set_index("setting")  # the last is the list of runs
    assert diff.loc["segmentation.recipe.steps.threshold.offset"].tolist() == ["-0.01", "-0.02"]
    assert at.selectbox(key="res.cmp.measure").value == "area" and at.query_params["measure"] == "area"


def test_a_picked_image_is_highlighted_in_every_run_holding_its_pixels(saved):
    at = open_compare(compare="a,b", pick="img0")
    assert at.multiselect(key="res.cmp.pick").value == ["img0"]
    figures = {f["layout"]["title"]["text"]: f for f in _figures(at) if f["layout"].get("title")}

    def highlighted(figure):
        return sorted(t["x"][i] for t in figure["data"] for i in t.get("selectedpoints") or [])

    assert highlighted(figures["a"]) == ["img0"]
    assert highlighted(figures["b"]) == ["renamed0"]
    picked = at.dataframe[1].value
    assert picked.to_dict("records") == [{"picked": "img0", "a": "img0", "b": "renamed0 (renamed, same pixels)"}]
    at.multiselect(key="res.cmp.pick").set_value(["img0", "img5"]).run()
    assert at.query_params["pick"] == ["img0", "img5"]
    figures = {f["layout"]["title"]["text"]: f for f in _figures(at) if f["layout"].get("title")}
    assert highlighted(figures["b"]) == ["img5", "renamed0"]
    rows = at.dataframe[1].value.set_index("picked")
    assert rows.loc["img5", "b"] == "img5 (same name, other pixels)"


def test_a_link_naming_a_deleted_run_says_so_and_shows_the_rest(saved, root):
    at = open_compare(compare="a,gone,b")
    (warning,) = [w.value for w in at.warning]
    assert "No saved run is named “gone”" in warning and str(root) in warning
    assert at.multiselect(key="res.cmp.runs").value == ["a", "b"] and "Settings that differ" in [
        s.value for s in at.subheader]


def test_fewer_than_two_runs_explain_themselves(saved):
    at = open_compare(compare="a")
    assert any("Choose at least 2 runs" in i.value and "“a” needs another run" in i.value for i in at.info)
    assert not [s for s in at.subheader if s.value == "Cells per condition"]
    at = open_compare()
    at.toggle(key="res.cmp.on").set_value(True).run()
    assert "compare" in at.query_params and any("Choose at least 2 runs" in i.value for i in at.info)
    at.multiselect(key="res.cmp.runs").set_value(["c", "b"]).run()
    assert at.query_params["compare"] == "c,b" and "Cells per condition" in [s.value for s in at.subheader]
    at.toggle(key="res.cmp.on").set_value(False).run()
    assert "compare" not in at.query_params and at.selectbox(key="res.run").value is None


def test_more_than_four_runs_are_refused_with_a_message(saved):
    at = open_compare(compare="a,b,c,d,e")
    (error,) = [e.value for e in at.error]
    assert "At most 4 runs can be compared at once; the link names 5" in error
    assert at.multiselect(key="res.cmp.runs").value == [] and not [s for s in at.subheader
                                                                   if s.value == "Cells per condition"]


def test_picking_images_recounts_nothing(saved, monkeypatch):
    import components.results_compare as view

    calls = []
    real = rc.per_image_counts
    monkeypatch.setattr(rc, "per_image_counts", lambda runs: calls.append(len(runs)) or real(runs))
    fresh = view.BoundedCache(32)  # not the server's: another test may have counted these runs already
    monkeypatch.setattr(view, "table_store", lambda: fresh)
    at = open_compare(compare="a,b")
    counted = len(calls)
    assert counted >= 1
    for picks in (["img1"], ["img1", "img3"], []):
        at.multiselect(key="res.cmp.pick").set_value(picks).run()
        assert not at.exception
    assert len(calls) == counted and "pick" not in at.query_params


def test_a_comparison_alone_counts_each_models_objects_and_highlights_each_models_bar(saved):
    at = open_compare(compare="a,f", pick="img2")
    counts = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert [t["name"] for t in counts] == ["a", "f · classical", "f · yolo11n-nuclei"]
    scores = saved["f"].analysis("compare").tables["scores"]
    yolo = scores[scores["model"] == "yolo11n-nuclei"].groupby("condition")["objects"].mean()
    assert _values(counts[2]["y"]) == pytest.approx(list(yolo))  # conditions in order: control, treated
    figure = next(f for f in _figures(at) if f["layout"].get("title", {}).get("text") == "f")
    picked = sorted((t["name"], t["x"][i]) for t in figure["data"] for i in t.get("selectedpoints") or [])
    assert picked == [("control · classical", "img2"), ("control · yolo11n-nuclei", "img2")]
