"""Data for training segmenters on the user's cells: pairs of normalised planes and instance labels,
train/validation splits (by image or by batch), seeded augmentation and fixed-size tiles.

Plain numpy, no torch and no model family: the U-Net, Mask R-CNN and YOLO-seg trainers all start
from :class:`TrainingPair` lists. Planes are normalised exactly as the adapters normalise at
inference (:func:`core.data.images.nucleus_plane`: the 0.5-99.8 percentile range of the whole image
mapped to [0, 1]), so a trained model sees the same kind of input in training and in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.data.images import CellImage, content_hash, normalize_channel, nucleus_plane
from core.schema import Field

PLANES = ("nucleus", "all")  # the nucleus channel (what every segmenter sees), or every channel


@dataclass(frozen=True, eq=False)
class TrainingPair:
    """One image ready for training: (H, W, C) float32 planes in [0, 1] and (H, W) int32 labels."""

    name: str
    batch: str
    image: np.ndarray
    labels: np.ndarray
    source_hash: str = ""  # the pixel hash of the image it came from (CellImage.hash): how it is recognised later

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.labels.shape != self.image.shape[:2]:
            raise ValueError(f"{self.name}: image must be (H, W, C) and labels (H, W); got {self.image.shape} "
                             f"and {self.labels.shape}")

    @property
    def n_objects(self) -> int:
        return int(len(np.unique(self.labels[self.labels > 0])))


def input_planes(image: CellImage, planes: str = "nucleus") -> np.ndarray:
    """(H, W, C) float32 in [0, 1]: what a model trained on ``planes`` reads, in training and in use."""
    if planes == "nucleus":
        return nucleus_plane(image)[:, :, None]
    if planes == "all":
        return np.stack([normalize_channel(image.pixels[:, :, i], ch.clip_low, ch.clip_high)
                         for i, ch in enumerate(image.channels)], axis=2)
    raise ValueError(f"planes must be one of {', '.join(PLANES)}; got {planes!r}")


def training_pairs(images: Sequence[CellImage], planes: str = "nucleus") -> list[TrainingPair]:
    """A pair for every image with ground truth (the others are skipped); ValueError when none has
    any, or when two share a name (splits and metadata refer to images by name)."""
    pairs = [TrainingPair(img.name, img.batch, input_planes(img, planes), np.asarray(img.gt, np.int32), img.hash)
             for img in images if img.gt is not None]
    if not pairs:
        raise ValueError(f"none of the {len(images)} images has ground truth: add label masks (Data page) or "
                         "curate some (Train page) first")
    names = [p.name for p in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"image names must be unique to split by image; repeated: {', '.join(twice)}")
    return pairs


def pairs_hash(pairs: Sequence[TrainingPair]) -> str:
    """A hash of every pair's name, planes and labels: which data a checkpoint was trained on."""
    parts: list[np.ndarray] = []
    for p in sorted(pairs, key=lambda q: q.name):
        parts += [np.frombuffer(p.name.encode(), np.uint8), p.image, p.labels]
    return content_hash(*parts)


# ------------------------------------------------------------------ which images a model has seen

SEEN_ROLES = ("training", "validation")


def seen_record(train: Sequence[TrainingPair], val: Sequence[TrainingPair]) -> dict[str, list[dict[str, str]]]:
    """What a checkpoint's metadata keeps under ``"images_seen"``: each training and validation
    image by name and pixel hash, so that scoring it later on one of them can be marked."""
    return {role: [{"name": p.name, "hash": p.source_hash} for p in side]
            for role, side in zip(SEEN_ROLES, (train, val), strict=True)}


