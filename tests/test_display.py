from __future__ import annotations

import numpy as np

from core.data.images import HPA_CHANNELS, ChannelInfo
from core.figures.display import (
    composite,
    data_uri,
    display_mask,
    display_outlines,
    draw_outlines,
    fill_labels,
    normalize_channel,
    overlay_png,
    thumbnail,
)


def test_percentile_clip_maps_range_to_unit_interval():
    plane = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    out = normalize_channel(plane, 1, 99)
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert abs(out[50, 0] - 0.5) < 0.01


def test_flat_plane_does_not_divide_by_zero():
    out = normalize_channel(np.full((8, 8), 7, np.uint16))
    assert np.isfinite(out).all()


def test_hpa_yellow_goes_half_to_red_half_to_green():
    pixels = np.zeros((4, 4, 4), np.uint16)
    pixels[..., 3] = 1000
    pixels[0, 0, 3] = 0  # so the percentile range is not flat
    rgb = composite(pixels, HPA_CHANNELS)
    r, g, b = rgb[2, 2]
    assert b == 0 and r == g and 120 <= r <= 135


def test_hidden_channel_is_not_drawn():
    pixels = np.random.default_rng(0).integers(0, 1000, (8, 8, 2)).astype(np.uint16)
    chans = (ChannelInfo("a", "nucleus", "blue"), ChannelInfo("b", "protein", "green"))
    rgb = composite(pixels, chans, visible=(False, True))
    assert rgb[..., 2].max() == 0 and rgb[..., 1].max() == 255


def test_outlines_and_thumbnails():
    labels = np.zeros((50, 50), np.int32)
    labels[10:20, 10:20] = 1
    out = draw_outlines(np.zeros((50, 50, 3), np.uint8), labels)
    assert (out[10, 10:20] == (255, 255, 0)).all() and (out[15, 15] == 0).all()
    assert thumbnail(np.zeros((512, 256, 3), np.uint8), 64).shape == (64, 32, 3)
    assert data_uri(np.zeros((4, 4, 3), np.uint8)).startswith("data:image/png;base64,")


def test_fast_boundaries_equal_skimage_inner_boundaries():
    from skimage.segmentation import find_boundaries

    from core.figures.display import label_boundaries

    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 5, (12, 10)), np.ones((4, 4), int))
    np.testing.assert_array_equal(label_boundaries(labels), find_boundaries(labels, mode="inner"))


def test_outlines_on_a_smaller_preview_stay_thin():
    labels = np.zeros((200, 200), np.int32)
    labels[50:150, 50:150] = 1
    out = draw_outlines(np.zeros((100, 100, 3), np.uint8), labels)
    assert out.shape == (100, 100, 3)
    assert (out[25, 25:75] == (255, 255, 0)).all() and (out[26, 30] == 0).all()


def test_fill_labels_colours_each_object_and_leaves_background():
    rgb = np.full((20, 30, 3), 100, np.uint8)
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 2:6] = 1
    labels[10:15, 10:20] = 2
    out = fill_labels(rgb, labels, alpha=0.5)
    np.testing.assert_array_equal(out[labels == 0], rgb[labels == 0])
    a, b = out[labels == 1], out[labels == 2]
    assert (a == a[0]).all() and (b == b[0]).all() and not np.array_equal(a[0], b[0])
    small = fill_labels(rgb[::2, ::2], labels)  # a preview: labels are scaled to it
    assert small.shape == (10, 15, 3) and not np.array_equal(small, rgb[::2, ::2])


def test_data_uri_encodes_grey_png_losslessly_and_colour_jpeg():
    import base64

    import cv2

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    uri = data_uri(grey)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, grey)
    assert data_uri(np.zeros((8, 8, 3), np.uint8), "jpeg").startswith("data:image/jpeg;base64,")


def test_display_mask_keeps_objects_apart_and_thin_edges_visible():
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = mask[10:30, 31:50] = True  # two squares one pixel apart
    small = display_mask(mask, (50, 50))
    assert small.shape == (50, 50) and small.dtype == bool
    assert 0.8 < small.sum() / (mask.sum() / 4) < 1.2  # area scales with the display
    edges = np.zeros((100, 100), bool)
    edges[:, 41] = True  # a one-pixel line that nearest-neighbour halving could drop
    assert display_mask(edges, (50, 50), thin=True)[:, 20].all()
    assert display_mask(mask, (100, 100)) is mask or np.array_equal(display_mask(mask, (100, 100)), mask)


def test_display_outlines_are_one_display_pixel_wide():
    labels = np.zeros((200, 200), np.int32)
    labels[50:150, 50:150] = 1
    lines = display_outlines(labels, (100, 100))
    assert lines.shape == (100, 100)
    assert lines[25, 25:75].all() and not lines[26, 30] and not lines[50, 50]


def test_overlay_png_is_transparent_outside_the_mask():
    import io

    from PIL import Image

    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:7] = True
    rgba = np.asarray(Image.open(io.BytesIO(overlay_png(mask, (255, 0, 255), alpha=0.5))).convert("RGBA"))
    assert rgba.shape == (10, 12, 4)
    assert (rgba[~mask, 3] == 0).all()
    np.testing.assert_array_equal(rgba[mask], np.tile([255, 0, 255, 128], (mask.sum(), 1)))
