"""The Compare models page through AppTest: side by side, numbers, slow models on demand, failures
and missing weights shown without losing the rest, all images, SAM prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest
from test_sam import tiny_sam, tiny_sam_info

from core.data.instances import Instances
from models import registry
from models.registry import ModelInfo
from models.weights import WeightsSpec, offline_advice


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


def _open() -> AppTest:
    return open_page("pages/compare.py")


def _view(at: AppTest) -> dict:
    """What the result panels send the browser (components/result_view.py)."""
    views = [el for el in at.get("bidi_component") if el.proto.component_name == "cellscope.result_view"]
    return json.loads(views[0].proto.json) if views else {"panels": [], "images": {}}


def _captions(at: AppTest) -> list[str]:
    """Panel captions of the result view and captions of plain images (the SAM prompt view)."""
    return [p["caption"] for p in _view(at)["panels"]] + [img.caption for el in at.get("image") for img in el.proto.imgs]


def _metrics(at: AppTest):
    return next(d.value for d in at.dataframe if "f1" in d.value.columns).set_index("model")


def test_default_models_run_side_by_side_with_scores(weights_home):
    at = _open()
    caps = _captions(at)
    assert caps[0] == "Ground truth: 88 annotated cells"
    assert any(c.startswith("classical: 88 objects") for c in caps)
    assert any(c.startswith("yolo11s-nuclei:") and "boxes" in c for c in caps)
    metrics = _metrics(at)
    assert metrics.loc["classical", "f1"] >= 0.95 and metrics.loc["classical", "matched on"] == "mask IoU"
    assert metrics.loc["yolo11s-nuclei", "matched on"] == "box IoU"
    cost = next(d.value for d in at.dataframe if "peak memory MB" in d.value.columns)
    assert list(cost.model) == ["classical", "yolo11s-nuclei"] and set(cost.device) == {"cpu"}
    assert len(at.get("plotly_chart")) == 2  # agreement matrix and F1-vs-IoU
    assert {b.label for b in at.get("download_button")} >= {"Results for this image (zip)", "Metrics (CSV)"}



def test_an_unchanged_rerun_recomputes_nothing(weights_home, monkeypatch):
    import components.model_panel as panel

    at = _open()
    calls = []
    real = panel.run_model
    monkeypatch.setattr(panel, "run_model", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    at.run()
    assert calls == [] and not at.exception
    at.slider(key="cmp.set.conf").set_value(0.3).run()  # only YOLO uses it
    assert calls == ["yolo11s-nuclei"]


def test_offline_sam_in_two_places_gets_one_button_per_weights_file_and_no_crash(weights_home):
    """Defect: choosing sam-vitb offline and opening Prompt SAM drew the same Download key twice."""
    at = _open()
    at.multiselect(key="cmp.models").set_value(["classical", "sam-vitb", "classical+sam-vitb"]).run()
    at.session_state["cmp.tab"] = "Prompt SAM"
    at.run()
    assert not at.exception
    keys = [b.key for b in at.button if ".dl." in (b.key or "")]
    assert keys == ["cmp.models.dl.sam_vit_b_01ec64.pth"]  # the Prompt SAM tab points to it instead of a second one
    assert any("use its **Download** button above" in i.value for i in at.info)
    warning = next(w.value for w in at.warning if "sam_vit_b_01ec64.pth" in w.value)
    assert "**sam-vitb**, **classical+sam-vitb** need" in warning and "sam-vit_b" not in warning
    at.multiselect(key="cmp.models").set_value(["classical"]).run()  # not chosen above: the tab offers its own
    assert [b.key for b in at.button if ".dl." in (b.key or "")] == ["cmp.sam.dl.sam_vit_b_01ec64.pth"]


def test_panels_carry_outlines_fills_and_ground_truth_layers_and_settings_change_the_result(weights_home):
    at = _open()
    view = _view(at)
    layers = {p["id"]: [(x["id"], x["toggle"]) for x in p["layers"]] for p in view["panels"]}
    assert layers["classical"] == [("base", None), ("classical.fill", "filled"), ("classical.outlines", "outlines"),
                                   ("gt", "gt")]
    assert layers["ground truth"][0] == ("base", None) and ("gt", "gt") not in layers["ground truth"]
    toggles = {t["id"]: t for t in view["toggles"]}
    assert not toggles["filled"]["on"] and toggles["outlines"]["on"] and not toggles["gt"]["disabled"]
    assert all(view["images"][i].startswith("data:image/") for i in ("base", "classical.fill", "gt"))
    before = _captions(at)
    at.slider(key="cmp.set.conf").set_value(0.05).run()
    after = _captions(at)
    n = lambda caps: int(next(c for c in caps if c.startswith("yolo11s-nuclei:")).split()[1])  # noqa: E731
    assert n(after) > n(before)
    assert not at.exception


def test_missing_weights_are_explained_and_the_others_still_run(weights_home, monkeypatch):
    info = registry.get_model_info("maskrcnn-coco")
    offline = WeightsSpec(info.weights.name, info.weights.filename, "http://127.0.0.1:9/mask.pth", None, 177_000_000,
                          "BSD-3-Clause", "COCO", "test")
    monkeypatch.setitem(registry._REGISTRY, "maskrcnn-coco", ModelInfo(
        info.name, info.family, info.description, offline, info.box_only, info.builder, info.settings))
    at = _open()
    at.multiselect(key="cmp.models").set_value(["classical", "maskrcnn-coco"]).run()
    warning = next(w.value for w in at.warning if "maskrcnn-coco" in w.value)
    assert info.weights.filename in warning
    # the user may be in a browser: the warning says who places the file on the server, and where
    assert offline_advice(weights_home / info.weights.filename) in warning
    # the Run button counts one model: it says which one it leaves out (it used to say nothing)
    assert at.button(key="cmp.run").label == "Run 1 model"
    assert "Leaves out maskrcnn-coco: no weights here yet (see above)." in [c.value for c in at.caption]
    at.button(key=f"cmp.models.dl.{info.weights.filename}").click().run()
    error = next(e.value for e in at.error if "could not download" in e.value)
    assert str(weights_home / info.weights.filename) in error  # where to place it by hand
    assert any(c.startswith("classical:") for c in _captions(at))
    assert not at.exception


class _Broken:
    name, device = "broken", "cpu"

    def predict(self, image, **_):
        raise RuntimeError("CUDA out of memory (simulated)")


class _Slow:
    """A 'sam' family model: waits for the Run button on the CPU."""

    name, device = "slowsam", "cpu"

    def predict(self, image, **_):
        labels = (image.gt > 0).astype(np.int32) if image.gt is not None else np.zeros(image.shape[:2], np.int32)
        return Instances(labels, np.array([[0, 0, 5, 5]], np.float32)[: labels.max()], np.ones(labels.max(), np.float32),
                         ("cell",), self.name, self.device, 0.01)


def test_a_failing_model_is_reported_and_slow_models_wait_for_run(weights_home, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "broken", ModelInfo("broken", "yolo", "fails", None, False,
                                                                lambda p, d: _Broken()))
    monkeypatch.setitem(registry._REGISTRY, "slowsam", ModelInfo("slowsam", "sam", "slow", None, False,
                                                                 lambda p, d: _Slow(), slow_on_cpu=True))
    at = _open()
    at.multiselect(key="cmp.models").set_value(["classical", "broken", "slowsam"]).run()
    assert any("broken" in e.value and "simulated" in e.value for e in at.error)
    assert any("Press **Run** for slowsam" in i.value for i in at.info)
    assert not any(c.startswith("slowsam:") for c in _captions(at))
    assert at.button(key="cmp.run").proto.type == "primary"  # something waits for it
    at.button(key="cmp.run").click().run()
    assert any(c.startswith("slowsam: 1 objects") for c in _captions(at))
    at.run()
    assert at.button(key="cmp.run").proto.type == "secondary"  # every result is shown: nothing to press for
    assert any(c.startswith("classical:") for c in _captions(at)) and not at.exception


def test_a_value_between_a_settings_special_value_and_its_range_is_refused_on_the_page(weights_home, monkeypatch):
    """Cellpose-SAM's diameter is 0 or 5 to 500: its number box spans 0 to 500, so 3 can be typed."""
    from models.cellpose_sam import CELLPOSE_SETTINGS

    seen = []

    class _Fake(_Slow):
        name = "cellpose-fake"

        def predict(self, image, **params):
            seen.append(params["cellpose_diameter"])
            return super().predict(image)

    monkeypatch.setitem(registry._REGISTRY, "cellpose-fake", ModelInfo(
        "cellpose-fake", "cellpose", "fake", None, False, lambda p, d: _Fake(), CELLPOSE_SETTINGS))
    at = _open()
    at.multiselect(key="cmp.models").set_value(["cellpose-fake"]).run()
    at.number_input(key="cmp.set.cellpose_diameter").set_value(3).run()
    assert any(e.value == "cellpose_diameter must be between 5 and 500 (or 0); got 3: the default, 0, is used" for e in at.error)
    at.number_input(key="cmp.set.cellpose_diameter").set_value(12).run()
    assert not at.error and not at.exception and seen == [0, 12]


