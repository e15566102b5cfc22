"""Reading microscopy images: the one loader the pages, the CLI and the tests use.

Files arrive as ``(name, bytes)`` pairs (browser uploads, zip members or files on disk).
Every problem with one file becomes a :class:`FileProblem` naming that file and the fix;
the other files still load.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from core.images import HPA_CHANNELS, UNASSIGNED, CellImage, ChannelInfo, channels_from_names, default_channels
from core.plates import BatchTable, parse_batch_table

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TABLE_EXTENSIONS = (".csv", ".tsv")
ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS + TABLE_EXTENSIONS + (".zip",)

# Limits guard the server against decompression bombs and runaway memory. Both are read
# before any pixel is decoded. Override with environment variables on a big server.
MAX_PIXELS = int(os.environ.get("CELLSCOPE_MAX_PIXELS", 8192 * 8192))  # one plane, H x W
MAX_VALUES = int(os.environ.get("CELLSCOPE_MAX_VALUES", 2**29))  # whole file: planes x channels x H x W
MAX_ZIP_BYTES = int(os.environ.get("CELLSCOPE_MAX_ZIP_BYTES", 4 * 2**30))  # uncompressed total
MAX_CHANNELS = 16
# Zip members are also checked before they are unpacked (see _max_member_bytes). A batch
# table holds one short row per image: 64 MiB is about a million rows.
MAX_TABLE_BYTES = 64 * 2**20
# Deflate packs at most about 1030:1, and only near-constant data that far: our example's
# label images pack 87:1, a 2048² label image holding one cell 1000:1. Above this ratio a
# member is a zip bomb, not microscopy, once it is large enough to cost memory.
ZIP_BOMB_RATIO = 1000
ZIP_BOMB_MIN_BYTES = 64 * 2**20

_SUPPORTED_DTYPES = {
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64")
}
_MASK_SUFFIX = re.compile(r"^(?P<stem>.+?)[_\-.](?:mask|masks|label|labels|gt)$", re.IGNORECASE)
_MASK_FOLDERS = {"mask", "masks", "label", "labels", "gt", "ground_truth", "groundtruth"}
_IMAGE_FOLDERS = {"image", "images", "img", "imgs"}
_HPA_NAME = re.compile(r"^(?P<id>.+)_(?P<color>red|green|blue|yellow)$", re.IGNORECASE)
_HPA_ORDER = ("red", "green", "blue", "yellow")


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message says why and what to do."""


def _reason(exc: BaseException) -> str:
    """A library's error text without object reprs like <_io.BytesIO object at 0x...>."""
    text = re.sub(r"<[^<>]*object at 0x[0-9a-fA-F]+>", "the data", str(exc)).strip()
    return text or type(exc).__name__


@dataclass(frozen=True)
class FileProblem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class LoadReport:
    images: list[CellImage] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    batch_table: BatchTable | None = None


# ---------------------------------------------------------------------------------------
# Decoding one file


_NOT_AN_IMAGE = "not a PNG, JPEG or TIFF image (its content matches none of them)"


def sniff_format(data: bytes) -> str | None:
    """The image format from the file's first bytes, independent of its extension."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _check_dtype(dtype: np.dtype) -> None:
    if np.dtype(dtype) not in _SUPPORTED_DTYPES:
        raise ImageReadError(
            f"unsupported pixel type {np.dtype(dtype).name}; CellScope reads 8/16/32-bit integer "
            "and floating-point images (convert it, e.g. in Fiji: Image > Type > 16-bit)"
        )


def _check_size(h: int, w: int, total_values: int) -> None:
    if h < 1 or w < 1:
        raise ImageReadError(f"image has no pixels (size {h}x{w})")
    if h * w > MAX_PIXELS:
        raise ImageReadError(
            f"image is {w}x{h} pixels ({h * w / 1e6:.0f} MP), above the {MAX_PIXELS / 1e6:.0f} MP limit; "
            "crop or downsample it, or raise CELLSCOPE_MAX_PIXELS on the server"
        )
    if total_values > MAX_VALUES:
        raise ImageReadError(
            f"file holds {total_values / 1e6:.0f} million values, above the {MAX_VALUES / 1e6:.0f} million limit; "
            "split the stack or raise CELLSCOPE_MAX_VALUES on the server"
        )


def _to_stack(arr: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Reorder an array with tifffile axis letters to (planes, H, W, C)."""
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"cannot find the image plane in axes {axes!r}")
    channel_axes = [i for i, a in enumerate(axes) if a in "CS"]
    other = [i for i, a in enumerate(axes) if a not in "YXCS"]
    note = ""
    # A plain multi-page TIFF (axes Q or I) with a few pages and no channel axis is almost
    # always one page per channel; long ones are z-stacks or time series.
    if not channel_axes and len(other) == 1 and axes[other[0]] in "QI" and arr.shape[other[0]] <= 6:
        channel_axes, other = other, []
        note = f"read its {arr.shape[channel_axes[0]]} pages as channels"
    order = other + [axes.index("Y"), axes.index("X")] + channel_axes
    arr = np.transpose(arr, order)
    n_planes = int(np.prod([arr.shape[i] for i in range(len(other))])) if other else 1
    h, w = arr.shape[len(other)], arr.shape[len(other) + 1]
    return arr.reshape(n_planes, h, w, -1), note


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


