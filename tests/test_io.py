"""The one loader: formats, bit depths, channels, stacks, HPA sets, zips, masks and bad input."""

from __future__ import annotations

import io
import shutil
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs, jpeg_bytes, png_bomb_bytes, png_bytes, tiff_bomb_bytes, tiff_bytes

from core.io import guards as read_guards
from core.io import load as cio
from core.io.decode import read_image, read_labels
from core.io.export import dataset_zip, write_dataset
from core.io.guards import ImageReadError
from core.io.load import load_files


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
    monkeypatch.setattr(read_guards, "MAX_ZIP_BYTES", 1000)
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
    monkeypatch.setattr(read_guards, "MAX_VALUES", 1000)
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



# ---------------------------------------------------------------------------------------
# Zip bombs: members are checked from the zip's directory and their first bytes, then read
# and decoded one at a time


def _patch_member(
    data: bytes, *, file_size: int | None = None, method: int | None = None, crc: int | None = None, flags: int = 0
) -> bytes:
    """Rewrite the one member's unpacked size, compression method, CRC or flags in its local
    header and in the central directory, as a hand-made zip can state them."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (info,) = zf.infolist()
        local, central = info.header_offset, zf.start_dir
    values = (("<H", info.flag_bits | flags), ("<H", method), ("<I", crc), ("<I", file_size))
    out = bytearray(data)
    # Where flags, method, CRC-32 and unpacked size sit in the local header and the central directory.
    for start, offsets in ((local, (6, 8, 14, 22)), (central, (8, 10, 16, 24))):
        for offset, (fmt, value) in zip(offsets, values, strict=True):
            if value is not None:
                struct.pack_into(fmt, out, start + offset, value)
    return bytes(out)


def _zeros_zip(n_mib: int, name: str = "zeros.tif", head: bytes = b"") -> bytes:
    """A zip of one member: ``head`` then zeros, n_mib MiB in all, deflated as `zip` does (~1030:1).

    Built without compressing gigabytes: after a full flush deflate starts afresh, so every
    further MiB of zeros packs to the same block.
    """
    mib = bytes(2**20)
    first = head + mib[len(head) :]
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    first_block = deflate.compress(first) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream = first_block + block * (n_mib - 1) + deflate.flush()
    crc = zlib.crc32(first)
    for _ in range(n_mib - 1):
        crc = zlib.crc32(mib, crc)
    return _patch_member(_zip({name: stream}), file_size=n_mib * 2**20, method=zipfile.ZIP_DEFLATED, crc=crc)


@pytest.fixture(scope="module")
def zeros_zip() -> bytes:
    """The issue's upload: a 1.5 MB zip holding a 1.5 GB member of zeros named .tif."""
    return _zeros_zip(1536)


class _Unpacking:
    """Counts the bytes zip members hand out, and the peak of Python's allocations (numpy's
    included), while the block runs."""

    def __enter__(self):
        self.bytes = 0
        self._read = read = zipfile.ZipExtFile.read

        def counted(fh, n=-1):
            data = read(fh, n)
            self.bytes += len(data)
            return data

        zipfile.ZipExtFile.read = counted
        tracemalloc.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        self.peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        zipfile.ZipExtFile.read = self._read


def test_the_zeros_zip_is_the_issues_upload(zeros_zip):
    with zipfile.ZipFile(io.BytesIO(zeros_zip)) as zf:
        (info,) = zf.infolist()
        with zf.open(info) as fh:
            assert fh.read(2**20) == bytes(2**20) and fh.read(2**20) == bytes(2**20)
    assert info.file_size == 1536 * 2**20 and 1.5e6 < len(zeros_zip) < 1.6e6
    tail = _zeros_zip(3, head=b"II*\x00")
    with zipfile.ZipFile(io.BytesIO(tail)) as zf:  # the CRC holds: it is a valid zip throughout
        assert zf.read("zeros.tif") == b"II*\x00" + bytes(3 * 2**20 - 4)


def test_a_gigabyte_member_that_is_no_image_is_refused_from_its_first_bytes(zeros_zip):
    with _Unpacking() as unpacking:
        report = load_files([("bomb.zip", zeros_zip), ("good.tif", GOOD)])
    assert [img.name for img in report.images] == ["good"]
    assert [str(p) for p in report.problems] == [
        "bomb.zip › zeros.tif: not a PNG, JPEG or TIFF image (its content matches none of them)"
    ]
    assert unpacking.bytes == 16  # its first bytes, never the 1.5 GiB
    assert unpacking.peak_mib < 20  # measured before: 3 GiB
    assert unpacking.seconds < 1  # measured before: 7 s


