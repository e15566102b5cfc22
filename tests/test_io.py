"""The one loader: formats, bit depths, channels, stacks, HPA sets, zips, masks and bad input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import blobs, jpeg_bytes, png_bomb_bytes, png_bytes, tiff_bomb_bytes, tiff_bytes

from core import io as cio
from core.io import ImageReadError, load_files, read_image, read_labels


def test_16bit_tiff_keeps_values_and_dtype():
    img = blobs(dtype=np.uint16)
    out = read_image(tiff_bytes(img), "a.tif").pixels
    assert out.shape == (64, 64, 1) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], img)


def test_channels_first_tiff_becomes_channels_last():
    img = np.stack([blobs(seed=s) for s in range(3)])  # (C, H, W)
    out = read_image(tiff_bytes(img, metadata={"axes": "CYX"}), "c.tif").pixels
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out[..., 2], img[2])


def test_zstack_max_projection_or_one_plane():
    stack = np.stack([np.full((32, 32, 2), z, np.uint16) for z in range(5)])  # Z, Y, X, C
    stack = np.moveaxis(stack, 3, 1)  # Z, C, Y, X
    data = tiff_bytes(stack, imagej=True, metadata={"axes": "ZCYX"})
    projected = read_image(data, "z.tif")
    assert projected.pixels.shape == (32, 32, 2) and projected.pixels.max() == 4
    assert any("maximum projection of 5 planes" in n for n in projected.notes)
    plane = read_image(data, "z.tif", plane=2)
    assert (plane.pixels == 2).all() and any("plane 2 of 5" in n for n in plane.notes)


def test_plain_multipage_tiff_few_pages_are_channels_many_are_planes():
    few = np.stack([np.full((16, 16), v, np.uint8) for v in (1, 2, 3)])
    assert read_image(tiff_bytes(few, metadata=None), "p.tif").pixels.shape == (16, 16, 3)
    many = np.stack([np.full((16, 16), v, np.uint8) for v in range(20)])
    out = read_image(tiff_bytes(many, metadata=None), "p.tif")
    assert out.pixels.shape == (16, 16, 1) and out.pixels.max() == 19


def test_ome_tiff_channel_names_set_roles():
    img = np.stack([blobs(seed=s) for s in range(3)])
    data = tiff_bytes(img, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "Phalloidin", "GFP"]}})
    report = load_files([("ome.tif", data)])
    roles = [c.role for c in report.images[0].channels]
    assert roles == ["nucleus", "cytoplasm", "protein"]


def test_16bit_rgb_png_keeps_bits_and_channel_order():
    rgb = np.zeros((20, 20, 3), np.uint16)
    rgb[..., 0] = 60000  # red
    rgb[..., 2] = 300  # blue
    out = read_image(png_bytes(rgb), "rgb.png").pixels
    assert out.dtype == np.uint16 and out.shape == (20, 20, 3)
    assert out[0, 0, 0] == 60000 and out[0, 0, 2] == 300


def test_grey_saved_as_rgb_is_one_channel():
    grey = blobs(dtype=np.uint8)
    out = read_image(jpeg_bytes(np.dstack([grey] * 3)), "g.jpg")
    assert out.pixels.shape == (64, 64, 1)


def test_float_tiff_nan_set_to_zero_with_note():
    img = blobs(dtype=np.float32)
    img[0, :5] = np.nan
    out = read_image(tiff_bytes(img), "f.tif")
    assert out.pixels.dtype == np.float32 and np.isfinite(out.pixels).all()
    assert any("5 NaN" in n for n in out.notes)


def test_hpa_four_channel_set_is_one_image_in_hpa_order():
    files = [(f"sample1_{c}.png", png_bytes(np.full((24, 24), v, np.uint8))) for c, v in
             (("blue", 30), ("yellow", 40), ("red", 10), ("green", 20))]
    report = load_files(files)
    assert not report.problems
    (img,) = report.images
    assert img.name == "sample1" and img.shape == (24, 24, 4)
    assert [c.name for c in img.channels] == ["red", "green", "blue", "yellow"]
    assert img.pixels[0, 0].tolist() == [10, 20, 30, 40]
    assert [c.role for c in img.channels] == ["cytoplasm", "protein", "nucleus", "other"]


def test_hpa_channel_size_mismatch_is_reported():
    files = [("s_red.png", png_bytes(np.zeros((8, 8), np.uint8))), ("s_green.png", png_bytes(np.zeros((9, 9), np.uint8)))]
    report = load_files(files)
    assert not report.images and "differ in size" in report.problems[0].message


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_folders_become_batches_and_masks_attach():
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    labels[30:40, 30:40] = 2
    data = _zip({
        "plate1/a.tif": tiff_bytes(blobs(seed=1)),
        "plate1/a_mask.tif": tiff_bytes(labels),
        "plate2/b.tif": tiff_bytes(blobs(seed=2)),
        "__MACOSX/plate1/._a.tif": b"junk",
    })
    report = load_files([("exp.zip", data)])
    assert not report.problems
    by_name = {img.name: img for img in report.images}
    assert set(by_name) == {"plate1/a", "plate2/b"}
    assert by_name["plate1/a"].batch == "plate1" and by_name["plate2/b"].batch == "plate2"
    assert by_name["plate1/a"].n_cells_gt == 2 and by_name["plate2/b"].gt is None


def test_batch_table_in_zip_sets_batch_and_condition():
    table = b"filename,batch,condition\nx.png,dayA,ctrl\ny.png,dayB,drug\n"
    data = _zip({"images/x.png": png_bytes(blobs(seed=3)), "images/y.png": png_bytes(blobs(seed=4)), "meta.csv": table})
    report = load_files([("e.zip", data)])
    got = {img.name: (img.batch, img.condition) for img in report.images}
    assert got == {"x": ("dayA", "ctrl"), "y": ("dayB", "drug")}


def test_corrupt_zip_is_reported():
    report = load_files([("broken.zip", b"PK\x03\x04 definitely not a zip")])
    assert report.problems[0].file == "broken.zip" and "not a readable zip" in report.problems[0].message


def test_zip_bomb_limit(monkeypatch):
    monkeypatch.setattr(cio, "MAX_ZIP_BYTES", 1000)
    report = load_files([("big.zip", _zip({"a.tif": tiff_bytes(blobs())}))])
    assert not report.images and "unpacks to" in report.problems[0].message


GOOD = tiff_bytes(blobs())


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.tif", b"", "empty"),
        ("random.png", b"this is not an image at all", "not a PNG, JPEG or TIFF"),
        ("notes.txt", b"hello", "unsupported file type .txt"),
        ("cut.png", png_bytes(blobs(dtype=np.uint8))[:300], "corrupt or truncated"),
        ("cut.jpg", jpeg_bytes(blobs(dtype=np.uint8))[:400], "corrupt or truncated"),
        ("cut.tif", GOOD[: len(GOOD) // 2], "corrupt or truncated"),
        ("bomb.png", png_bomb_bytes(), "above the"),
        ("bomb.tif", tiff_bomb_bytes(), "above the"),
        ("complex.tif", tiff_bytes(np.zeros((8, 8), np.complex64)), "unsupported pixel type complex64"),
    ],
)
def test_bad_file_gets_a_message_and_others_still_load(name, data, expected):
    report = load_files([(name, data), ("good.tif", GOOD)])
    assert [img.name for img in report.images] == ["good"]
    assert len(report.problems) == 1
    assert report.problems[0].file == name
    assert expected in report.problems[0].message


def test_messages_carry_no_object_reprs():
    report = load_files([("x.png", b"\x89PNG\r\n\x1a\nnot really")])
    assert "object at 0x" not in report.problems[0].message
    assert "corrupt or truncated" in report.problems[0].message


def test_wrong_extension_is_read_by_content_with_a_note():
    out = read_image(GOOD, "actually_tiff.png")
    assert out.pixels.shape == (64, 64, 1) and any("content is TIFF" in n for n in out.notes)


def test_stack_value_limit(monkeypatch):
    monkeypatch.setattr(cio, "MAX_VALUES", 1000)
    with pytest.raises(ImageReadError, match="million values"):
        read_image(GOOD, "x.tif")


def test_duplicate_names_keep_first_and_report_second():
    report = load_files([("a.tif", GOOD), ("a.png", png_bytes(blobs(dtype=np.uint8)))])
    assert [img.source for img in report.images] == ["a.tif"]
    assert report.problems[0].file == "a.png" and "already named 'a'" in report.problems[0].message


def test_name_already_in_dataset_is_reported():
    report = load_files([("a.tif", GOOD)], existing_names=["a"])
    assert not report.images and "already named" in report.problems[0].message


def test_ground_truth_with_wrong_shape_is_not_attached():
    report = load_files([("a.tif", GOOD), ("a_labels.tif", tiff_bytes(np.zeros((10, 10), np.uint16)))])
    assert report.images[0].gt is None
    assert report.problems[0].file == "a_labels.tif" and "10x10" in report.problems[0].message


def test_ground_truth_non_integer_rejected():
    gt = np.zeros((64, 64), np.float32)
    gt[0, 0] = 1.5
    with pytest.raises(ImageReadError, match="non-integer"):
        read_labels(tiff_bytes(gt), "gt.tif")


def test_binary_mask_split_into_instances():
    mask = np.zeros((64, 64), np.uint8)
    mask[5:15, 5:15] = 255
    mask[30:40, 30:40] = 255
    labels, notes = read_labels(png_bytes(mask), "m.png")
    assert labels.dtype == np.int32 and labels.max() == 2 and "connected components" in notes[0]


def test_mask_without_image_is_reported():
    report = load_files([("zz_mask.tif", tiff_bytes(np.zeros((8, 8), np.uint16)))])
    assert "no image with that name" in report.problems[0].message


def test_load_paths_reads_folders_and_reports_missing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.tif").write_bytes(GOOD)
    report = cio.load_paths([tmp_path / "d", tmp_path / "missing.tif"])
    assert [i.name for i in report.images] == ["a"]
    assert report.problems[0].message == "no such file or folder"


def test_progress_is_reported_per_file():
    seen = []
    load_files([("a.tif", GOOD), ("b.tif", GOOD)], progress=lambda f, n: seen.append((round(f, 2), n)))
    assert seen == [(0.0, "a.tif"), (0.5, "b.tif")]


def test_a_corrupt_png_is_reported_even_after_ultralytics_patched_pillow():
    """ultralytics replaces PIL.Image.open with a version that imports a HEIF plugin on unknown
    files; once a YOLO model has loaded in the server, corrupt uploads must still be one message."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch, as loading a YOLO model does)
    from PIL import Image

    assert Image.open.__module__ == "ultralytics.utils.patches"
    report = load_files([("broken.png", b"\x89PNG\r\n\x1a\nthis is not really a png")])
    assert not report.images and "broken.png" in str(report.problems[0])
    assert "corrupt or truncated" in str(report.problems[0])
