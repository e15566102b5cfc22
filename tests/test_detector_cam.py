"""models/detector_cam.py: detector CAMs on real architectures with random weights (offline, small),
and one known answer with the shipped nuclei detector."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from core.data.images import CellImage, default_channels, nucleus_plane
from models import detector_cam as dc
from models.detector_cam import cam_layers, cam_methods, detector_cam, draw_detector_cam, highlighted
from models.registry import LoadedModel, ModelInfo, get_model_info, load_model


def _yolo(tmp_path_factory, config: str) -> LoadedModel:
    from ultralytics import YOLO

    from models.yolo import YOLO_SETTINGS, YoloModel

    path = tmp_path_factory.mktemp("yolo") / "random.pt"
    YOLO(config).save(path)  # the real architecture, random weights
    info = ModelInfo(f"test-{config}", "yolo", "test", None, False, lambda p, d: None, YOLO_SETTINGS)
    return LoadedModel(YoloModel(info.name, str(path), "cpu"), info, shared=True)


def _rcnn(tmp_path_factory, kind: str) -> LoadedModel:
    import torch

    from models.rcnn import RCNN_SETTINGS, RcnnModel, build_rcnn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(kind) / "random.pth"
    torch.save(build_rcnn(kind, 2, min_size=64, max_size=96).state_dict(), path)
    info = ModelInfo(f"test-{kind}", "rcnn", "test", None, kind == "fasterrcnn", lambda p, d: None, RCNN_SETTINGS)
    loaded = LoadedModel(RcnnModel(info.name, kind, path, "cpu", min_size=64, max_size=96), info, shared=True)
    net = loaded.model._model
    net.roi_heads.score_thresh = 0.0  # random weights: keep every proposal so there is something to explain
    net.rpn._pre_nms_top_n["testing"], net.rpn._post_nms_top_n["testing"] = 100, 20  # ~10x faster on 2 cores
    net.roi_heads.detections_per_img = 8
    return loaded


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, LoadedModel]:
    return {"yolo-detect": _yolo(tmp_path_factory, "yolo11n.yaml"), "yolo-segment": _yolo(tmp_path_factory, "yolo11n-seg.yaml"),
            "fasterrcnn": _rcnn(tmp_path_factory, "fasterrcnn"), "maskrcnn": _rcnn(tmp_path_factory, "maskrcnn")}


@pytest.fixture(scope="module")
def noise() -> CellImage:
    """Not square and not a multiple of 32: the YOLO letterbox and the R-CNN padding must be cut off."""
    pixels = np.random.default_rng(1).integers(0, 4000, (70, 100, 1)).astype(np.uint16)
    return CellImage("noise", pixels, default_channels(1))


def _net(loaded: LoadedModel):
    adapter = loaded.model
    if loaded.info.family == "yolo":
        backend = adapter._model.predictor.model
        return getattr(backend, "backend", backend).model
    return adapter._model


def _state(net) -> tuple:
    """Everything a CAM could leave behind on a network: hooks, train flags, requires_grad, .grad."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for m in net.modules())
    return (hooks, tuple(m.training for m in net.modules()), tuple(p.requires_grad for p in net.parameters()),
            sum(p.grad is not None for p in net.parameters()))


def _loose(settings_for: str) -> dict:
    return {"conf": 0.0} if settings_for.startswith("yolo") else {"score_threshold": 0.0}


CASES = [("yolo-detect", "eigencam", "model.22"), ("yolo-segment", "eigencam", "model.22"),
         ("fasterrcnn", "eigencam", "backbone"), ("fasterrcnn", "gradcam", "backbone.fpn.layer_blocks.0"),
         ("maskrcnn", "eigencam", "backbone"), ("maskrcnn", "gradcam", "backbone.fpn.layer_blocks.0")]


