"""The Preprocess page through AppTest: live result, controls, recipe files, batch run, auto-tune."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from core.segmentation.recipe import DEFAULT_RECIPE


@pytest.fixture
def page() -> AppTest:
    return open_page("pages/preprocess.py")


def _result(at: AppTest) -> dict:
    """What the Result view sends the browser (components/result_view.py)."""
    (view,) = [el for el in at.get("bidi_component") if el.proto.component_name == "cellscope.result_view"]
    return json.loads(view.proto.json)


def _cells_found(at: AppTest) -> int:
    return int(_result(at)["summary"]["headline"].split()[0])


def _f1(at: AppTest) -> float:
    line = next(x for x in _result(at)["summary"]["lines"] if x.startswith("Against ground truth"))
    return float(line.split("F1 ")[1].split()[0])


def test_result_shows_cells_and_scores_against_ground_truth(page):
    assert 60 <= _cells_found(page) <= 120
    view = _result(page)
    layers = {layer["id"] for panel in view["panels"] for layer in panel["layers"]}
    assert layers == set(view["images"]) == {"base", "processed", "tint", "gt", "outlines"}
    assert all(src.startswith("data:image/") for src in view["images"].values())
    assert [t["id"] for t in view["toggles"] if t["disabled"]] == []  # the example has ground truth
    assert _f1(page) >= 0.9
    assert page.session_state["recipe"] == DEFAULT_RECIPE
    assert len(page.get("plotly_chart")) == 1  # the histogram


def test_moving_controls_changes_the_recipe_and_the_result(page):
    before = _cells_found(page)
    page.selectbox(key="rcp.threshold.method").set_value("manual")
    at = page.run()
    at.slider(key="rcp.threshold.value").set_value(0.95)
    at = at.run()
    assert not at.exception
    assert at.session_state["recipe"].threshold.method == "manual"
    assert _cells_found(at) < before


def test_invalid_combination_is_explained_not_crashing(page):
    page.number_input(key="rcp.filters.min_area").set_value(500)
    page.number_input(key="rcp.filters.max_area").set_value(100)
    at = page.run()
    assert not at.exception
    assert any("max_area must exceed min_area" in w.value for w in at.warning)
    assert at.session_state["recipe"].filters.max_area == 0  # kept the previous, valid value


def test_recipe_upload_loads_into_controls_and_bad_file_is_reported(page):
    page.session_state["pre_tab"] = "Recipe & all images"
    page = page.run()
    recipe = DEFAULT_RECIPE.with_step("threshold", method="triangle")
    uploader = next(u for u in page.file_uploader if u.label == "Upload recipe (JSON)")
    uploader.set_value(("mine.json", recipe.to_json().encode(), "application/json"))
    at = page.run()
    assert at.session_state["recipe"].threshold.method == "triangle"
    assert at.selectbox(key="rcp.threshold.method").value == "triangle"
    assert any(s.value == "Loaded the recipe from mine.json." for s in at.success)
    assert json.loads(at.code[0].value) == json.loads(recipe.to_json())  # the JSON, shown read-only
    uploader = next(u for u in at.file_uploader if u.label == "Upload recipe (JSON)")
    uploader.set_value(("bad.json", json.dumps({"steps": {"nope": {}}}).encode(), "application/json"))
    at = at.run()
    assert any("**bad.json**" in e.value and "unknown recipe steps" in e.value for e in at.error)
    assert at.session_state["recipe"].threshold.method == "triangle"
    at = at.run()  # the error stays while the file is still in the box
    assert any("**bad.json**" in e.value for e in at.error) and not at.success


def test_run_on_all_images_and_auto_tune(page):
    page.session_state["pre_tab"] = "Recipe & all images"
    at = page.run()
    next(b for b in at.button if b.label == "Run on all images").click()
    at = at.run()
    assert not at.exception
    summary = at.dataframe[0].value
    assert len(summary) == 12 and summary["f1"].mean() >= 0.9
    assert any("Mean F1" in c.value for c in at.caption)
    assert not any("out of date" in w.value for w in at.warning)
    cells = at.session_state["batch_result"][1]
    assert len(cells) == summary["cells"].sum()
    at.session_state["recipe"] = DEFAULT_RECIPE.with_step("threshold", method="otsu")  # a worse start
    at = at.run()
    assert any("out of date: the recipe changed" in w.value for w in at.warning)  # the table no longer fits
    next(b for b in at.button if b.label == "Auto-tune").click()
    at = at.run()
    assert any("Best F1 @ IoU 0.5" in s.value for s in at.success)
    tuned = at.session_state["tune_result"].best
    next(b for b in at.button if b.label == "Use the tuned recipe").click()
    at = at.run()
    assert at.session_state["recipe"] == tuned
    assert any(s.value.startswith("Now using the tuned recipe (F1 ") for s in at.success)
    assert any(b.label == "The tuned recipe is in use" and b.disabled for b in at.button)


def test_batch_results_say_when_the_images_changed(page):
    page.session_state["pre_tab"] = "Recipe & all images"
    at = page.run()
    next(b for b in at.button if b.label == "Run on all images").click()
    at = at.run()
    at.session_state["dataset"].remove(["plateA_field1"])
    at = at.run()
    assert any("out of date: the images changed" in w.value for w in at.warning)


def test_batch_exports_record_the_recipe_and_versions(page):
    import io
    import zipfile

    from core import __version__
    from core.analysis import provenance_id

    page.session_state["pre_tab"] = "Recipe & all images"
    at = page.run()
    next(b for b in at.button if b.label == "Run on all images").click()
    at = at.run()
    _, _, labels_zip, prov = at.session_state["batch_result"]
    with zipfile.ZipFile(io.BytesIO(labels_zip)) as zf:
        written = json.loads(zf.read("provenance.json"))
    assert written["recipe"] == at.session_state["recipe"].to_dict() and written["cellscope"]["version"] == __version__
    assert written["packages"]["numpy"] == np.__version__ and prov["recipe"] == written["recipe"]
    assert provenance_id(written) == provenance_id(prov)


def test_measurements_tab_lists_every_cell(page):
    page.session_state["pre_tab"] = "Cells & crops"
    at = page.run()
    table = at.dataframe[0].value
    assert len(table) == _cells_found_from_state(at)
    assert {"area", "mean_nucleus", "integrated_protein"} <= set(table.columns)


def _cells_found_from_state(at: AppTest) -> int:
    from core.segmentation.preprocess import run_pipeline

    img = at.session_state["dataset"]["plateA_field1"]
    return run_pipeline(img.pixels, img.channels, at.session_state["recipe"]).n_cells


def test_empty_dataset_shows_a_hint(page):
    page.session_state["dataset"].remove(page.session_state["dataset"].names)
    at = page.run()
    assert any("No images loaded" in w.value for w in at.warning)


def test_a_value_slider_reruns_only_the_views_a_structural_change_the_panel_too(monkeypatch):
    """The speed of a slider move rests on this: the recipe panel is not sent and re-rendered again."""
    import streamlit as st

    from components import recipe_panel as rp

    scopes = []
    monkeypatch.setattr(rp.st, "rerun", scopes.append)
    for key in [k for k in st.session_state if str(k).startswith("rcp.") or k in (rp.RECIPE_KEY, rp.WARNINGS_KEY)]:
        del st.session_state[key]
    views, both = ("views",), ("panel", "views")
    st.session_state["rcp.watershed.smoothing"] = 2.5
    rp._changed("watershed", False, views, both)
    assert scopes[-1] == ["views"] and rp.current_recipe().watershed.smoothing == 2.5
    st.session_state["rcp.canny.range"] = (0.2, 0.6)  # one range slider, two recipe parameters
    rp._changed("canny", False, views, both)
    assert (rp.current_recipe().canny.low, rp.current_recipe().canny.high) == (0.2, 0.6)
    st.session_state["rcp.threshold.method"] = "manual"
    rp._changed("threshold", True, views, both)
    assert scopes[-1] == ["panel", "views"] and rp.current_recipe().threshold.method == "manual"
    st.session_state["rcp.filters.min_area"], st.session_state["rcp.filters.max_area"] = 500, 100
    rp._changed("filters", False, views, both)  # refused: the panel shows why
    assert scopes[-1] == ["panel", "views"] and rp.current_recipe().filters.min_area == DEFAULT_RECIPE.filters.min_area
    assert "max_area must exceed min_area" in st.session_state[rp.WARNINGS_KEY]["filters"]
    st.session_state["rcp.filters.max_area"] = 0
    rp._changed("filters", False, views, both)  # fixed: the panel drops the warning
    assert scopes[-1] == ["panel", "views"] and rp.current_recipe().filters.min_area == 500
    assert "filters" not in st.session_state[rp.WARNINGS_KEY]


@pytest.mark.parametrize("threshold", [0.05, 0.24, 0.5, 0.9])
def test_every_threshold_histogram_spans_0_to_1_with_its_label_on_the_side_with_room(threshold):
    """Defect: the Global (v = 0.5) histogram's x-axis ran to 1.6: the label right of the line
    went past 1 and Plotly stretched the axis to hold it."""
    from components.plots import histogram_figure

    fig = histogram_figure(np.random.default_rng(0).random((64, 64)), threshold)
    assert tuple(fig.layout.xaxis.range) == (0, 1)
    (label,) = fig.layout.annotations
    assert label.text == f"threshold {threshold:.3f}"
    assert label.xanchor == ("left" if threshold < 0.5 else "right")  # text to the right of a low line, left of a high one


def test_a_rotated_recipe_is_labelled_and_loses_no_cell(page):
    """With a 30 degree turn the 'Original' picture showed the turned image and the corners' cells
    were lost (76 of 88 on the first image); now each picture says what it shows and the cells come
    back to the image's frame."""
    plain = _cells_found(page)
    page.session_state["recipe"] = DEFAULT_RECIPE.with_step("rotate", enabled=True, angle=30)
    at = page.run()
    assert not at.exception and at.session_state["recipe"].rotate.angle == 30
    view = _result(at)
    captions = {p["id"]: p["caption"] for p in view["panels"]}
    assert captions["original"] == "Original (display merge), as the image is: the rotate step is not applied here"
    assert captions["processed"].startswith("Processed (rotated 30°, as the steps see it)")
    assert captions["segmentation"].startswith("Found cells mapped back to the image as it is")
    assert any(n.startswith("geometry: the image was rotated 30° for processing on a 699 x 699 canvas that holds the "
                            "whole image") for n in view["summary"]["notes"])
    assert abs(_cells_found(at) - plain) <= 1 and _f1(at) >= 0.9
    assert any(line.endswith("of the rotate step’s canvas is foreground · adaptive threshold (it varies across the "
                             "image)") for line in view["summary"]["lines"])
    at.session_state["pre_tab"] = "Thresholds"
    at = at.run()
    assert any(c.value.endswith("(on the normalised, not yet denoised image, rotated 30° as the steps see it).")
               for c in at.caption)
    at.session_state["pre_tab"] = "Cells & crops"
    at = at.run()
    assert any(c.value.startswith("Measured on the image as it is: the cells were found with the image rotated 30°")
               for c in at.caption)
    at.session_state["pre_tab"] = "Recipe & all images"
    at = at.run()
    next(b for b in at.button if b.label == "Run on all images").click()
    at = at.run()
    summary = at.dataframe[0].value
    first = summary.set_index("image").loc["plateA_field1"]
    assert abs(first["cells"] - 88) <= 2 and summary["f1"].mean() >= 0.9


