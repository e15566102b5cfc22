"""The one in-memory image type every page, the CLI and the tests share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

ROLES = ("nucleus", "cytoplasm", "protein", "other")

# Display colours as RGB weights. Yellow is split half to red and half to green, the
# Human Protein Atlas convention, so an ER (yellow) channel does not saturate the merge.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (0.5, 0.5, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "gray": (1.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class ChannelInfo:
    """What one channel shows and how to display it."""

    name: str
    role: str = "other"
    color: str = "gray"
    clip_low: float = 0.5  # display contrast: lower percentile mapped to black
    clip_high: float = 99.8  # upper percentile mapped to full brightness

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"channel role must be one of {ROLES}, got {self.role!r}")
        if self.color not in COLORS:
            raise ValueError(f"channel color must be one of {tuple(COLORS)}, got {self.color!r}")
        if not 0.0 <= self.clip_low < self.clip_high <= 100.0:
            raise ValueError("contrast percentiles need 0 <= low < high <= 100")


# Sensible first guesses; the Data page lets the user change them.
_DEFAULT_LAYOUTS: dict[int, tuple[ChannelInfo, ...]] = {
    1: (ChannelInfo("ch0", "nucleus", "gray"),),
    2: (ChannelInfo("ch0", "nucleus", "blue"), ChannelInfo("ch1", "protein", "green")),
    3: (
        ChannelInfo("red", "other", "red"),
        ChannelInfo("green", "protein", "green"),
        ChannelInfo("blue", "nucleus", "blue"),
    ),
}
HPA_CHANNELS: tuple[ChannelInfo, ...] = (
    ChannelInfo("red", "cytoplasm", "red"),  # microtubules
    ChannelInfo("green", "protein", "green"),  # protein of interest
    ChannelInfo("blue", "nucleus", "blue"),  # nucleus
    ChannelInfo("yellow", "other", "yellow"),  # endoplasmic reticulum
)
_CYCLE = ("blue", "green", "red", "magenta", "cyan", "yellow", "gray")


def default_channels(n: int) -> tuple[ChannelInfo, ...]:
    """Default names, roles and colours for an image with ``n`` channels."""
    if n in _DEFAULT_LAYOUTS:
        return _DEFAULT_LAYOUTS[n]
    if n == 4:
        return HPA_CHANNELS
    return tuple(
        ChannelInfo(f"ch{i}", "nucleus" if i == 0 else "other", _CYCLE[i % len(_CYCLE)])
        for i in range(n)
    )


_ROLE_WORDS = (
    ("nucleus", ("dapi", "hoechst", "nucle", "dna", "h2b", "draq5", "blue")),
    ("cytoplasm", ("cyto", "actin", "phalloidin", "tubulin", "membrane", "cellmask", "wga")),
    ("protein", ("protein", "gfp", "antibody", "marker", "green")),
)
_ROLE_COLOR = {"nucleus": "blue", "cytoplasm": "red", "protein": "green", "other": "magenta"}


def channels_from_names(names: tuple[str, ...] | list[str]) -> tuple[ChannelInfo, ...]:
    """Channels named in the file's metadata (OME-TIFF), with roles guessed from stain names."""
    out = []
    for i, name in enumerate(names):
        low = name.lower()
        role = next((r for r, words in _ROLE_WORDS if any(w in low for w in words)), "other")
        if any(c.role == role for c in out) and role != "other":
            role = "other"  # one channel per role; the user can change it
        out.append(ChannelInfo(name or f"ch{i}", role, _ROLE_COLOR[role]))
    return tuple(out)


