"""A new model family is one module: tests/toy_family.py registers a toy trainable segmenter (with
a detector CAM and a setting name the U-Net uses for something else), and with no other file
changed it is on Compare, Train, Cell map and Explain, and in the CLI's models, segment and train."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import tifffile
from conftest import open_page

from models import registry


@pytest.fixture(scope="module")
def toy():
    """The toy family's module, imported once; the registry is put back as it was afterwards."""
    kept = dict(registry._FAMILIES), dict(registry._REGISTRY), list(registry._PROVIDERS)
    sys.modules.pop("toy_family", None)
    module = importlib.import_module("toy_family")
    yield module
    for live, saved in zip((registry._FAMILIES, registry._REGISTRY, registry._PROVIDERS), kept, strict=True):
        live.clear()
        live.update(saved) if isinstance(live, dict) else live.extend(saved)
    sys.modules.pop("toy_family", None)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


def test_the_registry_knows_everything_about_it(toy, weights):
    family = registry.get_family("toy")
    assert family.trainer.train is toy.train_toy and family.cam_methods == ("eigencam",)
    assert "toy" in [f.name for f in registry.families(trainable=True)]
    info = registry.get_model_info("toy-blobs")
    # Its "diameter" is not the U-Net's: each family's widget has its own key, so neither overrides the other.
    assert registry.setting_key(info, toy.TOY_SETTINGS[0]) == "toy.diameter"
    from models.unet import UNET_SETTINGS, unet_model_info

    unet = unet_model_info(weights / "x.unet.pt")
    diameter = next(s for s in UNET_SETTINGS if s.name == "diameter")
    assert registry.setting_key(unet, diameter) == "unet.diameter"
    from components.model_panel import params_for

    assert params_for("toy-blobs", {"toy.diameter": 5, "unet.diameter": 30, "diameter": 30}) == {"diameter": 5}
    with pytest.raises(ValueError, match="toy-blobs has no setting 'size'"):
        info.resolve({"size": 3})


def test_it_is_on_compare(toy, weights):
    at = open_page("pages/compare.py")
    at.multiselect(key="cmp.models").set_value(["classical", "toy-blobs"]).run()
    assert not at.exception, at.exception
    assert at.number_input(key="cmp.set.toy.diameter").value == 2  # its own setting, with its default
    views = [el for el in at.get("bidi_component") if el.proto.component_name == "cellscope.result_view"]
    captions = [p["caption"] for p in json.loads(views[0].proto.json)["panels"]]
    assert any(c.startswith("toy-blobs:") and "objects" in c for c in captions), captions
    assert "toy-blobs" in set(next(d.value for d in at.dataframe if "f1" in d.value.columns)["model"])


def test_it_trains_on_the_train_page_and_its_model_is_listed(toy, weights):
    from components.training_state import training_queue

    at = open_page("pages/train.py")
    assert "Toy threshold" in at.selectbox(key="tr.family").options  # shown by its label
    at.selectbox(key="tr.family").set_value("toy").run()
    assert at.number_input(key="tr.fam.toy.epochs").value == 2  # ToyTraining's default
    at.text_input(key="tr.name").set_value("pagetoy").run()
    at.button(key="tr.start").click().run()
    assert not at.exception, at.exception
    job = training_queue().jobs(at.session_state["workspace_id"])[0]
    done = training_queue().wait(job.id, timeout=120)
    assert done.state == "done", done.error
    assert done.result["model"] == "trained:toy:pagetoy" and (weights / "pagetoy.toy.pt").is_file()
    at.run()
    assert any("trained:toy:pagetoy" in s.value and "validation F1" in s.value for s in at.success)
    assert "trained:toy:pagetoy" in [m.name for m in registry.list_models("segment")]
    assert registry.images_seen("trained:toy:pagetoy").known


def test_it_segments_the_cells_of_the_cell_map(toy, weights):
    at = open_page("pages/cellmap.py")
    assert "toy-blobs" in at.selectbox(key="cm.segmenter").options
    at.selectbox(key="cm.segmenter").set_value("toy-blobs").run()
    assert not at.exception, at.exception
    assert at.number_input(key="cm.seg.toy.diameter").value == 2
    assert at.get("plotly_chart")  # morphology maps at once: the toy's cells were measured


def test_its_cam_is_on_explain(toy, weights):
    at = open_page("pages/explain.py")
    at.session_state["ex.view"] = "Detectors"
    at.run()
    assert "toy-blobs" in at.selectbox(key="ex.det_model").options
    at.selectbox(key="ex.det_model").set_value("toy-blobs").run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert any("Eigen-CAM of toy-blobs at plane" in img.caption for el in at.get("image") for img in el.proto.imgs)


def test_the_cli_lists_runs_and_trains_it(toy, weights, tmp_path, capsys):
    from core.io.example import make_example_dataset
    from core.io.export import write_dataset
    from workflows.cli import main

    def cli(*args: str) -> str:
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    assert any(line.startswith("toy-blobs\ttoy\tmasks\tavailable") for line in cli("models").splitlines())
    data = tmp_path / "data"
    write_dataset(make_example_dataset(size=96, fields_per_plate=2), data)
    image = str(data / "images" / "plateA_field1.tif")
    out = cli("segment", "--model", "toy-blobs", image, "-o", str(tmp_path / "l.tif"), "--device", "cpu")
    labels = tifffile.imread(tmp_path / "l.tif")
    assert f": {len(np.unique(labels[labels > 0]))} cells by toy-blobs" in out
    out = cli("train", "--model", "toy", "--images", str(data), "--val-batches", "plateC", "--epochs", "1",
              "--out", "clitoy", "--device", "cpu")
    assert "training a Toy threshold on cpu" in out and "use it as --model trained:toy:clitoy" in out
    out = cli("segment", "--model", "trained:toy:clitoy", image, "-o", str(tmp_path / "t.tif"), "--device", "cpu")
    assert "by trained:toy:clitoy" in out
    out = cli("segment", "--model", f"toy:{weights / 'clitoy.toy.pt'}", image, "-o", str(tmp_path / "f.tif"))
    assert f"by toy:{weights / 'clitoy.toy.pt'}" in out  # a checkpoint named by its file
    assert "trained:toy:clitoy\ttoy" in cli("models")