@pytest.mark.parametrize(("name", "method", "layer"), CASES)
def test_every_family_and_method_maps_the_whole_image_and_leaves_the_model_as_it_was(models, noise, name, method,
                                                                                      layer):
    loaded = models[name]
    before = loaded.predict(noise, **_loose(name))
    state = _state(_net(loaded))
    assert state[0] == 0 and state[3] == 0
    result = detector_cam(loaded, noise, method=method, **_loose(name))
    assert result.cam.shape == (70, 100) and result.cam.dtype == np.float32 and np.isfinite(result.cam).all()
    assert result.cam.min() == 0.0 and 0.99 <= result.cam.max() <= 1.0  # min-max normalised, not blank
    assert (result.method, result.layer, result.detection, result.targeted) == (method, layer, None, method == "gradcam")
    assert result.instances.count == before.count > 0 and result.seconds > 0
    assert _state(_net(loaded)) == state  # no hook left, train flags, requires_grad and .grad as they were
    after = loaded.predict(noise, **_loose(name))
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_allclose(after.boxes, before.boxes)
    np.testing.assert_allclose(after.scores, before.scores)


def test_the_nuclei_detector_looks_at_the_nuclei(example_images):
    """Known answer: the shipped detector's Eigen-CAM is brighter inside its boxes than between them."""
    image = example_images[0]
    result = detector_cam(load_model("yolo11n-nuclei"), image)
    inside = np.zeros(result.cam.shape, bool)
    for x0, y0, x1, y1 in np.round(result.boxes).astype(int):
        inside[y0:y1, x0:x1] = True
    assert result.instances.count >= 10 and result.cam.shape == image.pixels.shape[:2]
    assert result.cam[inside].mean() > 2 * result.cam[~inside].mean()


def test_gradcam_explains_the_chosen_box_and_eigencam_is_the_same_for_every_choice(models, noise):
    rcnn, yolo = models["fasterrcnn"], models["yolo-detect"]
    boxes = rcnn.predict(noise, score_threshold=0.0).boxes
    far = int(np.argmax(np.linalg.norm(boxes[:, :2] - boxes[0, :2], axis=1)))  # the box farthest from the first
    first = detector_cam(rcnn, noise, method="gradcam", detection=0, score_threshold=0.0)
    other = detector_cam(rcnn, noise, method="gradcam", detection=far, score_threshold=0.0)
    assert first.targeted and first.detection == 0 and other.detection == far
    assert np.abs(first.cam - other.cam).mean() > 0.05
    every = detector_cam(yolo, noise, conf=0.0)
    chosen = detector_cam(yolo, noise, detection=2, conf=0.0)
    np.testing.assert_array_equal(every.cam, chosen.cam)
    assert not chosen.targeted and every.notes == () and "same for every detection" in chosen.notes[0]
    again = highlighted(every, 2)  # the page's shortcut: no second pass for an untargeted map
    np.testing.assert_array_equal(again.cam, chosen.cam)
    assert again.detection == 2 and again.notes == chosen.notes
    with pytest.raises(ValueError, match="depends on its detection"):
        highlighted(first, far)
    with pytest.raises(ValueError, match="does not exist"):
        highlighted(every, every.instances.count)


def test_gradcam_reads_the_fpn_level_of_the_boxes(models, noise):
    """Box scores reach the features only through the level torchvision's RoI pooler reads: for
    these small boxes P2. The automatic choice finds it; P5 has no gradient, so an empty map."""
    rcnn = models["fasterrcnn"]
    assert detector_cam(rcnn, noise, method="gradcam", score_threshold=0.0).layer == "backbone.fpn.layer_blocks.0"
    p5 = detector_cam(rcnn, noise, method="gradcam", layer="backbone.fpn.layer_blocks.3", score_threshold=0.0)
    assert p5.layer == "backbone.fpn.layer_blocks.3" and not p5.cam.any()


@pytest.mark.parametrize(("name", "method", "patch"), [
    ("yolo-detect", "eigencam", "numpy.linalg.svd"),
    ("fasterrcnn", "gradcam", "pytorch_grad_cam.grad_cam.GradCAM.get_cam_weights"),
])
def test_hooks_are_released_and_the_model_restored_when_the_cam_fails(models, noise, monkeypatch, name, method, patch):
    loaded = models[name]
    loaded.predict(noise, **_loose(name))
    state = _state(_net(loaded))

    def fail(*args, **kwargs):
        raise IndexError("boom")  # the one error pytorch-grad-cam's own __exit__ would swallow

    monkeypatch.setattr(patch, fail)
    with pytest.raises(IndexError, match="boom"):
        detector_cam(loaded, noise, method=method, **_loose(name))
    assert _state(_net(loaded)) == state
    assert not loaded._lock.locked() and not dc._adapter_lock(loaded.model).locked()


