"""Training and Compare's *All images* return records (core.analysis.Analysis) whose inputs,
settings and tables are what was computed: a tiny U-Net trained on five example fields, then run
with the classical recipe on every field; and the form rules the Train page and the CLI share."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.analysis import Analysis, inputs_of
from core.data.images import content_hash
from core.evaluation.matching import match_instances
from core.segmentation.preprocess import run_pipeline
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.training import check_training_request, checkpoint_target, model_name_problem, train_segmenter

TINY = {"epochs": 2, "steps_per_epoch": 2, "tile": 64, "batch_size": 2, "seed": 1}


@pytest.fixture(scope="module")
def trained(weights_home, training_example):
    """A tiny U-Net trained on the example fields (one of them without ground truth), plate C
    validating; the epochs its trainer reported."""
    images = [*training_example[:-1], training_example[-1].with_(gt=None)]
    epochs = []
    run = train_segmenter("unet", images, name="rec", settings=TINY, val_batches=["plateC"], on_epoch=epochs.append)
    return images, run, epochs


def test_a_training_is_a_record_of_its_inputs_settings_epochs_and_checkpoint(trained, weights_home):
    images, run, epochs = trained
    record = run.analysis
    annotated = [img for img in images if img.gt is not None]
    assert record.kind == "training" and len(annotated) == 5
    assert record.inputs == inputs_of(annotated)  # only the images it trained or validated on
    assert [f.pixels_hash for f in record.inputs] == [content_hash(img.pixels) for img in annotated]
    assert [f.gt_hash for f in record.inputs] == [content_hash(img.gt) for img in annotated]
    settings = record.settings
    assert settings["family"] == "unet" and settings["model"] == "trained:unet:rec" == run.summary["model"]
    assert {k: settings["training"][k] for k in TINY} == TINY and settings["training"]["lr"] > 0
    meta = json.loads((weights_home / "rec.unet.json").read_text())
    assert settings["split"] == meta["split"] and settings["split"]["val_batches"] == ["plateC"]
    assert settings["checkpoint"] == str(weights_home / "rec.unet.pt") == run.summary["checkpoint"]
    history = record.tables["history"]
    assert list(history["epoch"]) == [e.epoch for e in epochs] == [r["epoch"] for r in meta["validation"]["history"]]
    assert list(history["f1"]) == pytest.approx([e.f1 for e in epochs])
    assert list(history["val_loss"]) == pytest.approx([e.val_loss for e in epochs])
    roles = record.tables["images"].set_index("image")
    assert list(roles.index) == [img.name for img in annotated]
    assert roles.loc[annotated[-1].name, "role"] == "validation" and annotated[-1].batch == "plateC"
    assert (roles["role"] == "training").sum() == 4 and list(roles["batch"]) == [img.batch for img in annotated]
    assert list(roles["cells"]) == [len(np.unique(img.gt)) - 1 for img in annotated]
    assert sorted(record.files) == ["rec.unet.json", "rec.unet.pt"]
    assert record.files["rec.unet.pt"] == (weights_home / "rec.unet.pt").read_bytes()
    assert json.loads(record.files["rec.unet.json"]) == meta
    assert record.provenance["extra"]["model"] == "trained:unet:rec" and record.provenance["device"] == "cpu"
    assert run.trained.best.epoch == run.summary["best_epoch"]  # the trainer's own result is kept too


def test_a_training_record_saves_and_loads(trained, tmp_path):
    record = trained[1].analysis
    back = Analysis.load(record.save(tmp_path / "training.zip"))
    assert (back.kind, back.inputs, back.settings) == (record.kind, record.inputs, record.settings)
    pd.testing.assert_frame_equal(back.tables["history"], record.tables["history"])
    assert back.files["rec.unet.pt"] == record.files["rec.unet.pt"]


def test_all_images_is_a_record_of_every_model_s_scores_on_every_image(trained):
    from workflows.compare import run_compare

    images, training, _ = trained
    annotated = [img for img in images if img.gt is not None]
    models = {"classical": {"recipe": DEFAULT_RECIPE, "tile": 1024, "overlap": 64},
              "trained:unet:rec": {"tile": 1024, "overlap": 64}}
    run = run_compare(annotated, models, device="cpu")
    record = run.analysis
    assert run.problems == [] and record.kind == "compare" and record.inputs == inputs_of(annotated)
    assert record.settings == {"models": models, "device": "cpu"}
    assert set(record.provenance["models"]) == set(models) and record.provenance["device"] == "cpu"
    scores = record.tables["scores"]
    assert list(zip(scores["image"], scores["model"], strict=True)) == [
        (img.name, m) for img in annotated for m in models]
    classical = scores[scores.model == "classical"].set_index("image")
    for img in annotated:
        labels = run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE).labels
        assert classical.loc[img.name, "f1"] == round(match_instances(img.gt, labels).f1, 4), img.name
        assert np.array_equal(run.results[(img.name, "classical")].labels, labels)
    unet = scores[scores.model == "trained:unet:rec"].set_index("image")
    for img in annotated:  # scored on its own result, marked with the role the training record gives the image
        assert unet.loc[img.name, "f1"] == round(match_instances(img.gt, run.results[(img.name, "trained:unet:rec")]
                                                                 .labels).f1, 4)
    roles = training.analysis.tables["images"].set_index("image")["role"]
    assert unet["seen in training"].to_dict() == roles.to_dict()
    assert set(classical["seen in training"]) == {""}
    assert record.files["results.zip"][:2] == b"PK"
    ranking = record.tables["ranking"].set_index("model")  # which model for these images: part of the record
    assert set(ranking.index) == set(models)
    assert ranking.loc["classical", "f1"] == round(classical["f1"].mean(), 3)
    new_to_unet = unet[~unet["seen in training"].isin(["training", "validation"])]
    assert ranking.loc["trained:unet:rec", "images"] == len(new_to_unet)  # its training images left out
    unscored = run_compare([img.with_(gt=None) for img in annotated[:1]], {"classical": models["classical"]},
                           device="cpu")
    assert "ranking" not in unscored.analysis.tables  # no ground truth: nothing to rank by


def test_the_train_form_s_rules_are_the_cli_s(weights_home, trained):
    assert model_name_problem("cells-1.v2") == ""
    assert model_name_problem("../x") == "A model name uses letters, digits, '.', '_' and '-' only."
    assert model_name_problem("x" * 65) == "A model name has at most 64 characters (this one has 65)."
    assert model_name_problem("") == model_name_problem("  ") == "Give the model a name (letters, digits, '.', '_' and '-')."
    with pytest.raises(ValueError, match=r"^--out my cells: A model name uses letters, digits"):
        checkpoint_target("unet", "my cells")
    assert checkpoint_target("unet", "fine") == weights_home / "fine.unet.pt"
    assert check_training_request("unet", "rec", split="images") == \
        "A U-Net named 'rec' exists already: choose another name."
    assert check_training_request("unet", "new", split="images", pending={"new"}) == \
        "A training named 'new' is queued or running: choose another name."
    assert check_training_request("rcnn", "rec", split="images") == ""  # another family's name space
    plates = {"plateA", "plateB"}
    assert check_training_request("unet", "new", split="plates", batches=plates) == \
        "Choose at least one plate to validate on."
    assert check_training_request("unet", "new", split="plates", val_batches=["plateA", "plateB"], batches=plates) == \
        "Keep at least one plate for training."
    assert check_training_request("unet", "new", split="plates", val_batches=["plateB"], batches=plates) == ""
