"""Images where they lie: files, folders, zips, glob patterns and OME-Zarr folders listed with
their headers read and no pixel decoded, each an :class:`ImageSource` a Dask worker can be sent
and read there, whole (:meth:`ImageSource.read`, exactly as :func:`core.io.load.load_paths`
decodes it) or a window at a time (:meth:`ImageSource.read_region`, for images too large to read
whole: a tiled or striped TIFF reads only the tiles or strips under the window).

Names and batches are those :func:`core.io.load.load_paths` gives: the path relative to the
folder given (or to a glob pattern's fixed leading folders), by :func:`core.io.roles.key_and_role`;
an image without a folder batch has ``core.data.images.UNASSIGNED``. Unlike ``load_paths``,
ground truth (``x_mask.tif``, ``masks/``) and CSV/TSV batch tables are not images: the ground
truth is kept in :attr:`SourceList.masks`, tables are skipped (a batch job takes its table as an
option), and the four files of a Human Protein Atlas set (``x_red.png`` ...) stay four images.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.images import UNASSIGNED, CellImage, channels_from_names, default_channels
from core.io.decode import check_channels, decode_image, finish_stack, read_image, read_labels, reduce_stack
from core.io.entries import Entry, entry_header, file_entries, is_hidden, member_entry, read_entry
from core.io.guards import FileProblem, ImageReadError, check_size
from core.io.layout import Layout, stack_layout
from core.io.roles import ACCEPTED_EXTENSIONS, IMAGE_EXTENSIONS, TABLE_EXTENSIONS, key_and_role
from core.io.zarr_source import is_zarr_folder, read_zarr_header, zarr_name, zarr_stack, zarr_window

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ImageSource:
    """One image where it lies, headers read, pixels not: picklable (plain fields), so Dask can
    send it to a worker. ``channels`` and ``dtype`` are those of the pixels as read (alpha dropped,
    float16 widened); ``planes`` counts the z/t planes that reading max-projects (or cuts at ``plane``)."""

    name: str  # as load_paths names it
    batch: str  # as load_paths gives it: the folder batch, or UNASSIGNED
    path: str  # the file on disk, the zip holding it, or the .zarr folder
    member: str = ""  # the zip member, as the zip's directory names it
    kind: str = ""  # "tiff" | "png" | "jpeg" | "zarr"
    height: int = 0
    width: int = 0
    channels: int = 0
    planes: int = 1
    dtype: str = ""
    source: str = ""  # what load_paths records as CellImage.source: the path relative to the folder given
    axes: str = ""  # the stored array's axis letters (tifffile's; OME-Zarr's t/c/z/y/x upper case)
    shape_stored: tuple[int, ...] = ()  # the stored array's shape, axis by axis
    channel_names: tuple[str, ...] = ()  # from OME metadata, one per channel, or none
    dataset: str = ""  # OME-Zarr: the full-resolution array's path in the group

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    @property
    def nbytes(self) -> int:
        """Bytes of one whole plane as read (height x width x channels x item size)."""
        return self.height * self.width * self.channels * np.dtype(self.dtype).itemsize

    @property
    def shown(self) -> str:
        """How messages name it: a zip member with its zip."""
        return f"{self.path} › {self.source}" if self.member else self.path

    @property
    def layout(self) -> Layout:
        return stack_layout(self.shape_stored, self.axes)

    def read(self, *, plane: int | None = None) -> CellImage:
        """The whole image, decoded exactly as load_paths decodes that file (pixels, channels,
        notes, batch); the size limits of :mod:`core.io.guards` are checked from the header
        before any pixel is read. Raises :class:`ImageReadError` naming the file."""
        with self._errors():
            if self.kind == "zarr":
                decoded = zarr_stack(self, plane)
            else:
                with self._entry() as entry:
                    decoded = read_image(read_entry(entry), entry.path, plane=plane)
        pixels, names = decoded.pixels, decoded.channel_names
        return CellImage(
            name=self.name,
            pixels=pixels,
            channels=channels_from_names(names) if names else default_channels(pixels.shape[2]),
            batch=self.batch or UNASSIGNED,
            source=self.source,
            notes=tuple(decoded.notes),
        )

    def read_region(self, y0: int, y1: int, x0: int, x1: int, *, plane: int | None = None) -> np.ndarray:
        """(y1 - y0, x1 - x0, C) pixels of that window, stacks max-projected (or cut at ``plane``)
        as :meth:`read` does, in the same dtype and channel order. Reads only what the window
        needs: a TIFF on disk through tifffile (a memory map for contiguous data, its tiles or
        strips through zarr otherwise), an OME-Zarr's level 0 through zarr; PNG, JPEG and zip
        members are decoded whole (they are small), then cut. Not bound by the whole image's
        size limit, only the window's. Unlike :meth:`read`, RGB whose channels happen to be
        identical stays three channels: a window cannot tell, and every window of an image must
        have the same channels."""
        y0, y1, x0, x1 = int(y0), int(y1), int(x0), int(x1)
        if not (0 <= y0 < y1 <= self.height and 0 <= x0 < x1 <= self.width):
            raise ImageReadError(
                f"{self.shown}: window rows {y0}:{y1}, columns {x0}:{x1} is not inside the "
                f"{self.width}x{self.height} image"
            )
        with self._errors():
            planes = 1 if plane is not None else self.planes
            check_size(y1 - y0, x1 - x0, (y1 - y0) * (x1 - x0) * self.channels * planes)
            if self.kind == "zarr":
                stack = zarr_window(self, self.window_index(y0, y1, x0, x1, plane))
            elif self.kind == "tiff" and not self.member:
                stack = self._tiff_window(self.window_index(y0, y1, x0, x1, plane))
            else:
                with self._entry() as entry:
                    stack = decode_image(read_entry(entry), entry.path).pixels[:, y0:y1, x0:x1]
            pixels, _ = reduce_stack(finish_stack(stack, []), plane)
        return np.ascontiguousarray(pixels)

    def read_labels(self) -> np.ndarray:
        """A ground-truth source (from :attr:`SourceList.masks`) as (H, W) int32 labels, read as
        load_paths reads ground truth."""
        if self.kind == "zarr":
            raise ImageReadError(f"{self.shown}: ground truth is read from TIFF or PNG label images, not Zarr")
        with self._errors(), self._entry() as entry:
            return read_labels(read_entry(entry), entry.path)[0]

    def window_index(self, y0: int, y1: int, x0: int, x1: int, plane: int | None) -> tuple[slice, ...]:
        """The stored array's index of a window: every axis kept (a size-1 slice for the one
        plane asked for), so :meth:`Layout.to_stack` orders it."""
        layout = self.layout
        index = [slice(None)] * len(self.axes)
        index[self.axes.index("Y")], index[self.axes.index("X")] = slice(y0, y1), slice(x0, x1)
        if plane is not None and layout.planes > 1:
            i = min(max(int(plane), 0), layout.planes - 1)  # as reduce_stack clamps it
            sizes = [layout.shape[a] for a in layout.plane_axes]
            for axis, j in zip(layout.plane_axes, np.unravel_index(i, sizes), strict=True):
                index[axis] = slice(int(j), int(j) + 1)
        return tuple(index)

    def _tiff_window(self, index: tuple[slice, ...]) -> np.ndarray:
        import tifffile
        import zarr

        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            arr = None
            if series.dataoffset is not None:  # contiguous: a memory map reads only the rows it touches
                try:
                    arr = np.asarray(tifffile.memmap(self.path, series=0, mode="r")[index])
                except ValueError:  # not mappable as stored (bit-packed, odd byte order): zarr below
                    arr = None
            if arr is None:  # tiles or strips: zarr reads the chunks under the window
                with series.aszarr(level=0) as store:
                    arr = np.asarray(zarr.open_array(store, mode="r")[index])
        return self.layout.to_stack(arr.astype(arr.dtype.newbyteorder("="), copy=False))

    @contextmanager
    def _entry(self) -> Iterator[Entry]:
        """The file as :func:`core.io.load.load_paths` sees it, opened again where it lies."""
        if not self.member:
            f = Path(self.path)
            yield Entry(self.source, f.stat().st_size, partial(f.open, "rb"), f.read_bytes, file=self.path)
            return
        with zipfile.ZipFile(self.path) as zf:
            yield member_entry(zf, zf.getinfo(self.member), self.source, Path(self.path).name, self.path)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Any failure to read the pixels as an :class:`ImageReadError` naming the file."""
        try:
            yield
        except ImageReadError as exc:
            raise ImageReadError(f"{self.shown}: {exc}") from exc
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ImageReadError(f"{self.shown}: cannot be read ({exc}); is it still there?") from exc
        except MemoryError:
            raise
        except Exception as exc:  # a codec's error on damaged pixel data: zlib, imagecodecs, zarr
            kind = "OME-Zarr" if self.kind == "zarr" else self.kind.upper()
            raise ImageReadError(
                f"{self.shown}: {kind} pixel data is corrupt ({type(exc).__name__}: {exc}); "
                "re-export the image"
            ) from exc


