""""Save as run" on the pages that compute something (components/save_run.py): nothing is saved
before the click; the run holds what the page computed; a taken or unsafe name is refused with
save_run's message and changes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ROOT, open_page
from streamlit.testing.v1 import AppTest

from core.run_images import image_index, run_labels
from core.runs import list_runs, open_run


@pytest.fixture(autouse=True)
def runs_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "runs"


def _save(at: AppTest, key: str, name: str | None = None) -> AppTest:
    if name is not None:
        at.text_input(key=key).set_value(name)
    next(b for b in at.button if b.label == "Save as run" and b.key == f"{key}.save").click()
    at.run()
    assert not at.exception, at.exception
    return at


def _refusals(at: AppTest, key: str, runs_home, first: str) -> None:
    """A taken name and an unsafe one are refused with save_run's words; the first run stays as it was."""
    before = (runs_home / first / "run.json").read_bytes()
    files = sorted(p.relative_to(runs_home) for p in runs_home.rglob("*"))
    at = _save(at, key, first)
    assert any(f"a run named '{first}' exists already" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.success and at.text_input(key=key).value == first  # nothing else changes: the name stays as typed
    at = _save(at, key, "../x")
    assert any("letters, digits, '.', '_' and '-' only" in e.value for e in at.error)
    assert (runs_home / first / "run.json").read_bytes() == before
    assert sorted(p.relative_to(runs_home) for p in runs_home.rglob("*")) == files
    assert not (runs_home.parent / "x").exists() and [r.name for r in list_runs()] == [first]


def test_preprocess_saves_the_all_images_run_and_refuses_a_taken_or_unsafe_name(runs_home):
    at = open_page("pages/preprocess.py")
    at.session_state["pre_tab"] = "Recipe & all images"
    at.run()
    assert not any(b.label == "Save as run" for b in at.button)  # nothing to save yet
    next(b for b in at.button if b.label == "Run on all images").click()
    at.run()
    name_box = at.text_input(key="pre_run_name")
    assert name_box.value.startswith("segmentation-") and "never overwritten" in name_box.help
    assert str(runs_home) in name_box.help and "shared with everyone on this server" in name_box.help
    assert list_runs() == []  # nothing is saved before the click
    summary, cells, _, prov = at.session_state["batch_result"]
    at = _save(at, "pre_run_name", "plate-a")
    assert any("Saved as the run **plate-a**" in s.value and str(runs_home) in s.value for s in at.success)
    (info,) = list_runs()
    assert (info.name, info.kinds, info.images, info.cells) == ("plate-a", ("segmentation",), 12, len(cells))
    record = open_run("plate-a").analysis("segmentation")
    pd.testing.assert_frame_equal(record.tables["cells"], cells)
    pd.testing.assert_frame_equal(record.tables["summary"], summary)
    assert record.provenance == prov
    index = image_index(open_run("plate-a"))  # each image's picture and label image, for the image browser
    assert len(index) == 12 and set(run_labels(open_run("plate-a"), index["image"][0])) == {"classical"}
    assert at.text_input(key="pre_run_name").value.startswith("segmentation-")  # a fresh name: plate-a is taken
    _refusals(at, "pre_run_name", runs_home, "plate-a")


def test_cell_map_saves_the_map_made_on_arrival(runs_home):
    from components.workspace import RESULTS_KEY
    from models.cellmap import cells_frame

    at = open_page("pages/cellmap.py")
    at.session_state["cm.view"] = "Export"
    at.run()
    assert at.text_input(key="cm.run_name").value.startswith("cellmap-") and list_runs() == []
    at = _save(at, "cm.run_name")
    (info,) = list_runs()
    assert info.name.startswith("cellmap-") and info.kinds == ("cellmap",)
    assert (info.images, info.cells) == (12, 918)  # the page's caption: 918 cells from 12 images
    kept = at.session_state[RESULTS_KEY]
    expected = cells_frame(kept["cm.cells"][1], kept["cm.features"][1], kept["cm.map"][1])
    saved = open_run(info.name).analysis("cellmap")
    pd.testing.assert_frame_equal(saved.tables["cells"], expected)
    assert info.numbers["plate effect"] == "strong"  # the example's plates differ: the Batch effects view's verdict
    index = image_index(open_run(info.name))
    assert len(index) == 12 and len(run_labels(open_run(info.name), index["image"][0])) == 1
    _refusals(at, "cm.run_name", runs_home, info.name)


def test_compare_all_images_saves_a_compare_run(runs_home):
    at = open_page("pages/compare.py")
    at.session_state["cmp.tab"] = "All images"
    at.run()
    at.multiselect(key="cmp.models").set_value(["classical"]).run()
    assert not any(b.label == "Save as run" for b in at.button)
    at.button(key="cmp.run_all").click().run()
    assert at.text_input(key="cmp.run_name").value.startswith("compare-") and list_runs() == []
    at = _save(at, "cmp.run_name", "compare-classical")
    (info,) = list_runs()
    assert (info.kinds, info.images, info.models) == (("compare",), 12, ("classical",))
    pd.testing.assert_frame_equal(open_run(info.name).analysis("compare").tables["scores"],
                                  at.session_state["cmp.all"][0])
    index = image_index(open_run(info.name))
    assert len(index) == 12 and set(run_labels(open_run(info.name), index["image"][5])) == {"classical"}


def test_explain_saves_the_explanation_after_the_classifier_and_its_cams(runs_home):
    at = open_page("pages/explain.py")
    assert not any(b.label == "Save as run" for b in at.button)
    at.number_input(key="ex.set.epochs").set_value(2).run()
    at.button(key="ex.train").click().run()
    assert not at.exception, at.exception
    assert at.text_input(key="ex.run_name").value.startswith("explain-") and list_runs() == []
    at = _save(at, "ex.run_name", "why-plates")
    (info,) = list_runs()
    assert info.kinds == ("explain",) and info.images == 12
    saved = open_run("why-plates").analysis("explain")
    assert info.cells is None and info.numbers["explained cells"] == len(saved.tables["cam_cells"]) > 0
    assert len(image_index(open_run("why-plates"))) == 12  # the images with cells: every example field has some


def test_the_link_to_a_saved_run_opens_the_results_page_where_the_app_has_one(tmp_path):
    """``?run=NAME`` on the Results page (pages/results.py, url_path "results") when it is
    registered; no link and no error in an app without it."""
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "results.py").write_text("import streamlit as st\nst.write('results')\n")
    for with_results in (True, False):
        results = ', st.Page("pages/results.py", title="Results", url_path="results")' if with_results else ""
        (tmp_path / "app.py").write_text(
            f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport streamlit as st\n"
            "from components.save_run import _results_link\n"
            f"st.navigation([st.Page(lambda: _results_link('plate-a'), title='Home', default=True){results}]).run()\n")
        at = AppTest.from_file(str(tmp_path / "app.py")).run()
        assert not at.exception, at.exception
        links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
        assert links == ([("results", "run=plate-a")] if with_results else [])