def _decode_tiff(data: bytes) -> tuple[np.ndarray, str, tuple[str, ...]]:
    import tifffile

    try:
        # Closing the buffer lets the file's bytes go at once: TiffFile's reference cycles keep
        # it alive until the garbage collector runs, which made every file's bytes pile up.
        with io.BytesIO(data) as buffer, tifffile.TiffFile(buffer) as tif:
            if not tif.series:
                raise ImageReadError("TIFF holds no image data")
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            _check_dtype(series.dtype)
            y, x = axes.upper().find("Y"), axes.upper().find("X")
            if y < 0 or x < 0:
                raise ImageReadError(f"cannot find the image plane in TIFF axes {axes!r}")
            _check_size(shape[y], shape[x], int(np.prod(shape)))
            arr = series.asarray()
            names = _ome_channel_names(tif)
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError) as exc:
        raise ImageReadError(f"TIFF file is corrupt or truncated ({_reason(exc)}); re-export it") from exc
    stack, note = _to_stack(arr, axes)
    return stack, note, names if len(names) == stack.shape[3] and all(names) else ()


def _decode_png_jpeg(data: bytes, fmt: str) -> tuple[np.ndarray, str, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            bands = len(im.getbands())
            _check_size(h, w, h * w * bands)
            if fmt == "png":
                im.verify()  # checks chunk CRCs and the end marker: catches truncation cheaply
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own guard, for headers far above ours
        raise ImageReadError(
            f"image is above the {MAX_PIXELS / 1e6:.0f} MP limit ({exc}); crop or downsample it"
        ) from exc
    except (UnidentifiedImageError, ImportError) as exc:
        # ImportError: once ultralytics is imported, its patch of Image.open tries to import a HEIF
        # plugin for files Pillow cannot identify, and that plugin is not installed.
        raise ImageReadError(f"{fmt.upper()} file is corrupt or truncated (its data cannot be decoded); re-export it") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{fmt.upper()} file is corrupt or truncated ({_reason(exc)}); re-export it") from exc

    if fmt == "jpeg":
        # PIL raises on truncated JPEG data where OpenCV silently pads with grey.
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                arr = np.asarray(im)
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"JPEG file is corrupt or truncated ({_reason(exc)}); re-export it") from exc
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
        raise ImageReadError(_NOT_AN_IMAGE)
    ext = Path(name).suffix.lower()
    notes = []
    expected = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(ext)
    if expected and expected != fmt:
        notes.append(f"content is {fmt.upper()} although named {ext}; read as {fmt.upper()}")
    stack, note, names = _decode_tiff(data) if fmt == "tiff" else _decode_png_jpeg(data, fmt)
    if note:
        notes.append(note)
    _check_dtype(stack.dtype)
    if stack.shape[3] > MAX_CHANNELS:
        raise ImageReadError(
            f"has {stack.shape[3]} channels (more than {MAX_CHANNELS}); is it a stack saved with "
            "the wrong axis order? Save it as channels-first TIFF with axis metadata (e.g. from Fiji)"
        )
    if stack.dtype == np.float16:
        stack = stack.astype(np.float32)
    if stack.dtype.kind == "f" and not np.isfinite(stack).all():
        bad = int((~np.isfinite(stack)).sum())
        stack = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
        notes.append(f"set {bad} NaN/infinite pixels to 0")
    return Decoded(stack, notes, names)


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
    decoded = decode_image(data, name)
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


