"""SAM 2.1 and MobileSAM through ultralytics: their real architectures (ultralytics' own builders)
with random weights, saved under the published file names in a weights folder and loaded by name
through the registry, as the app loads them; nothing is fetched from the network."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import open_page

from core.data.images import CellImage, default_channels
from models import registry
from models.registry import availability, get_model_info, load_model
from models.weights import WeightsUnavailable

MODELS = ("mobilesam", "sam2.1-tiny")  # ultralytics' Predictor (SAM) and SAM2Predictor


def random_sam(filename: str):
    """The architecture ultralytics builds for ``filename`` (SAM 2.1's variant is chosen by the
    name), random weights; its mask decoder scaled so that random masks have confident edges (a
    random decoder's logits stay within +-0.5: every mask would fail the stability cut)."""
    from unittest import mock

    import torch
    import ultralytics.models.sam.build as build

    with mock.patch.object(build, "_load_checkpoint", lambda model, checkpoint: model):
        net = build.build_sam(filename)
    decoder = getattr(net, "sam_mask_decoder", None) or net.mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(200)
        decoder.iou_prediction_head.layers[-1].bias.add_(2.0)  # SAM's raw IoU guesses would be below 0
    return net


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    for name in MODELS:
        filename = get_model_info(name).weights.filename
        torch.save(random_sam(filename).state_dict(), folder / filename)
    return folder


@pytest.fixture
def weights_home(weights_folder, monkeypatch):
    """The weights folder, and SAM's encoder fed a 256 px square instead of its 1024 px one: the same
    network and code path at a sixteenth of the encoder's work."""
    from models.ultralytics_sam import UltralyticsSamModel

    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(weights_folder))
    monkeypatch.setattr(UltralyticsSamModel, "image_side", 256)
    return weights_folder


