from __future__ import annotations

import numpy as np
import pytest

from core.batches import apply_batch_table, batches_from_pattern, parse_batch_table
from core.images import CellImage, default_channels


def _img(name):
    return CellImage(name, np.zeros((4, 4, 1), np.uint8), default_channels(1), source=f"{name}.tif")


def test_table_with_and_without_extensions_and_condition():
    t = parse_batch_table(b"Filename\tBatch\tCondition\na.tif\tp1\tctrl\nb\tp2\t\n", sep="\t")
    images, unmatched = apply_batch_table([_img("a"), _img("b"), _img("c")], t)
    assert [(i.batch, i.condition) for i in images] == [("p1", "ctrl"), ("p2", ""), ("unassigned", "")]
    assert unmatched == []


def test_table_reports_rows_without_images():
    t = parse_batch_table(b"filename,batch\nzzz.png,p9\n")
    _, unmatched = apply_batch_table([_img("a")], t)
    assert unmatched == ["zzz"]


def test_table_without_batch_column_is_rejected():
    with pytest.raises(ValueError, match="needs the columns"):
        parse_batch_table(b"filename,plate\na,1\n")


def test_pattern_named_group():
    got = batches_from_pattern(["plate1_A01", "plate2_B03", "other"], r"(?P<batch>plate\d+)")
    assert got == {"plate1_A01": "plate1", "plate2_B03": "plate2"}


@pytest.mark.parametrize(("pattern", "msg"), [("(unclosed", "invalid pattern"), (r"plate\d", "named group")])
def test_bad_patterns(pattern, msg):
    with pytest.raises(ValueError, match=msg):
        batches_from_pattern(["a"], pattern)
