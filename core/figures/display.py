"""Turning multi-channel scientific images into RGB for display."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from core.data.images import COLORS, CellImage, ChannelInfo, color_matrix, normalize_channel


def composite(
    pixels: np.ndarray, channels: Sequence[ChannelInfo], visible: Sequence[bool] | None = None
) -> np.ndarray:
    """Additive colour merge of (H, W, C) pixels to uint8 RGB, each channel in its own colour."""
    h, w, c = pixels.shape
    visible = [True] * c if visible is None else list(visible)
    rgb = np.zeros((h, w, 3), np.float32)
    for i, ch in enumerate(channels):
        if not visible[i]:
            continue
        norm = normalize_channel(pixels[:, :, i], ch.clip_low, ch.clip_high)
        for k, weight in enumerate(COLORS[ch.color]):
            if weight:
                rgb[:, :, k] += weight * norm
    return to_uint8(rgb)


def image_rgb(image: CellImage, visible: Sequence[bool] | None = None) -> np.ndarray:
    return composite(image.pixels, image.channels, visible)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object with a 4-neighbour outside it (skimage's 'inner' boundaries, faster)."""
    edge = np.zeros(labels.shape, bool)
    diff_v = labels[1:] != labels[:-1]
    diff_h = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= diff_v
    edge[:-1] |= diff_v
    edge[:, 1:] |= diff_h
    edge[:, :-1] |= diff_h
    return edge & (labels > 0)


def draw_outlines(rgb: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """Copy of ``rgb`` with the boundary of every labelled object drawn in ``color``.

    When ``rgb`` is smaller than ``labels`` (a preview), the labels are scaled down first so
    outlines stay one display pixel wide.
    """
    out = rgb.copy()
    out[display_outlines(labels, (rgb.shape[1], rgb.shape[0]))] = color
    return out


def display_mask(mask: np.ndarray, size: tuple[int, int], *, thin: bool = False) -> np.ndarray:
    """A boolean mask at display ``size`` (w, h). Nearest neighbour, so no object grows or merges;
    ``thin`` structures (edges) instead mark every display pixel they touch, so none vanish."""
    if mask.shape[:2] == (size[1], size[0]):
        return mask.astype(bool, copy=False)
    interpolation = cv2.INTER_AREA if thin else cv2.INTER_NEAREST
    return cv2.resize(mask.astype(np.uint8), size, interpolation=interpolation) > 0


def display_outlines(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every object's outline at display ``size`` (w, h), one display pixel wide (the labels are
    scaled first, so outlines stay thin on a shrunken view)."""
    if labels.shape[:2] != (size[1], size[0]):
        labels = cv2.resize(labels.astype(np.int32, copy=False), size, interpolation=cv2.INTER_NEAREST)
    return label_boundaries(labels)


def overlay_png(mask: np.ndarray, color: tuple[int, int, int], alpha: float = 1.0) -> bytes:
    """A transparent PNG layer: ``color`` at ``alpha`` where ``mask`` is true, nothing elsewhere.

    A two-entry palette image: about 1 ms and 4 KB at 640 px, where an RGBA PNG takes ~16 ms to
    encode; the browser stacks it over the picture and can hide it without asking the server."""
    layer = Image.fromarray(mask.astype(np.uint8), "P")
    layer.putpalette([0, 0, 0, *color])
    buf = io.BytesIO()
    layer.save(buf, "PNG", transparency=bytes([0, round(alpha * 255)]), compress_level=1)
    return buf.getvalue()


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 colours: black for the background (0), then one bright hue per label."""
    hues = np.random.default_rng(seed).permutation(max(n, 1)) * (180 / max(n, 1))
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 255)], axis=1).astype(np.uint8)[None]
    return np.vstack([np.zeros((1, 3), np.uint8), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]])


