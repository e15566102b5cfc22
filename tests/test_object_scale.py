"""core/segmentation/object_scale.py: the training nuclei's size, and resizing an image whose nuclei differ."""

from __future__ import annotations

import numpy as np
import pytest

from core.segmentation.object_scale import (
    TOLERANCE,
    ObjectScale,
    resize_factor,
    resize_maps,
    resize_planes,
    training_scale,
)


def _disks(radius: float, size: int = 256, spacing: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A dim, noisy plane with a grid of bright disks of ``radius``, and their labels."""
    spacing = spacing or int(4 * radius)
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.zeros((size, size), np.int32)
    n = 0
    for cy in range(spacing // 2, size - int(radius), spacing):
        for cx in range(spacing // 2, size - int(radius), spacing):
            n += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = n
    rng = np.random.default_rng(0)
    plane = np.clip(0.05 + 0.6 * (labels > 0) + 0.02 * rng.standard_normal(labels.shape), 0, 1).astype(np.float32)
    return plane[:, :, None], labels


def test_training_scale_is_the_labels_diameter_and_the_estimate_on_the_images():
    planes, labels = _disks(10)
    scale = training_scale([planes, planes], [labels, labels])
    assert scale.diameter == pytest.approx(20.0, rel=0.05)
    assert scale.estimated == pytest.approx(20.0, rel=0.25)  # the label-free estimate: rough, but the same kind
    assert ObjectScale.from_dict(scale.to_dict()) == scale
    assert ObjectScale.from_dict(None) is None and ObjectScale.from_dict({"diameter": 20}) is None
    assert ObjectScale.from_dict({"diameter": 0, "estimated": 5}) is None


def test_images_are_resized_only_when_their_nuclei_clearly_differ():
    planes, labels = _disks(10)
    scale = training_scale([planes], [labels])
    assert resize_factor(scale, planes[:, :, 0]) == 1.0  # the same size
    assert resize_factor(scale, _disks(12)[0][:, :, 0]) == 1.0  # 1.2x: within the estimate's noise, left alone
    large = resize_factor(scale, _disks(25, size=400)[0][:, :, 0])  # 2.5x larger nuclei: shrink the image
    assert 1 / (2.5 * 1.25) < large < 1 / TOLERANCE
    small = resize_factor(scale, _disks(4, size=128)[0][:, :, 0])  # 2.5x smaller: enlarge it
    assert TOLERANCE < small <= 2.0  # enlarged at most 2x (time grows with the square)
    assert resize_factor(scale, planes[:, :, 0], diameter=1.0) == 2.0
    # A diameter the user knows is matched to the labels' diameter exactly, even when close.
    assert resize_factor(scale, planes[:, :, 0], diameter=24.0) == pytest.approx(scale.diameter / 24.0)
    assert resize_factor(scale, planes[:, :, 0], diameter=1000.0) == 0.25  # at most 4x either way
    assert resize_factor(None, planes[:, :, 0], diameter=40.0) == 1.0  # size unknown: as it is


def test_resized_planes_and_maps_keep_their_channels_and_come_back_to_size():
    planes = np.random.default_rng(1).random((50, 70, 2)).astype(np.float32)
    half = resize_planes(planes, 0.5)
    assert half.shape == (25, 35, 2) and half.dtype == np.float32
    assert resize_planes(planes[:, :, :1], 1.6).shape == (80, 112, 1)
    maps = np.stack([np.full((25, 35), 0.25, np.float32), np.full((25, 35), 0.75, np.float32)])
    back = resize_maps(maps, 50, 70)
    assert back.shape == (2, 50, 70)
    np.testing.assert_allclose(back.sum(0), 1.0, atol=1e-6)  # probabilities stay probabilities