def test_what_has_no_cam_is_refused_naming_what_has(models, noise):
    supported = r"Detector CAMs exist for yolo \(eigencam\); rcnn \(eigencam, gradcam\)"
    with pytest.raises(ValueError, match=f"classical: the classical pipeline .* no network to explain. {supported}"):
        detector_cam(load_model("classical"), noise)
    sam = LoadedModel(SimpleNamespace(name="sam-vitb", device="cpu"), get_model_info("sam-vitb"))
    with pytest.raises(ValueError, match=f"sam-vitb: Segment Anything .* no detector CAM. {supported}"):
        detector_cam(sam, noise)
    assert cam_methods(sam) == () and cam_methods(models["maskrcnn"]) == ("eigencam", "gradcam")
    with pytest.raises(ValueError, match=r"test-yolo11n.yaml \(yolo\) supports eigencam; got 'gradcam'"):
        detector_cam(models["yolo-detect"], noise, method="gradcam")
    with pytest.raises(ValueError, match="has no setting 'confidence'"):
        detector_cam(models["yolo-detect"], noise, confidence=0.1)
    with pytest.raises(ValueError, match="no layer 'model.99' in this network; for example: model.22, model.16"):
        detector_cam(models["yolo-detect"], noise, layer="model.99")
    with pytest.raises(ValueError, match="Grad-CAM needs a layer with one tensor out; 'backbone' returns a dict"):
        detector_cam(models["fasterrcnn"], noise, method="gradcam", layer="backbone", score_threshold=0.0)


def test_a_detection_that_does_not_exist_is_refused_and_none_found_is_said(models, noise):
    yolo, rcnn = models["yolo-detect"], models["fasterrcnn"]
    count = yolo.predict(noise, conf=0.0).count
    for bad in (count, -1, 1.0):
        with pytest.raises(ValueError, match=f"detection {bad!r} does not exist: this image has {count} detections "
                                             f"\\(0 to {count - 1}\\)"):
            detector_cam(yolo, noise, detection=bad, conf=0.0)
    with pytest.raises(ValueError, match="detection 0 does not exist: this image has no detections at these settings"):
        detector_cam(yolo, noise, detection=0, conf=1.0)
    # Eigen-CAM needs no target: still a map; Grad-CAM has nothing to explain: an empty map and why
    eigen = detector_cam(yolo, noise, conf=1.0)
    assert eigen.instances.count == 0 and eigen.cam.max() > 0.99
    grad = detector_cam(rcnn, noise, method="gradcam", score_threshold=1.0)
    assert grad.instances.count == 0 and grad.cam.shape == (70, 100) and not grad.cam.any()
    assert "no detections at these settings: Grad-CAM has no box to explain" in grad.notes[0]


def test_layers_are_listed_default_first_and_a_chosen_one_is_used(models, noise):
    yolo = models["yolo-detect"]
    assert list(cam_layers(yolo)) == ["model.22", "model.16", "model.19"]
    assert list(cam_layers(models["fasterrcnn"], "gradcam"))[:2] == ["auto", "backbone.fpn.layer_blocks.0"]
    assert list(cam_layers(models["fasterrcnn"]))[0] == "backbone"
    fine = detector_cam(yolo, noise, layer="model.16", conf=0.0)
    assert fine.layer == "model.16" and fine.cam.shape == (70, 100)
    assert not np.array_equal(fine.cam, detector_cam(yolo, noise, conf=0.0).cam)
    state = _state(_net(yolo))
    big = CellImage("big", np.zeros((160, 160, 1), np.uint16), default_channels(1))
    with pytest.raises(ValueError, match="Eigen-CAM on this layer needs an SVD over 80 x 80 positions"):
        detector_cam(yolo, big, layer="model.0", conf=0.0)  # stride 2: a 6400 x 6400 matrix, refused
    assert _state(_net(yolo)) == state


