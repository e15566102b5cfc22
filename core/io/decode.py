"""Decoding one image file: PNG, JPEG or TIFF bytes to pixels, the format read from the content,
stacks reduced to one plane, ground-truth label images checked. Every problem raises
:class:`core.io.guards.ImageReadError` with a message a user can act on.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.io.guards import MAX_CHANNELS, MAX_PIXELS, ImageReadError, check_size, error_text
from core.io.layout import Layout, stack_layout

_SUPPORTED_DTYPES = {
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64")
}


NOT_AN_IMAGE = "not a PNG, JPEG or TIFF image (its content matches none of them)"


def sniff_format(data: bytes) -> str | None:
    """The image format from the file's first bytes, independent of its extension."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None




def check_dtype(dtype: np.dtype) -> None:
    if np.dtype(dtype) not in _SUPPORTED_DTYPES:
        raise ImageReadError(
            f"unsupported pixel type {np.dtype(dtype).name}; CellScope reads 8/16/32-bit integer "
            "and floating-point images (convert it, e.g. in Fiji: Image > Type > 16-bit)"
        )


def _ome_channel_names(tif) -> tuple[str, ...]:
    import tifffile

    if not tif.is_ome or not tif.ome_metadata:
        return ()
    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        channels = pixels.get("Channel", [])
        channels = channels if isinstance(channels, list) else [channels]
        return tuple(str(c.get("Name", "")) for c in channels)
    except (KeyError, TypeError, IndexError, ValueError):
        return ()  # metadata is a nicety; pixels still load


@dataclass(frozen=True)
class Header:
    """What an image file holds, read from its header alone: no pixel is decoded."""

    kind: str  # "tiff" | "png" | "jpeg"
    layout: Layout
    dtype: str  # as decoded (PNG palettes and JPEG colour read as 8-bit RGB)
    values: int  # every value the file holds, all planes and channels
    channel_names: tuple[str, ...] = ()  # OME-TIFF channel names, one per channel, or none

    def check_size(self) -> None:
        """Refuse an image above the limits of :mod:`core.io.guards` before it is read."""
        check_size(self.layout.height, self.layout.width, self.values)


# RuntimeError: imagecodecs' errors on damaged compressed pixels (DeflateError, LzwError...). Not
# zlib.error in headers: there it is a zip member's damaged stream ("zip it again").
_TIFF_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, IndexError, KeyError, RuntimeError)


def _tiff_header(tif) -> Header:
    if not tif.series:
        raise ImageReadError("TIFF file is corrupt or truncated (it lists no readable image); re-export it")
    series = tif.series[0]
    check_dtype(series.dtype)
    layout = stack_layout(tuple(series.shape), series.axes)
    names = _ome_channel_names(tif)
    names = names if len(names) == layout.channels and all(names) else ()
    return Header("tiff", layout, np.dtype(series.dtype).name, int(np.prod(series.shape)), names)


def _tiff_error(exc: BaseException) -> ImageReadError:
    return ImageReadError(f"TIFF file is corrupt or truncated ({error_text(exc)}); re-export it")


def _png_jpeg_header(fh: BinaryIO, fmt: str, *, verify: bool = False) -> Header:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(fh) as im:
            (w, h), bands, mode = im.size, len(im.getbands()), im.mode
            if verify:
                im.verify()  # checks chunk CRCs and the end marker: catches truncation cheaply
    except Image.DecompressionBombError as exc:  # PIL's own guard, for headers far above ours
        raise ImageReadError(
            f"image is above the {MAX_PIXELS / 1e6:.0f} MP limit ({exc}); crop or downsample it"
        ) from exc
    except (UnidentifiedImageError, ImportError) as exc:
        # ImportError: once ultralytics is imported, its patch of Image.open tries to import a HEIF
        # plugin for files Pillow cannot identify, and that plugin is not installed.
        raise ImageReadError(f"{fmt.upper()} file is corrupt or truncated (its data cannot be decoded); re-export it") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{fmt.upper()} file is corrupt or truncated ({error_text(exc)}); re-export it") from exc
    if fmt == "png":  # OpenCV decodes it: colour (palettes too) as RGB, alpha dropped, 16 bits kept
        fh.seek(24)
        depth, colour = fh.read(2)
        channels, dtype = (1 if colour == 0 else 3), ("uint16" if depth == 16 else "uint8")
    else:  # PIL decodes it: grey or RGB
        channels, dtype = (1 if mode == "L" else 3), "uint8"
    return Header(fmt, Layout("YXS", (h, w, channels), (), (2,)), dtype, h * w * bands)


