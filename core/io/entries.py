"""Files to read, one :class:`Entry` each: uploaded bytes, files on disk (folders read
recursively) and zip members, listed from the zip's directory and unpacked one at a time within
the limits of :mod:`core.io.guards`, so decoded images are all that accumulates.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.io import guards as read_guards
from core.io.decode import NOT_AN_IMAGE, Header, read_header, sniff_format
from core.io.guards import (
    FileProblem,
    ImageReadError,
    check_member_size,
    check_table_size,
    error_text,
)
from core.io.roles import ACCEPTED_EXTENSIONS, IMAGE_FOLDERS, MASK_FOLDERS, TABLE_EXTENSIONS

# Python unpacks BZIP2 and LZMA members without a bound on the output of each read (measured:
# 79 bytes of BZIP2 hold 64 MiB), so only stored and deflated members are read.
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_SNIFF_BYTES = 16  # enough for sniff_format
_JUNK_NAMES = {"thumbs.db", "desktop.ini"}  # Windows Explorer's, zipped along with a folder


@dataclass(frozen=True)
class Entry:
    """One file to read. A zip member or a file on disk is read only when its turn comes and
    dropped once decoded, so decoded images are all that accumulates."""

    path: str  # as uploaded; zip members keep their folders (less a wrapping top folder)
    size: int  # bytes, unpacked for a zip member
    open: Callable[[], BinaryIO]  # for a look at the first bytes
    read: Callable[[], bytes]  # all of them
    member: zipfile.ZipInfo | None = None
    archive: str = ""  # the zip it came from
    file: str = ""  # on disk: the file itself, or the zip holding the member ('' for uploaded bytes)

    @property
    def shown(self) -> str:
        """How messages name it: a zip member with its zip, since the user never saw the member."""
        return f"{self.archive} › {self.path}" if self.archive else self.path


def bytes_entry(path: str, data: bytes) -> Entry:
    return Entry(path, len(data), lambda: io.BytesIO(data), lambda: data)


def member_entry(zf: zipfile.ZipFile, member: zipfile.ZipInfo, path: str, archive: str, file: str = "") -> Entry:
    def read() -> bytes:
        # One bounded read: a deflated member then unpacks to at most its listed size, even
        # when its data holds more (the CRC check then fails).
        with zf.open(member) as fh:
            return fh.read(member.file_size)

    return Entry(path, member.file_size, lambda: zf.open(member), read, member, archive, file)


def is_hidden(path: str) -> bool:
    """macOS resource forks and folders, dot files and folders, Windows thumbnail caches."""
    parts = path.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in _JUNK_NAMES


def member_path(name: str) -> str:
    """A zip member's path with '/' between folders: Windows tools may write backslashes."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", ".", ".."))


def wrapper_folder(paths: list[str]) -> str:
    """The folder every member sits in when it merely wraps the content, as when a folder is
    zipped whole (Finder, Explorer, ``zip -r DIR``); '' when there is none.

    It wraps when the zip also holds a batch table or deeper folders; a zip of one folder of
    images alone keeps that folder as the images' batch.
    """
    tops = {p.split("/")[0] for p in paths}
    if len(tops) != 1 or any("/" not in p for p in paths):
        return ""
    top = tops.pop()
    if top.lower() in MASK_FOLDERS | IMAGE_FOLDERS:
        return ""
    has_table = any(PurePosixPath(p).suffix.lower() in TABLE_EXTENSIONS for p in paths)
    return top if has_table or any(p.count("/") >= 2 for p in paths) else ""


def zip_entries(name: str, source: BinaryIO | Path, problems: list[FileProblem], zips: ExitStack) -> list[Entry]:
    """The zip's members, from its directory alone; nothing is unpacked yet."""
    try:
        zf = zips.enter_context(zipfile.ZipFile(source))
        members = [
            (m, path)
            for m in zf.infolist()
            if not (m.is_dir() or m.filename.endswith("\\"))
            and (path := member_path(m.filename))
            and not is_hidden(path)
        ]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        problems.append(FileProblem(name, f"is not a readable zip archive ({error_text(exc)}); zip the folder again"))
        return []
    total = sum(m.file_size for m, _ in members)
    if total > read_guards.MAX_ZIP_BYTES:
        problems.append(
            FileProblem(
                name,
                f"unpacks to {total / 2**30:.1f} GiB, above the {read_guards.MAX_ZIP_BYTES / 2**30:.0f} GiB limit; "
                "split it into smaller zips",
            )
        )
        return []
    wrapper = wrapper_folder([path for _, path in members])
    file = str(source) if isinstance(source, Path) else ""
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
            entries.append(member_entry(zf, m, path, name, file))
    return entries


@contextmanager
def _read_errors(entry: Entry) -> Iterator[None]:
    """Unpacking and disk errors as :class:`ImageReadError` naming what to do."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ImageReadError(f"cannot be unpacked ({error_text(exc)}); zip it again") from exc
    except OSError as exc:
        where = f"unpacked from {entry.archive}" if entry.archive else "read"
        raise ImageReadError(f"cannot be {where} ({error_text(exc)})") from exc


def entry_header(entry: Entry) -> Header:
    """The entry's image header, read before any pixel. What cannot be an image is refused from
    its first bytes and the zip's directory."""
    with _read_errors(entry), entry.open() as fh:
        head = fh.read(_SNIFF_BYTES)
        if head and sniff_format(head) is None:
            raise ImageReadError(NOT_AN_IMAGE)
        if entry.member is not None:
            check_member_size(entry.member)
        return read_header(fh)


def read_entry(entry: Entry, *, table: bool = False) -> bytes:
    """The entry's bytes. What cannot be an image is refused from its first bytes and the zip's
    directory, and an image above the limits from its header (TIFF tags, PNG/JPEG size), all
    before it is read whole: a sparse TIFF declaring 70000 x 70000 pixels costs no 4.9 GB read."""
    if table:
        check_table_size(entry.size)
    elif entry.size:  # an empty file is refused by decode_image, as empty
        entry_header(entry).check_size()
    with _read_errors(entry):
        return entry.read()


def file_entries(files: list[tuple[str, Path]], problems: list[FileProblem], zips: ExitStack) -> list[Entry]:
    """Files on disk, each named as given; a zip's members named from the zip's directory."""
    entries: list[Entry] = []
    for rel, f in files:
        if f.suffix.lower() == ".zip":
            entries += zip_entries(rel, f, problems, zips)
        else:
            entries.append(Entry(rel, f.stat().st_size, partial(f.open, "rb"), f.read_bytes, file=str(f)))
    return entries


def disk_entries(p: Path, problems: list[FileProblem], zips: ExitStack) -> list[Entry]:
    """The readable files of a file or folder (read recursively), named relative to the folder."""
    if p.is_dir():
        files = [(f.relative_to(p).as_posix(), f) for f in sorted(p.rglob("*")) if f.is_file()]
        files = [(rel, f) for rel, f in files if f.suffix.lower() in ACCEPTED_EXTENSIONS and not is_hidden(rel)]
    elif p.is_file():
        files = [(p.name, p)]
    else:
        problems.append(FileProblem(str(p), "no such file or folder"))
        return []
    return file_entries(files, problems, zips)
