"""Model weights described as data, and the one way to get them onto disk.

A :class:`WeightsSpec` says where a file comes from, how big it is, its SHA-256, its licence
and what it was trained on. :func:`resolve_weights` finds it (a file shipped inside an
installed package, or the weights folder), or downloads it with progress and a checksum
check. Offline, it raises :class:`WeightsUnavailable` naming the file to place where
(:func:`offline_advice`, the one wording of that, for the command line and the app alike).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


@dataclass(frozen=True)
class WeightsSpec:
    name: str  # unique id, e.g. "yolo11n-nuclei-phase"
    filename: str  # file name in the weights folder
    url: str | None  # download address; None for files that ship in a package
    sha256: str | None  # expected SHA-256, or its first characters (torchvision names files so); None: no check
    size_bytes: int | None
    license: str
    trained_on: str
    source: str  # who made it, where it is described
    package_file: tuple[str, str] | None = None  # (distribution, path inside it) for shipped weights

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / 1e6


def describe(spec: WeightsSpec) -> str:
    """What a user agrees to before a download: the file, its size, licence, training data and the
    checksum it is checked against (one wording for the pages and the command line)."""
    size = "size unknown" if spec.size_mb is None else f"{spec.size_mb:,.0f} MB"
    check = (f"checked against SHA-256 {spec.sha256[:12]}…" if spec.sha256
             else "no published checksum, so it cannot be verified")
    return f"{spec.filename} ({size}; licence {spec.license}; trained on {spec.trained_on}; {check})"


class WeightsUnavailable(RuntimeError):
    """Weights could not be found or fetched; the message says what to place where."""


WEIGHTS_DIR_ENV = "CELLSCOPE_WEIGHTS_DIR"


def weights_dir() -> Path:
    """Where downloads and user-provided weights live: $CELLSCOPE_WEIGHTS_DIR, else the user cache."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "cellscope" / "weights"


def offline_advice(dest: Path) -> str:
    """How to get ``dest`` onto a machine that cannot download it. One wording for the command line
    (the user is at the machine) and the app (the user may be in a browser far from a lab server,
    where only whoever runs the server can place a file)."""
    return (f"To add it without internet, download {dest.name} on another computer and copy it to {dest} on the "
            f"machine that runs CellScope; on a shared server, whoever runs the server does this (the environment "
            f"variable {WEIGHTS_DIR_ENV}, set before CellScope starts, moves the weights folder)")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, spec: WeightsSpec) -> bool:
    """True if ``path`` has the expected checksum; remembered next to the file so a multi-GB
    checkpoint is hashed once, not at every start."""
    if spec.sha256 is None:
        return True
    marker = path.with_name(path.name + ".sha256")
    stat = path.stat()
    stamp = f"{spec.sha256} {stat.st_size} {stat.st_mtime_ns}"
    if marker.exists() and marker.read_text() == stamp:
        return True
    if not sha256_of(path).startswith(spec.sha256):
        return False
    try:
        marker.write_text(stamp)
    except OSError:
        pass  # read-only folder: we simply hash again next time
    return True


def _packaged(spec: WeightsSpec) -> Path | None:
    """A file inside an installed distribution, found from its metadata: the package itself is
    not imported (napari-nuclephaser's __init__ needs napari and sahi, which we do not install)."""
    if spec.package_file is None:
        return None
    dist, inner = spec.package_file
    try:
        path = Path(str(metadata.distribution(dist).locate_file(inner)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def local_path(spec: WeightsSpec) -> Path | None:
    """The file if it is already here and intact (shipped in a package or in the weights folder)."""
    for candidate in (_packaged(spec), weights_dir() / spec.filename):
        if candidate is not None and candidate.is_file() and _verified(candidate, spec):
            return candidate
    return None


def download(spec: WeightsSpec, dest: Path, progress: ProgressFn | None = None, timeout: float = 30) -> Path:
    """Fetch ``spec.url`` to ``dest`` (via a temporary file), verify the checksum, then move into place."""
    if not spec.url:
        raise WeightsUnavailable(f"{spec.filename} has no download address. {offline_advice(dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)  # filename may hold a folder
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as response:
            announced = int(response.headers.get("Content-Length") or 0)
            total = announced or spec.size_bytes
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        if announced and done < announced:  # urllib returns a dropped connection's bytes as the end of the file
            raise WeightsUnavailable(
                f"could not download {spec.filename} from {spec.url}: the connection dropped after "
                f"{done / 1e6:.1f} of {announced / 1e6:.1f} MB (nothing kept). Try again. {offline_advice(dest)}")
        if spec.sha256 is not None:
            got = sha256_of(tmp)
            if not got.startswith(spec.sha256):
                raise WeightsUnavailable(
                    f"the downloaded {spec.filename} has checksum {got[:12]}…, expected {spec.sha256[:12]}…; "
                    "the download was corrupted or the file changed upstream. Try again, or place a verified "
                    f"copy at {dest}"
                )
        shutil.move(str(tmp), dest)
        return dest
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        raise WeightsUnavailable(
            f"could not download {spec.filename} from {spec.url} ({_why(exc)}). "
            f"{offline_advice(dest)}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return str(getattr(exc, "reason", exc))


def resolve_weights(spec: WeightsSpec, *, allow_download: bool = True, progress: ProgressFn | None = None) -> Path:
    """A verified local file for ``spec``: found here, or downloaded when allowed."""
    found = local_path(spec)
    if found is not None:
        return found
    dest = weights_dir() / spec.filename
    if dest.is_file():  # present but fails the checksum
        raise WeightsUnavailable(
            f"{dest} does not match the expected checksum; delete it to download again"
        )
    if not allow_download:
        raise WeightsUnavailable(
            f"{spec.filename} is not downloaded yet ({'?' if spec.size_mb is None else f'{spec.size_mb:,.0f}'} MB from "
            f"{spec.url}). "
            f"{offline_advice(dest)}"
        )
    return download(spec, dest, progress)