def test_cli_info_on_the_zip_bomb_prints_one_line_and_fails(zeros_zip, tmp_path, capsys):
    from workflows.cli import main

    path = tmp_path / "bomb.zip"
    path.write_bytes(zeros_zip)
    with _Unpacking() as unpacking:
        rc = main(["info", str(path)])
    assert rc == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: bomb.zip › zeros.tif: not a PNG, JPEG or TIFF image (its content matches none of them)"
    ]
    assert unpacking.bytes == 16 and unpacking.peak_mib < 20


def test_a_member_that_starts_as_a_tiff_but_packs_like_a_bomb_is_refused():
    bomb = _zeros_zip(100, "plate1/b.tif", head=GOOD[:8])  # a TIFF header, then zeros: 1000:1
    with _Unpacking() as unpacking:
        report = load_files([("e.zip", bomb)])
    (problem,) = report.problems
    assert problem.file == "e.zip › plate1/b.tif"  # the zip named: the user never saw the member
    assert "likely zip bomb" in problem.message and "upload it on its own" in problem.message
    assert unpacking.bytes == 16


@pytest.mark.parametrize(
    ("max_values", "expected"),
    [
        (read_guards.MAX_VALUES, "unpacks to 3072 MiB from 8 KiB (381300:1), far more than images pack: refused as a likely zip bomb"),
        (2**24, "unpacks to 3.0 GiB, more than any image within the limits takes (0.2 GiB: 17 million 8-byte values)"),
    ],
)
def test_a_member_claiming_a_huge_size_is_refused_before_it_is_unpacked(monkeypatch, max_values, expected):
    monkeypatch.setattr(read_guards, "MAX_VALUES", max_values)
    claims = _patch_member(_zip({"a.tif": GOOD}), file_size=3 * 2**30)  # 3 GiB from 8 KiB
    with _Unpacking() as unpacking:
        report = load_files([("e.zip", claims)])
    assert not report.images and report.problems[0].file == "e.zip › a.tif"
    assert report.problems[0].message.startswith(expected)
    assert unpacking.bytes == 16


