"""core/analysis.py: an analysis as one record (kind, inputs with content hashes, settings,
provenance, tables, files), saved and loaded whole; and the pipelines that return one."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import tifffile

from core.analysis import MANIFEST_FILE, PROVENANCE_FILE, Analysis, LazyFiles, inputs_of, provenance_id
from core.data.images import content_hash
from core.evaluation.matching import match_instances
from core.io.example import make_example_dataset
from core.segmentation.preprocess import run_pipeline
from core.segmentation.recipe import DEFAULT_RECIPE
from workflows.provenance import provenance


@pytest.fixture(scope="module")
def images():
    return make_example_dataset(size=128, fields_per_plate=1)


def test_inputs_carry_each_image_s_content_hashes(images):
    inputs = inputs_of(images)
    assert [f.name for f in inputs] == [img.name for img in images]
    assert [f.pixels_hash for f in inputs] == [content_hash(img.pixels) for img in images]
    assert [f.gt_hash for f in inputs] == [content_hash(img.gt) for img in images]
    assert [(f.batch, f.condition) for f in inputs] == [(img.batch, img.condition) for img in images]
    edited = images[0].with_(pixels=images[0].pixels + 1)
    assert inputs_of([edited])[0].pixels_hash != inputs[0].pixels_hash


@pytest.mark.parametrize("where", ["saved", "saved.zip"])
def test_a_record_saves_and_loads_whole(images, tmp_path, where):
    made = []
    files = LazyFiles({"a.txt": lambda: made.append("a") or "text", "sub/b.bin": lambda: b"\x00\x01"})
    table = pd.DataFrame({"image": ["x", "y"], "cells": [3, 4], "f1": [0.5, 0.75]})
    record = Analysis("segmentation", inputs_of(images), {"recipe": DEFAULT_RECIPE.to_dict(), "k": 6},
                      provenance(recipe=DEFAULT_RECIPE, device="cpu"), tables={"summary": table}, files=files)
    assert made == []  # files are made when read, once
    record.save(tmp_path / where)
    assert made == ["a"]
    back = Analysis.load(tmp_path / where)
    assert (back.kind, back.inputs, back.settings, back.created) == (record.kind, record.inputs, record.settings,
                                                                      record.created)
    assert provenance_id(back.provenance) == provenance_id(record.provenance)
    pd.testing.assert_frame_equal(back.tables["summary"], table)
    assert dict(back.files) == {"a.txt": b"text", "sub/b.bin": b"\x00\x01"}
    manifest = back.manifest()
    assert manifest["tables"] == {"summary": {"rows": 2, "columns": ["image", "cells", "f1"]}}
    assert len(manifest["files"]["a.txt"]) == 64
    json.dumps(manifest)  # JSON as it is


def test_loading_something_else_says_so(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match=f"no {MANIFEST_FILE}"):
        Analysis.load(tmp_path)


def test_the_recipe_on_every_image_is_a_record_whose_labels_and_counts_are_the_pipeline_s(images):
    from workflows.segmentation import run_segmentation

    run = run_segmentation(images, DEFAULT_RECIPE)
    record = run.analysis
    assert run.problems == [] and record.kind == "segmentation" and record.settings["model"] == "classical"
    expected = {img.name: run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE).labels for img in images}
    summary = record.tables["summary"]
    assert list(summary["image"]) == [img.name for img in images]
    assert list(summary["cells"]) == [int(expected[img.name].max()) for img in images]
    assert list(summary["f1"]) == [round(match_instances(img.gt, expected[img.name]).f1, 4) for img in images]
    cells = record.tables["cells"]
    assert cells.groupby("image", sort=False).size().to_dict() == {n: int(v.max()) for n, v in expected.items()}
    with zipfile.ZipFile(io.BytesIO(record.files["labels.zip"])) as zf:
        assert PROVENANCE_FILE in zf.namelist()
        for name, labels in expected.items():
            assert np.array_equal(tifffile.imread(io.BytesIO(zf.read(f"{name}_labels.tif"))), labels)
    csv = pd.read_csv(io.BytesIO(record.files["cells.csv"]))
    assert len(csv) == len(cells) and set(csv["provenance_id"]) == {provenance_id(record.provenance)}


def test_a_failing_image_is_a_problem_line_and_the_others_are_kept(images):
    from core.data.instances import instances_from_labels
    from workflows.segmentation import run_segmentation

    def segment(image):
        if image.name == images[1].name:
            raise MemoryError("too big (simulated)")
        return instances_from_labels(image.gt, "classical")

    run = run_segmentation(images, DEFAULT_RECIPE, segment=segment)
    assert run.problems == [f"classical on {images[1].name}: too big (simulated)"]
    assert images[1].name not in set(run.analysis.tables["cells"]["image"])
    assert len(run.analysis.tables["summary"]) == len(images) - 1


def test_the_cell_map_record_holds_the_cli_s_files_and_the_page_s_table(images):
    from models.cellmap import MapSettings
    from workflows.cellmap import CellMapRequest, ground_truth, run_cellmap

    steps = []

    def keep(step, compute):
        steps.append(step)
        return compute(None)

    request = CellMapRequest("ground truth", None, {"size": 32, "mode": "scale", "mask_background": False},
                             "morphology", {}, MapSettings(method="pca", k=3))
    run = run_cellmap(images, request, segment=ground_truth, keep=keep)
    assert steps == ["cells", "features", "map"]
    record = run.analysis
    assert record.kind == "cellmap" and record.inputs == inputs_of(images)
    assert sorted(record.files) == sorted(["cells.csv", "cells.parquet", "batch_effect.json", "map.html", "map.png",
                                           PROVENANCE_FILE])
    table = record.tables["cells"]
    assert len(table) == len(run.cells) == sum(int(img.gt.max()) for img in images)
    csv = pd.read_csv(io.BytesIO(record.files["cells.csv"]))
    assert list(csv.columns[: len(table.columns)]) == list(table.columns) and "provenance_id" in csv.columns
    assert json.loads(record.files["batch_effect.json"])["verdict"] == run.cell_map.report["verdict"]
    assert json.loads(record.files[PROVENANCE_FILE])["extra"]["features"] == "morphology"
