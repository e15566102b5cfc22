"""models/: weights resolution and download, the registry, the adapters, the result type."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from core.data.instances import Instances, boxes_from_labels, labels_from_boxes
from models import weights as W
from models.registry import availability, get_model_info, list_models, load_model
from models.weights import WeightsSpec, WeightsUnavailable, resolve_weights


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture
def remote_file(tmp_path):
    """A 'remote' checkpoint served through a file:// URL: the real urllib download path."""
    data = np.random.default_rng(0).bytes(3 * 2**20 + 123)
    src = tmp_path / "remote" / "model.pt"
    src.parent.mkdir()
    src.write_bytes(data)
    spec = WeightsSpec("test-model", "model.pt", src.as_uri(), hashlib.sha256(data).hexdigest(), len(data),
                       "MIT", "nothing", "a test")
    return spec, data


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server for the download code: ``serve(data, cut=None)`` -> URL; with ``cut`` the
    server announces the whole length, sends ``cut`` bytes and hangs up (a dropped connection)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    files: dict[str, tuple[bytes, int | None]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path not in files:
                self.send_error(404)
                return
            data, cut = files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data if cut is None else data[:cut])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(name: str, data: bytes, cut: int | None = None) -> str:
        files[f"/{name}"] = (data, cut)
        return f"http://127.0.0.1:{server.server_port}/{name}"

    yield serve
    server.shutdown()