def test_all_images_gives_an_image_by_model_table(weights_home):
    at = _open()
    at.session_state["cmp.tab"] = "All images"
    at.run()
    at.multiselect(key="cmp.models").set_value(["classical"]).run()
    at.button(key="cmp.run_all").click().run()
    table, results, prov = at.session_state["cmp.all"]
    assert len(table) == 12 and len(results) == 12 and table.f1.min() >= 0.9
    assert prov["models"]["classical"]["settings"]["tile"] == 1024 and prov["device"] == "cpu"
    assert prov["models"]["classical"]["settings"]["recipe"]["steps"]["rotate"]["enabled"] is False
    assert any(b.label == "All results (zip)" for b in at.get("download_button"))
    assert not any("out of date" in w.value for w in at.warning)
    at.select_slider(key="cmp.set.tile").set_value(512).run()
    assert any("out of date" in w.value for w in at.warning) and not at.exception


def test_weights_upload_is_off_unless_the_server_allows_it(weights_home, monkeypatch):
    at = _open()
    at.button(key="cmp.guide").click().run()  # the model guide, a dialog
    assert any("| **maskrcnn-coco** |" in m.value for m in at.markdown)
    assert any("CELLSCOPE_ALLOW_WEIGHTS_UPLOAD=1" in c.value for c in at.caption)
    assert len(at.get("file_uploader")) == 0
    monkeypatch.setenv("CELLSCOPE_ALLOW_WEIGHTS_UPLOAD", "1")
    at.button(key="cmp.guide").click().run()
    assert len(at.get("file_uploader")) == 1