# ---------------------------------------------------------------------------------------
# Many files: zips, HPA channel sets, masks, batch tables

# Python unpacks BZIP2 and LZMA members without a bound on the output of each read (measured:
# 79 bytes of BZIP2 hold 64 MiB), so only stored and deflated members are read.
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_SNIFF_BYTES = 16  # enough for sniff_format
_JUNK_NAMES = {"thumbs.db", "desktop.ini"}  # Windows Explorer's, zipped along with a folder


def _max_member_bytes() -> int:
    """The largest file an accepted image can come from: MAX_VALUES values stored uncompressed
    at 8 bytes each (float64, the widest type read) plus 64 MiB for headers, metadata and
    thumbnails. Compression makes image files smaller."""
    return MAX_VALUES * 8 + 64 * 2**20


@dataclass(frozen=True)
class _Entry:
    """One file to read. A zip member or a file on disk is read only when its turn comes and
    dropped once decoded, so decoded images are all that accumulates."""

    path: str  # as uploaded; zip members keep their folders (less a wrapping top folder)
    size: int  # bytes, unpacked for a zip member
    open: Callable[[], BinaryIO]  # for a look at the first bytes
    read: Callable[[], bytes]  # all of them
    member: zipfile.ZipInfo | None = None
    archive: str = ""  # the zip it came from

    @property
    def shown(self) -> str:
        """How messages name it: a zip member with its zip, since the user never saw the member."""
        return f"{self.archive} › {self.path}" if self.archive else self.path


def _bytes_entry(path: str, data: bytes) -> _Entry:
    return _Entry(path, len(data), lambda: io.BytesIO(data), lambda: data)


def _member_entry(zf: zipfile.ZipFile, member: zipfile.ZipInfo, path: str, archive: str) -> _Entry:
    def read() -> bytes:
        # One bounded read: a deflated member then unpacks to at most its listed size, even
        # when its data holds more (the CRC check then fails).
        with zf.open(member) as fh:
            return fh.read(member.file_size)

    return _Entry(path, member.file_size, lambda: zf.open(member), read, member, archive)


def _is_hidden(path: str) -> bool:
    """macOS resource forks and folders, dot files and folders, Windows thumbnail caches."""
    parts = path.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in _JUNK_NAMES


def _member_path(name: str) -> str:
    """A zip member's path with '/' between folders: Windows tools may write backslashes."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", ".", ".."))


def _wrapper_folder(paths: list[str]) -> str:
    """The folder every member sits in when it merely wraps the content, as when a folder is
    zipped whole (Finder, Explorer, ``zip -r DIR``); '' when there is none.

    It wraps when the zip also holds a batch table or deeper folders; a zip of one folder of
    images alone keeps that folder as the images' batch.
    """
    tops = {p.split("/")[0] for p in paths}
    if len(tops) != 1 or any("/" not in p for p in paths):
        return ""
    top = tops.pop()
    if top.lower() in _MASK_FOLDERS | _IMAGE_FOLDERS:
        return ""
    has_table = any(PurePosixPath(p).suffix.lower() in TABLE_EXTENSIONS for p in paths)
    return top if has_table or any(p.count("/") >= 2 for p in paths) else ""


def _zip_entries(name: str, source: BinaryIO | Path, problems: list[FileProblem], zips: ExitStack) -> list[_Entry]:
    """The zip's members, from its directory alone; nothing is unpacked yet."""
    try:
        zf = zips.enter_context(zipfile.ZipFile(source))
        members = [
            (m, path)
            for m in zf.infolist()
            if not (m.is_dir() or m.filename.endswith("\\"))
            and (path := _member_path(m.filename))
            and not _is_hidden(path)
        ]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        problems.append(FileProblem(name, f"is not a readable zip archive ({_reason(exc)}); zip the folder again"))
        return []
    total = sum(m.file_size for m, _ in members)
    if total > MAX_ZIP_BYTES:
        problems.append(
            FileProblem(
                name,
                f"unpacks to {total / 2**30:.1f} GiB, above the {MAX_ZIP_BYTES / 2**30:.0f} GiB limit; "
                "split it into smaller zips",
            )
        )
        return []
    wrapper = _wrapper_folder([path for _, path in members])
    entries = []
    for m, path in members:
        path = path[len(wrapper) + 1 :] if wrapper else path
        if m.flag_bits & 0x1:
            problems.append(FileProblem(f"{name} › {path}", "is encrypted; zip it again without a password"))
        elif m.compress_type not in _ZIP_METHODS:
            method = zipfile.compressor_names.get(m.compress_type, f"method {m.compress_type}")
            problems.append(
                FileProblem(
                    f"{name} › {path}",
                    f"is packed with {method}, which CellScope does not unpack; zip it again "
                    "with the standard method (Deflate), as Finder, Explorer and `zip` do",
                )
            )
        else:
            entries.append(_member_entry(zf, m, path, name))
    return entries