@dataclass
class SourceList:
    sources: list[ImageSource]  # sorted by name
    problems: list[FileProblem]  # one per file that cannot be listed, naming it and the fix
    masks: dict[str, ImageSource] = field(default_factory=dict)  # ground truth, by its image's name


def find_sources(inputs: Sequence[str | os.PathLike]) -> SourceList:
    """Every image under ``inputs``, headers read, no pixel decoded.

    An input is a file, a folder (read recursively; hidden files skipped as
    :mod:`core.io.entries` skips them), a zip (its members listed from its directory), an OME-Zarr
    folder (``x.zarr``, ``x.ome.zarr``: NGFF 0.4 or 0.5), or a glob pattern (``data/plate*/*.tif``,
    ``**`` recursive; names relative to its fixed leading folders, here ``data``). A file that
    cannot be listed (no image, corrupt header, unsupported pixel type, a second image with one
    name, a pattern matching nothing) is a problem; the others go on.
    """
    if isinstance(inputs, (str, os.PathLike)):  # one path, not a sequence of characters
        inputs = [inputs]
    out = SourceList([], [])
    named: set[str] = set()
    mask_files: dict[str, str] = {}  # image name -> its ground truth's file, as problems name it
    with ExitStack() as zips:
        for raw in inputs:
            files, zarrs = _expand(os.fspath(raw), out.problems)
            entries = file_entries(files, out.problems, zips)
            for entry in entries:
                _add_entry(entry, out, named, mask_files)
            for rel, folder in zarrs:
                _add(_zarr_source(rel, folder), str(folder), out, named)
    out.sources.sort(key=lambda s: s.name)
    for key in [k for k in out.masks if k not in named]:
        out.problems.append(FileProblem(mask_files[key], f"ground truth for {key!r}, but no image with that name was given"))
        del out.masks[key]
    return out