@dataclass(frozen=True)
class SeenImages:
    """The images a trained model was trained and validated on, read from its checkpoint's
    metadata; ``known`` False (with ``why``) for a checkpoint that does not record them.

    An image is recognised by its pixels' hash: the same pixels under another name are still an
    image the model has seen, and another image that happens to have a training image's name is
    not. A record without hashes (none is written so) falls back to names."""

    model: str
    training: tuple[tuple[str, str], ...] = ()  # (name, hash)
    validation: tuple[tuple[str, str], ...] = ()
    known: bool = True
    why: str = ""  # why they are unknown

    @classmethod
    def from_metadata(cls, model: str, meta: dict[str, Any] | None, *, missing: str = "") -> SeenImages:
        """From a checkpoint's metadata (None: there is none, ``missing`` says why)."""
        record = (meta or {}).get("images_seen")
        if not isinstance(record, dict):
            why = missing or ("it was trained before CellScope recorded the images a model is trained on"
                              if meta else "its file carries no CellScope training record")
            return cls(model, known=False, why=why)
        try:
            sides = [tuple((str(e["name"]), str(e.get("hash") or "")) for e in record.get(role) or ())
                     for role in SEEN_ROLES]
        except (TypeError, KeyError, AttributeError):
            return cls(model, known=False, why="its record of training images cannot be read")
        return cls(model, *sides)

    def role(self, name: str, pixel_hash: str = "") -> str:
        """"training", "validation", "" (not seen) or "unknown" for the image ``name`` with ``pixel_hash``."""
        if not self.known:
            return "unknown"
        for role, side in zip(SEEN_ROLES, (self.training, self.validation), strict=True):
            for seen_name, seen_hash in side:
                if (seen_hash == pixel_hash) if (seen_hash and pixel_hash) else seen_name == name:
                    return role
        return ""

    def describe(self) -> str:
        """One line: how many images it saw, or why that is unknown."""
        if not self.known:
            return f"{self.model}: which images it was trained on is unknown ({self.why})"
        return (f"{self.model} was trained on {len(self.training)} and validated on {len(self.validation)} images "
                "(recognised by their pixels, whatever their names)")


# ---------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Which images train and which validate, by name, and how the split was made."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    method: str  # "image" | "batch"
    seed: int | None = None
    val_fraction: float | None = None
    val_batches: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"train": list(self.train), "val": list(self.val), "val_batches": list(self.val_batches)}

    def apply(self, pairs: Sequence[TrainingPair]) -> tuple[list[TrainingPair], list[TrainingPair]]:
        """(train pairs, validation pairs) in the order given; ValueError if a named image is missing,
        or if either side holds no labelled cell (nothing to learn from, or an F1 of 0 that says
        nothing about the model)."""
        by_name = {p.name: p for p in pairs}
        missing = [n for n in (*self.train, *self.val) if n not in by_name]
        if missing:
            raise ValueError(f"the split names images that are not in the data: {', '.join(missing)}")
        train, val = [by_name[n] for n in self.train], [by_name[n] for n in self.val]
        for role, side in (("validation", val), ("training", train)):
            if side and not sum(p.n_objects for p in side):
                names = ", ".join(p.name for p in side[:5]) + (" …" if len(side) > 5 else "")
                raise ValueError(f"the {role} images ({names}) hold no labelled cell: label cells on them, or "
                                 f"{'validate on other images or plates' if role == 'validation' else 'add images with cells'}")
        return train, val


# The Train page's slider, `train --val-split` and split_by_image read this one declaration.
VAL_FRACTION = Field("val_fraction", "Validation share", 0.2,
                     "The share of images that only validate (a seeded random draw; at least one image validates "
                     "and at least one trains).", kind="float", low=0.05, high=0.9, step=0.05)


def check_val_fraction(val_fraction: float) -> None:
    """ValueError unless ``val_fraction`` is a share of images to validate on (VAL_FRACTION's range)."""
    VAL_FRACTION.check(val_fraction)


