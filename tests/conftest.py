"""Shared fixtures: small images encoded in memory, exactly as uploads arrive; the small dataset every
trainer's tests train on."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tiff_bytes(arr: np.ndarray, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    if not kwargs.get("ome"):
        kwargs.setdefault("photometric", "minisblack")
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG via OpenCV (keeps 16 bits); ``arr`` is grey (H, W) or RGB (H, W, 3)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def png_bomb_bytes(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG header claiming a huge image, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def tiff_bomb_bytes(side: int = 100_000) -> bytes:
    """A small TIFF whose tags claim side x side pixels (read before any pixel is)."""
    import tempfile

    import tifffile

    with tempfile.NamedTemporaryFile(suffix=".tif") as f:
        tifffile.imwrite(f.name, np.zeros((16, 16), np.uint8))
        with tifffile.TiffFile(f.name, mode="r+b") as tif:
            tif.pages[0].tags["ImageWidth"].overwrite(side)
            tif.pages[0].tags["ImageLength"].overwrite(side)
        return Path(f.name).read_bytes()


def blobs(h: int = 64, w: int = 64, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """A grey image with a few bright discs on a dim background."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 100, np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(4):
        cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 3000
    img += rng.normal(0, 5, img.shape)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info:
        img = np.clip(img, info.min, info.max)
    return img.astype(dtype)


@pytest.fixture(scope="session")
def example_images():
    from core.io.example import make_example_dataset

    return make_example_dataset()


# ------------------------------------------------------------------------- training a segmenter


@pytest.fixture(scope="session")
def training_example():
    """Six small fields (96 px, 2 per plate A-C) with ground truth: what every trainer's tests train on."""
    from core.io.example import make_example_dataset

    return make_example_dataset(size=96, fields_per_plate=2)


@pytest.fixture(scope="session")
def training_data(training_example):
    """(train, val, split) of :func:`training_example`'s pairs, plate C held out for validation."""
    from core.training.data import split_by_batch, training_pairs

    pairs = training_pairs(training_example)
    split = split_by_batch(pairs, ["plateC"])
    train, val = split.apply(pairs)
    return train, val, split


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory):
    """A fresh weights folder for the module's tests (models trained in a module fixture are saved there)."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("weights")
        mp.setenv("CELLSCOPE_WEIGHTS_DIR", str(home))
        yield home


def open_page(page: str, **params: str | list[str]):
    """AppTest of the whole app (router and sidebar), switched to ``page`` (e.g. "pages/compare.py"),
    its address holding ``params`` (e.g. ``run=...``, ``view=...``: a link)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(page)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty runs folder of this test's own (CELLSCOPE_RUNS_DIR): saved runs go there."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("CELLSCOPE_RUNS_DIR", str(folder))
    return folder


# Under pytest-xdist the test process's __main__ is execnet's bootstrap, a temporary file: a process
# started with the "spawn" method (Dask's local workers) would run that file again and die. Without a
# __file__, spawned processes start from nothing, as they do under plain pytest.
if os.environ.get("PYTEST_XDIST_WORKER") and getattr(sys.modules.get("__main__"), "__spec__", None) is None:
    vars(sys.modules["__main__"]).pop("__file__", None)


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``make test`` runs the tests but the browser's in two processes, ``--dist
    loadgroup``): a module's tests stay on one process (its module fixtures are made once), and the
    browser tests, when run with xdist too, all on one process, never two Chromiums at once."""
    for item in items:
        group = "browser" if item.get_closest_marker("e2e") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
