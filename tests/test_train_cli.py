"""`python -m core train` and `unet:CKPT` in segment/compare: a tiny CLI training on a written example
dataset, its checkpoint and metadata, the model it makes, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import ROOT

# Tiny: 2 epochs of 3 steps of 4 tiles of 64 px, on 128 px images (about 10 s on 2 cores).
TINY = ("--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--tile", "64", "--seed", "1")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m core ...`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.fixture
def cli(capsys):
    """``workflows.cli.main`` in this process (no second torch import per call): (exit code, stdout, stderr)."""
    from workflows.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_line_error(result: tuple[int, str, str]) -> str:
    """The error line of a failed command, checking it failed with exit 1 in exactly one line."""
    code, out, err = result
    assert code == 1, out + err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """images/, masks/ and batches.csv of 6 small fields, 2 per plate."""
    from core.io.example import make_example_dataset
    from core.io.export import write_dataset

    folder = tmp_path_factory.mktemp("example")
    write_dataset(make_example_dataset(size=128, fields_per_plate=2), folder)
    return folder


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A CLI training holding out plate C, masks matched from their own folder."""
    out = tmp_path_factory.mktemp("run") / "tiny.unet.pt"
    r = run_cli("train", "--model", "unet", "--images", str(dataset / "images"), "--masks", str(dataset / "masks"),
                "--batch-from", f"csv:{dataset / 'batches.csv'}", "--val-batches", "plateC", "--device", "cpu",
                *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


def test_training_writes_the_best_checkpoint_and_its_metadata(trained):
    from models.unet_checkpoint import load_checkpoint

    out, r = trained
    meta = json.loads(out.with_name("tiny.unet.json").read_text())
    assert meta["family"] == "unet" and meta["format"] == "cellscope_unet" and len(meta["data_hash"]) >= 12
    assert meta["split"]["method"] == "batch" and meta["split"]["val_batches"] == ["plateC"]
    assert meta["split"]["val"] == ["plateC_field1", "plateC_field2"] and len(meta["split"]["train"]) == 4
    assert meta["images"] == {"train": 4, "val": 2, "objects": meta["images"]["objects"]} and meta["images"]["objects"] > 20
    params = meta["parameters"]
    assert (params["epochs"], params["steps_per_epoch"], params["batch_size"], params["tile"], params["seed"]) == (
        2, 3, 4, 64, 1)
    assert params["lr"] == 3e-3 and params["device"] == "cpu"  # unset flags: UNetTraining's defaults
    val = meta["validation"]
    assert len(val["history"]) == 2 and val["iou_threshold"] == 0.5 and meta["stopped"] == "completed"
    best = next(h for h in val["history"] if h["epoch"] == val["best_epoch"])
    if val.get("averaged_epochs"):  # the last epochs averaged scored at least as well: those weights are kept
        assert val["averaged_epochs"] == [1, 2] and val["f1"] >= best["f1"] - 0.01
        assert f"kept the weights of epochs 1-2 averaged: validation F1 {val['f1']:.3f}" in r.stdout
    else:
        assert (val["f1"], val["precision"], val["recall"]) == (best["f1"], best["precision"], best["recall"])
    assert meta["date"][:2] == "20"
    # what the command said is what the files hold
    assert f"best epoch {val['best_epoch']}: validation F1 {best['f1']:.3f}, precision {best['precision']:.3f}" in r.stdout
    assert f"checkpoint: {out}\n" in r.stdout and f"metadata: {out.with_name('tiny.unet.json')}\n" in r.stdout
    assert "4 train, 2 validate (batch split: plateC)" in r.stdout
    # progress to a pipe (a log, CI): whole lines, at most one every 5 s and the last state, which names
    # the epoch, loss and validation F1 (a terminal gets one redrawn line)
    assert "\r" not in r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("training: ")]
    seconds = meta["seconds"]
    assert 1 <= len(progress) <= seconds / 5 + 2, (len(progress), seconds)
    assert "epoch 1/2" in progress[0] and "loss" in progress[0]
    assert progress[-1].startswith("training: 100% averaging the weights of epochs 1-2") or (
        "epoch 2/2" in progress[-1] and "validation F1" in progress[-1]), progress[-1]
    _, saved = load_checkpoint(out)
    assert saved["validation"]["f1"] == val["f1"]