def read_header(fh: BinaryIO) -> Header:
    """The header of the image file open in ``fh`` (seekable: a disk file or a zip member),
    with no pixel read. Raises :class:`ImageReadError` for what is no image, a corrupt header or
    a pixel type CellScope does not read; sizes are checked by :meth:`Header.check_size`."""
    fh.seek(0)
    head = fh.read(16)
    fh.seek(0)
    if not head:
        raise ImageReadError("file is empty (0 bytes); copy or export it again")
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageReadError(NOT_AN_IMAGE)
    if fmt != "tiff":
        return _png_jpeg_header(fh, fmt)
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            return _tiff_header(tif)
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, *_TIFF_ERRORS) as exc:
        raise _tiff_error(exc) from exc


def _decode_tiff(data: bytes) -> tuple[np.ndarray, str, tuple[str, ...]]:
    import tifffile

    try:
        # Closing the buffer lets the file's bytes go at once: TiffFile's reference cycles keep
        # it alive until the garbage collector runs, which made every file's bytes pile up.
        with io.BytesIO(data) as buffer, tifffile.TiffFile(buffer) as tif:
            header = _tiff_header(tif)
            header.check_size()
            arr = tif.series[0].asarray()
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, zlib.error, *_TIFF_ERRORS) as exc:
        raise _tiff_error(exc) from exc
    return header.layout.to_stack(arr), header.layout.note, header.channel_names


def _decode_png_jpeg(data: bytes, fmt: str) -> tuple[np.ndarray, str, tuple[str, ...]]:
    from PIL import Image

    with io.BytesIO(data) as buffer:
        _png_jpeg_header(buffer, fmt, verify=fmt == "png").check_size()

    if fmt == "jpeg":
        # PIL raises on truncated JPEG data where OpenCV silently pads with grey.
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                arr = np.asarray(im)
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"JPEG file is corrupt or truncated ({error_text(exc)}); re-export it") from exc
    else:
        import cv2  # OpenCV keeps 16-bit colour PNGs, which PIL reduces to 8 bits

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageReadError("PNG file could not be decoded; re-export it")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    note = ""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # drop alpha: transparency is not a stain
        arr = arr[:, :, : arr.shape[2] - 1]
        note = "dropped the alpha (transparency) channel"
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr[None], note, ()


@dataclass
class Decoded:
    """Pixels as read: (planes, H, W, C) from :func:`decode_image`, (H, W, C) from :func:`read_image`."""

    pixels: np.ndarray
    notes: list[str]
    channel_names: tuple[str, ...] = ()


def decode_image(data: bytes, name: str = "") -> Decoded:
    """Decode image bytes to a (planes, H, W, C) array plus notes on what was assumed.

    Raises :class:`ImageReadError` with a message a user can act on.
    """
    if not data:
        raise ImageReadError("file is empty (0 bytes); copy or export it again")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError(NOT_AN_IMAGE)
    ext = Path(name).suffix.lower()
    notes = []
    expected = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(ext)
    if expected and expected != fmt:
        notes.append(f"content is {fmt.upper()} although named {ext}; read as {fmt.upper()}")
    stack, note, names = _decode_tiff(data) if fmt == "tiff" else _decode_png_jpeg(data, fmt)
    if note:
        notes.append(note)
    check_dtype(stack.dtype)
    return Decoded(finish_stack(stack, notes), notes, names)


