"""models/unet.py: targets and instances, training, checkpoints, stopping, and the registry entry."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from core.data.instances import Instances, boxes_from_labels
from core.evaluation.matching import match_instances, validation_scores
from core.training.data import training_pairs
from models import unet as U
from models import unet_checkpoint as checkpoint
from models import unet_instances
from models import unet_network as network
from models.checkpoint_file import metadata_path
from models.registry import get_model_info, list_models, load_model
from models.unet_training import UNetBatches, predicted_labels
from models.weight_averaging import average_weights

TINY = U.UNetTraining(epochs=2, steps_per_epoch=4, batch_size=4, tile=64, lr=3e-3, seed=1)


@pytest.fixture(scope="module")
def trained(training_data, tmp_path_factory):
    train, val, split = training_data
    path = tmp_path_factory.mktemp("ckpt") / "tiny.unet.pt"
    return U.train_unet(train, val, training=TINY, out=path, split=split)


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


def _touching_squares() -> np.ndarray:
    labels = np.zeros((32, 40), np.int32)
    labels[8:20, 6:18] = 1
    labels[8:20, 18:30] = 2  # shares an edge with 1
    labels[24:28, 34:38] = 3  # 16 px
    return labels


def test_targets_part_touching_objects_with_a_boundary_seam():
    targets = unet_instances.unet_targets(_touching_squares(), boundary_width=2)
    assert set(np.unique(targets)) == {0, 1, 2}
    np.testing.assert_array_equal(targets[14, 14:22], [1, 1, 2, 2, 2, 2, 1, 1])  # 2 px of each side
    assert (targets[8:20, 6:18] == 1).sum() == 8 * 8  # a 12 px square keeps its inner 8 x 8
    interior = targets == 1
    from scipy import ndimage as ndi

    assert ndi.label(interior)[1] == 2  # one interior blob (seed) per square object
    assert (targets[24:28, 34:38] == 2).all()  # a 4 px object is all rim: found as a seedless piece


def test_perfect_probabilities_give_back_the_labels():
    """The post-processing, fed the targets as one-hot probabilities, recovers every object exactly."""
    labels = _touching_squares()
    probs = np.eye(3, dtype=np.float32)[unet_instances.unet_targets(labels)].transpose(2, 0, 1)
    found, scores = unet_instances.instances_from_probabilities(probs, foreground_threshold=0.5, seed_threshold=0.5, min_area=0)
    m = match_instances(labels, found, 0.5)
    assert m.tp == 3 and m.fp == 0 and m.mean_iou == 1.0
    np.testing.assert_allclose(scores, 1.0)
    dropped, _ = unet_instances.instances_from_probabilities(probs, foreground_threshold=0.5, seed_threshold=0.5, min_area=20)
    assert dropped.max() == 2 and not dropped[24:28, 34:38].any()  # the 16 px object is under min_area


def test_touching_nuclei_whose_interiors_neck_are_two_objects():
    """The network often sees no seam between two touching nuclei: their interiors join in a neck.
    Cutting that seed at its waist makes two objects; with the cut off they are one."""
    yy, xx = np.mgrid[0:48, 0:64]
    union = ((yy - 24) ** 2 + (xx - 20) ** 2 < 12**2) | ((yy - 24) ** 2 + (xx - 42) ** 2 < 12**2)
    targets = unet_instances.unet_targets(union.astype(np.int32))  # one object: a boundary rim only on the outside
    probs = np.eye(3, dtype=np.float32)[targets].transpose(2, 0, 1)
    one, _ = unet_instances.instances_from_probabilities(probs, foreground_threshold=0.5, seed_threshold=0.5, min_area=15,
                                            min_solidity=0.0)
    assert one.max() == 1
    two, _ = unet_instances.instances_from_probabilities(probs, foreground_threshold=0.5, seed_threshold=0.5, min_area=15,
                                            min_solidity=0.9)
    assert two.max() == 2
    assert two[24, 20] != two[24, 42] and (two > 0).sum() == union.sum()  # the whole union, parted between them
    single = ((yy - 24) / 10) ** 2 + ((xx - 32) / 20) ** 2 < 1  # one elongated nucleus: its interior has no neck
    probs = np.eye(3, dtype=np.float32)[unet_instances.unet_targets(single.astype(np.int32))].transpose(2, 0, 1)
    kept, _ = unet_instances.instances_from_probabilities(probs, foreground_threshold=0.5, seed_threshold=0.5, min_area=15,
                                             min_solidity=0.9)
    assert kept.max() == 1


def test_architecture_is_compact_and_keeps_the_image_size():
    import torch

    model = network.build_unet(network.UNetConfig())
    assert 0.3e6 < network.n_parameters(model) < 2e6
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 64, 48)).shape == (1, 3, 64, 48)
    probs = unet_instances.predict_probabilities(model, np.zeros((50, 37, 1), np.float32))  # padded inside, cut back
    assert probs.shape == (3, 50, 37)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_tiled_inference_matches_the_whole_image(trained, training_example):
    planes = training_pairs(training_example[:1])[0].image
    whole = unet_instances.predict_probabilities(trained.model, planes)
    tiled = unet_instances.predict_probabilities(trained.model, planes, tile=64, margin=16)
    assert tiled.shape == whole.shape
    # Windows see 16 px of context: the class decisions agree almost everywhere.
    assert (tiled.argmax(0) == whole.argmax(0)).mean() > 0.97


def test_a_few_training_steps_lower_the_loss(trained):
    first, last = trained.history[0], trained.history[-1]
    assert len(trained.history) == 2 and trained.stopped == "completed"
    assert last.loss < first.loss and last.val_loss < 1.1  # random start: ~ln 3 = 1.1
    assert trained.best_epoch in (1, 2) and trained.path.is_file()


def test_training_is_seeded(training_data):
    train, val, _ = training_data
    short = replace(TINY, epochs=1, steps_per_epoch=2, seed=5)
    a, b = U.train_unet(train, val, training=short), U.train_unet(train, val, training=short)
    assert a.history[0].loss == b.history[0].loss
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), k


def test_checkpoint_round_trip_keeps_weights_and_metadata(trained, training_data, monkeypatch):
    import torch

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    model, meta = checkpoint.load_checkpoint(trained.path)
    assert calls and all(k.get("weights_only") is True for k in calls)
    for (k, va), vb in zip(trained.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), k
    assert meta == trained.metadata
    assert meta["family"] == "unet" and len(meta["data_hash"]) == 32
    assert meta["split"]["method"] == "batch" and meta["split"]["val_batches"] == ["plateC"]
    assert U.UNetTraining.from_dict({k: meta["parameters"][k] for k in TINY.to_dict()}) == TINY
    assert meta["parameters"]["epochs"] == 2 and meta["parameters"]["n_parameters"] == network.n_parameters(model)
    assert len(meta["validation"]["history"]) == 2
    # The saved weights are the best epoch's, or the last epochs' averaged when validation scores that as
    # well within 0.01; either way the metadata's F1 is what the saved model scores.
    averaged = meta["validation"].get("averaged_epochs")
    assert averaged in (None, [1, 2])
    assert meta["validation"]["f1"] == (trained.best.f1 if averaged is None else
                                        pytest.approx(validation_scores(predicted_labels(model, U._PREDICT_DEFAULTS), training_data[1])["f1"]))
    assert meta["validation"]["f1"] >= trained.best.f1 - 0.01
    assert meta["stopped"] == "completed" and meta["date"][:2] == "20"
    sidecar = json.loads(metadata_path(trained.path).read_text())
    assert sidecar["validation"]["f1"] == meta["validation"]["f1"] and sidecar["config"] == network.UNetConfig().to_dict()


def test_averaged_weights_are_the_mean_with_batch_norm_measured_anew(training_data):
    import torch

    from core.training.data import TileSampler

    train, _, _ = training_data
    torch.manual_seed(0)
    a, b = network.build_unet(network.UNetConfig()), network.build_unet(network.UNetConfig())
    states = [a.state_dict(), b.state_dict()]
    batches = UNetBatches(TileSampler(train, 64, 0), 2, "cpu")
    model = average_weights(network.build_unet(network.UNetConfig()), states, lambda: batches.next(2)[0],
                            calibration_steps=3)
    conv = "down.0.0.weight"
    assert torch.allclose(model.state_dict()[conv], (states[0][conv] + states[1][conv]) / 2)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not model.training and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # measured, not the reset value
    one = U.UNetTraining(epochs=2, steps_per_epoch=1, batch_size=2, tile=64, average_epochs=1)
    assert "averaged_epochs" not in U.train_unet(train[:2], training_data[1][:1], training=one).metadata["validation"]


def test_files_that_are_not_our_checkpoints_are_refused(tmp_path):
    import torch

    other = tmp_path / "other.unet.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="other.unet.pt is not a CellScope U-Net checkpoint \\(expected format"):
        checkpoint.load_checkpoint(other)
    pickled = tmp_path / "pickled.unet.pt"
    torch.save({"format": checkpoint.FORMAT, "model": torch.nn.Conv2d(1, 3, 3)}, pickled)  # a pickled module: code
    with pytest.raises(ValueError, match="pickled.unet.pt is not a CellScope U-Net checkpoint: it cannot be read as "
                                         "plain weights"):
        checkpoint.load_checkpoint(pickled)
    garbage = tmp_path / "garbage.unet.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="garbage.unet.pt is not a CellScope U-Net checkpoint"):
        checkpoint.load_checkpoint(garbage)


def test_a_stopped_training_leaves_a_usable_best_checkpoint(training_data, training_example, tmp_path):
    train, val, split = training_data
    asked = []

    def stop() -> bool:  # the UI's stop button, pressed during the second epoch
        asked.append(1)
        return len(asked) > 6

    path = tmp_path / "stopped.unet.pt"
    result = U.train_unet(train, val, training=replace(TINY, epochs=5), out=path, split=split, stop=stop)
    assert result.stopped == "stopped during epoch 2" and len(result.history) == 2
    model, meta = checkpoint.load_checkpoint(path)
    assert meta["stopped"] == "stopped during epoch 2" and meta["validation"]["best_epoch"] == result.best_epoch
    labels, _ = unet_instances.segment_planes(model, val[0].image, foreground_threshold=0.5, seed_threshold=0.5, min_area=15)
    assert labels.shape == val[0].labels.shape


def test_a_killed_training_leaves_the_best_checkpoint_so_far(training_data, tmp_path):
    train, val, split = training_data

    steps = []

    def crash() -> bool:  # the process dies during epoch 2 (its 3rd step), before it is validated
        steps.append(1)
        if len(steps) == TINY.steps_per_epoch + 3:
            raise KeyboardInterrupt
        return False

    path = tmp_path / "killed.unet.pt"
    with pytest.raises(KeyboardInterrupt):
        U.train_unet(train, val, training=TINY, out=path, split=split, stop=crash)
    model, meta = checkpoint.load_checkpoint(path)
    assert meta["validation"]["best_epoch"] == 1 and meta["stopped"] == "in progress"
    assert not list(tmp_path.glob(".*.part"))  # no half-written file left behind
    assert unet_instances.predict_probabilities(model, val[0].image).shape == (3, *val[0].labels.shape)


def test_a_saved_checkpoint_is_a_segmenter_in_the_registry(trained, training_example, weights_home):
    import shutil

    assert "trained:unet:cells" not in [m.name for m in list_models("segment")]
    dest = U.unet_checkpoint_path("cells")
    dest.parent.mkdir(parents=True)
    shutil.copy(trained.path, dest)
    shutil.copy(metadata_path(trained.path), metadata_path(dest))
    info = get_model_info("trained:unet:cells")
    assert info.family == "unet" and info.task == "segment" and not info.box_only
    assert "trained:unet:cells" in [m.name for m in list_models("segment")]
    assert get_model_info("unet:cells").name == "trained:unet:cells"  # the name earlier versions gave finds it
    assert f"validation F1 {trained.metadata['validation']['f1']:.3f}" in info.description  # of the weights kept
    assert info.resolve({}) == {"foreground_threshold": 0.5, "seed_threshold": 0.5, "min_solidity": 0.9,
                                "min_area": 15, "diameter": 0}
    result = load_model("trained:unet:cells").predict(training_example[4])
    assert isinstance(result, Instances) and result.model == "trained:unet:cells" and result.labels.shape == (96, 96)
    assert result.labels.max() == result.count == len(result.scores)
    np.testing.assert_array_equal(result.boxes, boxes_from_labels(result.labels))
    # The training nuclei's size is kept; a known diameter resizes the image for the network and
    # the labels come back in the image's own pixels.
    scale = trained.metadata["object_scale"]
    assert 10 < scale["diameter"] < 30 and scale["estimated"] > 0
    segmenter = load_model("trained:unet:cells").model
    seen = []
    original = unet_instances.predict_probabilities
    try:
        unet_instances.predict_probabilities = lambda model, planes, **kw: seen.append(planes.shape) or original(model, planes, **kw)
        resized = segmenter.predict(training_example[4], **(info.resolve({}) | {"diameter": round(scale["diameter"] * 2)}))
    finally:
        unet_instances.predict_probabilities = original
    assert seen == [(48, 48, 1)] and resized.labels.shape == (96, 96)
    assert any("resized 0.50x" in note for note in resized.notes)  # the page shows it under the pictures
    assert not result.notes  # the example's own nuclei: left as they are, nothing to say
    with pytest.raises(ValueError, match="has no setting 'threshold'"):
        load_model("trained:unet:cells").predict(training_example[4], threshold=0.5)
    with pytest.raises(ValueError, match="a plain file name"):
        U.unet_checkpoint_path("../escape")


def test_a_checkpoint_without_a_recorded_size_runs_as_it_is(trained, training_example, tmp_path):
    """Checkpoints written before sizes were recorded segment at the image's own scale; a typed
    diameter cannot be matched to them and says so."""
    import torch

    data = torch.load(trained.path, weights_only=True)
    del data["metadata"]["object_scale"]
    old = tmp_path / "old.unet.pt"
    torch.save(data, old)
    segmenter = U.UNetSegmenter("unet:old", old)
    assert segmenter.scale is None
    defaults = {"foreground_threshold": 0.5, "seed_threshold": 0.5, "min_area": 15, "min_solidity": 0.9}
    assert segmenter.predict(training_example[4], **defaults).labels.shape == (96, 96)
    with pytest.raises(ValueError, match="set the diameter to 0"):
        segmenter.predict(training_example[4], **defaults, diameter=30)


def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="^epochs must be between 1 and 1000; got 0$"):
        U.UNetTraining(epochs=0)
    with pytest.raises(ValueError, match="unknown U-Net training setting\\(s\\) 'epoch'"):
        U.UNetTraining.from_dict({"epoch": 3})


def test_unet_settings_are_its_familys_and_its_widgets_keep_their_plain_names():
    from models.registry import get_family, setting_key

    assert get_family("unet").settings == U.UNET_SETTINGS
    info = U.unet_model_info(U.unet_checkpoint_path("x"))  # no file needed to describe it
    assert [setting_key(info, s) for s in U.UNET_SETTINGS] == [s.name for s in U.UNET_SETTINGS]


def test_the_checkpoint_records_the_images_it_saw_and_the_registry_reads_them(trained, training_example, weights_home):
    import shutil

    from models.registry import images_seen

    meta = trained.metadata["images_seen"]
    assert [e["name"] for e in meta["validation"]] == ["plateC_field1", "plateC_field2"] and len(meta["training"]) == 4
    by_name = {img.name: img.hash for img in training_example}
    assert all(e["hash"] == by_name[e["name"]] for side in meta.values() for e in side)  # CellImage.hash
    dest = U.unet_checkpoint_path("cells")
    dest.parent.mkdir(parents=True)
    shutil.copy(trained.path, dest)
    shutil.copy(metadata_path(trained.path), metadata_path(dest))
    seen = images_seen("trained:unet:cells")
    assert [seen.role(img.name, img.hash) for img in training_example] == ["training"] * 4 + ["validation"] * 2
    assert images_seen("classical") is None  # not trained on the user's images: nothing to mark
    old = json.loads(metadata_path(dest).read_text())
    del old["images_seen"]  # a checkpoint written before the record existed
    metadata_path(dest).write_text(json.dumps(old))
    seen = images_seen("trained:unet:cells")
    assert not seen.known and seen.role(training_example[0].name, training_example[0].hash) == "unknown"
    assert seen.describe() == ("trained:unet:cells: which images it was trained on is unknown (it was trained before "
                               "CellScope recorded the images a model is trained on)")
    metadata_path(dest).unlink()
    assert "no CellScope training record beside cells.unet.pt" in images_seen("trained:unet:cells").why