def test_segment_with_the_checkpoint_writes_what_the_model_predicts(trained, dataset, tmp_path, cli):
    from core.io.load import load_paths
    from models.unet import unet_model_info

    out, _ = trained
    image = dataset / "images" / "plateC_field1.tif"
    labels_path = tmp_path / "labels.tif"
    code, stdout, stderr = cli("segment", "--model", f"unet:{out}", str(image), "-o", str(labels_path), "--device", "cpu")
    assert code == 0, stderr
    labels = tifffile.imread(labels_path)
    assert labels.shape == (128, 128)
    assert f": {len(np.unique(labels[labels > 0]))} cells by unet:{out}" in stdout
    # the same labels as the segmenter run here with the registry's default settings
    img = load_paths([image]).images[0]
    info = unet_model_info(out)
    expected = info.builder(out, "cpu").predict(img, **info.resolve({})).labels
    np.testing.assert_array_equal(labels, expected)


def test_compare_with_the_checkpoint_writes_metrics_recomputable_from_its_labels(trained, dataset, tmp_path, cli):
    from core.evaluation.matching import match_over_thresholds

    out, _ = trained
    image, gt = dataset / "images" / "plateC_field2.tif", dataset / "masks" / "plateC_field2.tif"
    name = f"unet:{out}"
    code, stdout, stderr = cli("compare", str(image), "--models", f"classical,{name}", "--gt", str(gt), "--out",
                               str(tmp_path / "c"), "--device", "cpu")
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert set(metrics) == {"classical", name}
    # plateC_field2 validated this model (it chose its best epoch): said, and recorded in metrics.json
    assert metrics[name]["seen_in_training"] == "validation" and metrics["classical"]["seen_in_training"] is None
    assert (f"  note: {name} was validated (its best epoch was chosen) on plateC_field2: its scores here show how "
            "well it fits an image it has seen") in stdout
    assert stdout.count("note:") == 1
    labels = tifffile.imread(tmp_path / "c" / "unet:tiny.unet.pt.tif")  # the file's name, not its folders
    assert labels.shape == (128, 128)
    per_t = match_over_thresholds(tifffile.imread(gt), labels)
    assert metrics[name]["f1"] == per_t[0].f1 and metrics[name]["count"] == len(np.unique(labels[labels > 0]))
    prov = json.loads((tmp_path / "c" / "provenance.json").read_text())
    assert prov["models"][name]["family"] == "unet" and prov["models"][name]["weights"]["file"] == str(out)


