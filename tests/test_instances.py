"""core/data/instances.py: cutting objects that are two touching nuclei drawn as one."""

from __future__ import annotations

import numpy as np

from core.data.instances import split_concave


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_two_touching_disks_drawn_as_one_are_cut_at_the_waist():
    labels = np.zeros((60, 90), np.int32)
    labels[_disk(labels.shape, 30, 30, 14) | _disk(labels.shape, 30, 55, 12)] = 3
    labels[_disk(labels.shape, 8, 80, 5)] = 7  # a small round one nearby stays as it is
    out = split_concave(labels, 0.9)
    assert sorted(np.unique(out)) == [0, 3, 7, 8]
    left, right = out[30, 20], out[30, 62]
    assert {left, right} == {3, 8}
    waist = np.argwhere((out == right).any(0)).min()  # the cut lies at the narrowest column, between the centres
    assert 40 <= waist <= 46
    np.testing.assert_array_equal(out == 7, labels == 7)
    np.testing.assert_array_equal(out > 0, labels > 0)  # no pixel is lost or added
    np.testing.assert_array_equal(split_concave(labels, 0.0), labels)  # off


def test_a_single_nucleus_elongated_or_rough_is_left_alone():
    yy, xx = np.mgrid[0:60, 0:100]
    ellipse = ((yy - 30) / 10.0) ** 2 + ((xx - 50) / 35.0) ** 2 <= 1  # 7:2, convex
    labels = ellipse.astype(np.int32)
    np.testing.assert_array_equal(split_concave(labels, 0.99), labels)
    kidney = _disk((60, 100), 30, 50, 18) & ~_disk((60, 100), 30, 72, 12)  # concave, one maximum
    labels = kidney.astype(np.int32) * 2
    np.testing.assert_array_equal(split_concave(labels, 0.99), labels)  # solidity 0.92: examined, kept
