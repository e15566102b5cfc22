"""A deterministic synthetic fluorescence dataset with ground truth and real batch effects.

Three plates ("batches") x four fields, 512 x 512, 16-bit, three channels (nucleus,
cytoplasm, protein). Nuclei touch, vary in size, shape, brightness and texture, are blurred
by a PSF and imaged with Poisson-Gaussian camera noise. Plates differ the way real plates
do: background level and texture, an illumination gradient and exposure. Conditions
(control / treated) differ biologically: in treated cells the protein moves to the nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.data.images import CellImage, ChannelInfo
from core.schema import Field

EXAMPLE_CHANNELS = (
    ChannelInfo("nucleus", "nucleus", "blue"),
    ChannelInfo("cytoplasm", "cytoplasm", "red"),
    ChannelInfo("protein", "protein", "green"),
)


@dataclass(frozen=True)
class PlateStyle:
    """How one plate's acquisition differs: what a batch effect is made of."""

    name: str
    background: float  # photons per pixel from out-of-focus light and autofluorescence
    background_texture: float  # relative amplitude of low-frequency background structure
    gradient: float  # illumination fall-off at the far corner (0 = flat field)
    gradient_angle: float  # direction of the illumination gradient, degrees
    exposure: float  # relative exposure time (scales signal and background photons)
    defocus: float  # extra PSF blur, pixels
    medium: float = 0.0  # photons per pixel from fluorescent medium (not in the nucleus channel), excluded by the cells


PLATES = (
    PlateStyle("plateA", background=40, background_texture=0.10, gradient=0.15, gradient_angle=30, exposure=1.0, defocus=0.0),
    PlateStyle("plateB", background=110, background_texture=0.35, gradient=0.40, gradient_angle=200, exposure=0.7, defocus=0.6),
    PlateStyle("plateC", background=70, background_texture=0.20, gradient=0.25, gradient_angle=110, exposure=1.5, defocus=0.3),
)
# The lesson's batch pair: two plates imaged alike, cells alike, differing in the background alone.
# Plate 2's medium still held fluorescent phenol red (not washed out): it glows between the cells,
# not under them (the cells' volume excludes it). A classifier of the plates then looks at the
# background, and masking it removes the difference: the story of the lesson's Grad-CAM steps.
LESSON_PLATES = (
    PlateStyle("plate1", background=40, background_texture=0.10, gradient=0.15, gradient_angle=30, exposure=1.0,
               defocus=0.0),
    PlateStyle("plate2", background=40, background_texture=0.10, gradient=0.15, gradient_angle=30, exposure=1.0,
               defocus=0.0, medium=250),
)
LESSON_SEED = 11
CAMERA_OFFSET = 100.0  # ADU added by the camera
READ_NOISE = 4.0  # ADU, Gaussian
SIGNAL_PHOTONS = {"nucleus": 900.0, "cytoplasm": 220.0, "protein": 420.0}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with structures about ``scale`` pixels across."""
    h, w = shape
    gh, gw = max(2, int(h / scale) + 3), max(2, int(w / scale) + 3)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _place_nuclei(rng: np.random.Generator, size: int) -> list[tuple[float, float, float, float, float]]:
    """Centres, semi-axes and angle of nuclei: scattered, with clusters of touching ones."""
    target = int(rng.integers(60, 90))
    placed: list[tuple[float, float, float, float, float]] = []
    for _ in range(target * 40):
        if len(placed) >= target:
            break
        r = float(np.clip(rng.lognormal(np.log(10.5), 0.22), 6.0, 19.0))
        aspect = float(rng.uniform(1.0, 1.6))
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        angle = float(rng.uniform(0, np.pi))
        if placed and rng.random() < 0.45:  # next to an existing nucleus: touching pairs, clumps
            cy, cx, ra, rb, _ = placed[int(rng.integers(len(placed)))]
            d = (np.sqrt(ra * rb) + r) * rng.uniform(0.85, 1.0)
            t = rng.uniform(0, 2 * np.pi)
            y, x = cy + d * np.sin(t), cx + d * np.cos(t)
        else:
            y, x = rng.uniform(-r / 2, size + r / 2, 2)
        if not (-r / 2 <= y <= size + r / 2 and -r / 2 <= x <= size + r / 2):
            continue
        if all(np.hypot(y - py, x - px) > 0.82 * (r + np.sqrt(pa * pb)) for py, px, pa, pb, _ in placed):
            placed.append((float(y), float(x), a, b, angle))
    return placed


def _rasterize(rng: np.random.Generator, nuclei: list, size: int) -> np.ndarray:
    """Instance labels of irregular ellipses; earlier nuclei win where two overlap."""
    from scipy import ndimage as ndi

    labels = np.zeros((size, size), np.int32)
    next_label = 1
    for y, x, a, b, angle in nuclei:
        reach = int(np.ceil(a * 1.3)) + 2
        y0, y1 = max(0, int(y) - reach), min(size, int(y) + reach + 1)
        x0, x1 = max(0, int(x) - reach), min(size, int(x) + reach + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - y, xx - x
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        theta = np.arctan2(v, u)
        wobble = np.ones_like(theta)
        for k in (2, 3, 5):  # low harmonics give kidney- and pear-shaped nuclei
            wobble += rng.uniform(0, 0.07) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        inside = (rho < wobble) & (labels[y0:y1, x0:x1] == 0)
        if inside.sum() < 25:
            continue
        # Keep the largest piece so every label is one connected object.
        pieces, n = ndi.label(inside)
        if n > 1:
            inside = pieces == (np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
        labels[y0:y1, x0:x1][inside] = next_label
        next_label += 1
    return labels


def _soft_interior(labels: np.ndarray, width: float) -> np.ndarray:
    """1 deep inside objects, falling to 0 at their borders (so touching objects show a seam)."""
    from skimage.segmentation import find_boundaries

    core = (labels > 0) & ~find_boundaries(labels, mode="inner")
    dist = cv2.distanceTransform(core.astype(np.uint8), cv2.DIST_L2, 3)
    return (1.0 - np.exp(-(dist + 0.5) / width)) * (labels > 0)


def _per_object(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Paint ``values[label]`` on each object (values[0] is the background)."""
    return values[labels]