def _add_entry(entry: Entry, out: SourceList, named: set[str], mask_files: dict[str, str]) -> None:
    ext = PurePosixPath(entry.path).suffix.lower()
    if ext in TABLE_EXTENSIONS:
        return
    if ext not in IMAGE_EXTENSIONS:
        out.problems.append(
            FileProblem(entry.shown, f"unsupported file type {ext or '(no extension)'}; CellScope reads PNG, "
                        "JPEG, TIFF, OME-Zarr, or a ZIP of these")
        )
        return
    try:
        header = entry_header(entry)
        check_channels(header.layout.channels)
    except ImageReadError as exc:
        out.problems.append(FileProblem(entry.shown, str(exc)))
        return
    key, role, batch = key_and_role(entry.path)
    layout = header.layout
    source = ImageSource(
        name=key, batch=batch or UNASSIGNED, path=entry.file, member=entry.member.filename if entry.member else "",
        kind=header.kind, height=layout.height, width=layout.width, channels=layout.channels, planes=layout.planes,
        dtype="float32" if header.dtype == "float16" else header.dtype, source=entry.path, axes=layout.axes,
        shape_stored=layout.shape, channel_names=header.channel_names,
    )
    if role == "mask":
        if key in out.masks:
            out.problems.append(FileProblem(entry.shown, f"a second ground truth for {key!r}; kept the first"))
        else:
            out.masks[key], mask_files[key] = source, entry.shown
        return
    _add(source, entry.shown, out, named)


