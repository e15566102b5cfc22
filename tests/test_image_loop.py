"""workflows/image_loop.py: the one "every image" loop of the Preprocess, Compare and Cell map pages and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.images import CellImage, default_channels
from core.data.instances import instances_from_labels
from workflows.image_loop import SegmentSettings, problems_of, run_images, run_on_images, segment_image


def _image(name: str, n: int, batch: str) -> CellImage:
    labels = np.zeros((32, 32), np.int32)
    for i in range(n):
        labels[2 + 6 * i : 6 + 6 * i, 2:6] = i + 1
    return CellImage(name, labels[:, :, None].astype(np.uint16), default_channels(1), batch=batch, gt=labels)


def test_every_image_and_model_runs_in_order_with_progress_and_a_failure_stays_one_message():
    images = [_image("a", 2, "p1"), _image("b", 3, "p2")]
    seen = []

    def compute(img, name):
        if name == "broken" and img.name == "b":
            raise RuntimeError("out of memory (simulated)")
        return instances_from_labels(img.gt, name)

    run = run_on_images(images, ["ok", "broken"], compute, lambda img, r: {"cells": r.count},
                        progress=lambda f, what: seen.append((round(f, 2), what)))
    assert list(zip(run.table.image, run.table.model, run.table.cells, strict=True)) == [
        ("a", "ok", 2), ("a", "broken", 2), ("b", "ok", 3)]
    assert list(run.table.batch) == ["p1", "p1", "p2"] and set(run.results) == {("a", "ok"), ("a", "broken"), ("b", "ok")}
    assert run.problems == ["broken on b: out of memory (simulated)"]
    assert seen == [(0.0, "ok on a"), (0.25, "broken on a"), (0.5, "ok on b"), (0.75, "broken on b"), (1.0, "done")]


def test_a_model_failing_alike_on_every_image_is_one_line():
    images = [_image(name, 1, "p1") for name in "abcd"]

    def compute(img, name):
        if name == "old":
            raise ValueError("set the diameter to 0")
        if img.name == "c":
            raise RuntimeError(f"bad pixels in {img.name}")
        return instances_from_labels(img.gt, name)

    run = run_on_images(images, ["old", "new"], compute, lambda img, r: {"cells": r.count})
    assert run.problems == ["old on 4 images (a, b, …): set the diameter to 0", "new on c: bad pixels in c"]
    assert list(run.table.model) == ["new"] * 3


class _ThreadExecutor:
    """An executor as a Dask one would be: every image submitted at once, results in input order."""

    def __init__(self) -> None:
        self.submitted = 0

    def map(self, fn, items):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(fn, item) for item in items]
            self.submitted = len(futures)
            for future in futures:
                yield future.result()


def _count_cells(image, settings):
    if image.name == settings["broken"]:
        raise ValueError(f"no cells in {image.name} (simulated)")
    return int(image.gt.max()) * settings["times"]


def test_run_images_keeps_input_order_and_reports_each_failure_with_its_image_through_any_executor():
    images = [_image(name, n, "p1") for name, n in (("a", 1), ("b", 2), ("c", 3), ("d", 4))]
    settings = {"broken": "c", "times": 10}
    serial = run_images(images, _count_cells, settings)
    executor = _ThreadExecutor()
    threaded = run_images(images, _count_cells, settings, executor=executor)
    assert executor.submitted == 4
    for outcomes in (serial, threaded):
        assert [(o.name, o.result, o.error) for o in outcomes] == [
            ("a", 10, None), ("b", 20, None), ("c", None, "no cells in c (simulated)"), ("d", 40, None)]
        assert problems_of(outcomes) == ["c: no cells in c (simulated)"]


def test_run_images_reports_progress_before_each_image_and_an_unexpected_error_still_raises():
    images = [_image(name, 1, "p1") for name in "ab"]
    seen = []
    run_images(images, _count_cells, {"broken": "", "times": 1}, progress=lambda f, what: seen.append((f, what)))
    assert seen == [(0.0, "a"), (0.5, "b"), (1.0, "done")]

    def bug(image, settings):
        raise KeyError("a bug, not a bad image")

    with pytest.raises(KeyError):
        run_images(images, bug, None)


def test_the_per_image_unit_segments_measures_and_crops_on_request():
    from core.cells.cell_set import CellSet

    image = _image("a", 3, "p1")
    plain = segment_image(image, SegmentSettings(segment=lambda img: img.gt))
    assert plain.image == "a" and plain.instances is None and plain.crops is None and plain.measurements == {}
    assert np.array_equal(plain.labels, image.gt)
    full = segment_image(image, SegmentSettings(segment=lambda img: instances_from_labels(img.gt, "gt"),
                                                measure=lambda img, r: {"cells": r.count},
                                                crops={"size": 16, "mode": "pad"}))
    assert full.measurements == {"cells": 3} and full.instances.count == 3
    reference = CellSet.build([(image, image.gt)], size=16, mode="pad")
    assert full.crops.shape == (3, 16, 16, 1)
    assert np.array_equal(full.crops, reference.crops(np.arange(3)))


def test_find_cells_goes_through_the_loop_and_names_the_image_that_failed():
    from workflows.cellmap import find_cells, ground_truth

    images = [_image("a", 2, "p1"), _image("b", 3, "p2")]
    cells = find_cells(images, ground_truth, crop={"size": 48})
    assert len(cells) == 5 and cells.size == 48 and list(cells.table["image"].unique()) == ["a", "b"]

    def segment(img):
        if img.name == "b":
            raise RuntimeError("weights missing (simulated)")
        return img.gt

    with pytest.raises(ValueError, match="^b: weights missing"):
        find_cells(images, segment)