@pytest.mark.parametrize(
    ("packed", "expected"),
    [
        (lambda zf: zf.writestr("a.tif", GOOD, zipfile.ZIP_BZIP2), "is packed with bzip2, which CellScope"),
        (lambda zf: zf.writestr("a.tif", GOOD, zipfile.ZIP_LZMA), "is packed with lzma, which CellScope"),
        (None, "is encrypted; zip it again without a password"),
    ],
    ids=["bzip2", "lzma", "encrypted"],
)
def test_members_python_cannot_unpack_safely_are_refused_unread(packed, expected):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        (packed or (lambda zf: zf.writestr("a.tif", GOOD)))(zf)
    data = buf.getvalue() if packed else _patch_member(buf.getvalue(), flags=0x1)
    with _Unpacking() as unpacking:
        report = load_files([("b.zip", data)])
    assert not report.images and report.problems[0].file == "b.zip › a.tif"
    assert report.problems[0].message.startswith(expected)
    assert unpacking.bytes == 0


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (zipfile.ZIP_STORED, "(Bad CRC-32 for file 'a.tif')"),
        (zipfile.ZIP_DEFLATED, "(Error -3 while decompressing data"),  # was an uncaught zlib.error
    ],
)
def test_corrupt_member_data_is_reported_and_the_rest_loads(method, expected):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("a.tif", tiff_bytes(blobs(256, 256)))
        zf.writestr("b.tif", GOOD)
        a = zf.getinfo("a.tif")
    data = bytearray(buf.getvalue())
    start = a.header_offset + 30 + len("a.tif")
    data[start + a.compress_size // 2 : start + a.compress_size // 2 + 8] = b"\xff" * 8  # past its first bytes
    report = load_files([("e.zip", bytes(data))])
    assert [img.name for img in report.images] == ["b"]
    assert report.problems[0].file == "e.zip › a.tif"
    assert report.problems[0].message.startswith(f"cannot be unpacked {expected}")


def test_zip_members_are_decoded_one_at_a_time():
    """Peak memory is the decoded images plus about one file, not every member's bytes too."""
    rng = np.random.default_rng(0)
    members = {f"plate{i % 4}/f{i}.tif": tiff_bytes(rng.integers(0, 4000, (512, 512), np.uint16)) for i in range(16)}
    data = _zip(members)
    load_files([("warm.zip", _zip({"w.tif": GOOD}))])  # imports tifffile outside the measurement
    with _Unpacking() as unpacking:
        report = load_files([("e.zip", data)])
    assert not report.problems and len(report.images) == 16
    assert {img.batch for img in report.images} == {"plate0", "plate1", "plate2", "plate3"}
    decoded_mib = sum(img.pixels.nbytes for img in report.images) / 2**20  # 8 MiB
    assert unpacking.peak_mib < decoded_mib + 2  # files are 0.5 MiB; before: decoded + 8 MiB


# ---------------------------------------------------------------------------------------
# The example folder, zipped the ways people zip a folder, uploads back unchanged


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """``python -m core example``'s layout (images/, masks/, batches.csv), small."""
    from core.io.example import make_example_dataset

    images = make_example_dataset(size=128, fields_per_plate=2)
    folder = tmp_path_factory.mktemp("example") / "example_data"
    write_dataset(images, folder)
    return images, folder


def _zip_folder(folder, *, arcname=lambda rel: rel, table=None, extra=(), dirs=()) -> bytes:
    """The folder's files under ``arcname(relative path)``, the batch table optionally rewritten."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d), b"")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            zf.writestr(arcname(rel), table(data) if table and rel == "batches.csv" else data)
        for name, data in extra:
            zf.writestr(name, data)
    return buf.getvalue()


def _excel(table: bytes) -> bytes:
    """Re-saved by Excel in a locale with a decimal comma: BOM, CRLF, semicolons."""
    return b"\xef\xbb\xbf" + table.replace(b"\r\n", b"\n").replace(b",", b";").replace(b"\n", b"\r\n")


def _with_folders(table: bytes, prefix: bytes) -> bytes:
    lines = table.splitlines(keepends=True)
    return lines[0] + b"".join(prefix + line for line in lines[1:])


ZIPPED_EXAMPLE = {
    "from inside the folder": lambda f: _zip_folder(f),
    "the folder itself (zip -r)": lambda f: _zip_folder(
        f, arcname=lambda rel: f"example_data/{rel}", dirs=["example_data/", "example_data/images/"]
    ),
    "macOS Finder": lambda f: _zip_folder(
        f,
        arcname=lambda rel: f"example_data/{rel}",
        dirs=["example_data/", "example_data/masks/"],
        extra=[
            ("__MACOSX/example_data/._batches.csv", b"\x00\x05\x16\x07 resource fork"),
            ("__MACOSX/example_data/images/._plateA_field1.tif", b"\x00\x05\x16\x07 resource fork"),
            ("example_data/.DS_Store", b"\x00\x00\x00\x01Bud1"),
        ],
    ),
    "Windows, backslashes": lambda f: _zip_folder(
        f,
        arcname=lambda rel: "example_data\\" + rel.replace("/", "\\"),
        dirs=["example_data\\", "example_data\\images\\"],
        extra=[("example_data\\images\\Thumbs.db", b"\xd0\xcf\x11\xe0")],
    ),
    "shutil.make_archive": lambda f: Path(
        shutil.make_archive(str(f.parent / "archive"), "zip", root_dir=f.parent, base_dir=f.name)
    ).read_bytes(),
    "table re-saved by Excel": lambda f: _zip_folder(f, table=_excel),
    "table names with folders": lambda f: _zip_folder(f, table=lambda t: _with_folders(t, b"images/")),
    "table names with Windows folders": lambda f: _zip_folder(
        f, arcname=lambda rel: f"example_data/{rel}", table=lambda t: _with_folders(t, b"C:\\data\\images\\")
    ),
}


@pytest.mark.parametrize("how", list(ZIPPED_EXAMPLE))
def test_zipped_example_folder_loads_like_the_folder(example_folder, how):
    images, folder = example_folder
    expected = [(i.name, i.batch, i.condition, i.n_cells_gt, i.hash) for i in images]
    from_folder = cio.load_paths([folder])
    assert not from_folder.problems
    assert [(i.name, i.batch, i.condition, i.n_cells_gt, i.hash) for i in from_folder.images] == expected
    report = load_files([("example_data.zip", ZIPPED_EXAMPLE[how](folder))])
    assert not report.problems
    assert [(i.name, i.batch, i.condition, i.n_cells_gt, i.hash) for i in report.images] == expected
    assert all(i.gt is not None for i in report.images) and expected[0][3] > 10


def test_dataset_zip_round_trip(example_folder):
    images, _ = example_folder
    report = load_files([("cellscope_dataset.zip", dataset_zip(images))])
    assert not report.problems
    assert [(i.name, i.batch, i.condition, i.hash, i.channels) for i in report.images] == [
        (i.name, i.batch, i.condition, i.hash, i.channels) for i in images
    ]
    assert all(np.array_equal(a.gt, b.gt) for a, b in zip(report.images, images, strict=True))


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        # One folder of images and nothing else: the folder names them and is their batch.
        (["exp/a.tif", "exp/b.tif"], [("exp/a", "exp"), ("exp/b", "exp")]),
        # Folders below it: it only wraps them, and they are the batches.
        (["exp/plate1/a.tif", "exp/plate2/b.tif"], [("plate1/a", "plate1"), ("plate2/b", "plate2")]),
        # Folders without a shared top folder keep their names.
        (["plate1/a.tif", "plate2/b.tif"], [("plate1/a", "plate1"), ("plate2/b", "plate2")]),
        (["images/a.tif", "images/b.tif"], [("a", "unassigned"), ("b", "unassigned")]),
    ],
)
def test_a_folder_wrapping_the_whole_zip_is_dropped_from_names(members, expected):
    report = load_files([("e.zip", _zip({m: GOOD for m in members}))])
    assert not report.problems
    assert [(i.name, i.batch) for i in report.images] == expected


def test_a_wrapping_folder_is_not_the_batch_of_images_the_table_leaves_out():
    table = b"filename,batch\na.tif,day1\n"
    report = load_files([("e.zip", _zip({"exp/a.tif": GOOD, "exp/b.tif": GOOD, "exp/batches.csv": table}))])
    assert [(i.name, i.batch) for i in report.images] == [("a", "day1"), ("b", "unassigned")]


def test_an_oversized_batch_table_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(read_guards, "MAX_TABLE_BYTES", 2**20)
    table = b"filename,batch\n" + b"a.png,plate1\n" * 100_000  # 1.2 MiB
    report = load_files([("batches.csv", table), ("a.png", png_bytes(blobs(dtype=np.uint8)))])
    assert [img.name for img in report.images] == ["a"] and report.batch_table is None
    assert [str(p) for p in report.problems] == [
        "batches.csv: batch table is 1 MiB, above the 1 MiB a table of file names needs; is it the right file?"]


# ---------------------------------------------------------------------------------------
# A file's header is checked before the file is read whole (issue 21)


@pytest.fixture()
def sparse_tiff(tmp_path) -> Path:
    """A TIFF declaring 70000 x 70000 pixels: a 4.9 GB file on disk, sparse, written in a millisecond."""
    import tifffile

    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, shape=(70000, 70000), dtype="uint8")
    assert path.stat().st_size > 4.8e9
    return path


def _refuse_whole_reads(monkeypatch):
    def read_whole(self):
        raise AssertionError(f"{self.name} was read whole")

    monkeypatch.setattr(Path, "read_bytes", read_whole)


def test_a_sparse_tiff_declaring_70000_squared_pixels_is_refused_from_its_header(sparse_tiff, monkeypatch):
    _refuse_whole_reads(monkeypatch)  # before: read_entry read all 4.9 GB (23 s) before decode checked the size
    tracemalloc.start()
    start = time.perf_counter()
    report = cio.load_paths([sparse_tiff])
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not report.images
    assert [p.file for p in report.problems] == ["huge.tif"]
    assert "70000x70000 pixels (4900 MP), above the" in report.problems[0].message
    assert seconds < 2 and peak < 20 * 2**20


def test_cli_info_on_a_sparse_huge_tiff_fails_from_its_header(sparse_tiff, monkeypatch, capsys):
    from workflows.cli import main

    _refuse_whole_reads(monkeypatch)
    assert main(["info", str(sparse_tiff)]) == 1
    assert "huge.tif: image is 70000x70000 pixels" in capsys.readouterr().err



def test_a_compressed_tiff_with_damaged_data_is_a_problem_not_a_crash(tmp_path):
    """Before: imagecodecs' DeflateError (a RuntimeError) escaped load_paths and `info` crashed."""
    import tifffile

    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, blobs(), compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * count)
    report = cio.load_paths([path, tmp_path / "missing.tif"])
    problems = {p.file: p.message for p in report.problems}
    assert "TIFF file is corrupt or truncated" in problems["damaged.tif"] and len(problems) == 2
