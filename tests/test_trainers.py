"""The families that train here (their registry entries) and the one training pipeline
(workflows.training) that the Train page and the CLI both run."""

from __future__ import annotations

import inspect
import json

import pytest

from core.io.example import make_example_dataset
from models.registry import families, get_family, get_model_info, images_seen, list_models, trainer_of
from workflows.training import plan_training, train_segmenter


def test_every_trainable_family_has_real_functions_settings_and_defaults():
    assert [f.name for f in families(trainable=True)] == ["unet", "rcnn", "yolo"]  # the Train page's order
    for family in families(trainable=True):
        trainer = family.trainer
        assert inspect.isclass(trainer.settings_class) and callable(trainer.train), family.name
        assert trainer.checkpoint_path("x").name.startswith("x"), family.name
        settings = trainer.default_settings()
        assert {"epochs", "batch_size", "lr", "patience", "seed"} <= set(settings), family.name
    # One vocabulary: the names of earlier versions are accepted by the CLI and mean the registry's families.
    assert get_family("maskrcnn").name == "rcnn" and get_family("yolo-seg").name == "yolo"
    with pytest.raises(ValueError, match="unknown family 'sam' to train; choose one of unet, rcnn, yolo"):
        trainer_of("sam")


def test_the_trainers_are_referenced_not_named_as_strings():
    import models.registry as registry

    source = inspect.getsource(registry)
    assert "importlib" not in source and "import_module" not in source
    from models.rcnn_training import train_mask_rcnn
    from models.unet import train_unet
    from models.yolo_training import train_yolo_seg

    assert [f.trainer.train for f in families(trainable=True)] == [train_unet, train_mask_rcnn, train_yolo_seg]


def test_a_tiny_unet_trains_on_held_out_plates_and_becomes_a_segmenter(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    images = make_example_dataset(size=128, fields_per_plate=2)
    epochs = []
    summary = train_segmenter("unet", images, name="tiny", settings={"epochs": 2, "steps_per_epoch": 2, "tile": 64,
                                                                      "batch_size": 2, "seed": 1},
                              val_batches=["plateC"], on_epoch=epochs.append).summary
    assert summary["model"] == "trained:unet:tiny" and summary["val_images"] == 2 and summary["train_images"] == 4
    assert len(epochs) >= 1
    meta = json.loads((tmp_path / "tiny.unet.json").read_text())
    # the summary reports the saved weights' validation scores, and the epochs the page plots
    assert summary["metrics"] == {k: pytest.approx(meta["validation"][k]) for k in ("f1", "precision", "recall")}
    if not summary["averaged_epochs"]:
        best = next(e for e in epochs if e.epoch == summary["best_epoch"])
        assert summary["metrics"]["f1"] == pytest.approx(best.f1)
    assert meta["split"]["val_batches"] == ["plateC"] and meta["family"] == "unet"
    assert "trained:unet:tiny" in [m.name for m in list_models("segment")]
    assert get_model_info("trained:unet:tiny").family == "unet"
    assert get_model_info("unet:tiny").name == "trained:unet:tiny"  # the name earlier versions gave it


def test_the_split_is_the_same_for_the_page_and_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path))
    images = make_example_dataset(size=64, fields_per_plate=2)
    by_name = plan_training("unet", images, settings={"seed": 3}, name="a", val_fraction=0.34)
    by_path = plan_training("unet", images, settings={"seed": 3}, out=tmp_path / "elsewhere" / "b.unet.pt",
                           val_fraction=0.34)
    assert [p.name for p in by_name.val] == [p.name for p in by_path.val] and len(by_name.val) == 2
    assert by_name.model_name == "trained:unet:a" and by_path.model_name == f"unet:{tmp_path / 'elsewhere' / 'b.unet.pt'}"
    held = plan_training("rcnn", images, settings={}, name="c", val_batches=["plateA"])
    assert {p.batch for p in held.val} == {"plateA"} and held.out.name == "c.maskrcnn.pt"


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
    tiny = {"rcnn": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "tile": 64},
            "yolo": {"epochs": 1, "batch_size": 2, "imgsz": 64, "warmup_epochs": 0.0}}
    for family, settings in tiny.items():
        summary = train_segmenter(family, images, name=f"tiny-{family}", settings=settings,
                                  val_batches=["plateC"]).summary
        assert summary["model"] == f"trained:{family}:tiny-{family}", family
        assert summary["model"] in [m.name for m in list_models("segment")], (family, summary["model"])
        assert summary["val_images"] == 1 and summary["best_epoch"] == 1
        # Every family records the images it saw, so Compare can mark them (by their pixels).
        seen = images_seen(summary["model"])
        assert seen.known, (family, seen.why)
        assert [seen.role(img.name, img.hash) for img in images] == ["training", "training", "validation"], family
