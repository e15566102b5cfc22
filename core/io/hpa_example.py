"""A deterministic Human Protein Atlas style image: four 16-bit channels in the HPA's order and
colours (:data:`core.io.roles.HPA_ORDER`, :data:`core.data.images.HPA_CHANNELS`):

- red: microtubules, fibres running from the nucleus to the cell's edge (role cytoplasm);
- green: the protein of interest, here in the nucleoli with a faint nucleoplasm (role protein);
- blue: the nucleus, with chromatin texture (role nucleus);
- yellow: the endoplasmic reticulum, a reticular haze densest around the nucleus (role other).

The lesson shows it merged the HPA way (yellow half to red, half to green). Generated, not
downloaded: the lesson runs offline, and the same arguments give the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.data.images import HPA_CHANNELS, CellImage

HPA_SIZE = 512
HPA_SEED = 3
CELL_SPACING = 128  # px between cell centres: HPA cell lines (U2OS, A-431) are large, a few per field
# Photons at full signal per channel, in HPA_CHANNELS' order (red, green, blue, yellow).
HPA_PHOTONS = (1400.0, 2600.0, 2400.0, 2600.0)
BACKGROUND = 60.0  # photons per pixel
CAMERA_OFFSET, READ_NOISE = 100.0, 4.0  # ADU


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with structures about ``scale`` pixels across."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale) + 3), max(2, int(w / scale) + 3))).astype(np.float32)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (out - out.mean()) / (out.std() + 1e-6)


def _nuclei(rng: np.random.Generator, size: int) -> np.ndarray:
    """Instance labels of one elliptical nucleus per cell on a jittered grid."""
    labels = np.zeros((size, size), np.int32)
    n_side = max(1, size // CELL_SPACING)
    spacing = size / n_side
    label = 1
    for row in range(n_side):
        for col in range(n_side):
            cy = (row + 0.5) * spacing + rng.uniform(-0.15, 0.15) * spacing
            cx = (col + 0.5) * spacing + rng.uniform(-0.15, 0.15) * spacing
            axes = (int(rng.uniform(0.17, 0.23) * spacing), int(rng.uniform(0.12, 0.17) * spacing))
            cv2.ellipse(labels, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, label, -1)
            label += 1
    return labels


def _microtubules(rng: np.random.Generator, nuclei: np.ndarray, cells: np.ndarray, fibres: int = 28) -> np.ndarray:
    """Slightly curved fibres from each nucleus out to its cell's edge, dimmer over the nucleus."""
    canvas = np.zeros(nuclei.shape, np.float32)
    reach = float(np.sqrt(nuclei.size / max(int(nuclei.max()), 1)))
    for lab in range(1, int(nuclei.max()) + 1):
        ys, xs = np.nonzero(nuclei == lab)
        if not len(ys):
            continue
        cy, cx = ys.mean(), xs.mean()
        for _ in range(fibres):
            angle, r = rng.uniform(0, 2 * np.pi), rng.uniform(4, 12)
            points = []
            while r < reach:
                angle += rng.normal(0, 0.04)  # microtubules bend gently
                points.append((cx + r * np.cos(angle), cy + r * np.sin(angle)))
                r += 6
            line = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [line], False, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
    return canvas * (cells > 0) * np.where(nuclei > 0, 0.3, 1.0)


def _er(rng: np.random.Generator, nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Perinuclear ER: a reticular texture fading with the distance from the nucleus."""
    dist = cv2.distanceTransform((nuclei == 0).astype(np.uint8), cv2.DIST_L2, 5)
    net = np.clip(0.6 + 0.5 * _texture(rng, nuclei.shape, 2.5), 0, None)
    return np.exp(-dist / 24.0) * net * (cells > 0) * (nuclei == 0)


def _nucleoli(rng: np.random.Generator, nuclei: np.ndarray) -> np.ndarray:
    """The protein: two to four nucleoli per nucleus on a faint nucleoplasm."""
    spots = np.zeros(nuclei.shape, np.float32)
    for lab in range(1, int(nuclei.max()) + 1):
        ys, xs = np.nonzero(nuclei == lab)
        if not len(ys):
            continue
        for i in rng.choice(len(ys), size=int(rng.integers(2, 5)), replace=False):
            cv2.circle(spots, (int(xs[i]), int(ys[i])), int(rng.integers(3, 6)), 1.0, -1)
    spots = cv2.GaussianBlur(spots, (0, 0), 1.5)
    return (0.15 + spots / (spots.max() + 1e-6)) * (nuclei > 0)


def make_hpa_example(*, size: int = HPA_SIZE, seed: int = HPA_SEED) -> CellImage:
    """One HPA-style field: (size, size, 4) uint16 in HPA_CHANNELS' order, the nuclei as ground truth."""
    from skimage.segmentation import expand_labels

    if size < CELL_SPACING:
        raise ValueError(f"an HPA example needs a side of at least {CELL_SPACING} px (one cell); got {size}")
    rng = np.random.default_rng(seed)
    nuclei = _nuclei(rng, size)
    cells = expand_labels(nuclei, distance=size / max(1, size // CELL_SPACING) * 0.45)
    levels = np.concatenate([[0.0], rng.lognormal(0.0, 0.25, int(nuclei.max()))])
    chromatin = np.clip(1.0 + 0.2 * _texture(rng, nuclei.shape, 3.0), 0.3, None)
    dna = levels[nuclei] * chromatin
    signals = (_microtubules(rng, nuclei, cells), _nucleoli(rng, nuclei), dna, _er(rng, nuclei, cells))
    planes = []
    for signal, photons in zip(signals, HPA_PHOTONS, strict=True):
        blurred = cv2.GaussianBlur(np.asarray(signal, np.float32), (0, 0), 1.2)
        counts = rng.poisson(np.clip(photons * blurred + BACKGROUND, 0, None)).astype(np.float32)
        adu = counts + CAMERA_OFFSET + READ_NOISE * rng.standard_normal(nuclei.shape).astype(np.float32)
        planes.append(np.clip(np.round(adu), 0, 65535).astype(np.uint16))
    return CellImage(name="hpa_example", pixels=np.stack(planes, axis=2), channels=HPA_CHANNELS, gt=nuclei,
                     source="generated Human Protein Atlas style image (red microtubules, green protein, "
                            "blue nucleus, yellow ER)")
