"""The table of trainable families and the one entry point the Train page uses."""

from __future__ import annotations

import json

import pytest

from core.example import make_example_dataset
from models.registry import get_model_info, images_seen, list_models
from models.trainers import TRAINERS, default_settings, train_segmenter


def test_every_family_has_its_settings_and_defaults():
    assert set(TRAINERS) == {"unet", "maskrcnn", "yolo-seg"}
    for family in TRAINERS:
        settings = default_settings(family)
        assert {"epochs", "batch_size", "lr", "patience", "seed"} <= set(settings), family


def test_a_tiny_unet_trains_on_held_out_plates_and_becomes_a_segmenter(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    images = make_example_dataset(size=128, fields_per_plate=2)
    epochs = []
    summary = train_segmenter("unet", images, name="tiny", settings={"epochs": 2, "steps_per_epoch": 2, "tile": 64,
                                                                      "batch_size": 2, "seed": 1},
                              val_batches=["plateC"], on_epoch=epochs.append)
    assert summary["model"] == "unet:tiny" and summary["val_images"] == 2 and summary["train_images"] == 4
    assert len(epochs) >= 1
    meta = json.loads((tmp_path / "tiny.unet.json").read_text())
    # the summary reports the saved weights' validation scores, and the epochs the page plots
    assert summary["metrics"] == {k: pytest.approx(meta["validation"][k]) for k in ("f1", "precision", "recall")}
    if not summary["averaged_epochs"]:
        best = next(e for e in epochs if e.epoch == summary["best_epoch"])
        assert summary["metrics"]["f1"] == pytest.approx(best.f1)
    assert meta["split"]["val_batches"] == ["plateC"] and meta["family"] == "unet"
    assert "unet:tiny" in [m.name for m in list_models("segment")] and get_model_info("unet:tiny").family == "unet"


def test_bad_names_and_families_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    images = make_example_dataset(size=128, fields_per_plate=1)
    with pytest.raises(ValueError, match="plain file name"):
        train_segmenter("unet", images, name="../evil", settings={})
    with pytest.raises(ValueError, match="unknown family 'resnet'"):
        train_segmenter("resnet", images, name="x", settings={})


def test_mask_rcnn_and_yolo_seg_train_through_the_same_entry_point(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    images = make_example_dataset(size=128, fields_per_plate=1)
    tiny = {"maskrcnn": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "tile": 64},
            "yolo-seg": {"epochs": 1, "batch_size": 2, "imgsz": 64, "warmup_epochs": 0.0}}
    for family, settings in tiny.items():
        summary = train_segmenter(family, images, name=f"tiny-{family}", settings=settings, val_batches=["plateC"])
        assert summary["model"] in [m.name for m in list_models("segment")], (family, summary["model"])
        assert summary["val_images"] == 1 and summary["best_epoch"] == 1
        # Every family records the images it saw, so Compare can mark them (by their pixels).
        seen = images_seen(summary["model"])
        assert seen.known, (family, seen.why)
        assert [seen.role(img.name, img.hash) for img in images] == ["training", "training", "validation"], family
