"""What a file may be before it is read: the limits that guard the server against
decompression bombs and runaway memory, and the errors that refuse a file with a message a user
can act on. Every limit is checked before any pixel is decoded or any zip member unpacked.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass

# Limits guard the server against decompression bombs and runaway memory. Both are read
# before any pixel is decoded. Override with environment variables on a big server.
MAX_PIXELS = int(os.environ.get("CELLSCOPE_MAX_PIXELS", 8192 * 8192))  # one plane, H x W
MAX_VALUES = int(os.environ.get("CELLSCOPE_MAX_VALUES", 2**29))  # whole file: planes x channels x H x W
MAX_ZIP_BYTES = int(os.environ.get("CELLSCOPE_MAX_ZIP_BYTES", 4 * 2**30))  # uncompressed total
MAX_CHANNELS = 16
# Zip members are also checked before they are unpacked (see max_member_bytes). A batch
# table holds one short row per image: 64 MiB is about a million rows.
MAX_TABLE_BYTES = 64 * 2**20
# Deflate packs at most about 1030:1, and only near-constant data that far: our example's
# label images pack 87:1, a 2048² label image holding one cell 1000:1. Above this ratio a
# member is a zip bomb, not microscopy, once it is large enough to cost memory.
ZIP_BOMB_RATIO = 1000
ZIP_BOMB_MIN_BYTES = 64 * 2**20


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message says why and what to do."""


def error_text(exc: BaseException) -> str:
    """A library's error text without object reprs like <_io.BytesIO object at 0x...>."""
    text = re.sub(r"<[^<>]*object at 0x[0-9a-fA-F]+>", "the data", str(exc)).strip()
    return text or type(exc).__name__


@dataclass(frozen=True)
class FileProblem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"



def check_size(h: int, w: int, total_values: int) -> None:
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


def max_member_bytes() -> int:
    """The largest file an accepted image can come from: MAX_VALUES values stored uncompressed
    at 8 bytes each (float64, the widest type read) plus 64 MiB for headers, metadata and
    thumbnails. Compression makes image files smaller."""
    return MAX_VALUES * 8 + 64 * 2**20


def check_member_size(member: zipfile.ZipInfo) -> None:
    """Refuse, from the zip's directory alone, a member no accepted image can be."""
    limit = max_member_bytes()
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


def check_table_size(size: int) -> None:
    """Refuse a batch table far larger than a table of file names can be."""
    if size > MAX_TABLE_BYTES:
        raise ImageReadError(
            f"batch table is {size / 2**20:.0f} MiB, above the {MAX_TABLE_BYTES / 2**20:.0f} MiB "
            "a table of file names needs; is it the right file?"
        )