def test_a_shared_model_is_hooked_by_one_caller_at_a_time_with_predictions_held_off(models, noise, monkeypatch):
    loaded = models["yolo-detect"]
    inside, most, lock_held = [0], [0], []
    real = dc._hooked

    def counting(*args, **kwargs):
        cm = real(*args, **kwargs)

        class Counted:
            def __enter__(self):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                lock_held.append(loaded._lock.locked())
                return cm.__enter__()

            def __exit__(self, *exc):
                inside[0] -= 1
                return cm.__exit__(*exc)

        return Counted()

    monkeypatch.setattr(dc, "_hooked", counting)
    threads = [threading.Thread(target=detector_cam, args=(loaded, noise), kwargs={"conf": 0.0}) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lock_held) == 4 and most[0] == 1 and all(lock_held)


def test_memory_stays_flat_over_repeated_cams(models, noise):
    import psutil

    process = psutil.Process()
    yolo, rcnn = models["yolo-detect"], models["fasterrcnn"]
    for _ in range(3):  # warm up: allocator pools, lazy imports
        detector_cam(yolo, noise, conf=0.0)
        detector_cam(rcnn, noise, method="gradcam", score_threshold=0.0)
    start = process.memory_info().rss
    for _ in range(20):
        detector_cam(yolo, noise, conf=0.0)
    for _ in range(5):
        detector_cam(rcnn, noise, method="gradcam", score_threshold=0.0)
    grown_mb = (process.memory_info().rss - start) / 2**20
    assert grown_mb < 40, f"RSS grew {grown_mb:.0f} MB over 25 CAMs"
    assert _state(_net(rcnn))[3] == 0  # no .grad kept on the shared weights (170 MB for a full-size R-CNN)


def test_the_overlay_blends_the_map_and_draws_the_boxes_the_chosen_one_highlighted(models, noise):
    result = detector_cam(models["yolo-detect"], noise, detection=1, conf=0.0)
    plane = nucleus_plane(noise)
    image_only = draw_detector_cam(noise, result, opacity=0.0)
    assert image_only.shape == (70, 100, 3) and image_only.dtype == np.uint8
    box_edges = np.zeros((70, 100), bool)
    for x0, y0, x1, y1 in np.round(result.boxes).astype(int):
        ring = np.zeros_like(box_edges)
        ring[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
        ring[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = False
        box_edges |= ring
    grey = np.uint8(255 * plane / plane.max())
    np.testing.assert_allclose(image_only[~box_edges], np.dstack([grey] * 3)[~box_edges], atol=1)
    x0, y0 = np.round(result.boxes[1, :2]).astype(int)
    assert tuple(image_only[y0, x0]) == (255, 0, 255)  # the chosen box, on top
    assert (np.all(image_only == 255, axis=2) & box_edges).any()  # the other boxes in white
    map_only = draw_detector_cam(noise, result, opacity=1.0)
    hot = np.unravel_index(np.argmax(np.where(box_edges, -1, result.cam)), result.cam.shape)
    assert map_only[hot][0] > 100 and map_only[hot][2] < 100  # the hottest point is red in JET
    with pytest.raises(ValueError, match="opacity must be between 0 and 1; got 1.5"):
        draw_detector_cam(noise, result, opacity=1.5)
    with pytest.raises(ValueError, match="not this image's CAM"):
        draw_detector_cam(noise.with_(pixels=noise.pixels[:50]), result)


def test_rcnn_eigencam_on_the_features_alone_equals_the_full_network(models, noise, monkeypatch):
    """Eigen-CAM skips the RPN and box head (they cannot change the backbone's activations)."""
    rcnn = models["maskrcnn"]
    fast = detector_cam(rcnn, noise, score_threshold=0.0)
    monkeypatch.setattr(dc, "_features_class", lambda: lambda net: net)
    np.testing.assert_array_equal(fast.cam, detector_cam(rcnn, noise, score_threshold=0.0).cam)
