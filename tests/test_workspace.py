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


# ---- two tabs on one link: each writes only what it changed, the last change of a value wins ----------------------


def test_merged_sets_changes_drops_removals_and_fills_defaults_only_where_absent():
    from core.workspace import merged

    values = {"a": 1, "b": [2], "w": {"x": 1, "y": 2}}
    out = merged(values, {"a": 10, ("w", "x"): 11, "c": 3}, ["b", ("w", "y"), "gone"], {("w", "x"): 0, ("w", "z"): 9,
                                                                                          "a": 0, "d": 4})
    assert out == {"a": 10, "c": 3, "d": 4, "w": {"x": 11, "z": 9}}
    assert values == {"a": 1, "b": [2], "w": {"x": 1, "y": 2}}  # nothing changed in place
    assert merged({}, {("w", "x"): 1}) == {"w": {"x": 1}}


def test_store_update_merges_into_the_snapshot_it_holds_and_keeps_it_alive():
    clock = Clock()
    store = WorkspaceStore(ttl_s=100, max_bytes=100, clock=clock)
    size = len  # a snapshot's size: its number of values
    assert store.update("a", {"x": 1}, nbytes_of=size) is None  # not held: the caller saves it whole
    store.save("a", {"x": 1, "y": 2, "w": {"k": 1}}, 3)
    assert store.update("a", {"y": 20, ("w", "j"): 2}, ["x"], nbytes_of=size) == 2
    assert store.load("a") == {"y": 20, "w": {"k": 1, "j": 2}}
    clock.now = 90
    assert store.update("a", {}, nbytes_of=size) == 2  # nothing changed: nothing written, but kept alive
    clock.now = 150
    assert store.load("a") == {"y": 20, "w": {"k": 1, "j": 2}}
    assert store.update("a", {"big": 1}, nbytes_of=lambda values: 101) == 101  # too large: dropped, as save does
    assert store.load("a") is None


def test_store_update_is_one_step_so_tabs_writing_at_once_lose_nothing():
    import threading
    import time

    store = WorkspaceStore()
    store.save("a", {}, 0)

    def slow_size(values):
        time.sleep(0.02)  # another tab's update comes in meanwhile
        return len(values)

    tabs = [threading.Thread(target=store.update, args=("a", {f"k{i}": i}), kwargs={"nbytes_of": slow_size})
            for i in range(6)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    assert store.load("a") == {f"k{i}": i for i in range(6)}


def test_fingerprints_tell_changes_made_in_place_and_not_copies():
    from components.curation_state import Curation
    from components.workspace import KeptResults, _copied, _fingerprint
    from core.training.label_edit import Edit, EditHistory

    image = CellImage("i", np.zeros((8, 8, 1), np.uint16), default_channels(1))
    ds = Dataset()
    ds.add([image])
    before = _fingerprint(ds)
    assert _fingerprint(_copied(ds)) == before  # a copy is no change
    ds.put(image.with_(condition="treated"))
    assert _fingerprint(ds) != before
    ds2 = Dataset()
    ds2.add([image])
    before = _fingerprint(ds2)
    ds2.remove(["i"])
    assert _fingerprint(ds2) != before

    results = KeptResults()
    before = _fingerprint(results)
    results["map"] = ("key", object())
    assert _fingerprint(results) != before
    prompts = {"image": "h", "points": [], "boxes": []}
    before = _fingerprint(prompts)
    assert _fingerprint(_copied(prompts)) == before
    prompts["points"] += [(1, 2)]
    assert _fingerprint(prompts) != before
    curation = Curation("i", "empty", EditHistory(np.zeros((8, 8), np.int32)))  # label edits, made in place
    before = _fingerprint(curation)
    curation.history.apply(Edit(np.ones((8, 8), np.int32), "added cell 1"))
    assert _fingerprint(curation) != before
    before = _fingerprint(curation)
    curation.history.undo()
    assert _fingerprint(curation) != before
    assert _fingerprint(["a", 1, 2.5, (True, None)]) == _fingerprint(["a", 1, 2.5, (True, None)])
    array = np.zeros(3)
    assert _fingerprint(array) == _fingerprint(array) and _fingerprint(array) != _fingerprint(array.copy())


def test_a_stale_tab_that_only_changes_page_keeps_the_other_tabs_change():
    """The QA walk: two tabs on /train?ws=X; tab 2 names the model B; tab 1, not changed since,
    goes to the Data page; the link then shows B, not tab 1's stale A."""
    one = _app().run()
    workspace = one.query_params["ws"]
    one.switch_page("pages/train.py")
    one.run()
    one.text_input(key="tr.name").set_value("A").run()
    two = _reload(workspace, "pages/train.py")
    assert two.text_input(key="tr.name").value == "A"
    two.text_input(key="tr.name").set_value("B").run()
    assert not two.exception, two.exception
    one.switch_page("pages/data.py")
    one.run()
    one.switch_page("pages/train.py")
    one.run()
    assert not one.exception, one.exception
    assert _reload(workspace, "pages/train.py").text_input(key="tr.name").value == "B"
    one.text_input(key="tr.name").set_value("C").run()  # a change in the stale tab is the last change: it wins
    assert _reload(workspace, "pages/train.py").text_input(key="tr.name").value == "C"


def test_two_tabs_changing_different_things_keep_both():
    """Tab 1 names the model and picks a family; tab 2 removes images, sets the recipe and clears a
    value (a removal is a change too): the link shows all of it."""
    from core.segmentation.recipe import Recipe

    kept = ("plateA_field1", "plateA_field3", "plateB_field1", "plateB_field3")
    one = _app().run()
    workspace = one.query_params["ws"]
    one.switch_page("pages/train.py")
    one.run()
    one.session_state["cm.ready"] = "made"
    one.run()
    two = _reload(workspace, "pages/train.py")
    assert two.session_state["cm.ready"] == "made"
    one.text_input(key="tr.name").set_value("mine").run()
    one.selectbox(key="tr.family").set_value("rcnn").run()
    ds = two.session_state["dataset"]
    ds.remove([n for n in ds.names if n not in kept])
    two.session_state["recipe"] = Recipe().with_step("filters", min_area=33)
    del two.session_state["cm.ready"]
    two.run()
    assert not two.exception, two.exception
    one.switch_page("pages/data.py")  # and tab 1 moves on, changing nothing more
    one.run()
    back = _reload(workspace, "pages/train.py")
    assert back.text_input(key="tr.name").value == "mine" and back.selectbox(key="tr.family").value == "rcnn"
    assert back.session_state["dataset"].names == list(kept)
    assert back.session_state["recipe"].filters.min_area == 33
    assert "cm.ready" not in back.session_state
    assert len(one.session_state["dataset"]) == 12  # tab 1 keeps its own, stale copy


def test_a_widget_first_drawn_in_a_stale_tab_does_not_undo_the_other_tabs_choice():
    """Tab 1 opens the link before anyone visited Train; tab 2 names the model there; tab 1 then
    visits Train for the first time: its name box shows its default, which is no change."""
    one = _app().run()
    workspace = one.query_params["ws"]
    two = _reload(workspace, "pages/train.py")
    two.text_input(key="tr.name").set_value("B").run()
    one.switch_page("pages/train.py")
    one.run()
    assert not one.exception, one.exception
    assert _reload(workspace, "pages/train.py").text_input(key="tr.name").value == "B"
