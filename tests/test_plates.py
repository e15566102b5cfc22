from __future__ import annotations

import numpy as np
import pytest

from core.data.images import CellImage, default_channels
from core.data.plates import apply_batch_table, batches_from_pattern, parse_batch_table


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



@pytest.mark.parametrize(
    ("table", "dose"),
    [
        (b"\xef\xbb\xbffilename,batch,condition\r\na.tif,p1,10 uM\r\nb.tif,p2,ctrl\r\n", "10 uM"),  # Excel: BOM, CRLF
        (b"filename;batch;condition\r\na.tif;p1;10 \xb5M\r\nb.tif;p2;ctrl\r\n", "10 \u00b5M"),  # German Excel, cp1252
        (b"filename\tbatch\tcondition\na.tif\tp1\t10 \xc2\xb5M\nb.tif\tp2\tctrl\n", "10 \u00b5M"),  # tabs, named .csv
        (b"filename,batch,condition\nimages/a.tif,p1,10 uM\nC:\\data\\b.tif,p2,ctrl\n", "10 uM"),  # with folders
    ],
    ids=["excel-utf8", "excel-semicolons-cp1252", "tabs", "folders"],
)
def test_tables_as_spreadsheets_save_them(table, dose):
    assert parse_batch_table(table).rows == {"a": ("p1", dose), "b": ("p2", "ctrl")}