def test_sam_point_prompts_reuse_one_embedding(weights_home, monkeypatch, tmp_path):
    import torch

    torch.manual_seed(0)
    weights_home.mkdir(parents=True)
    torch.save(tiny_sam().state_dict(), weights_home / "sam_tiny.pth")
    monkeypatch.setitem(registry._REGISTRY, "sam-tiny", tiny_sam_info("sam_tiny.pth"))
    at = _open()
    at.session_state["cmp.tab"] = "Prompt SAM"
    at.run()
    at.selectbox(key="cmp.sam_model").set_value("sam-tiny").run()
    assert any("No prompts yet" in i.value for i in at.info)
    at.number_input(key="cmp.px").set_value(100).run()
    at.button(key="cmp.add_point").click().run()
    cap = next(c for c in _captions(at) if "masks from" in c)
    assert "from 1 points and 0 boxes" in cap
    at.session_state["cmp.prompts"]["boxes"].append((200.0, 200.0, 260.0, 250.0))
    at.number_input(key="cmp.py").set_value(300).run()
    at.button(key="cmp.add_point").click().run()
    cap = next(c for c in _captions(at) if "masks from" in c)
    assert "from 2 points and 1 boxes" in cap and "embedding cached" in cap
    assert at.session_state["cmp.prompts"]["points"] == [(100.0, 256.0), (100.0, 300.0)]
    at.button(key="cmp.clear").click().run()
    assert any("No prompts yet" in i.value for i in at.info) and not at.exception


def test_prompts_from_a_plotly_selection():
    from components.sam_prompt import prompts_from_selection

    click = {"points": [{"x": 30, "y": 40, "point_index": 3}], "box": []}
    assert prompts_from_selection(click, (100, 200)) == ([(30.0, 40.0)], [])
    drag = {"points": [{"x": 30, "y": 40}], "box": [{"x": [50, 10], "y": [5, 300]}]}
    assert prompts_from_selection(drag, (100, 200)) == ([], [(10.0, 5.0, 50.0, 100.0)])
    assert prompts_from_selection({"box": [{"x": [5, 6], "y": [5, 50]}]}, (100, 100)) == ([], [])  # too thin


def test_empty_and_large_images_give_sensible_results(weights_home):
    """An all-zero image: no objects, no crash. A 2100 px image: tiled (3 x 3 tiles of 1024 px)."""
    from core.data.dataset import Dataset
    from core.data.images import CellImage, default_channels
    from core.io.example import make_example_dataset

    field = make_example_dataset(size=700, fields_per_plate=1)[0]
    big = np.tile(field.pixels, (3, 3, 1))  # 2100 x 2100, cells everywhere including on tile seams
    ds = Dataset()
    ds.add([CellImage("zeros.tif", np.zeros((256, 256, 1), np.uint16), default_channels(1)),
            CellImage("big.tif", big, field.channels)])
    at = _open()
    at.session_state["dataset"] = ds
    at.session_state["dataset_origin"] = "user"
    at.run()
    caps = _captions(at)
    assert any(c.startswith("classical: 0 objects") for c in caps) and not at.exception
    at.selectbox(key="cmp.image").set_value("big.tif").run()
    cost = next(d.value for d in at.dataframe if "tiles" in d.value.columns).set_index("model")
    assert cost.loc["classical", "tiles"] == 9 and cost.loc["yolo11s-nuclei", "tiles"] == 9
    n_classical = cost.loc["classical", "objects"]
    single = registry.load_model("classical").predict(field).count
    assert abs(n_classical - 9 * single) <= 0.1 * 9 * single, (n_classical, single)
    assert any("tiled: 9 tiles" in c.value for c in at.caption) and not at.exception


