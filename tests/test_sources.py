"""Images read where they lie (core.io.sources): listed from headers alone, named as load_paths
names them, read whole exactly as load_paths reads them, and read a window at a time reading only
the tiles, strips or chunks under the window."""

from __future__ import annotations

import pickle
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import blobs, jpeg_bytes, png_bytes, tiff_bytes
from skimage.measure import label

from core.data.images import UNASSIGNED
from core.io import guards as read_guards
from core.io.guards import ImageReadError
from core.io.load import load_paths
from core.io.sources import find_sources

RNG = np.random.default_rng(7)


def _rand(*shape, dtype=np.uint16) -> np.ndarray:
    return RNG.integers(0, 4000, shape).astype(dtype)


@pytest.fixture()
def plate_folder(tmp_path) -> Path:
    """Two plates of fields in every format load_paths reads, ground truth and a batch table."""
    root = tmp_path / "screen"
    for plate in ("plate1", "plate2"):
        (root / plate / "masks").mkdir(parents=True)
        (root / plate / "a.tif").write_bytes(tiff_bytes(blobs(seed=1)))
        cells = label(blobs(seed=1) > 1000).astype(np.uint16)  # labelled: no note from load_paths
        (root / plate / "masks" / "a.tif").write_bytes(tiff_bytes(cells))
    stack = np.stack([blobs(seed=s) for s in range(8)])  # 8 planes: a z-stack (up to 6 would be channels)
    (root / "plate1" / "stack.tif").write_bytes(tiff_bytes(stack))
    (root / "plate1" / "ome.tif").write_bytes(
        tiff_bytes(_rand(2, 48, 40), ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}})
    )
    (root / "plate2" / "rgb.png").write_bytes(png_bytes(_rand(40, 30, 3, dtype=np.uint8)))
    grey = blobs(dtype=np.uint8)
    (root / "plate2" / "grey_as_rgb.png").write_bytes(png_bytes(np.dstack([grey] * 3)))
    (root / "plate2" / "b.jpg").write_bytes(jpeg_bytes(blobs(dtype=np.uint8)))
    (root / "plate2" / "c_mask.png").write_bytes(png_bytes(np.zeros((64, 64), np.uint8)))  # no image c
    (root / "top.tif").write_bytes(tiff_bytes(blobs(seed=3)))
    (root / ".hidden.tif").write_bytes(b"not read")
    (root / "batches.csv").write_text("image,batch\n")
    return root


def test_a_folder_is_named_and_read_exactly_as_load_paths_reads_it(plate_folder):
    found = find_sources([plate_folder])
    loaded = load_paths([plate_folder])
    assert [(s.name, s.batch) for s in found.sources] == [(i.name, i.batch) for i in loaded.images]
    assert [s.name for s in found.sources] == [
        "plate1/a", "plate1/ome", "plate1/stack", "plate2/a", "plate2/b", "plate2/grey_as_rgb", "plate2/rgb", "top",
    ]
    assert found.sources[-1].batch == UNASSIGNED
    assert sorted(found.masks) == ["plate1/a", "plate2/a"]  # ground truth is no image; c_mask has no image
    assert [p.file for p in found.problems] == ["plate2/c_mask.png"]
    assert [p.file for p in loaded.problems if "ground truth" in p.message] == ["plate2/c_mask.png"]
    for source, image in zip(found.sources, loaded.images, strict=True):
        read = source.read()
        assert read.pixels.dtype == image.pixels.dtype and np.array_equal(read.pixels, image.pixels)
        assert (read.channels, read.notes, read.batch, read.source) == (
            image.channels, image.notes, image.batch, image.source)
    np.testing.assert_array_equal(found.masks["plate1/a"].read_labels(), loaded.images[0].gt)


def test_headers_describe_the_pixels_as_read(plate_folder):
    by_name = {s.name: s for s in find_sources([plate_folder]).sources}
    assert by_name["plate1/stack"].shape == (64, 64, 1) and by_name["plate1/stack"].planes == 8
    ome = by_name["plate1/ome"]
    assert (ome.kind, ome.shape, ome.channel_names, ome.dtype) == ("tiff", (48, 40, 2), ("DAPI", "GFP"), "uint16")
    assert ome.nbytes == 48 * 40 * 2 * 2
    assert (by_name["plate2/rgb"].kind, by_name["plate2/rgb"].shape) == ("png", (40, 30, 3))
    assert (by_name["plate2/b"].kind, by_name["plate2/b"].dtype) == ("jpeg", "uint8")
    for source in by_name.values():
        window = source.read_region(0, source.height, 0, source.width)
        assert window.shape == source.shape and window.dtype == np.dtype(source.dtype)
    assert pickle.loads(pickle.dumps(ome)) == ome  # what Dask does to send it to a worker