def _add(source: ImageSource | FileProblem, shown: str, out: SourceList, named: set[str]) -> None:
    if isinstance(source, FileProblem):
        out.problems.append(source)
    elif source.name in named:
        out.problems.append(
            FileProblem(shown, f"another image is already named {source.name!r}; rename one of them")
        )
    else:
        named.add(source.name)
        out.sources.append(source)


def _zarr_source(rel: str, folder: Path) -> ImageSource | FileProblem:
    try:
        header = read_zarr_header(folder)
    except ImageReadError as exc:
        return FileProblem(str(folder), str(exc))
    key, _, batch = key_and_role(zarr_name(rel))
    layout = header.layout
    return ImageSource(
        name=key, batch=batch or UNASSIGNED, path=str(folder), kind="zarr", height=layout.height,
        width=layout.width, channels=layout.channels, planes=layout.planes,
        dtype="float32" if header.dtype == "float16" else header.dtype, source=rel, axes=layout.axes,
        shape_stored=layout.shape, channel_names=header.channel_names, dataset=header.dataset,
    )


def _expand(text: str, problems: list[FileProblem]) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """An input's image files and OME-Zarr folders, each with the name it is read under."""
    p = Path(text)
    if p.exists() or not _GLOB_CHARS & set(text):
        if is_zarr_folder(p):
            return [], [(p.name, p)]
        if p.is_dir():
            return _walk(p, "")
        if p.is_file():
            return [(p.name, p)], []
        problems.append(FileProblem(text, "no such file or folder"))
        return [], []
    parts = PurePosixPath(text.replace(os.sep, "/")).parts
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    files: dict[Path, str] = {}
    zarrs: dict[Path, str] = {}
    for match in sorted(root.glob("/".join(parts[fixed:]))):
        rel = match.relative_to(root).as_posix()
        if is_hidden(rel) or any(part.lower().endswith(".zarr") for part in match.parts[:-1]):
            continue  # inside an OME-Zarr folder: its chunks, not images
        if is_zarr_folder(match):
            zarrs.setdefault(match, rel)
        elif match.is_dir():
            more_files, more_zarrs = _walk(match, rel + "/")
            for name, f in more_files:
                files.setdefault(f, name)
            for name, f in more_zarrs:
                zarrs.setdefault(f, name)
        elif match.suffix.lower() in ACCEPTED_EXTENSIONS:
            files.setdefault(match, rel)
    if not files and not zarrs:
        problems.append(FileProblem(text, "matches no image file or folder; check the pattern (quote it so the "
                                          "shell leaves ** to CellScope)"))
    return [(rel, f) for f, rel in files.items()], [(rel, f) for f, rel in zarrs.items()]


def _walk(folder: Path, prefix: str) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """A folder's image files and OME-Zarr folders (not their chunks), named ``prefix`` + their
    path in it; hidden ones skipped."""
    files, zarrs = [], []
    for here, dirs, names in os.walk(folder):
        base = Path(here)
        rel_here = base.relative_to(folder).as_posix()
        rel_here = "" if rel_here == "." else rel_here + "/"
        for d in sorted(dirs):
            if is_zarr_folder(base / d) and not is_hidden(rel_here + d):
                zarrs.append((prefix + rel_here + d, base / d))
        dirs[:] = sorted(d for d in dirs if not is_hidden(d) and not is_zarr_folder(base / d))
        for name in sorted(names):
            rel = rel_here + name
            if Path(name).suffix.lower() in ACCEPTED_EXTENSIONS and not is_hidden(rel):
                files.append((prefix + rel, base / name))
    files.sort(key=lambda item: item[1])  # load_paths' order (sorted paths): the first of two names is kept
    return files, zarrs