def _field(rng: np.random.Generator, plate: PlateStyle, treated: bool, size: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage.segmentation import expand_labels

    nuclei = _rasterize(rng, _place_nuclei(rng, size), size)
    n = int(nuclei.max())
    cells = expand_labels(nuclei, distance=float(rng.uniform(9, 14)))

    # Nucleus: DNA content varies (G1 vs G2: up to 2x), chromatin texture, darker nucleoli.
    dna = np.concatenate([[0.0], rng.lognormal(0.0, 0.3, n) * np.where(rng.random(n) < 0.25, 1.7, 1.0)])
    chromatin = 1.0 + 0.22 * _smooth_noise(rng, (size, size), 2.5) + 0.10 * _smooth_noise(rng, (size, size), 6)
    nucleoli = np.zeros((size, size), np.float32)
    ys, xs = np.nonzero(nuclei)
    if len(ys):
        pick = rng.choice(len(ys), size=min(len(ys), n * 2), replace=False)
        nucleoli[ys[pick], xs[pick]] = 1.0
        nucleoli = cv2.GaussianBlur(nucleoli, (0, 0), 1.8)
        nucleoli /= nucleoli.max() + 1e-6
    nucleus = _per_object(nuclei, dna) * np.clip(chromatin, 0.3, None) * (1 - 0.5 * nucleoli)
    nucleus *= _soft_interior(nuclei, 1.6)

    # Cytoplasm: per-cell level, fibrous texture, excluded from the nucleus.
    level = np.concatenate([[0.0], rng.lognormal(0.0, 0.35, n)])
    fibres = np.clip(1.0 + 0.35 * _smooth_noise(rng, (size, size), 3), 0.2, None)
    cytoplasm = _per_object(cells, level) * fibres * np.where(nuclei > 0, 0.35, 1.0)
    cytoplasm *= _soft_interior(cells, 3.0)

    # Protein: expression varies a lot between cells; control = cytoplasmic puncta, treated =
    # nuclear translocation.
    expression = np.concatenate([[0.0], rng.lognormal(0.0, 0.6, n)])
    puncta = np.zeros((size, size), np.float32)
    ys, xs = np.nonzero(cells > 0)
    if len(ys):
        pick = rng.choice(len(ys), size=min(len(ys), n * 12), replace=False)
        puncta[ys[pick], xs[pick]] = rng.uniform(0.5, 1.0, len(pick))
        puncta = cv2.GaussianBlur(puncta, (0, 0), 1.3)
        puncta /= puncta.max() + 1e-6
    nuclear_fraction = 0.75 if treated else 0.15
    protein = _per_object(cells, expression) * (
        (1 - nuclear_fraction) * (0.4 + 2.0 * puncta) * (nuclei == 0) + nuclear_fraction * 1.6 * (nuclei > 0)
    )
    protein *= _soft_interior(cells, 2.0)

    # Optics: PSF blur (with plate-specific defocus), illumination gradient, background.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.deg2rad(plate.gradient_angle)
    ramp = (xx - 0.5) * np.cos(t) + (yy - 0.5) * np.sin(t)
    illumination = 1.0 - plate.gradient * (ramp - ramp.min()) / (ramp.max() - ramp.min())
    sigma = 1.1 + plate.defocus
    # Medium fluorescence fills the well but not the cells: seen, blurred, only between them.
    outside = cv2.GaussianBlur((cells == 0).astype(np.float32), (0, 0), sigma) if plate.medium else None
    channels = []
    for name, signal in (("nucleus", nucleus), ("cytoplasm", cytoplasm), ("protein", protein)):
        blurred = cv2.GaussianBlur(signal.astype(np.float32), (0, 0), sigma)
        background = plate.background * np.clip(
            1.0 + plate.background_texture * _smooth_noise(rng, (size, size), 90), 0.1, None
        )
        if plate.medium and name != "nucleus":  # phenol red glows red-orange, not in the DNA stain's blue
            background = background + plate.medium * outside
        photons = plate.exposure * (SIGNAL_PHOTONS[name] * blurred * illumination + background)
        counts = rng.poisson(np.clip(photons, 0, None)).astype(np.float32)
        adu = counts + CAMERA_OFFSET + READ_NOISE * rng.standard_normal((size, size)).astype(np.float32)
        channels.append(np.clip(np.round(adu), 0, 65535).astype(np.uint16))
    return np.stack(channels, axis=2), nuclei


# The example's knobs, declared once: ``example``'s options and the check below read them. 60-90
# nuclei of radius ~10 px are placed per field whatever its size, so a side under 64 px is all nucleus.
EXAMPLE_SIZE = Field("size", "Image side", 512, "Image side in pixels.", kind="int", low=64, high=4096, step=64)
EXAMPLE_FIELDS = Field("fields", "Fields per plate", 4, "Fields per plate; the second half of each plate's fields are "
                       "treated.", kind="int", low=1, high=100, step=1)
EXAMPLE_SEED = Field("seed", "Seed", 7, "Random seed; 7 is the app's example.", kind="int", low=0, high=2**31 - 1,
                     step=1)


def make_example_dataset(*, seed: int = 7, size: int = 512, fields_per_plate: int = 4,
                         plates: tuple[PlateStyle, ...] = PLATES, source: str = "example dataset") -> list[CellImage]:
    """The example dataset: ``len(plates) x fields_per_plate`` images, identical for equal arguments."""
    EXAMPLE_SEED.check(seed), EXAMPLE_SIZE.check(size), EXAMPLE_FIELDS.check(fields_per_plate)
    images = []
    for p, plate in enumerate(plates):
        for f in range(fields_per_plate):
            rng = np.random.default_rng([seed, p, f])
            treated = f >= fields_per_plate // 2
            pixels, gt = _field(rng, plate, treated, size)
            images.append(
                CellImage(
                    name=f"{plate.name}_field{f + 1}",
                    pixels=pixels,
                    channels=EXAMPLE_CHANNELS,
                    batch=plate.name,
                    condition="treated" if treated else "control",
                    gt=gt,
                    source=source,
                )
            )
    return images


def make_lesson_dataset(*, size: int = 512, fields_per_plate: int = 4) -> list[CellImage]:
    """The lesson plates: :data:`LESSON_PLATES` x ``fields_per_plate`` fields (half control, half
    treated), cells generated as in the example, the plates differing in the background alone."""
    return make_example_dataset(seed=LESSON_SEED, size=size, fields_per_plate=fields_per_plate, plates=LESSON_PLATES,
                                source="lesson plates")