def split_by_image(pairs: Sequence[TrainingPair], *, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """A seeded random ``val_fraction`` of the images for validation (at least one), the rest to train."""
    check_val_fraction(val_fraction)
    n = len(pairs)
    if n < 2:
        raise ValueError(f"a split by image needs at least 2 images with ground truth (one to train, one to "
                         f"validate); got {n}")
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = set(order[:n_val].tolist())
    return Split(tuple(p.name for i, p in enumerate(pairs) if i not in val),
                 tuple(p.name for i, p in enumerate(pairs) if i in val), "image", seed=seed, val_fraction=val_fraction)


def split_by_batch(pairs: Sequence[TrainingPair], val_batches: Sequence[str]) -> Split:
    """Every image of ``val_batches`` validates, every other image trains: does the model carry over
    to plates it never saw?"""
    batches = sorted({p.batch for p in pairs})
    held = tuple(dict.fromkeys(val_batches))
    unknown = [b for b in held if b not in batches]
    if unknown:
        raise ValueError(f"no images in batch {', '.join(map(repr, unknown))}; batches with ground truth: "
                         f"{', '.join(batches) or 'none'}")
    if not held:
        raise ValueError("name at least one batch to hold out for validation")
    if set(held) == set(batches):
        raise ValueError(f"holding out every batch ({', '.join(batches)}) leaves nothing to train on; a split by "
                         "batch needs images from at least 2 batches")
    return Split(tuple(p.name for p in pairs if p.batch not in held), tuple(p.name for p in pairs if p.batch in held),
                 "batch", val_batches=held)


def leave_one_batch_out(pairs: Sequence[TrainingPair]) -> list[Split]:
    """One split per batch, each holding out that batch's images."""
    batches = sorted({p.batch for p in pairs})
    if len(batches) < 2:
        raise ValueError(f"leave-one-batch-out needs images with ground truth from at least 2 batches; got "
                         f"{len(batches)} ({', '.join(batches) or 'none'})")
    return [split_by_batch(pairs, [b]) for b in batches]


# ---------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Random changes that keep the labels true, as data: each range is drawn from uniformly.

    Geometry (flips, 90-degree turns) moves image and labels together; intensity (gain, gamma),
    illumination (a linear ramp that scales brightness) and background (a level plus a linear
    tilt, added) change the image only, mimicking exposure, uneven illumination and plate
    background (what differs between the example plates, and real ones). Optics change it too:
    extra blur (defocus), a glow of out-of-focus light around bright objects (a wide blur of the
    image added to it) and camera noise (shot noise, growing with the square root of the signal).
    Real widefield nuclei have soft edges with a halo several pixels wide and far more noise than
    the example's crisp ones; without these a U-Net trained on the example drew every real nucleus
    2-4 pixels too large (the halo taken for nucleus) and specks of noise as objects.
    """

    flips: bool = True
    rotations: bool = True
    gain: tuple[float, float] = (0.75, 1.25)
    gamma: tuple[float, float] = (0.7, 1.4)
    offset: float = 0.08  # largest added background level, and tilt across the image, in normalised units
    gradient: float = 0.15  # largest relative brightness change across the image (illumination ramp)
    blur: float = 1.5  # largest extra blur, Gaussian sigma in pixels
    glow: float = 0.6  # largest share of out-of-focus light added, relative to the in-focus image
    noise: float = 0.1  # largest shot noise: std = noise * sqrt(intensity + 0.02), normalised units

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"gain": list(self.gain), "gamma": list(self.gamma)}

    @classmethod
    def none(cls) -> Augmentation:
        return cls(False, False, (1.0, 1.0), (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0)


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            aug: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) changed by one random draw of ``aug``; the same ``rng`` state gives the same result.

    ``image`` is (H, W, C) float in [0, 1], ``labels`` (H, W); the result stays in [0, 1] (what
    inference's normalisation yields). Draws are made in a fixed order whatever is switched off,
    so turning one change off does not alter the others.
    """
    flip_y, flip_x, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
    gain, gamma = rng.uniform(*aug.gain), rng.uniform(*aug.gamma)
    offset, tilt = rng.uniform(-1, 1) * aug.offset, rng.uniform(-1, 1) * aug.offset
    slope, angle = rng.uniform(-1, 1) * aug.gradient, rng.uniform(0, 2 * np.pi)
    sigma, glow, glow_sigma = rng.uniform(0, 1) * aug.blur, rng.uniform(0, 1) * aug.glow, rng.uniform(3.0, 8.0)
    noise, noise_seed = rng.uniform(0, 1) * aug.noise, int(rng.integers(2**31))
    if aug.flips:
        if flip_y:
            image, labels = image[::-1], labels[::-1]
        if flip_x:
            image, labels = image[:, ::-1], labels[:, ::-1]
    if aug.rotations and turns:
        image, labels = np.rot90(image, turns, axes=(0, 1)), np.rot90(labels, turns)
    image = np.clip(image.astype(np.float32), 0.0, 1.0) ** np.float32(gamma) * np.float32(gain)
    if aug.gradient or aug.offset:
        h, w = image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx / max(w - 1, 1) - 0.5) * np.cos(angle) + (yy / max(h - 1, 1) - 0.5) * np.sin(angle)
        ramp = ramp[:, :, None]
        image = image * (1.0 + np.float32(slope) * ramp) + (np.float32(offset) + np.float32(tilt) * ramp)
    image = _optics(np.clip(image, 0.0, 1.0), sigma, glow, glow_sigma, noise, noise_seed)
    return np.clip(image, 0.0, 1.0).astype(np.float32), np.ascontiguousarray(labels)


