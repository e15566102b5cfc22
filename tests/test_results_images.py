"""The Results page's Images view and crops panel (components/results_images.py) through AppTest:
a link names the image, the models and the filters; the picture is the saved one with those
models' outlines; a run saved without images says so."""

from __future__ import annotations

import base64
import dataclasses

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from core.analysis import Analysis, inputs_of
from core.figures.display import draw_outlines
from core.run_images import cell_crop, run_image
from core.runs import open_run, save_run
from core.segmentation.recipe import DEFAULT_RECIPE

TIMEOUT = 120
YELLOW, MAGENTA = (255, 255, 0), (255, 0, 255)  # the first two models' outline colours


@pytest.fixture(scope="module")
def records(training_example):
    from workflows.compare import run_compare

    compare = run_compare(training_example, {"classical": {"recipe": DEFAULT_RECIPE}}, device="cpu").analysis
    annotated = Analysis("cellmap", inputs_of(training_example), {"segmenter": "ground truth"}, {},
                         labels={(img.name, "ground truth"): img.gt for img in training_example})
    return compare, annotated


@pytest.fixture
def saved(records, training_example, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    save_run("plate", list(records), images=training_example)
    save_run("no-images", [dataclasses.replace(records[0], labels={})])
    return records


def open_results(**params: str | list[str]) -> AppTest:
    """The whole app on the Results page, its address holding ``params`` (a link)."""
    return open_page("pages/results.py", **params)


def pictures(at: AppTest) -> list[np.ndarray]:
    """Every picture on the page, decoded from its data URI."""
    found = []
    for element in at.get("image"):
        for img in element.proto.imgs:
            data = base64.b64decode(img.url.split(",", 1)[1])
            found.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return found


def test_a_link_shows_its_image_with_the_outlines_of_its_models(saved, training_example):
    compare, _ = saved
    image = training_example[3]
    at = open_results(run="plate", view="Images", image=image.name, model="ground truth")
    assert at.segmented_control(key="res.view").value == "Images"
    assert at.selectbox(key="res.image").value == image.name
    assert at.multiselect(key="res.models").value == ["ground truth"]
    run = open_run("plate")
    (shown,) = pictures(at)
    np.testing.assert_array_equal(shown, draw_outlines(run_image(run, image.name), image.gt, MAGENTA))
    table = at.dataframe[0].value.set_index("model")
    assert table.loc["ground truth", "outline"] == "magenta" and table.loc["classical", "outline"] == "(hidden)"
    assert table.loc["ground truth", "objects"] == image.n_cells_gt
    scores = compare.tables["scores"].set_index(["image", "model"]).loc[(image.name, "classical")]
    assert table.loc["classical", "objects"] == scores["objects"]
    assert table.loc["classical", "f1"] == pytest.approx(scores["f1"])

    at = open_results(run="plate", view="Images", image=image.name, model=["classical", "ground truth"])
    (shown,) = pictures(at)
    both = draw_outlines(draw_outlines(run_image(run, image.name), compare.labels[(image.name, "classical")], YELLOW),
                         image.gt, MAGENTA)
    np.testing.assert_array_equal(shown, both)
    at.multiselect(key="res.models").set_value([]).run()  # no outlines: the saved picture as it is, said in the address
    np.testing.assert_array_equal(pictures(at)[0], run_image(run, image.name))
    assert at.query_params["model"] in ("", [""])


def test_the_filters_narrow_the_images_and_live_in_the_address(saved, training_example):
    plate_b = [img.name for img in training_example if img.batch == "plateB"]
    at = open_results(run="plate", view="Images", image=training_example[0].name, image_batch="plateB")
    assert at.selectbox(key="res.img_batch").value == "plateB"
    assert at.selectbox(key="res.image").options == plate_b
    assert at.selectbox(key="res.image").value == plate_b[0] and at.query_params["image"] == plate_b[0]
    assert at.multiselect(key="res.models").value == ["classical", "ground truth"]  # no ?model=: every model
    at.selectbox(key="res.image").set_value(plate_b[1]).run()
    assert at.query_params["image"] == plate_b[1]


def test_a_run_saved_without_images_says_how_to_keep_them(saved):
    at = open_results(run="no-images", view="Images")
    assert any("was saved without its images" in i.value and "**Save as run**" in i.value for i in at.info)
    assert not pictures(at)


def _crops_app(name: str, limit: int) -> None:
    import pandas as pd

    from components.results_images import crops_panel
    from core.runs import open_run

    cells = pd.DataFrame({"image": ["plateA_field1", "plateB_field2", "plateA_field1", "unknown"],
                          "centroid_y": [40.0, 10.0, 90.0, 5.0], "centroid_x": [30.0, 80.0, 2.0, 5.0]})
    crops_panel(open_run(name), cells, limit=limit)


def test_the_crops_panel_draws_the_crops_of_the_cells_given(saved):
    at = AppTest.from_function(_crops_app, args=("plate", 4), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    shown = pictures(at)
    run = open_run("plate")
    assert len(shown) == 3  # the fourth cell's image is not in the run
    for crop, (image, y, x) in zip(shown, [("plateA_field1", 40, 30), ("plateB_field2", 10, 80),
                                           ("plateA_field1", 90, 2)], strict=True):
        np.testing.assert_array_equal(crop, cell_crop(run, image, y, x))
    (element,) = at.get("image")
    assert [img.caption for img in element.proto.imgs] == ["plateA_field1 (40, 30)", "plateB_field2 (10, 80)",
                                                           "plateA_field1 (90, 2)"]
    assert any("1 cell of images the run kept no picture of" in c.value for c in at.caption)
    at = AppTest.from_function(_crops_app, args=("plate", 2), default_timeout=TIMEOUT).run()
    assert len(pictures(at)) == 2 and any("2 more not shown" in c.value for c in at.caption)
    at = AppTest.from_function(_crops_app, args=("no-images", 4), default_timeout=TIMEOUT).run()
    assert not pictures(at) and any("saved without its images" in i.value for i in at.info)


def test_a_link_naming_an_image_or_model_the_run_lacks_says_so(saved, training_example):
    """A mistyped image showed the first image without a word; an unknown model drew no outlines."""
    at = open_results(run="plate", view="Images", image="plateZ_field9", model="nope")
    warnings = [w.value for w in at.warning]
    assert any("no image named “plateZ_field9”" in w and training_example[0].name in w for w in warnings), warnings
    assert any("No outlines of nope" in w and "every model" in w for w in warnings), warnings
    assert at.selectbox(key="res.image").value == training_example[0].name
    assert at.multiselect(key="res.models").value == ["classical", "ground truth"]
    at = open_results(run="plate", view="Images", model=["nope", "classical"])
    assert at.multiselect(key="res.models").value == ["classical"]
    assert any("No outlines of nope" in w.value and "the other models chosen" in w.value for w in at.warning)


def test_the_list_of_runs_shows_each_runs_first_image_small(saved, training_example):
    """The issue asks for a thumbnail per run in the list; it had none."""
    from core.figures.display import image_rgb, thumbnail

    at = open_results()
    table = at.dataframe[-1].value.set_index("name")
    assert pd.isna(table.loc["no-images", "picture"]) and table.loc["plate", "picture"].startswith("data:image/png;base64,")
    png = base64.b64decode(table.loc["plate", "picture"].split(",", 1)[1])
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert max(shown.shape[:2]) == 96
    expected = thumbnail(thumbnail(image_rgb(training_example[0]), 768), 96)
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    at.text_input(key="res.search").set_value("png").run()  # the pictures' text is not searched
    assert at.dataframe[-1].value.empty