def _check_member_size(entry: _Entry) -> None:
    """Refuse, from the zip's directory alone, a member no accepted image can be."""
    member = entry.member
    if member is None:
        return
    limit = _max_member_bytes()
    if member.file_size > limit:
        raise ImageReadError(
            f"unpacks to {member.file_size / 2**30:.1f} GiB, more than any image within the limits takes "
            f"({limit / 2**30:.1f} GiB: {MAX_VALUES / 1e6:.0f} million 8-byte values); split it into smaller "
            "files, or raise CELLSCOPE_MAX_VALUES on the server"
        )
    ratio = member.file_size / max(member.compress_size, 1)
    if member.file_size > ZIP_BOMB_MIN_BYTES and ratio > ZIP_BOMB_RATIO:
        raise ImageReadError(
            f"unpacks to {member.file_size / 2**20:.0f} MiB from {member.compress_size / 2**10:.0f} KiB "
            f"({ratio:.0f}:1), far more than images pack: refused as a likely zip bomb; if it really is an "
            "image, upload it on its own, not in a zip"
        )


def _read_entry(entry: _Entry, *, table: bool = False) -> bytes:
    """The entry's bytes. What cannot be an image is refused from its first bytes and the zip's
    directory, before it is read whole."""
    try:
        if table:
            if entry.size > MAX_TABLE_BYTES:
                raise ImageReadError(
                    f"batch table is {entry.size / 2**20:.0f} MiB, above the {MAX_TABLE_BYTES / 2**20:.0f} MiB "
                    "a table of file names needs; is it the right file?"
                )
            return entry.read()
        with entry.open() as fh:
            head = fh.read(_SNIFF_BYTES)
        if head and sniff_format(head) is None:
            raise ImageReadError(_NOT_AN_IMAGE)
        _check_member_size(entry)
        return entry.read()
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ImageReadError(f"cannot be unpacked ({_reason(exc)}); zip it again") from exc
    except OSError as exc:
        where = f"unpacked from {entry.archive}" if entry.archive else "read"
        raise ImageReadError(f"cannot be {where} ({_reason(exc)})") from exc


def _key_and_role(path: str) -> tuple[str, str, str]:
    """Image name, role ('image' | 'mask'), folder batch for one uploaded path."""
    p = PurePosixPath(path)
    folders = [f for f in p.parts[:-1]]
    stem = p.stem
    role = "image"
    if folders and folders[-1].lower() in _MASK_FOLDERS:
        role = "mask"
        folders = folders[:-1]
    elif m := _MASK_SUFFIX.match(stem):
        role = "mask"
        stem = m["stem"]
    if folders and folders[-1].lower() in _IMAGE_FOLDERS:
        folders = folders[:-1]
    batch = folders[-1] if folders else ""
    key = "/".join(folders + [stem])
    return key, role, batch


