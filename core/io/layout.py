"""Where an image file's axes go in the (planes, H, W, C) every reader hands on: tifffile's axis
letters (OME-Zarr's t/c/z/y/x read as T/C/Z/Y/X), the image plane, the channels and the planes
that a stack is reduced over. Decided from the shape alone, so a header says it before any pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.io.guards import ImageReadError


@dataclass(frozen=True)
class Layout:
    """Where a file's axes go in (planes, H, W, C): its axis letters (tifffile's, upper case)
    and sizes, the plane axes (stacks, reduced later), the image plane and the channel axes."""

    axes: str
    shape: tuple[int, ...]
    plane_axes: tuple[int, ...]
    channel_axes: tuple[int, ...]
    note: str = ""  # what was assumed, e.g. a few plain pages read as channels

    @property
    def order(self) -> tuple[int, ...]:
        """The transpose that gives (planes..., Y, X, channels...)."""
        return (*self.plane_axes, self.axes.index("Y"), self.axes.index("X"), *self.channel_axes)

    @property
    def height(self) -> int:
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        return self.shape[self.axes.index("X")]

    @property
    def planes(self) -> int:
        return int(np.prod([self.shape[i] for i in self.plane_axes])) if self.plane_axes else 1

    @property
    def channels(self) -> int:
        return int(np.prod([self.shape[i] for i in self.channel_axes])) if self.channel_axes else 1

    def to_stack(self, arr: np.ndarray) -> np.ndarray:
        """An array with these axes (any sizes along Y and X) as (planes, H, W, C)."""
        arr = np.transpose(arr, self.order)
        n = len(self.plane_axes)
        planes = int(np.prod(arr.shape[:n])) if n else 1
        return arr.reshape(planes, arr.shape[n], arr.shape[n + 1], -1)


def stack_layout(shape: tuple[int, ...], axes: str) -> Layout:
    """How an array with tifffile axis letters (C/S channels; T, Z, Q, I... planes) reads as
    (planes, H, W, C)."""
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"cannot find the image plane in axes {axes!r}")
    channel_axes = [i for i, a in enumerate(axes) if a in "CS"]
    other = [i for i, a in enumerate(axes) if a not in "YXCS"]
    note = ""
    # A plain multi-page TIFF (axes Q or I) with a few pages and no channel axis is almost
    # always one page per channel; long ones are z-stacks or time series.
    if not channel_axes and len(other) == 1 and axes[other[0]] in "QI" and shape[other[0]] <= 6:
        channel_axes, other = other, []
        note = f"read its {shape[channel_axes[0]]} pages as channels"
    return Layout(axes, tuple(int(n) for n in shape), tuple(other), tuple(channel_axes), note)