def test_auto_tune_that_finds_nothing_better_offers_nothing_and_says_what_it_scored(page, monkeypatch):
    import core.segmentation.autotune as A

    monkeypatch.setattr(A, "SEARCH_SPACE", (("filters", "min_area", (-1, 2000)),))  # 2000 px drops every cell
    page.session_state["pre_tab"] = "Recipe & all images"
    at = page.run()
    next(b for b in at.button if b.label == "Auto-tune").click()
    at = at.run()
    assert not at.exception
    (info,) = [i.value for i in at.info if "No setting" in i.value]
    assert info.startswith("No setting in the search beat the recipe it started from: F1 @ IoU 0.5 0.9")
    assert ("mean over 4 tuning images of the 12 with ground truth (plateA_field1, plateB_field1, plateC_field1, "
            "plateA_field2)") in info
    assert not any(b.label in {"Use the tuned recipe", "The tuned recipe is in use"} for b in at.button)
    assert any("means over the 4 tuning images only" in c.value and "all 12 images" in c.value for c in at.caption)
    at.session_state["recipe"] = DEFAULT_RECIPE.with_step("threshold", method="otsu")
    at = at.run()
    assert any("The recipe changed after this search" in w.value for w in at.warning)
    assert not any("The images or their ground truth changed" in w.value for w in at.warning)
    ds = at.session_state["dataset"]
    ds.put(ds["plateA_field1"].with_(gt=ds["plateA_field1"].gt[::-1].copy()))  # curated on the Train page, say
    at = at.run()
    assert any("The images or their ground truth changed after this search" in w.value for w in at.warning)