def _optics(image: np.ndarray, sigma: float, glow: float, glow_sigma: float, noise: float, seed: int) -> np.ndarray:
    """Blur by ``sigma``, add ``glow`` x a ``glow_sigma``-wide blur (scaled back into [0, 1]), then
    shot noise of relative level ``noise``: what a softer, dimmer real microscope makes of the image."""
    import cv2

    image = np.ascontiguousarray(image, np.float32)
    planes = image.shape[2]
    if sigma > 0.2:
        image = cv2.GaussianBlur(image, (0, 0), sigma).reshape(image.shape)
    if glow > 0.01:
        image = (image + np.float32(glow) * cv2.GaussianBlur(image, (0, 0), glow_sigma).reshape(image.shape))
        image /= np.float32(1.0 + glow)
    if noise > 0.005:
        shot = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
        image = image + np.float32(noise) * np.sqrt(np.clip(image, 0.0, None) + np.float32(0.02)) * shot
    return image.reshape(image.shape[:2] + (planes,))


# ----------------------------------------------------------------------------------------- tiles


def pad_to(image: np.ndarray, height: int, width: int, labels: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (and ``labels``) padded at the bottom and right to at least ``height`` x ``width``:
    the image with each plane's median (its background, not a fake dark border), labels with 0."""
    h, w = image.shape[:2]
    ph, pw = max(height - h, 0), max(width - w, 0)
    if not ph and not pw:
        return image, labels
    fill = np.median(image.reshape(-1, image.shape[2]), axis=0).astype(image.dtype)
    out = np.empty((h + ph, w + pw, image.shape[2]), image.dtype)
    out[:] = fill
    out[:h, :w] = image
    if labels is not None:
        labels = np.pad(labels, ((0, ph), (0, pw)))
    return out, labels


def random_tile(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window at a random place (images smaller than that are padded first)."""
    image, labels = pad_to(image, size, size, labels)
    h, w = image.shape[:2]
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[y:y + size, x:x + size], labels[y:y + size, x:x + size]


@dataclass
class TileSampler:
    """Endless seeded batches of augmented tiles drawn from ``pairs``: an image is picked in
    proportion to its area (a big image offers more distinct tiles), a random window cut from it,
    then augmented."""

    pairs: Sequence[TrainingPair]
    size: int
    seed: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("no training images to cut tiles from")
        if self.size < 8:
            raise ValueError(f"tiles must be at least 8 pixels; got {self.size}")
        area = np.array([p.labels.size for p in self.pairs], np.float64)
        self._weights = area / area.sum()
        self._rng = np.random.default_rng(self.seed)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, size, size, C) float32 images and (n, size, size) int32 labels."""
        images, labels = [], []
        for _ in range(n):
            pair = self.pairs[int(self._rng.choice(len(self.pairs), p=self._weights))]
            tile, lab = random_tile(pair.image, pair.labels, self.size, self._rng)
            tile, lab = augment(tile, lab, self._rng, self.augmentation)
            images.append(tile)
            labels.append(lab)
        return np.stack(images), np.stack(labels).astype(np.int32)
