"""A run's images (core/runs.py save_run(images=...), core/run_images.py): the display pictures and
their index, each model's label images, cell crops; a run saved without images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from core.analysis import Analysis, inputs_of
from core.figures.display import image_rgb, thumbnail
from core.run_images import cell_crop, image_index, run_image, run_labels
from core.runs import DISPLAY_SIDE, open_run, save_run
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.compare import run_compare
from workflows.segmentation import recipe_instances, run_segmentation


@pytest.fixture(scope="module")
def records(training_example):
    segmentation = run_segmentation(training_example, DEFAULT_RECIPE).analysis
    compare = run_compare(training_example, {"classical": {"recipe": DEFAULT_RECIPE}}, device="cpu")
    return segmentation, compare


@pytest.fixture(scope="module")
def big_image(training_example):
    """A 1200 x 900 field (a smooth ramp in each channel, so a crop of the display picture can be
    compared with one of the full image) and a label image of three cells, one at a corner."""
    h, w = 1200, 900
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pixels = np.stack([yy / h * 4000, xx / w * 4000, (yy + xx) / (h + w) * 4000], axis=2).astype(np.uint16)
    image = dataclasses.replace(training_example[0], name="big", pixels=pixels, gt=None, hash="")
    labels = np.zeros((h, w), np.int32)
    labels[100:140, 200:260], labels[600:700, 400:450], labels[0:20, 0:20] = 1, 2, 70000  # past uint16
    return image, labels


def test_images_and_each_models_labels_come_back_from_a_run(records, root, training_example):
    segmentation, compare = records
    assert set(compare.analysis.files) == {"results.zip"}  # the CLI's folder gets no second copy of the TIFFs
    save_run("with-images", [segmentation, compare.analysis], images=training_example)
    run = open_run("with-images")
    index = image_index(run)
    assert list(index.columns) == ["image", "batch", "condition", "height", "width", "scale", "file"]
    assert list(index["image"]) == [img.name for img in training_example]
    assert list(index["file"]) == [f"images/{i:05d}.png" for i in range(len(training_example))]
    assert list(index["batch"]) == [img.batch for img in training_example]
    assert (index["height"] == 96).all() and (index["scale"] == 1.0).all()
    for img in training_example:
        np.testing.assert_array_equal(run_image(run, img.name), image_rgb(img))  # a PNG: lossless
    labels = run.table("compare", "labels")
    assert len(labels) == len(training_example) and set(labels["model"]) == {"classical"}
    assert labels["file"].tolist() == [f"labels/classical/{i:05d}.tif" for i in range(len(training_example))]
    for img in training_example:
        found = run_labels(run, img.name)
        assert set(found) == {"classical"} and found["classical"].dtype == np.uint16
        np.testing.assert_array_equal(found["classical"], recipe_instances(img, DEFAULT_RECIPE).labels)  # the segmentation's
        np.testing.assert_array_equal(run.analysis("compare").labels[(img.name, "classical")],
                                      compare.results[(img.name, "classical")].labels)
    assert run_image(run, "no such image") is None and run_labels(run, "no such image") == {}


def test_a_large_image_is_kept_shrunk_and_its_cells_cropped_from_it(big_image, root):
    image, labels = big_image
    record = Analysis("segmentation", inputs_of([image]), {"model": "ground truth"}, {},
                      labels={("big", "ground truth"): labels})
    save_run("large", [record], images=[image])
    run = open_run("large")
    row = image_index(run).iloc[0]
    assert (row["height"], row["width"]) == (1200, 900) and row["scale"] == pytest.approx(DISPLAY_SIDE / 1200)
    shown = run_image(run, "big")
    assert shown.shape == (768, 576, 3)
    np.testing.assert_array_equal(shown, thumbnail(image_rgb(image), DISPLAY_SIDE))
    assert (run.info.path / "analyses" / "00-segmentation" / "labels" / "ground_truth" / "00000.tif").is_file()
    (back,) = run_labels(run, "big").values()
    np.testing.assert_array_equal(back, labels)  # full size, ids past 65,535 kept
    full = image_rgb(image)
    crop = cell_crop(run, "big", 620.0, 425.0, size=64)
    assert crop.shape == (64, 64, 3)
    assert np.abs(crop.astype(int) - full[588:652, 393:457].astype(int)).mean() < 4  # the same place, shrunk and grown
    corner = cell_crop(run, "big", 1199.0, 899.0, size=64)  # the bright corner
    assert (corner[40:, :] == 0).all() and (corner[:, 40:] == 0).all()  # black beyond the borders
    assert corner[:24, :24].mean() > 100
    assert cell_crop(run, "big", 620, 425, size=32).shape == (32, 32, 3)


def test_a_run_saved_without_images_says_none(records, root):
    segmentation, _ = records
    plain = dataclasses.replace(segmentation, labels={})
    save_run("plain", [plain])
    run = open_run("plain")
    name = segmentation.inputs[0].name
    assert image_index(run) is None and run_image(run, name) is None and cell_crop(run, name, 10, 10) is None
    assert run_labels(run, name) == {} and run.table("segmentation", "labels") is None
    save_run("labels-only", [segmentation])  # labels without images: the labels still come back
    assert set(run_labels(open_run("labels-only"), name)) == {"classical"}
    assert image_index(open_run("labels-only")) is None


def test_a_record_with_labels_round_trips_through_a_zip_and_a_second_save(records, tmp_path):
    segmentation, _ = records
    segmentation.save(tmp_path / "seg.zip")
    from_zip = Analysis.load(tmp_path / "seg.zip")
    again = Analysis.load(from_zip.save(tmp_path / "again"))
    for key, labels in segmentation.labels.items():
        np.testing.assert_array_equal(from_zip.labels[key], labels)
        np.testing.assert_array_equal(again.labels[key], labels)
    pd.testing.assert_frame_equal(again.tables["labels"], from_zip.tables["labels"])
    assert len(again.tables["labels"]) == len(segmentation.labels)