def test_a_reload_keeps_the_result_to_save_and_the_name_typed(runs_home):
    at = open_page("pages/preprocess.py")
    at.session_state["pre_tab"] = "Recipe & all images"
    at.run()
    next(b for b in at.button if b.label == "Run on all images").click()
    at.run()
    at.text_input(key="pre_run_name").set_value("after-reload").run()
    back = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    back.query_params["ws"] = at.query_params["ws"]
    back.run()
    back.switch_page("pages/preprocess.py")
    back.run()
    assert back.text_input(key="pre_run_name").value == "after-reload"
    _save(back, "pre_run_name")
    (info,) = list_runs()
    assert (info.name, info.kinds, info.cells) == ("after-reload", ("segmentation",),
                                                   len(at.session_state["batch_result"][1]))


def _control_app():
    from components.save_run import save_run_control
    from core.analysis import Analysis

    record = Analysis("segmentation", (), {"model": "classical"}, {"cellscope": {"version": "0", "commit": None}})
    save_run_control("k", [record], default_name="segmentation-20261207-1500")


def test_two_users_keeping_the_default_name_in_the_same_minute_both_save(runs_home):
    """The second user's click was refused ('exists already') for a name neither of them chose."""
    first, second = AppTest.from_function(_control_app), AppTest.from_function(_control_app)
    first.run(), second.run()
    assert first.text_input(key="k").value == second.text_input(key="k").value == "segmentation-20261207-1500"
    _save(first, "k"), _save(second, "k")
    assert any("**segmentation-20261207-1500-2**" in s.value for s in second.success) and not second.error
    assert sorted(r.name for r in list_runs()) == ["segmentation-20261207-1500", "segmentation-20261207-1500-2"]
    _save(second, "k", "segmentation-20261207-1500")  # typed by the user: a taken name is still refused
    assert any("exists already" in e.value for e in second.error)
