"""core/training/yolo_dataset.py and models/yolo_training.py: the export to YOLO's format, offline
ultralytics training on tiny tiles, checkpoints, stopping and the registry entry."""

from __future__ import annotations

import json
import socket
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from core.data.instances import Instances
from core.evaluation.matching import validation_scores
from core.io.example import make_example_dataset
from core.training.yolo_dataset import export_yolo_dataset, object_polygons, polygon_mask, tile_origins
from models import yolo_training as Y
from models.checkpoint_file import metadata_path
from models.registry import get_model_info, list_models, load_model

TINY = Y.YoloTraining(epochs=6, batch_size=2, imgsz=96, lr=0.002, warmup_epochs=0, seed=1)


@pytest.fixture(scope="module")
def offline():
    """Every way out to the network raises, and each attempt is recorded."""
    attempts: list[str] = []

    def refuse(name):
        def call(*args, **kwargs):
            attempts.append(f"{name}{args[:2]}")
            raise OSError(f"network is unreachable ({name})")
        return call

    with pytest.MonkeyPatch.context() as mp:
        for owner, name in ((socket, "create_connection"), (socket, "getaddrinfo"), (socket.socket, "connect"),
                            (urllib.request, "urlopen")):
            mp.setattr(owner, name, refuse(name))
        yield attempts


@pytest.fixture(scope="module")
def trained(training_data, weights_home, offline):
    train, val, split = training_data
    epochs, messages = [], []
    result = Y.train_yolo_seg(train, val, out=Y.yolo_checkpoint_path("tiny-seg"), training=TINY, split=split,
                              on_epoch=epochs.append, progress=lambda f, m: messages.append((f, m)))
    return result, epochs, messages, list(offline)


# ------------------------------------------------------------------------------------ the export


def test_polygons_rasterise_back_to_the_masks(training_data):
    from core.evaluation.matching import iou_matrix

    train, _, _ = training_data
    for pair in train:
        polygons, dropped = object_polygons(pair.labels)
        ids = np.unique(pair.labels[pair.labels > 0])
        assert len(polygons) + dropped == len(ids) and dropped <= 1
        redrawn = np.zeros_like(pair.labels)
        for i, poly in enumerate(polygons):
            redrawn[polygon_mask(poly, pair.labels.shape) & (redrawn == 0)] = i + 1
        iou = iou_matrix(pair.labels, redrawn)[0]
        assert (iou.max(axis=1) > 0.8).sum() >= len(ids) - dropped  # every kept object, IoU > 0.8


def test_polygon_of_a_square_is_its_outline_and_draws_it_exactly():
    labels = np.zeros((40, 50), np.int32)
    labels[10:20, 5:25] = 3
    (poly,), dropped = object_polygons(labels)
    assert dropped == 0 and poly.shape == (4, 2)
    np.testing.assert_allclose(poly.min(0) * (50, 40), (5.5, 10.5))  # pixel centres of the corner pixels
    np.testing.assert_array_equal(polygon_mask(poly, labels.shape), labels == 3)


def test_export_writes_tiles_labels_and_a_data_yaml_ultralytics_accepts(training_data, tmp_path, offline):
    train, val, _ = training_data
    ds = export_yolo_dataset(train, val, tmp_path / "yolo", tile=64)
    assert tile_origins(96, 64) == [0, 32] and tile_origins(50, 64) == [0]
    assert ds.images == {"train": 4 * 4, "val": 2 * 4}  # 96 px images in 2 x 2 tiles of 64
    pngs = sorted((ds.root / "images" / "train").glob("*.png"))
    assert len(pngs) == 16 and len(list((ds.root / "labels" / "train").glob("*.txt"))) == 16
    tile = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert tile.shape == (64, 64) and tile.dtype == np.uint8
    np.testing.assert_array_equal(tile, (train[0].image[:64, :64, 0] * 255).astype(np.uint8))
    lines = (ds.root / "labels" / "train" / f"{pngs[0].stem}.txt").read_text().splitlines()
    assert lines and all(line.split()[0] == "0" and len(line.split()) % 2 == 1 for line in lines)
    coords = np.array([float(v) for line in lines for v in line.split()[1:]])
    assert 0 < coords.min() and coords.max() < 1
    assert sum(ds.objects.values()) >= sum(p.n_objects for p in (*train, *val))  # objects cut by overlaps count twice
    with Y.offline_ultralytics():  # sets YOLO_OFFLINE before ultralytics is imported
        from ultralytics.data.utils import check_det_dataset

        checked = check_det_dataset(str(ds.data_yaml))
    assert checked["nc"] == 1 and checked["names"] == {0: "cell"}
    assert checked["train"] == str(ds.root / "images" / "train")
    again = export_yolo_dataset(train[:1], val[:1], tmp_path / "yolo", tile=64)  # a second export replaces the first
    assert again.images == {"train": 4, "val": 4} and len(list((ds.root / "images" / "train").glob("*.png"))) == 4
    with pytest.raises(ValueError, match="multiple of 32"):
        export_yolo_dataset(train, val, tmp_path / "bad", tile=100)