def test_train_reads_masks_beside_the_images_and_saves_a_plain_name_in_the_weights_folder(dataset, tmp_path, cli,
                                                                                          monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    code, stdout, stderr = cli("train", "--model", "unet", "--images", str(dataset), "--val-split", "0.5", "--device",
                               "cpu", "--epochs", "1", *TINY[2:], "--out", "mine")
    assert code == 0, stderr
    assert "6 images with ground truth" in stdout and "3 train, 3 validate (image split)" in stdout
    assert (tmp_path / "weights" / "mine.unet.pt").is_file() and (tmp_path / "weights" / "mine.unet.json").is_file()
    assert "use it as --model trained:unet:mine" in stdout
    meta = json.loads((tmp_path / "weights" / "mine.unet.json").read_text())
    assert meta["split"]["method"] == "image" and meta["split"]["val_fraction"] == 0.5
    code, stdout, _ = cli("models")
    assert any(line.startswith("trained:unet:mine\tunet\tmasks\tavailable") for line in stdout.splitlines())


def test_masks_are_matched_by_name_as_the_data_page_matches_them(tmp_path):
    from conftest import blobs, tiff_bytes

    from core.io.load import load_images_and_masks

    (tmp_path / "img" / "plate1").mkdir(parents=True)
    (tmp_path / "lab" / "plate1").mkdir(parents=True)
    image = blobs(48, 48)
    labels = (image > image.mean()).astype(np.uint16)
    for name in ("a", "b", "c"):
        (tmp_path / "img" / "plate1" / f"{name}.tif").write_bytes(tiff_bytes(image))
    (tmp_path / "lab" / "plate1" / "a.tif").write_bytes(tiff_bytes(labels))  # same name
    (tmp_path / "lab" / "plate1" / "b_mask.tif").write_bytes(tiff_bytes(labels))  # the *_mask suffix
    (tmp_path / "lab" / "c.tif").write_bytes(tiff_bytes(labels))  # not in the image's subfolder
    report = load_images_and_masks(tmp_path / "img", tmp_path / "lab")
    gt = {img.name: img.gt is not None for img in report.images}
    assert gt == {"plate1/a": True, "plate1/b": True, "plate1/c": False}
    assert [p.message for p in report.problems] == [
        "ground truth for 'c', but no image with that name was uploaded with it"]


@pytest.mark.parametrize("case", ["no masks matched", "no masks matched (maskrcnn)", "unknown family",
                                  "yolo-seg steps", "missing masks folder"])
def test_bad_training_inputs_fail_in_one_line(case, dataset, tmp_path, cli):
    other = tmp_path / "other_masks"
    other.mkdir()
    (other / "unrelated.tif").write_bytes((dataset / "masks" / "plateA_field1.tif").read_bytes())
    images, masks, family = str(dataset / "images"), str(dataset / "masks"), "unet"
    if case.startswith("no masks matched"):
        masks = str(other)
        family = "maskrcnn" if "maskrcnn" in case else "unet"
    elif case == "missing masks folder":
        masks = str(tmp_path / "nope")
    elif case == "unknown family":
        family = "resnet"
    extra = ["--steps-per-epoch", "2"] if case == "yolo-seg steps" else []
    if case == "yolo-seg steps":
        family = "yolo-seg"
    line = one_line_error(cli("train", "--model", family, "--images", images, "--masks", masks, "--out",
                              str(tmp_path / "x.pt"), *extra))
    expected = {
        "no masks matched": f"no mask in {other} matched any of the 6 images by name",
        "no masks matched (maskrcnn)": f"no mask in {other} matched any of the 6 images by name",
        "unknown family": "unknown family 'resnet' to train; choose one of unet, rcnn, yolo",
        "yolo-seg steps": "unknown YOLO training setting(s) 'steps_per_epoch'",
        "missing masks folder": f"--masks {tmp_path / 'nope'}: no such folder",
    }[case]
    assert expected in line
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_checkpoint_fails_in_one_line(dataset, tmp_path, cli):
    image = str(dataset / "images" / "plateA_field1.tif")
    missing = tmp_path / "gone.unet.pt"
    line = one_line_error(cli("segment", "--model", f"unet:{missing}", image, "-o", str(tmp_path / "l.tif")))
    assert f"unet:{missing}: no checkpoint file at {missing}" in line and not (tmp_path / "l.tif").exists()
    line = one_line_error(cli("compare", image, "--models", f"classical,unet:{missing}", "--out", str(tmp_path / "c")))
    assert "no checkpoint file" in line and not (tmp_path / "c").exists()
    line = one_line_error(cli("segment", "--model", f"maskrcnn:{missing}", image, "-o", str(tmp_path / "l.tif")))
    assert f"maskrcnn:{missing}: no checkpoint file at {missing}" in line
    not_ours = tmp_path / "junk.pt"
    not_ours.write_bytes(b"not a checkpoint")
    line = one_line_error(cli("segment", "--model", f"unet:{not_ours}", image, "-o", str(tmp_path / "l.tif")))
    assert "junk.pt is not a CellScope U-Net checkpoint" in line


def test_maskrcnn_trains_through_the_same_command_and_segments_as_maskrcnn_path(dataset, tmp_path, cli):
    out = tmp_path / "r.maskrcnn.pt"
    code, stdout, stderr = cli("train", "--model", "rcnn", "--images", str(dataset), "--val-batches", "plateC",
                               "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--tile", "64",
                               "--device", "cpu", "--out", str(out))
    assert code == 0, stderr
    meta = json.loads(out.with_name("r.maskrcnn.json").read_text())
    assert meta["family"] == "rcnn" and meta["split"]["val_batches"] == ["plateC"]
    assert [e["name"] for e in meta["images_seen"]["validation"]] == ["plateC_field1", "plateC_field2"]
    assert len(meta["images_seen"]["training"]) == 4 and all(len(e["hash"]) == 32 for e in meta["images_seen"]["training"])
    assert f"best epoch 1: validation F1 {meta['validation']['f1']:.3f}" in stdout
    assert "on this CPU that takes about" in stdout  # said before a long CPU run starts
    code, stdout, stderr = cli("segment", "--model", f"maskrcnn:{out}", str(dataset / "images" / "plateC_field1.tif"),
                               "-o", str(tmp_path / "l.tif"), "--device", "cpu")
    assert code == 0, stderr
    assert tifffile.imread(tmp_path / "l.tif").shape == (128, 128)


def test_yolo_seg_trains_through_the_same_command_offline(dataset, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("CELLSCOPE_WEIGHTS_DIR", str(tmp_path / "weights"))
    code, stdout, stderr = cli("train", "--model", "yolo", "--images", str(dataset), "--val-batches", "plateC",
                               "--epochs", "1", "--batch-size", "2", "--tile", "64", "--device", "cpu",
                               "--out", "tinyyolo")
    assert code == 0, stderr
    assert (tmp_path / "weights" / "yolo" / "tinyyolo.pt").is_file()
    meta = json.loads((tmp_path / "weights" / "yolo" / "tinyyolo.json").read_text())
    assert [e["name"] for e in meta["images_seen"]["validation"]] == ["plateC_field1", "plateC_field2"]
    assert "use it as --model trained:yolo:tinyyolo" in stdout