def test_download_over_http_verifies_and_a_dropped_connection_keeps_nothing(weights_home, remote_file, file_server):
    spec, data = remote_file
    seen = []
    path = resolve_weights(replace(spec, url=file_server("model.pt", data)),
                           progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == data and seen[-1] == (len(data), len(data))
    path.unlink()
    dropped = replace(spec, url=file_server("cut.pt", data, cut=len(data) // 2))
    with pytest.raises(WeightsUnavailable, match=r"the connection dropped after 1\.6 of 3\.1 MB \(nothing kept\)"):
        resolve_weights(dropped)
    assert list(weights_home.iterdir()) == []  # no partial file kept, under any name
    unchecked = replace(dropped, sha256=None)  # without a checksum the length still catches a cut download
    with pytest.raises(WeightsUnavailable, match="the connection dropped"):
        resolve_weights(unchecked)
    assert list(weights_home.iterdir()) == []
    missing = replace(spec, url=file_server("x", b"")[:-1] + "gone.pt")
    with pytest.raises(WeightsUnavailable, match=r"gone.pt \(HTTP 404 Not Found\)"):
        resolve_weights(missing)


def test_the_cli_says_what_it_downloads_before_it_does(weights_home, remote_file, file_server, monkeypatch, capsys):
    from models import registry
    from models.registry import ModelInfo
    from workflows.cli.inputs import fetch_weights

    spec, data = remote_file
    spec = replace(spec, url=file_server("model.pt", data), license="CC-BY-NC-4.0")
    monkeypatch.setitem(registry._REGISTRY, "remote-model", ModelInfo(
        "remote-model", "classical", "a test", spec, False, lambda path, device: None))
    fetch_weights(["remote-model", "classical"])
    err = capsys.readouterr().err
    assert err.startswith(f"downloading model.pt (3 MB; licence CC-BY-NC-4.0; trained on nothing; checked against "
                          f"SHA-256 {spec.sha256[:12]}…) from {spec.url}")
    assert (weights_home / "model.pt").read_bytes() == data
    fetch_weights(["remote-model"])  # here now: nothing said, nothing fetched
    assert capsys.readouterr().err == ""


def test_download_verifies_and_reports_progress(weights_home, remote_file):
    spec, data = remote_file
    seen = []
    path = resolve_weights(spec, progress=lambda done, total: seen.append((done, total)))
    assert path == weights_home / "model.pt" and path.read_bytes() == data
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 3
    assert list(weights_home.glob("*.part")) == []
    # second time: found locally, no download
    assert resolve_weights(replace(spec, url="http://127.0.0.1:9/never")) == path


def test_checksum_mismatch_is_refused_and_leaves_nothing(weights_home, remote_file):
    spec, _ = remote_file
    bad = replace(spec, sha256="0" * 64)
    with pytest.raises(WeightsUnavailable, match="checksum"):
        resolve_weights(bad)
    assert not (weights_home / "model.pt").exists() and list(weights_home.glob("*.part")) == []


def test_offline_message_names_the_file_and_where_to_put_it(weights_home, remote_file):
    spec, _ = remote_file
    offline = replace(spec, url="http://127.0.0.1:9/model.pt")  # nothing listens on port 9
    with pytest.raises(WeightsUnavailable) as err:
        resolve_weights(offline)
    message = str(err.value)
    assert "could not download model.pt from http://127.0.0.1:9/model.pt" in message
    assert spec.name not in message  # the file name the user sees, not our internal id
    assert str(weights_home / "model.pt") in message
    with pytest.raises(WeightsUnavailable, match="not downloaded yet"):
        resolve_weights(spec, allow_download=False)


def test_placed_file_is_used_and_checksum_remembered(weights_home, remote_file, monkeypatch):
    spec, data = remote_file
    weights_home.mkdir(parents=True)
    (weights_home / "model.pt").write_bytes(data)
    calls = {"n": 0}
    real = W.sha256_of

    def counting(path, chunk=1 << 20):
        calls["n"] += 1
        return real(path, chunk)

    monkeypatch.setattr(W, "sha256_of", counting)
    offline = replace(spec, url=None)
    assert resolve_weights(offline) == weights_home / "model.pt"
    assert resolve_weights(offline) == weights_home / "model.pt"
    assert calls["n"] == 1  # hashed once, then the marker vouches for it
    (weights_home / "model.pt").write_bytes(b"tampered")
    with pytest.raises(WeightsUnavailable, match="does not match the expected checksum"):
        resolve_weights(offline)


def test_registry_lists_models_and_reports_availability():
    names = [m.name for m in list_models()]
    assert {"classical", "yolo11n-nuclei", "yolo11s-nuclei", "maskrcnn-coco", "fasterrcnn-coco"} <= set(names)
    assert availability("classical") == (True, "no weights needed")
    ok, why = availability("yolo11n-nuclei")
    assert ok and why.startswith("weights at ") and why.endswith("ND_v11n.pt")  # shipped in napari-nuclephaser
    with pytest.raises(ValueError, match="unknown model 'nope'; available: .*classical"):
        get_model_info("nope")


def test_missing_weights_make_a_model_unavailable_with_the_file_to_place(weights_home, monkeypatch):
    info = get_model_info("yolo11n-nuclei")
    missing = replace(info.weights, package_file=("no-such-distribution", "x.pt"))
    from models import registry

    monkeypatch.setitem(registry._REGISTRY, "yolo11n-nuclei", replace(info, weights=missing))
    ok, why = availability("yolo11n-nuclei")
    assert not ok and why == f"ND_v11n.pt is not here. {W.offline_advice(weights_home / 'ND_v11n.pt')}"
    with pytest.raises(WeightsUnavailable, match="ND_v11n.pt"):
        load_model("yolo11n-nuclei")


def test_every_offline_message_says_who_places_which_file_where(weights_home, remote_file, monkeypatch):
    """Defect: "Offline, download it elsewhere and place it in <folder>" read as if the user were at
    the machine; in a browser on a lab server only whoever runs the server can place a file. The
    download failure, the no-download case, a file with no address and the registry's line all carry
    the one wording, with the file's full path and the setting that moves the folder."""
    spec, _ = remote_file
    dest = weights_home / "model.pt"
    advice = W.offline_advice(dest)
    assert str(dest) in advice and "whoever runs the server" in advice and "CELLSCOPE_WEIGHTS_DIR" in advice
    messages = []
    for kwargs, broken in (({}, replace(spec, url="http://127.0.0.1:9/model.pt")), ({"allow_download": False}, spec),
                           ({}, replace(spec, url=None))):
        with pytest.raises(WeightsUnavailable) as err:
            resolve_weights(broken, **kwargs)
        messages.append(str(err.value))
    info = get_model_info("yolo11n-nuclei")
    from models import registry

    monkeypatch.setitem(registry._REGISTRY, "yolo11n-nuclei", replace(info, weights=replace(
        info.weights, package_file=("no-such-distribution", "x.pt"))))
    line = availability("yolo11n-nuclei")[1]
    assert all(advice in m for m in messages), messages
    assert W.offline_advice(weights_home / "ND_v11n.pt") in line
    assert all("elsewhere and place" not in m for m in [*messages, line])


def test_classical_adapter_matches_the_pipeline(example_images):
    from core.segmentation.preprocess import run_pipeline

    img = example_images[0]
    result = load_model("classical").predict(img)
    assert isinstance(result, Instances) and not result.box_only
    np.testing.assert_array_equal(result.labels, run_pipeline(img.pixels, img.channels).labels)
    assert result.count == result.labels.max() == len(result.scores)


def test_yolo_nuclei_detector_runs_offline_on_the_cpu(example_images):
    img = example_images[0]
    result = load_model("yolo11n-nuclei", "cpu").predict(img, conf=0.2)
    assert result.box_only and result.class_names == ("Nucleus",) and result.device == "cpu"
    assert 10 <= result.count <= 150
    assert result.labels.shape == img.gt.shape and result.labels.max() <= result.count
    assert np.all(np.diff(result.scores) <= 0)  # best first
    x0, y0, x1, y1 = result.boxes.T
    assert np.all(x1 > x0) and np.all(y1 > y0) and x1.max() <= 512 + 1


def test_boxes_and_labels_round_trip():
    labels = np.zeros((30, 40), np.int32)
    labels[2:10, 5:12] = 1
    labels[15:25, 20:38] = 2
    boxes = boxes_from_labels(labels)
    np.testing.assert_array_equal(boxes, [[5, 2, 12, 10], [20, 15, 38, 25]])
    np.testing.assert_array_equal(labels_from_boxes(boxes, labels.shape), labels)
    overlap = labels_from_boxes(np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32), (20, 20), np.array([0.9, 0.5]))
    assert overlap[7, 7] == 1  # the higher score wins the overlap


def test_coco_weights_described_here_match_torchvision():
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_V2_Weights

    from models.rcnn import COCO_WEIGHTS

    for spec, tv in ((COCO_WEIGHTS["maskrcnn"], MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
                     (COCO_WEIGHTS["fasterrcnn"], FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1)):
        assert spec.url == tv.url and spec.filename == tv.url.rsplit("/", 1)[1]
        assert f"-{spec.sha256}." in spec.filename  # torchvision's hash-prefix convention


def test_offline_rcnn_is_unavailable_and_names_the_download(weights_home):
    ok, why = availability("maskrcnn-coco")
    assert not ok and "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth (177 MB)" in why and str(weights_home) in why


@pytest.mark.parametrize("kind", ["maskrcnn", "fasterrcnn"])
def test_rcnn_checkpoint_loads_through_the_user_path_and_predicts(weights_home, monkeypatch, kind):
    """A real architecture with random weights, saved as a Train-page style checkpoint, loaded
    by the same registry path users take."""
    import torch

    from models import registry
    from models.rcnn import RCNN_SETTINGS, RcnnModel, build_rcnn
    from models.registry import ModelInfo

    torch.manual_seed(0)
    model = build_rcnn(kind, num_classes=2, min_size=96, max_size=96)
    model.roi_heads.score_thresh = 0.0
    weights_home.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epochs": 0}, weights_home / f"{kind}_cells.pth")
    spec = WeightsSpec(f"{kind}-cells", f"{kind}_cells.pth", None, None, None, "ours", "nothing yet", "test")
    info = ModelInfo(f"{kind}-cells", "rcnn", "test", spec, kind == "fasterrcnn",
                     lambda path, device: RcnnModel(f"{kind}-cells", kind, path, device, min_size=96, max_size=96),
                     RCNN_SETTINGS)
    monkeypatch.setitem(registry._REGISTRY, info.name, info)
    from core.data.images import CellImage, default_channels

    img = CellImage("x", np.random.default_rng(1).integers(0, 4000, (96, 96, 1)).astype(np.uint16), default_channels(1))
    loaded = load_model(info.name, "cpu")
    loaded.model._model.roi_heads.score_thresh = 0.0  # random weights: keep every proposal so there is output
    result = loaded.predict(img, score_threshold=0.0)
    assert result.labels.shape == (96, 96) and result.box_only == (kind == "fasterrcnn")
    assert result.count == len(result.scores) > 0 and result.boxes.shape == (result.count, 4)
    assert result.labels.max() <= result.count


def test_user_yolo_segmentation_weights_in_the_weights_folder_become_a_model(weights_home, example_images):
    from ultralytics import YOLO

    (weights_home / "yolo").mkdir(parents=True)
    YOLO("yolo11n-seg.yaml").save(weights_home / "yolo" / "my-cells.pt")  # real architecture, random weights
    info = get_model_info("user:my-cells")
    assert info.family == "yolo" and "user:my-cells" in [m.name for m in list_models()]
    assert availability("user:my-cells")[0]
    result = load_model("user:my-cells").predict(example_images[0].with_(pixels=example_images[0].pixels[:128, :128], gt=None),
                                                conf=0.0)
    assert not result.box_only and result.labels.shape == (128, 128)
    assert result.labels.max() == result.count == len(result.scores) and result.count > 0
    np.testing.assert_array_equal(result.boxes, boxes_from_labels(result.labels))


def test_official_yolo11_weights_are_downloads_listed_as_unavailable_offline(weights_home):
    for name, box_only in (("yolo11n-coco", True), ("yolo11n-seg-coco", False)):
        info = get_model_info(name)
        assert info.box_only == box_only and info.weights.url.startswith("https://github.com/ultralytics/assets/")
        ok, why = availability(name)
        assert not ok and str(weights_home / info.weights.filename) in why


def test_labels_from_masks_keeps_the_confident_mask_on_top_and_drops_hidden_ones():
    from core.data.instances import labels_from_masks

    masks = np.zeros((3, 10, 10), bool)
    masks[0, 0:6, 0:6] = True  # score 0.5
    masks[1, 3:9, 3:9] = True  # score 0.9: wins the overlap
    masks[2, 4:6, 4:6] = True  # score 0.1: entirely under the other two
    labels, boxes, scores = labels_from_masks(masks, np.array([0.5, 0.9, 0.1]))
    np.testing.assert_allclose(scores, [0.9, 0.5])
    assert labels[4, 4] == 1 and labels[0, 0] == 2 and labels.max() == 2
    np.testing.assert_array_equal(boxes, [[3, 3, 9, 9], [0, 0, 6, 6]])
    empty, no_boxes, no_scores = labels_from_masks(np.zeros((0, 4, 5), bool), np.zeros(0))
    assert empty.shape == (4, 5) and not empty.any() and no_boxes.shape == (0, 4) and len(no_scores) == 0


def test_settings_are_data_defaults_come_from_the_registry_and_a_misspelt_one_is_refused():
    info = get_model_info("yolo11n-nuclei")
    assert info.task == "segment" and info.params == ("conf", "iou")
    assert info.resolve({}) == {"conf": 0.25, "iou": 0.5}
    assert info.resolve({"conf": 0.3}) == {"conf": 0.3, "iou": 0.5}
    with pytest.raises(ValueError, match="has no setting 'confidence'; its settings: conf, iou"):
        info.resolve({"confidence": 0.3})
    with pytest.raises(ValueError, match="conf must be between 0 and 1; got"):
        info.resolve({"conf": 2})
    sam = get_model_info("sam-vitb")
    assert sam.resolve({"points": [(1, 2)]})["points"] == [(1, 2)] and sam.resolve({})["points_per_side"] == 32
    with pytest.raises(ValueError, match="points_per_side must be one of"):
        sam.resolve({"points_per_side": 33})
    assert get_model_info("classical+sam-vitb").settings == get_model_info("classical").settings


def test_adapters_refuse_unknown_settings_and_need_their_settings(example_images):
    img = example_images[0]
    with pytest.raises(ValueError, match="has no setting 'treshold'"):
        load_model("classical").predict(img, treshold=0.5)
    raw = load_model("classical").model
    with pytest.raises(TypeError):
        raw.predict(img, recipe=None, treshold=0.5)  # no **_ that would swallow it
    with pytest.raises(TypeError):
        raw.predict(img)  # the default lives in the registry, not in the adapter


def test_models_are_listed_by_task_and_a_setting_name_has_one_meaning_per_family(monkeypatch):
    from models import registry
    from models.registry import ModelInfo, Setting, register_model, setting_key

    assert {m.task for m in list_models("segment")} == {"segment"}
    assert "classical" in [m.name for m in list_models("segment")]
    other = Setting("conf", "Other confidence", 0.9, "means something else", low=0, high=1, step=0.1)
    clash = ModelInfo("clash", "yolo", "test", None, False, lambda p, d: None, (other,))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="setting 'conf' differs from .* in family yolo"):
        register_model(clash)
    # In another family the name may mean something else: both families' widgets are then keyed by family.
    elsewhere = register_model(ModelInfo("elsewhere", "unet", "test", None, False, lambda p, d: None, (other,)))
    yolo = get_model_info("yolo11n-nuclei")
    assert setting_key(elsewhere, other) == "unet.conf" and setting_key(yolo, yolo.settings[0]) == "yolo.conf"
    assert setting_key(yolo, yolo.settings[1]) == "iou"  # a name only one meaning uses keeps its plain key
    with pytest.raises(ValueError, match="task must be one of"):
        ModelInfo("bad", "x", "test", None, False, lambda p, d: None, task="draw")


def test_every_model_has_a_registered_family_and_no_table_outside_it_names_families():
    import re
    from pathlib import Path

    from models.registry import families, family_of

    assert [f.name for f in families() if "segment" in f.tasks] == ["classical", "yolo", "rcnn", "cellpose", "instanseg", "sam",
                                                                   "unet"]
    assert all(family_of(m) is not None for m in list_models()), [m.name for m in list_models() if not family_of(m)]
    root = Path(__file__).resolve().parents[1]
    for path in [p for part in ("core", "models", "workflows", "components", "pages") for p in (root / part).rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"family\s*(==|!=|in|not in)\s*[\"'{(\[]", text), path  # family == "yolo", family in {...}
        assert not re.search(r"\b[A-Z_]+\s*(:[^=\n]+)?=\s*\{\s*\"(yolo|rcnn|unet|sam|classical)\"\s*:", text), path
        assert "import_module" not in text, path  # functions are referenced, not named as strings
