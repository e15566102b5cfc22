"""OME-Zarr images (``x.zarr``, ``x.ome.zarr``): their NGFF metadata read without a pixel
(0.4: ``multiscales`` in the group's ``.zattrs``; 0.5: ``ome.multiscales`` in its ``zarr.json``),
and the full-resolution level read whole or a window at a time through zarr. The axes come from
the metadata: t and z are planes (max-projected like a TIFF stack), c the channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.io.decode import Decoded, check_channels, check_dtype, finish_stack, to_plane
from core.io.guards import ImageReadError, check_size, error_text
from core.io.layout import Layout, stack_layout

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
# NGFF axis names (and, for names it leaves free, types) as tifffile's axis letters.
_AXIS_NAMES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_AXIS_TYPES = {"time": "T", "channel": "C", "space": "Z"}
_FIX = "write it as OME-NGFF 0.4 or 0.5 (e.g. with ome-zarr-py, or bioformats2raw from a vendor file)"


@dataclass(frozen=True)
class ZarrHeader:
    layout: Layout
    dtype: str
    dataset: str  # the full-resolution array's path in the group
    channel_names: tuple[str, ...] = ()


def is_zarr_folder(p: Path) -> bool:
    return p.name.lower().endswith(".zarr") and p.is_dir()


def zarr_name(rel: str) -> str:
    """The path an image name is made from: ``plate1/x.ome.zarr`` names the image ``plate1/x``."""
    low = rel.lower()
    stem = next(rel[: -len(s)] for s in ZARR_SUFFIXES if low.endswith(s))
    return stem + ".zarr"


def _axes(multiscale: dict[str, Any], ndim: int) -> str:
    axes = multiscale.get("axes")
    if axes is None:  # NGFF 0.1/0.2 had none: always t, c, z, y, x
        return "TCZYX"[-ndim:]
    letters = ""
    for axis in axes:
        name, kind = (axis, "") if isinstance(axis, str) else (str(axis.get("name", "")), str(axis.get("type", "")))
        letters += _AXIS_NAMES.get(name.lower()) or _AXIS_TYPES.get(kind.lower(), "Z")
    if len(letters) != ndim:
        raise ImageReadError(f"its metadata names {len(letters)} axes for a {ndim}-D array; {_FIX}")
    return letters


def read_zarr_header(folder: Path) -> ZarrHeader:
    """The image an OME-Zarr folder holds, from its metadata alone."""
    import zarr

    try:
        group = zarr.open_group(str(folder), mode="r")
        attrs = group.attrs.asdict()
        ome = attrs.get("ome", attrs)  # 0.5 keeps the NGFF metadata under "ome"
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        if not multiscales:
            raise ImageReadError(f"is a Zarr folder without OME-NGFF 'multiscales' metadata; {_FIX}")
        dataset = str(multiscales[0]["datasets"][0]["path"])
        array = group[dataset]
        shape, dtype = tuple(int(n) for n in array.shape), np.dtype(array.dtype)
        omero = ome.get("omero") or {}
        names = tuple(str(c.get("label", "")) for c in omero.get("channels", []) if isinstance(c, dict))
    except ImageReadError:
        raise
    except Exception as exc:  # zarr's and json's errors on a damaged folder; KeyError: a missing array
        raise ImageReadError(f"is not a readable OME-Zarr folder ({type(exc).__name__}: {error_text(exc)}); {_FIX}") from exc
    check_dtype(dtype)
    layout = stack_layout(shape, _axes(multiscales[0], len(shape)))
    check_channels(layout.channels)
    names = names if len(names) == layout.channels and all(names) else ()
    return ZarrHeader(layout, dtype.name, dataset, names)


def _array(source):
    import zarr

    return zarr.open_array(source.path, path=source.dataset, mode="r")


def zarr_stack(source, plane: int | None) -> Decoded:
    """The whole full-resolution image of an :class:`~core.io.sources.ImageSource` of kind
    zarr, as (H, W, C), the size limits checked first."""
    layout = source.layout
    check_size(layout.height, layout.width, int(np.prod(layout.shape)))
    notes: list[str] = []
    stack = finish_stack(layout.to_stack(np.asarray(_array(source)[...])), notes)
    return to_plane(Decoded(stack, notes, source.channel_names), plane)


def zarr_window(source, index: tuple[slice, ...]) -> np.ndarray:
    """(planes, h, w, C) pixels under ``index``: zarr reads only the chunks it touches."""
    return source.layout.to_stack(np.asarray(_array(source)[index]))