def content_hash(*arrays: np.ndarray | None) -> str:
    """Stable hash of array contents, shapes and dtypes; the cache key later pages use."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# The batch of an image nobody assigned one to: not a plate, so the batch metrics leave it out.
UNASSIGNED = "unassigned"


@dataclass(frozen=True)
class CellImage:
    """One microscopy image: pixels (H, W, C) in their original dtype plus metadata.

    ``gt`` is an optional ground-truth instance label image (H, W) int32, 0 = background.
    ``hash`` depends on the pixels only, so segmentation caches survive metadata edits.
    """

    name: str
    pixels: np.ndarray
    channels: tuple[ChannelInfo, ...]
    batch: str = UNASSIGNED
    condition: str = ""
    gt: np.ndarray | None = None
    source: str = ""
    notes: tuple[str, ...] = ()
    gt_source: str = ""  # where ``gt`` comes from when not a file: "curated on the Train page (…)"
    hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3:
            raise ValueError(f"{self.name}: pixels must be (H, W, C), got shape {self.pixels.shape}")
        if len(self.channels) != self.pixels.shape[2]:
            raise ValueError(f"{self.name}: {self.pixels.shape[2]} channels but {len(self.channels)} described")
        if self.gt is not None and self.gt.shape != self.pixels.shape[:2]:
            raise ValueError(f"{self.name}: ground truth {self.gt.shape} does not match image {self.pixels.shape[:2]}")
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.pixels))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.pixels.shape  # type: ignore[return-value]

    @cached_property  # once per image: datasets' signatures ask on every rerun
    def gt_hash(self) -> str | None:
        """The ground truth's content hash (None without one): any edit of it changes this."""
        return None if self.gt is None else content_hash(self.gt)

    @cached_property  # a full pass over the mask: the dataset table asks on every rerun
    def n_cells_gt(self) -> int:
        return 0 if self.gt is None else int(len(np.unique(self.gt)) - (1 if (self.gt == 0).any() else 0))

    def channel_index(self, role: str) -> int | None:
        """Index of the first channel with this role, or None."""
        return next((i for i, c in enumerate(self.channels) if c.role == role), None)

    def with_(self, **changes) -> CellImage:
        """A copy with some fields changed (pixels keep their hash unless replaced)."""
        if "pixels" in changes:
            changes.setdefault("hash", "")
        return replace(self, **changes)


def normalize_channel(plane: np.ndarray, clip_low: float = 0.5, clip_high: float = 99.8) -> np.ndarray:
    """Map the [low, high] percentile range of one plane to [0, 1] float32."""
    plane = plane.astype(np.float32, copy=False)
    # Percentiles of a strided sample: identical to full-image percentiles for display, 10x faster.
    step = max(1, int(np.sqrt(plane.size / 250_000)))
    lo, hi = (float(v) for v in np.percentile(plane[::step, ::step], (clip_low, clip_high)))
    if hi <= lo:
        hi = lo + 1.0 if plane.max() <= lo else float(plane.max())
    out = (plane - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def nucleus_plane(image: CellImage) -> np.ndarray:
    """What the detectors see: the nucleus channel (else the first), its 0.5-99.8 percentile range
    mapped to [0, 1] float32. One function, so every model gets the same input."""
    idx = image.channel_index("nucleus")
    return normalize_channel(image.pixels[:, :, 0 if idx is None else idx])


def same_layout(a: CellImage, b: CellImage) -> bool:
    """The same channels in the same order: their names and roles match."""
    return [(c.name, c.role) for c in a.channels] == [(c.name, c.role) for c in b.channels]


def apply_channel_edit(images: Sequence[CellImage], edited: CellImage, channels: tuple[ChannelInfo, ...],
                       *, everywhere: bool) -> list[CellImage]:
    """``edited`` with ``channels``, and with ``everywhere`` every image of the same layout (see
    :func:`same_layout`) with the same fields changed: a contrast edit on one plate's field must
    not rename another experiment's channels or move its nucleus role."""
    changes = [{f: getattr(new, f) for f in ("name", "role", "color", "clip_low", "clip_high")
                if getattr(new, f) != getattr(old, f)} for old, new in zip(edited.channels, channels, strict=True)]
    out = []
    for img in images:
        if img.name == edited.name:
            out.append(img.with_(channels=channels))
        elif everywhere and same_layout(img, edited):
            out.append(img.with_(channels=tuple(replace(ch, **change) for ch, change in zip(img.channels, changes,
                                                                                          strict=True))))
    return out


def color_matrix(channels: Sequence[ChannelInfo]) -> np.ndarray:
    """(C, 3) float32 RGB weights of each channel's display colour (HPA yellow is half red, half green)."""
    return np.array([COLORS[ch.color] for ch in channels], np.float32).reshape(len(channels), 3)