def load_files(
    files: Iterable[tuple[str, bytes]],
    *,
    plane: int | None = None,
    existing_names: Iterable[str] = (),
    progress: Callable[[float, str], None] | None = None,
) -> LoadReport:
    """Read uploaded files into :class:`CellImage` objects, collecting a problem per bad file.

    Zips are unpacked one member at a time (folders become batches; a folder wrapping the
    whole zip is dropped), ``<id>_red/_green/_blue/_yellow`` files become one 4-channel HPA
    image, ``*_mask``/``*_labels``/``*_gt`` files or files in a ``masks/`` folder become
    ground truth of the image with the same name, and a ``.csv``/``.tsv`` table assigns
    batches. ``progress(fraction, file_name)`` is called as files are decoded.
    """
    report = LoadReport()
    with ExitStack() as zips:
        entries: list[_Entry] = []
        for name, data in files:
            if name.lower().endswith(".zip"):
                entries += _zip_entries(name, io.BytesIO(data), report.problems, zips)
            else:
                entries.append(_bytes_entry(name, data))
        _load_entries(entries, report, plane=plane, existing_names=existing_names, progress=progress)
    return report


def load_paths(paths: Iterable[str | os.PathLike], *, plane: int | None = None) -> LoadReport:
    """:func:`load_files` for files and folders on disk (folders are read recursively).

    Files are read one at a time as they are decoded, zips straight from disk.
    """
    report = LoadReport()
    with ExitStack() as zips:
        entries = [e for p in map(Path, paths) for e in _disk_entries(p, report.problems, zips)]
        _load_entries(entries, report, plane=plane)
    return report


def load_images_and_masks(images: str | os.PathLike, masks: str | os.PathLike, *, plane: int | None = None
                          ) -> LoadReport:
    """Images from one folder and their ground truth from another, matched by name exactly as an
    upload of both folders is: ``masks/x.tif`` or ``masks/x_mask.tif`` is the ground truth of the
    image ``x`` (``sub/x`` for one in a subfolder ``sub``)."""
    report = LoadReport()
    with ExitStack() as zips:
        entries = _disk_entries(Path(images), report.problems, zips)
        for entry in _disk_entries(Path(masks), report.problems, zips):
            # Seen as if in a masks/ folder beside its image, unless its name already says mask.
            p = PurePosixPath(entry.path)
            if not _MASK_SUFFIX.match(p.stem) and (not p.parent.name or p.parent.name.lower() not in _MASK_FOLDERS):
                entry = replace(entry, path=str(p.parent / "masks" / p.name) if p.parent.name else f"masks/{p.name}")
            entries.append(entry)
        _load_entries(entries, report, plane=plane)
    return report


def _disk_entries(p: Path, problems: list[FileProblem], zips: ExitStack) -> list[_Entry]:
    """The readable files of a file or folder (read recursively), named relative to the folder."""
    if p.is_dir():
        files = [(f.relative_to(p).as_posix(), f) for f in sorted(p.rglob("*")) if f.is_file()]
        files = [(rel, f) for rel, f in files if f.suffix.lower() in ACCEPTED_EXTENSIONS and not _is_hidden(rel)]
    elif p.is_file():
        files = [(p.name, p)]
    else:
        problems.append(FileProblem(str(p), "no such file or folder"))
        return []
    entries: list[_Entry] = []
    for rel, f in files:
        if f.suffix.lower() == ".zip":
            entries += _zip_entries(rel, f, problems, zips)
        else:
            entries.append(_Entry(rel, f.stat().st_size, partial(f.open, "rb"), f.read_bytes))
    return entries