def check_channels(n: int) -> None:
    if n > MAX_CHANNELS:
        raise ImageReadError(
            f"has {n} channels (more than {MAX_CHANNELS}); is it a stack saved with "
            "the wrong axis order? Save it as channels-first TIFF with axis metadata (e.g. from Fiji)"
        )


def finish_stack(stack: np.ndarray, notes: list[str]) -> np.ndarray:
    """Decoded (planes, H, W, C) pixels as every reader hands them on: at most MAX_CHANNELS
    channels, float16 widened to float32, NaN and infinities set to 0 (with a note)."""
    check_channels(stack.shape[3])
    if stack.dtype == np.float16:
        stack = stack.astype(np.float32)
    if stack.dtype.kind == "f" and not np.isfinite(stack).all():
        bad = int((~np.isfinite(stack)).sum())
        stack = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
        notes.append(f"set {bad} NaN/infinite pixels to 0")
    return stack


def reduce_stack(stack: np.ndarray, index: int | None = None) -> tuple[np.ndarray, str]:
    """(planes, H, W, C) -> (H, W, C): maximum projection, or one plane when ``index`` is given."""
    n = stack.shape[0]
    if n == 1:
        return stack[0], ""
    if index is None:
        return stack.max(axis=0), f"maximum projection of {n} planes"
    i = min(max(int(index), 0), n - 1)
    return stack[i], f"plane {i} of {n}"


def read_image(data: bytes, name: str = "", *, plane: int | None = None) -> Decoded:
    """Decode to (H, W, C): stacks are max-projected, or cut at ``plane``."""
    return to_plane(decode_image(data, name), plane)


def to_plane(decoded: Decoded, plane: int | None = None) -> Decoded:
    """(planes, H, W, C) pixels to the (H, W, C) image: stacks are max-projected, or cut at
    ``plane``; RGB whose channels are identical is one grey channel."""
    notes, names = decoded.notes, decoded.channel_names
    pixels, note = reduce_stack(decoded.pixels, plane)
    if note:
        notes.append(note)
    # Colour files whose channels are identical are grey images saved as RGB.
    if pixels.shape[2] == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 0], pixels[..., 2]
    ):
        pixels = pixels[..., :1]
        names = ()
        notes.append("RGB file with identical channels read as one grey channel")
    return Decoded(np.ascontiguousarray(pixels), notes, names)


def read_labels(data: bytes, name: str = "") -> tuple[np.ndarray, list[str]]:
    """Decode a ground-truth instance label image to (H, W) int32 (0 = background)."""
    from skimage.measure import label as connected_components

    decoded = decode_image(data, name)
    stack, notes = decoded.pixels, decoded.notes
    if stack.shape[0] != 1:
        raise ImageReadError(f"label image has {stack.shape[0]} planes; save one 2-D label image per image")
    arr = stack[0]
    if arr.shape[2] > 1:
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2])):
            raise ImageReadError(
                f"label image has {arr.shape[2]} different channels; save a single-channel image "
                "with 0 = background and 1..N = cells"
            )
        arr = arr[..., 0]
    else:
        arr = arr[..., 0]
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ImageReadError(
                "label image has non-integer values; ground truth must be 0 = background, 1..N = cells"
            )
    if arr.min() < 0:
        raise ImageReadError("label image has negative values; ground truth must be 0 = background, 1..N = cells")
    if arr.max() > np.iinfo(np.int32).max:
        raise ImageReadError("label values are too large for int32")
    labels = arr.astype(np.int32)
    values = np.unique(labels)
    if len(values) == 2 and values[0] == 0:
        relabelled = connected_components(labels > 0, connectivity=1).astype(np.int32)
        n = int(relabelled.max())
        if n > 1:
            labels = relabelled
            notes.append(f"binary mask split into {n} cells by connected components (touching cells merge)")
    return labels, notes