def test_images_a_model_was_trained_on_are_marked_and_left_out_of_its_means(weights_home):
    """A U-Net trained on 10 of the 12 example images showed F1 0.950 on one of them and a mean over
    all 12 with no mark. Trained here by the Train page's own entry point (tiny settings)."""
    from core.io.example import make_example_dataset
    from models.registry import images_seen
    from workflows.training import train_segmenter

    images = make_example_dataset()
    train_segmenter("unet", images[:10], name="tiny", settings={"epochs": 1, "steps_per_epoch": 2, "tile": 64,
                                                                 "batch_size": 2, "seed": 1})
    roles = [images_seen("trained:unet:tiny").role(img.name, img.hash) for img in images]
    assert roles.count("training") == 8 and roles.count("validation") == 2 and roles[10:] == ["", ""]
    at = _open()
    at.multiselect(key="cmp.models").set_value(["classical", "trained:unet:tiny"]).run()
    assert not at.exception
    first = roles[0]  # the page opens on plateA_field1
    word = "trained" if first == "training" else "validated"
    assert any(c.startswith("trained:unet:tiny:") and c.endswith(f" · {word} on this image") for c in _captions(at))
    assert not any(c.startswith("classical:") and "on this image" in c for c in _captions(at))
    assert list(_metrics(at)["seen in training"]) == ["", first]  # the table the metrics CSV is written from
    assert any(w.value.startswith(f"trained:unet:tiny was {word}") and "not how it does on new images" in w.value
               for w in at.warning)
    at.session_state["cmp.tab"] = "All images"
    at.run()
    at.button(key="cmp.run_all").click().run()
    table = at.session_state["cmp.all"][0]
    unet = table[table.model == "trained:unet:tiny"].set_index("image")["seen in training"]
    assert list(unet) == roles and set(table[table.model == "classical"]["seen in training"]) == {""}
    means = next(d.value for d in at.dataframe if "left out" in d.value.columns)
    assert means.loc["trained:unet:tiny", "images"] == 2 and means.loc["trained:unet:tiny", "left out"] == 10
    assert means.loc["classical", "images"] == 12 and means.loc["classical", "left out"] == 0
    ranking = next(d.value for d in at.dataframe if "verdict" in d.value.columns).set_index("model")
    assert ranking.loc["trained:unet:tiny", "images"] == 2  # ranked on the two images it has not seen
    assert any("trained:unet:tiny was scored on 2 images new to it" in w.value and "undetermined" in w.value
               for w in at.warning)
    unseen = table[(table.model == "trained:unet:tiny") & (table["seen in training"] == "")]["f1"].mean()
    assert means.loc["trained:unet:tiny", "f1"] == round(unseen, 3)
    assert any(m.value == "**Means over images**, leaving out the images each model has seen" for m in at.markdown)
    assert any(c.value.startswith("Shaded, *(trained on)* or *(validated on)*: an image the model has seen (10 scores)")
               for c in at.caption)
    at.checkbox(key="cmp.include_seen").check().run()
    means = next(d.value for d in at.dataframe if "left out" in d.value.columns)
    assert means.loc["trained:unet:tiny", "images"] == 12 and not at.exception
    # only images it has seen: an empty row, and a word why
    at.session_state["dataset"].remove([img.name for img in images[10:]])
    at.checkbox(key="cmp.include_seen").uncheck().run()
    at.button(key="cmp.run_all").click().run()
    assert any(c.value.startswith("trained:unet:tiny: trained or validated on every image here, so no image is left")
               for c in at.caption) and not at.exception


def test_a_models_settings_can_be_read_and_set_before_its_weights_are_downloaded(weights_home):
    """Cellpose-SAM's settings were hidden until its 1.2 GB download: a user could not see what it offers."""
    at = _open()
    at.multiselect(key="cmp.models").set_value(["classical", "cellpose-sam"]).run()
    assert any("needs cpsam" in w.value for w in at.warning)
    at.number_input(key="cmp.set.cellpose_diameter").set_value(30).run()
    assert at.number_input(key="cmp.set.cellpose_diameter").value == 30 and not at.exception