def _load_entries(
    entries: list[_Entry],
    report: LoadReport,
    *,
    plane: int | None,
    existing_names: Iterable[str] = (),
    progress: Callable[[float, str], None] | None = None,
) -> None:
    """Decode the entries one at a time into ``report``."""
    problems = report.problems
    taken = set(existing_names)

    images: dict[str, tuple[np.ndarray, list[str], str, str]] = {}  # key -> pixels, notes, batch, source
    channels_of: dict[str, tuple[ChannelInfo, ...]] = {}
    masks: dict[str, _Entry] = {}
    hpa: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
    hpa_batch: dict[str, str] = {}

    for i, entry in enumerate(entries):
        if progress is not None:
            progress(i / max(len(entries), 1), entry.path)
        ext = PurePosixPath(entry.path).suffix.lower()
        if ext in TABLE_EXTENSIONS:
            try:
                table = parse_batch_table(_read_entry(entry, table=True), sep="\t" if ext == ".tsv" else ",")
                # One table per folder (e.g. a batches.csv in each plate's folder): all of them count.
                old = report.batch_table.rows if report.batch_table is not None else {}
                report.batch_table = BatchTable({**old, **table.rows})
            except ValueError as exc:
                problems.append(FileProblem(entry.shown, str(exc)))
            continue
        if ext not in IMAGE_EXTENSIONS:
            problems.append(
                FileProblem(
                    entry.shown,
                    f"unsupported file type {ext or '(no extension)'}; CellScope reads PNG, JPEG, TIFF, "
                    "a CSV/TSV batch table, or a ZIP of these",
                )
            )
            continue
        key, role, batch = _key_and_role(entry.path)
        if role == "mask":
            if key in masks:
                problems.append(FileProblem(entry.shown, f"a second ground truth for {key!r}; kept the first"))
            else:
                masks[key] = entry
            continue
        try:
            decoded = read_image(_read_entry(entry), entry.path, plane=plane)
        except ImageReadError as exc:
            problems.append(FileProblem(entry.shown, str(exc)))
            continue
        pixels, notes = decoded.pixels, decoded.notes
        hpa_match = _HPA_NAME.match(key)
        if hpa_match:
            hpa.setdefault(hpa_match["id"], {})[hpa_match["color"].lower()] = (pixels, entry.path)
            hpa_batch[hpa_match["id"]] = batch
            continue
        if key in images or key in taken:
            problems.append(
                FileProblem(entry.shown, f"another image is already named {key!r}; rename one of them and upload again")
            )
            continue
        images[key] = (pixels, notes, batch, entry.path)
        if decoded.channel_names:
            channels_of[key] = channels_from_names(decoded.channel_names)

    for sample_id, colors in hpa.items():
        if len(colors) == 1:  # a lone *_red file is just an image with that name
            (color, (pixels, path)), = colors.items()
            images.setdefault(f"{sample_id}_{color}", (pixels, [], hpa_batch[sample_id], path))
            continue
        planes = []
        for color in _HPA_ORDER:
            if color in colors:
                pixels, _ = colors[color]
                # HPA website JPEGs are tinted RGB; the brightest component is the signal.
                planes.append(pixels.max(axis=2))
        shapes = {p.shape for p in planes}
        paths = ", ".join(path for _, path in colors.values())
        if len(shapes) > 1:
            problems.append(
                FileProblem(sample_id, f"HPA channel files differ in size ({paths}); all channels must match")
            )
            continue
        if len({p.dtype for p in planes}) > 1:
            planes = [p.astype(np.float32) for p in planes]
        if sample_id in images or sample_id in taken:
            problems.append(FileProblem(sample_id, "another image already has this name; rename and upload again"))
            continue
        present = [c for c in _HPA_ORDER if c in colors]
        images[sample_id] = (np.stack(planes, axis=2), [f"HPA set: {', '.join(present)}"], hpa_batch[sample_id], paths)
        channels_of[sample_id] = tuple(ch for ch in HPA_CHANNELS if ch.name in present)

    gts: dict[str, np.ndarray] = {}
    gt_notes: dict[str, list[str]] = {}
    for key, entry in masks.items():
        path = entry.shown
        if key not in images:
            problems.append(
                FileProblem(path, f"ground truth for {key!r}, but no image with that name was uploaded with it")
            )
            continue
        try:
            labels, notes = read_labels(_read_entry(entry), entry.path)
        except ImageReadError as exc:
            problems.append(FileProblem(path, f"ground truth not used: {exc}"))
            continue
        shape = images[key][0].shape[:2]
        if labels.shape != shape:
            problems.append(
                FileProblem(
                    path,
                    f"ground truth is {labels.shape[1]}x{labels.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                    "it was not attached",
                )
            )
            continue
        gts[key] = labels
        gt_notes[key] = notes

    for key, (pixels, notes, batch, source) in sorted(images.items()):  # not the browser's file order
        report.images.append(
            CellImage(
                name=key,
                pixels=pixels,
                channels=channels_of.get(key, default_channels(pixels.shape[2])),
                batch=batch or UNASSIGNED,
                gt=gts.get(key),
                source=source,
                notes=tuple(notes + gt_notes.get(key, [])),
            )
        )
    if report.batch_table is not None:
        from core.plates import apply_batch_table

        report.images, _ = apply_batch_table(report.images, report.batch_table)