# ------------------------------------------------------------------------------------- training


def test_training_never_touches_the_network(trained):
    result, _, _, attempts = trained
    assert attempts == [] and result.stopped == "completed"


def test_a_few_epochs_lower_the_loss_and_every_epoch_is_scored(trained):
    result, epochs, messages, _ = trained
    assert [r.epoch for r in result.history] == list(range(1, TINY.epochs + 1)) and epochs == result.history
    assert result.history[-1].loss < result.history[0].loss
    assert all(np.isfinite(r.val_loss) for r in result.history)
    for r in result.history:  # F1 is the harmonic mean of the precision and recall reported beside it
        assert r.f1 == pytest.approx(2 * r.precision * r.recall / (r.precision + r.recall) if r.precision + r.recall
                                     else 0.0)
    assert messages[-1][0] == pytest.approx(1.0) and "validation F1" in messages[-1][1]
    assert any("left" in m for _, m in messages[:-1])


def test_checkpoint_and_metadata_lie_where_the_registry_looks(trained, weights_home):
    result, _, _, _ = trained
    assert result.path == weights_home / "yolo" / "tiny-seg.pt" and result.model_name == "trained:yolo:tiny-seg"
    meta = json.loads(metadata_path(result.path).read_text())
    assert meta == {"format": Y.FORMAT, **result.metadata}
    assert meta["family"] == "yolo" and meta["init"] == "scratch" and meta["stopped"] == "completed"
    assert meta["validation"]["best_epoch"] == result.best_epoch and len(meta["validation"]["history"]) == TINY.epochs
    assert meta["split"]["method"] == "batch" and meta["parameters"]["imgsz"] == 96
    assert meta["validation"]["f1"] == pytest.approx(result.best.f1)
    assert result.path.stat().st_size < 8_000_000  # optimizer state stripped (nano: about 6 MB)


def test_trained_model_is_listed_and_segments(trained, training_example, weights_home):
    result, _, _, _ = trained
    assert "trained:yolo:tiny-seg" in [m.name for m in list_models("segment")]
    assert get_model_info("trained:yolo:tiny-seg").family == "yolo"
    loaded = load_model("trained:yolo:tiny-seg", allow_download=False)
    assert loaded.model.segments  # a segmentation checkpoint: masks, not boxes
    out = loaded.predict(training_example[0], conf=0.0)
    assert isinstance(out, Instances) and out.labels.shape == training_example[0].pixels.shape[:2] and not out.box_only