def fill_labels(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45, seed: int = 0) -> np.ndarray:
    """Copy of ``rgb`` with every object filled in its own colour (the same label, the same colour)."""
    if labels.shape != rgb.shape[:2]:
        labels = cv2.resize(labels.astype(np.int32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    lut = label_colors(int(labels.max(initial=0)), seed)
    inside = labels > 0
    out = rgb.copy()
    out[inside] = (rgb[inside] * (1 - alpha) + lut[labels[inside]] * alpha).astype(np.uint8)
    return out


def fill_png(labels: np.ndarray, size: tuple[int, int], alpha: float = 0.45, seed: int = 0) -> bytes:
    """A transparent PNG layer at display ``size`` (w, h) with every object filled in its own
    colour: a palette image, so labels past 255 reuse colours (neighbours rarely share one)."""
    if labels.shape[:2] != (size[1], size[0]):
        labels = cv2.resize(labels.astype(np.int32, copy=False), size, interpolation=cv2.INTER_NEAREST)
    index = np.where(labels > 0, (labels - 1) % 255 + 1, 0).astype(np.uint8)
    layer = Image.fromarray(index, "P")
    layer.putpalette(label_colors(255, seed).ravel().tolist())
    buf = io.BytesIO()
    layer.save(buf, "PNG", transparency=bytes([0] + [round(alpha * 255)] * 255), compress_level=1)
    return buf.getvalue()


def thumbnail(rgb: np.ndarray, size: int = 96) -> np.ndarray:
    """Downscale so the longer side is ``size`` pixels (area averaging keeps small cells visible)."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_image(image: np.ndarray, fmt: str = "png") -> bytes:
    """A uint8 RGB or grey image as PNG (lossless) or JPEG (smaller, for images only looked at)
    file bytes; OpenCV's encoders, about twice as fast as Pillow's."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise ValueError(f"could not encode {fmt.upper()}")
    return buf.tobytes()


def data_uri(image: np.ndarray | bytes, fmt: str = "png") -> str:
    """A ``data:image/...;base64,...`` URI of :func:`encode_image` (or of encoded file bytes), for
    table cells and browser components."""
    data = image if isinstance(image, bytes) else encode_image(image, fmt)
    return f"data:image/{fmt};base64," + base64.b64encode(data).decode()


def to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats (a plane or an RGB image) as uint8, clipped."""
    return (np.clip(values, 0, 1) * 255).astype(np.uint8)


def gray_rgb(plane: np.ndarray) -> np.ndarray:
    """A [0, 1] float plane as uint8 RGB."""
    g = to_uint8(plane)
    return np.dstack([g, g, g])


def preview(rgb: np.ndarray, max_side: int = 768) -> np.ndarray:
    """Shrink for the browser: the page shows images at most this wide, so larger ones only cost time."""
    return thumbnail(rgb, max_side)


def tint(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 200, 255), alpha: float = 0.35) -> np.ndarray:
    """Blend ``color`` over the pixels where ``mask`` is true."""
    out = rgb.copy()
    out[mask] = (out[mask] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)
    return out


def crops_rgb(crops: np.ndarray, channels) -> np.ndarray:
    """(n, S, S, C) crops in [0, 1] as (n, S, S, 3) uint8, each channel in its display colour."""
    return (np.clip(crops @ color_matrix(channels), 0, 1) * 255).astype(np.uint8)


def montage(tiles: np.ndarray, columns: int = 10, gap: int = 2) -> np.ndarray:
    """(N, h, w, 3) uint8 tiles in a grid, one image."""
    n, h, w = tiles.shape[:3]
    rows = max(1, -(-n // columns))
    out = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return out


def cam_overlay(rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.5, outline: np.ndarray | None = None) -> np.ndarray:
    """A class activation map (H, W) in [0, 1] over ``rgb`` (H, W, 3) uint8 in the jet colours
    Grad-CAM papers use (blue = ignored, red = relied on), ``opacity`` 0 (image only) to 1 (map
    only); ``outline``: a mask (or label image) whose boundary is drawn in white on top."""
    if cam.shape != rgb.shape[:2]:
        cam = cv2.resize(cam.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    out = (rgb.astype(np.float32) * (1 - opacity) + heat.astype(np.float32) * opacity).astype(np.uint8)
    if outline is not None:
        out[label_boundaries(outline.astype(np.int32))] = (255, 255, 255)
    return out


def cam_overlays(crops_rgb_: np.ndarray, cams: np.ndarray, opacity: float = 0.5,
                 masks: np.ndarray | None = None) -> np.ndarray:
    """:func:`cam_overlay` for a stack of (n, S, S, 3) crops, their (n, S, S) CAMs and cell masks."""
    return np.stack([cam_overlay(crops_rgb_[i], cams[i], opacity, None if masks is None else masks[i])
                     for i in range(len(crops_rgb_))]) if len(crops_rgb_) else crops_rgb_.copy()
