"""Workspaces: a tab's work survives a reload of its link, and only its link; the store is bounded."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, blobs, tiff_bytes
from streamlit.testing.v1 import AppTest

from core.data.dataset import Dataset
from core.data.images import CellImage, default_channels
from core.workspace import WorkspaceStore, approx_nbytes, new_workspace_id


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_long_random_and_url_safe():
    ids = {new_workspace_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) >= 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def test_store_forgets_idle_workspaces_and_loading_keeps_one_alive():
    clock = Clock()
    store = WorkspaceStore(ttl_s=100, clock=clock)
    store.save("a", {"x": 1}, 10)
    store.save("b", {"x": 2}, 10)
    clock.now = 60
    assert store.load("a") == {"x": 1}  # touched at 60
    clock.now = 130
    assert store.load("b") is None and store.load("a") == {"x": 1}
    clock.now = 231
    assert store.load("a") is None and len(store) == 0


def test_store_drops_least_recently_used_past_its_size_and_refuses_a_workspace_too_large_alone():
    store = WorkspaceStore(max_bytes=100, max_entries=3)
    assert store.save("a", {}, 40) and store.save("b", {}, 40)
    store.load("a")  # b is now the least recently used
    assert store.save("c", {}, 40)
    assert store.load("b") is None and store.load("a") is not None and store.nbytes == 80
    assert not store.save("huge", {}, 101) and store.load("huge") is None
    for name in "defg":
        store.save(name, {}, 1)
    assert len(store) == 3


def test_approx_nbytes_counts_each_array_once_and_skips_shared_ones():
    a, b = np.zeros((100, 100), np.uint16), np.zeros(1000, np.uint8)
    assert approx_nbytes({"x": a, "y": [a, a[:10]], "z": b}) == a.nbytes + b.nbytes + 3
    assert approx_nbytes({"x": a, "z": b}, skip=frozenset({id(a)})) == b.nbytes + 2
    ds = Dataset()
    ds.add([CellImage("i", np.zeros((64, 64, 2), np.uint16), default_channels(2), gt=np.zeros((64, 64), np.int32))])
    assert approx_nbytes(ds) >= 64 * 64 * 2 * 2 + 64 * 64 * 4
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16))  # a kept classifier's network
    assert approx_nbytes(net) == 4 * (16 * 3 * 9 + 16 + 16 + 16 + 16 + 16) + 8  # weights, biases, running stats, count


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def _reload(workspace_id: str | None, page: str | None = None) -> AppTest:
    """A new session, as a reload of (or a new tab on) a URL with ``?ws=workspace_id``."""
    at = _app()
    if workspace_id is not None:
        at.query_params["ws"] = workspace_id
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def test_a_reload_brings_back_the_dataset_recipe_models_and_settings():
    at = _app().run()
    workspace = at.query_params["ws"]
    uploader = next(u for u in at.file_uploader if u.label == "Add images")
    uploader.set_value([("mine.tif", tiff_bytes(blobs()), "image/tiff")])
    next(b for b in at.button if b.label == "Load files").click()
    at.run()
    at.session_state["dataset"]["mine"]  # noqa: B018 (loaded)
    at.switch_page("pages/preprocess.py")
    at.run()
    at.session_state["recipe"] = at.session_state["recipe"].with_step("filters", min_area=33)
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    at.multiselect(key="cmp.models").set_value(["classical"]).run()
    assert at.query_params["ws"] == workspace and not at.exception

    back = _reload(workspace)
    assert any("Restored your work: 1 image" in t.value for t in back.toast)
    back.switch_page("pages/compare.py")
    back.run()
    assert back.query_params["ws"] == workspace
    assert back.session_state["dataset"].names == ["mine"]
    assert back.session_state["recipe"].filters.min_area == 33
    assert back.multiselect(key="cmp.models").value == ["classical"]
    # the restored dataset is a copy: this tab's edits do not reach the other tab's objects
    back.session_state["dataset"].remove(["mine"])
    assert at.session_state["dataset"].names == ["mine"]


def test_a_new_tab_or_an_unknown_link_starts_fresh_with_the_example():
    at = _app().run()
    next(b for b in at.button if b.label == "Clear all").click()
    at.run()
    assert len(at.session_state["dataset"]) == 0
    fresh = _reload(None)
    assert len(fresh.session_state["dataset"]) == 12 and fresh.query_params["ws"] != at.query_params["ws"]
    gone = _reload("not-a-workspace")
    assert len(gone.session_state["dataset"]) == 12 and gone.query_params["ws"] != "not-a-workspace"
    assert any("workspace is gone" in w.value for w in gone.warning)  # stays on screen, not a fading toast
    emptied = _reload(at.query_params["ws"])
    assert len(emptied.session_state["dataset"]) == 0  # the cleared dataset is what the link holds


def test_widget_values_of_a_page_not_open_are_kept():
    """Streamlit forgets a widget's value once its page is left; the workspace keeps it."""
    at = _app().run()
    at.selectbox(key="viewer_image").set_value("plateB_field2").run()
    at.switch_page("pages/compare.py")
    at.run()
    back = _reload(at.query_params["ws"])
    assert back.selectbox(key="viewer_image").value == "plateB_field2"


