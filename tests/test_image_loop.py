"""workflows/image_loop.py: the one "every image" loop of the Preprocess, Compare and Cell map pages and the CLI."""

from __future__ import annotations

import numpy as np

from core.images import CellImage, default_channels
from core.instances import instances_from_labels
from workflows.image_loop import run_on_images


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