@pytest.fixture
def no_network(monkeypatch):
    """Every way ultralytics, torch or we could reach the network records the attempt and fails."""
    import requests
    import torch.hub
    import ultralytics.utils.downloads as downloads

    attempts = []

    def refuse(what):
        def call(*args, **kwargs):
            attempts.append((what, args[:2]))
            raise OSError(f"network blocked in this test: {what}")
        return call

    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(requests.Session, "request", refuse("requests"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub"))
    for fn in ("safe_download", "get_github_assets"):
        monkeypatch.setattr(downloads, fn, refuse(f"ultralytics {fn}"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _image(seed: int = 0, shape=(64, 80)) -> CellImage:
    rng = np.random.default_rng(seed)
    return CellImage(f"img{seed}", rng.integers(0, 4000, (*shape, 1)).astype(np.uint16), default_channels(1))


@pytest.mark.parametrize(("name", "side"), [("mobilesam", 1024), ("sam2.1-tiny", 256)])
def test_prompts_through_load_model_offline_reuse_one_embedding(name, side, weights_home, no_network, monkeypatch):
    from models.ultralytics_sam import UltralyticsSamModel

    monkeypatch.setattr(UltralyticsSamModel, "image_side", side)  # MobileSAM at its own 1024 px, as the app runs it
    model = load_model(name, "cpu", allow_download=False)
    sam = model.model
    img = _image()
    boxes = np.array([[5, 5, 30, 30], [40, 20, 75, 60]], np.float32)
    points = np.array([[10, 10], [50, 40], [70, 5]], np.float32)
    first = model.predict(img, boxes=boxes)
    second = model.predict(img, points=points)
    both = model.predict(img, boxes=boxes, points=points)
    assert sam.encoder_runs == 1  # one image: the encoder ran once for every prompt
    from ultralytics.models.sam.predict import Predictor

    calls, decode = [], Predictor.inference_features
    monkeypatch.setattr(Predictor, "inference_features", lambda self, *a, **k: calls.append(k) or decode(self, *a, **k))
    monkeypatch.setattr("models.ultralytics_sam.PROMPTS_PER_BATCH", 2)
    chunked = model.predict(img, boxes=boxes, points=points)
    assert [len(next(iter(k.values()))) for k in calls] == [2, 2, 1]  # boxes, then points, 2 at a time
    np.testing.assert_array_equal(chunked.labels, both.labels)
    model.predict(_image(1), boxes=boxes)
    assert sam.encoder_runs == 2
    for result, prompts in ((first, 2), (second, 3), (both, 5)):
        assert result.labels.shape == (64, 80) and result.labels.dtype == np.int32 and not result.box_only
        assert 0 < result.count <= prompts and result.count == result.labels.max() == len(result.scores)
        assert result.boxes.shape == (result.count, 4) and result.model == name
    assert no_network == []


@pytest.mark.parametrize("name", MODELS)
def test_automatic_mode_gives_a_label_image_without_the_background(name, weights_home, monkeypatch):
    from ultralytics.models.sam.predict import Predictor

    found = []  # the masks ultralytics returns, before the adapter drops the background
    postprocess = Predictor.postprocess
    monkeypatch.setattr(Predictor, "postprocess", lambda self, *a: found.append(r := postprocess(self, *a)) or r)
    sam = load_model(name, "cpu").model
    img = _image(2, (96, 128))
    result = sam.predict(img, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                         min_mask_region_area=0)
    assert result.labels.shape == (96, 128) and result.labels.dtype == np.int32
    areas = found[0][0].masks.data.sum((1, 2)).numpy() if found[0][0].masks is not None else np.zeros(0)
    assert len(areas) > 0  # the scaled random decoder gives masks: the test sees them pass or not
    small = areas < 0.25 * 96 * 128
    assert result.count == result.labels.max() <= small.sum()  # masks over a quarter of the field are dropped
    assert (result.count < len(areas)) == (~small).any()
    assert sam.encoder_runs == 1


def test_automatic_mode_needs_its_settings_and_they_are_checked(weights_home):
    info = get_model_info("mobilesam")
    assert info.settings == get_model_info("sam-vitb").settings  # one family, one meaning per setting name
    with pytest.raises(ValueError, match="points_per_side must be one of 8, 16, 24, 32, 48, 64; got 5"):
        info.resolve({"points_per_side": 5})
    with pytest.raises(ValueError, match="pred_iou_thresh must be between 0"):
        info.resolve({"pred_iou_thresh": 1.5})
    with pytest.raises(ValueError, match="mobilesam has no setting 'points_per_sid'"):
        info.resolve({"points_per_sid": 8})
    sam = load_model("mobilesam").model
    with pytest.raises(ValueError, match="automatic masks need every setting of points_per_side"):
        sam.predict(_image(), points_per_side=8)


def test_weights_are_downloads_named_as_ultralytics_names_them(tmp_path, monkeypatch):
    expected = {"sam2.1-tiny": "sam2.1_t.pt", "sam2.1-small": "sam2.1_s.pt", "mobilesam": "mobile_sam.pt",
                "yolo11s-nuclei+mobilesam": "mobile_sam.pt", "classical+mobilesam": "mobile_sam.pt"}
    for name, filename in expected.items():
        spec = get_model_info(name).weights
        assert spec.filename == filename and spec.license == "Apache-2.0" and spec.sha256 is None
        assert spec.url == f"https://github.com/ultralytics/assets/releases/download/v8.4.0/{filename}"
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))  # an empty weights folder
    ok, why = availability("mobilesam")
    assert not ok and why == f"needs mobile_sam.pt (41 MB): downloaded on first use, or place it at {tmp_path / 'mobile_sam.pt'}"
    with pytest.raises(WeightsUnavailable, match=r"mobile_sam.pt is not downloaded yet .*copy it to "
                                                 + str(tmp_path / "mobile_sam.pt")):
        load_model("mobilesam", allow_download=False)


def test_offline_download_says_what_to_place_where_and_keeps_no_part(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match=r"could not download sam2.1_t.pt from https://github.com/ultralytics"
                                                 r".*no internet.*To add it without internet"):
        load_model("sam2.1-tiny")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_weights_file_is_named_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "mobile_sam.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'mobile_sam.pt'} could not be loaded as mobile_sam.pt .*"
                                         "delete it to download it again"):
        load_model("mobilesam")


def test_detector_boxes_prompt_mobilesam(weights_home, training_example):
    img = training_example[0]
    combo = load_model("classical+mobilesam", "cpu")
    result = combo.predict(img)
    n_boxes = int(result.notes[0].split()[0])
    assert n_boxes > 0 and result.notes[0].endswith("boxes from classical")
    assert result.model == "classical+mobilesam" and 0 < result.count <= n_boxes
    assert result.labels.shape == img.shape[:2] and result.labels.dtype == np.int32
    assert "yolo11s-nuclei+mobilesam" in [m.name for m in registry.list_models("segment")]


def test_prompt_view_lists_every_prompted_sam_smallest_first_and_runs_the_new_ones(weights_home):
    """The Compare page's Prompt SAM tab: every model taking points and boxes, sizes from the registry;
    it starts with the smallest whose weights are here, and runs it."""
    at = open_page("pages/compare.py")
    at.session_state["cmp.tab"] = "Prompt SAM"
    at.run()
    box = at.selectbox(key="cmp.sam_model")
    assert box.options == ["mobilesam (41 MB)", "sam2.1-tiny (78 MB)", "sam2.1-small (92 MB) (needs weights)",
                           "sam-vitb (375 MB) (needs weights)", "sam-vitl (1,250 MB) (needs weights)",
                           "sam-vith (2,560 MB) (needs weights)"]
    assert box.value == "mobilesam" and "mobilesam 41 MB, sam2.1-tiny 78 MB" in box.help
    assert any("MobileSAM (10 M parameters" in c.value for c in at.caption)
    at.number_input(key="cmp.px").set_value(100).run()
    at.button(key="cmp.add_point").click().run()
    caps = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert any("from 1 points and 0 boxes" in c for c in caps), caps
    at.selectbox(key="cmp.sam_model").set_value("sam2.1-tiny").run()
    caps = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert any("from 1 points and 0 boxes" in c and "on cpu" in c for c in caps) and not at.exception
    at.selectbox(key="cmp.sam_model").set_value("sam2.1-small").run()
    assert [b.key for b in at.button if ".dl." in (b.key or "")] == ["cmp.sam.dl.sam2.1_s.pt"]


def test_random_weights_for_offline_benchmarks_load_through_the_models_own_builder(tmp_path):
    """benchmarks/bench_models.py measures a model whose weights are not here with the registry's random_weights."""
    info = get_model_info("mobilesam")
    path = tmp_path / info.weights.filename
    info.random_weights(path)
    model = info.builder(path, "cpu")
    assert model.name == "mobilesam" and path.stat().st_size > 10e6