def test_the_train_form_and_the_image_being_curated_survive_a_visit_to_another_page():
    at = _app().run()
    at.switch_page("pages/train.py")
    at.run()
    at.selectbox(key="tr.family").set_value("rcnn").run()
    at.number_input(key="tr.fam.rcnn.epochs").set_value(3).run()
    at.selectbox(key="tr.cur_image").set_value("plateB_field2").run()
    at.text_input(key="tr.name").set_value("kept-name").run()
    at.switch_page("pages/data.py")
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="tr.family").value == "rcnn"
    assert at.number_input(key="tr.fam.rcnn.epochs").value == 3
    assert at.selectbox(key="tr.cur_image").value == "plateB_field2"
    assert at.text_input(key="tr.name").value == "kept-name"


@pytest.mark.parametrize("hours", ["0.000001"])
def test_lifetime_comes_from_the_environment(monkeypatch, hours):
    from components.workspace import workspace_store

    workspace_store.clear()
    monkeypatch.setenv("CELLSCOPE_WORKSPACE_HOURS", hours)
    try:
        at = _app().run()
        assert workspace_store().ttl_s == pytest.approx(0.0036)
        import time

        time.sleep(0.01)
        assert any("workspace is gone" in w.value for w in _reload(at.query_params["ws"]).warning)
    finally:
        workspace_store.clear()


def test_computed_results_are_kept_with_the_workspace_not_only_in_the_server_cache(monkeypatch):
    """The Cell map's autoencoder map and Explain's classifier come back on a reload (or the link
    opened in another browser) without computing again, even after the server cache dropped them."""
    import components.cellmap_state as cellmap_state
    import components.explain_state as explain_state

    at = _app().run()
    ds = at.session_state["dataset"]
    ds.remove([n for n in ds.names if n not in ("plateA_field1", "plateA_field3", "plateB_field1", "plateB_field3")])
    at.switch_page("pages/cellmap.py")
    at.run()
    at.selectbox(key="cm.features").set_value("autoencoder").run()
    at.number_input(key="cm.feat.epochs").set_value(2).run()
    assert any("Press **Compute the map**" in i.value for i in at.info)
    assert at.button(key="cm.run").proto.type == "primary"
    at.button(key="cm.run").click().run()
    assert not at.exception, at.exception
    assert at.button(key="cm.run").proto.type == "secondary"  # the map is shown: nothing to press for
    made = at.session_state["cm.current"]["map_key"]
    at.switch_page("pages/explain.py")
    at.run()
    at.number_input(key="ex.set.epochs").set_value(1).run()
    at.number_input(key="ex.set.folds").set_value(2).run()
    assert at.button(key="ex.train").proto.type == "primary"
    at.button(key="ex.train").click().run()
    assert not at.exception, at.exception
    assert at.button(key="ex.train").proto.type == "secondary"
    accuracy = next(m.value for m in at.metric if m.label == "Balanced accuracy")

    cellmap_state.cellmap_store.clear()  # the server-wide caches forget everything
    explain_state.explain_store.clear()

    def never(*args, **kwargs):
        raise AssertionError("computed again")

    for name in ("cell_set", "features_of", "make_map"):
        monkeypatch.setattr(f"workflows.cellmap.{name}", never)
    monkeypatch.setattr("workflows.explain.train_cell_classifier", never)
    back = _reload(at.query_params["ws"], "pages/cellmap.py")
    assert not any("Press **Compute the map**" in i.value for i in back.info)
    assert back.session_state["cm.current"]["map_key"] == made
    assert back.button_group(key="cm.view").value == "Map"
    back.switch_page("pages/explain.py")
    back.run()
    assert not back.exception, back.exception
    assert next(m.value for m in back.metric if m.label == "Balanced accuracy") == accuracy
