"""Label images as TIFF files (0 = background, one id per object): written and read by one pair."""

from __future__ import annotations

import io

import numpy as np


def label_tiff_bytes(labels: np.ndarray) -> bytes:
    """A label image as TIFF: uint16 when the ids fit, else int32; 0 = background."""
    import tifffile

    buf = io.BytesIO()
    dtype = np.uint16 if labels.max(initial=0) < 65536 else np.int32
    tifffile.imwrite(buf, labels.astype(dtype), photometric="minisblack")
    return buf.getvalue()


def read_label_tiff(source: str | bytes | io.BytesIO) -> np.ndarray:
    """A label image :func:`label_tiff_bytes` wrote (a path or the file's bytes)."""
    import tifffile

    return tifffile.imread(io.BytesIO(source) if isinstance(source, bytes) else source)