def test_listing_reads_no_pixels(plate_folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pixels read while listing")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    assert len(find_sources([plate_folder]).sources) == 8


def _damage_all_but(path: Path, keep: set[int]) -> None:
    """Overwrite every tile or strip of a compressed TIFF but ``keep`` with bytes no codec decodes."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        parts = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    with path.open("r+b") as fh:
        for i, (offset, count) in enumerate(parts):
            if i not in keep:
                fh.seek(offset)
                fh.write(b"\xff" * count)


@pytest.mark.parametrize(
    ("layout", "window", "keep"),
    [
        ({"tile": (64, 64)}, (64, 128, 128, 192), {4 * 1 + 2}),  # 4 x 4 tiles: the window is tile (1, 2)
        ({"rowsperstrip": 16}, (40, 60, 10, 250), {2, 3}),  # strips of 16 rows: rows 40:60 are strips 2, 3
    ],
    ids=["tiled", "striped"],
)
def test_a_window_reads_only_the_tiles_or_strips_under_it(tmp_path, layout, window, keep):
    pixels = _rand(256, 256)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, pixels, compression="zlib", photometric="minisblack", **layout)
    (source,) = find_sources([path]).sources
    y0, y1, x0, x1 = window
    np.testing.assert_array_equal(source.read_region(y0, y1, x0, x1)[..., 0], pixels[y0:y1, x0:x1])
    _damage_all_but(path, keep)
    np.testing.assert_array_equal(source.read_region(y0, y1, x0, x1)[..., 0], pixels[y0:y1, x0:x1])
    for read in (lambda: source.read_region(0, 8, 0, 8), source.read):
        with pytest.raises(ImageReadError, match=r"big\.tif: .*corrupt.*re-export"):
            read()


def test_a_stack_window_is_projected_or_cut_as_read_does(tmp_path):
    pixels = _rand(4, 3, 96, 80)  # z, c, y, x
    path = tmp_path / "zc.tif"
    tifffile.imwrite(path, pixels, metadata={"axes": "ZCYX"}, photometric="minisblack")
    (source,) = find_sources([path]).sources
    assert (source.planes, source.shape, source.axes) == (4, (96, 80, 3), "ZCYX")
    whole = source.read().pixels
    np.testing.assert_array_equal(whole, pixels.max(axis=0).transpose(1, 2, 0))
    np.testing.assert_array_equal(source.read_region(10, 50, 20, 70), whole[10:50, 20:70])
    np.testing.assert_array_equal(source.read_region(10, 50, 20, 70, plane=2), source.read(plane=2).pixels[10:50, 20:70])
    np.testing.assert_array_equal(source.read_region(0, 5, 0, 5, plane=99), pixels[3, :, :5, :5].transpose(1, 2, 0))


def test_a_few_plain_pages_are_channels_in_windows_too(tmp_path):
    pages = _rand(3, 32, 32)
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")  # no axis metadata: three pages
    (source,) = find_sources([path]).sources
    assert (source.channels, source.planes) == (3, 1)
    np.testing.assert_array_equal(source.read_region(4, 9, 0, 32), source.read().pixels[4:9])


def _ome_zarr(path: Path, pixels: np.ndarray, *, version: str) -> None:
    """An OME-Zarr of (c, y, x) pixels, chunks of 32 x 32: NGFF 0.4 (Zarr v2, .zattrs) or 0.5 (Zarr v3)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    group.create_array("0", shape=pixels.shape, chunks=(1, 32, 32), dtype=pixels.dtype)[...] = pixels
    group.create_array("1", shape=(pixels.shape[0], 1, 1), dtype=pixels.dtype)  # a lower level, never read
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ngff = {
        "multiscales": [{"axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}],
        "omero": {"channels": [{"label": "DAPI"}, {"label": "Actin"}]},
    }
    group.attrs.update(ngff if version == "0.4" else {"ome": {"version": "0.5", **ngff}})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_is_read_whole_and_by_window(tmp_path, version):
    pixels = _rand(2, 100, 70)
    _ome_zarr(tmp_path / "data" / "plate3" / "well.ome.zarr", pixels, version=version)
    (source,) = find_sources([tmp_path / "data"]).sources
    assert (source.name, source.batch, source.kind, source.shape) == ("plate3/well", "plate3", "zarr", (100, 70, 2))
    image = source.read()
    np.testing.assert_array_equal(image.pixels, pixels.transpose(1, 2, 0))
    assert [c.name for c in image.channels] == ["DAPI", "Actin"] and image.batch == "plate3"
    chunks = Path(source.path) / "0"
    chunk = next(p for p in sorted(chunks.rglob("*")) if p.is_file() and p.name != "zarr.json"
                 and not p.name.startswith("."))
    chunk.write_bytes(b"\xff" * 40)  # one damaged chunk: a window elsewhere never reads it
    window = (40, 90, 40, 70)
    np.testing.assert_array_equal(source.read_region(*window), pixels[:, 40:90, 40:70].transpose(1, 2, 0))
    with pytest.raises(ImageReadError, match="well.ome.zarr"):
        source.read()


def test_a_zarr_folder_without_ngff_metadata_is_a_problem(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("0", shape=(8, 8), dtype="uint8")
    found = find_sources([tmp_path / "plain.zarr"])
    assert not found.sources and "without OME-NGFF 'multiscales'" in found.problems[0].message


def test_zip_members_are_listed_named_and_read_as_load_paths_does(tmp_path):
    members = {f"exp/plate{i % 2}/f{i}.tif": tiff_bytes(_rand(40, 50)) for i in range(4)}
    members["exp/batches.csv"] = b"image,batch\n"
    path = tmp_path / "screen.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    found, loaded = find_sources([path]), load_paths([path])
    assert [(s.name, s.batch) for s in found.sources] == [(i.name, i.batch) for i in loaded.images]
    assert [s.name for s in found.sources] == ["plate0/f0", "plate0/f2", "plate1/f1", "plate1/f3"]
    source = found.sources[1]
    assert (source.path, source.member) == (str(path), "exp/plate0/f2.tif")
    np.testing.assert_array_equal(source.read().pixels, loaded.images[1].pixels)
    np.testing.assert_array_equal(source.read_region(5, 25, 10, 40), loaded.images[1].pixels[5:25, 10:40])


def test_glob_patterns_name_images_from_their_fixed_folders(plate_folder, monkeypatch):
    monkeypatch.chdir(plate_folder.parent)
    assert [s.name for s in find_sources(["screen/plate*/a.tif"]).sources] == ["plate1/a", "plate2/a"]
    deep = find_sources([f"{plate_folder}/**/*.tif"])
    assert [s.name for s in deep.sources] == ["plate1/a", "plate1/ome", "plate1/stack", "plate2/a", "top"]
    assert [s.name for s in find_sources("screen/top.tif").sources] == ["top"]  # one path alone
    missing = find_sources(["screen/plate9/*.tif", "screen/top.tif"])
    assert [s.name for s in missing.sources] == ["top"]
    assert [p.file for p in missing.problems] == ["screen/plate9/*.tif"]
    assert "matches no image" in missing.problems[0].message


def test_a_file_that_cannot_be_listed_is_a_problem_and_the_rest_go_on(tmp_path):
    (tmp_path / "good.tif").write_bytes(tiff_bytes(blobs()))
    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + struct.pack("<I", 10**6))  # its first IFD is past the end
    truncated = tiff_bytes(_rand(64, 64))
    (tmp_path / "half.tif").write_bytes(truncated[: len(truncated) // 2])  # header whole, pixels cut
    (tmp_path / "text.tif").write_bytes(b"plain text, no image")
    (tmp_path / "complex.tif").write_bytes(tiff_bytes(np.zeros((8, 8), np.complex64)))
    (tmp_path / "good.png").write_bytes(png_bytes(blobs(dtype=np.uint8)))  # a second image named 'good'
    found = find_sources([tmp_path, tmp_path / "notes.txt"])
    assert [s.source for s in found.sources] == ["good.png", "half.tif"]  # good.png: the first in sorted order
    with pytest.raises(ImageReadError, match=r"half\.tif: TIFF file is corrupt or truncated .*; re-export it"):
        found.sources[1].read()
    with pytest.raises(ImageReadError, match=r"half\.tif: .*corrupt"):
        found.sources[1].read_region(40, 64, 0, 64)
    problems = {Path(p.file).name: p.message for p in found.problems}
    assert "corrupt or truncated" in problems["cut.tif"]
    assert "not a PNG, JPEG or TIFF" in problems["text.tif"]
    assert "unsupported pixel type complex64" in problems["complex.tif"]
    assert "already named 'good'" in problems["good.tif"]
    assert "no such file" in problems["notes.txt"]


def test_a_sparse_tiff_declaring_70000_squared_pixels_is_listed_refused_whole_and_read_in_windows(tmp_path,
                                                                                                  monkeypatch):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, shape=(70000, 70000), dtype="uint8")  # 4.9 GB declared, none written

    def refuse(self):
        raise AssertionError("read whole")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    tracemalloc.start()
    start = time.perf_counter()
    (source,) = find_sources([path]).sources
    with pytest.raises(ImageReadError, match=r"huge\.tif: image is 70000x70000 pixels \(4900 MP\), above the"):
        source.read()
    window = source.read_region(35000, 35256, 69900, 70000)  # a block, as large images are read
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert source.shape == (70000, 70000, 1) and source.nbytes == 4_900_000_000
    assert window.shape == (256, 100, 1) and not window.any()
    assert seconds < 2 and peak < 20 * 2**20


def test_windows_are_checked(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    path.write_bytes(tiff_bytes(blobs()))
    (source,) = find_sources([path]).sources
    with pytest.raises(ImageReadError, match=r"a\.tif: window rows 0:65, columns 0:10 is not inside the 64x64"):
        source.read_region(0, 65, 0, 10)
    monkeypatch.setattr(read_guards, "MAX_PIXELS", 100)
    with pytest.raises(ImageReadError, match="above the"):
        source.read_region(0, 20, 0, 20)
    assert source.read_region(0, 10, 0, 10).shape == (10, 10, 1)