def test_a_stopped_training_leaves_a_usable_best_checkpoint(training_data, tmp_path, offline):
    train, val, _ = training_data
    calls = []

    def stop() -> bool:
        calls.append(1)
        return True  # after the first batch

    path = tmp_path / "yolo" / "stopped.pt"
    result = Y.train_yolo_seg(train, val, out=path, training=TINY, stop=stop, workdir=tmp_path / "work")
    assert result.stopped == "stopped during epoch 1" and [r.epoch for r in result.history] == [1]
    assert len(calls) == 1 and path.is_file() and offline == []
    from models.yolo import YoloModel

    image = make_example_dataset(size=64, fields_per_plate=1)[0]
    found = YoloModel("stopped", str(path), "cpu").predict(image, conf=0.25, iou=0.5)
    assert isinstance(found, Instances)
    # The one epoch's ultralytics checkpoint (what validation scored) and our plain-data copy of it
    # predict the same objects; the ultralytics file is a user-placed .pt that still loads as before.
    last = tmp_path / "work" / "runs" / "train" / "weights" / "last.pt"
    with pytest.raises(Exception):  # noqa: B017 - a pickle of ultralytics modules, not plain data
        torch.load(last, map_location="cpu", weights_only=True)
    for conf in (0.0, 0.25):
        ours = YoloModel("ours", str(path), "cpu").predict(image, conf=conf, iou=0.5)
        theirs = YoloModel("theirs", str(last), "cpu").predict(image, conf=conf, iou=0.5)
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        np.testing.assert_array_equal(ours.boxes, theirs.boxes)
        np.testing.assert_array_equal(ours.scores, theirs.scores)
    assert len(YoloModel("ours", str(path), "cpu").predict(image, conf=0.0, iou=0.5).boxes) > 0


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool | torch.Tensor)


def test_our_checkpoint_is_plain_data_read_with_weights_only(trained):
    result, _, _, _ = trained
    ckpt = torch.load(result.path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == Y.FORMAT == "cellscope_yolo_seg" and ckpt["version"] == 1
    assert set(ckpt) >= {"yaml", "names", "state_dict", "metadata"} and len(ckpt["names"]) == 1
    assert _plain(ckpt) and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    assert ckpt["metadata"] == result.metadata  # the final record, as in the JSON beside it
    assert ckpt["yaml"]["nc"] == 1 and "head" in ckpt["yaml"]


def test_reloaded_model_scores_what_training_scored(trained, training_data):
    from models.yolo import YoloModel

    result, _, _, _ = trained
    _, val, _ = training_data
    scores = validation_scores(Y.predicted_labels(YoloModel("reloaded", str(result.path), "cpu")), val)
    assert scores["f1"] == pytest.approx(result.best.f1) and scores["precision"] == pytest.approx(result.best.precision)


def test_user_placed_ultralytics_weights_still_load_and_junk_is_refused(trained, weights_home, tmp_path):
    from models.yolo import YoloModel, load_yolo

    with Y.offline_ultralytics():
        from ultralytics import YOLO

        user = weights_home / "yolo" / "their-own.pt"
        YOLO("yolo11n-seg.yaml").save(user)  # an ultralytics checkpoint: a pickle of its modules
    try:
        assert "user:their-own" in [m.name for m in list_models("segment")]
        loaded = load_model("user:their-own", allow_download=False)
        assert loaded.model.segments and loaded.model.ultralytics.model.__class__.__name__ == "SegmentationModel"
        out = loaded.predict(make_example_dataset(size=64, fields_per_plate=1)[0], conf=0.25)
        assert isinstance(out, Instances)
    finally:
        user.unlink()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("other.pt", "junk.pt"):
        with pytest.raises(ValueError, match=f"{name} is (neither|not) a CellScope YOLO-seg checkpoint"):
            load_yolo(tmp_path / name)
    newer = torch.load(Y.yolo_checkpoint_path("tiny-seg"), weights_only=True) | {"version": 99}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="version 99"):
        YoloModel("newer", str(tmp_path / "newer.pt"), "cpu")


def test_bad_settings_are_refused(training_data, tmp_path):
    train, val, _ = training_data
    with pytest.raises(ValueError, match="never downloads"):
        Y.train_yolo_seg(train, val, out=tmp_path / "a.pt", training=Y.YoloTraining(model=str(tmp_path / "none.pt")))
    with pytest.raises(ValueError, match="neither a file nor a model YAML"):
        Y.model_source("yolo99z-seg.yaml")
    assert Y.model_source("yolo11n-seg.yaml") == "yolo11n-seg.yaml"
    with pytest.raises(ValueError, match="multiple of 32"):
        Y.YoloTraining(imgsz=100)
    with pytest.raises(ValueError, match="unknown YOLO training setting"):
        Y.YoloTraining.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="plain file name"):
        Y.yolo_checkpoint_path("a/b")
