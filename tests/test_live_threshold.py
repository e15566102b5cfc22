"""The browser-side threshold preview follows the same rule as the pipeline's threshold."""

from __future__ import annotations

import pytest

from components.live_threshold import preview_mask, preview_planes
from core.segmentation.preprocess import run_pipeline, threshold
from core.segmentation.recipe import DEFAULT_RECIPE


@pytest.mark.parametrize("method,param,value", [("adaptive_gaussian", "offset", -0.01),
                                                ("adaptive_gaussian", "offset", 0.03),
                                                ("adaptive_mean", "offset", -0.02),
                                                ("manual", "value", 0.3)])
def test_preview_at_full_size_matches_the_pipeline_threshold(example_images, method, param, value):
    img = example_images[0]
    result = run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE)
    step = DEFAULT_RECIPE.threshold.__class__(**{**DEFAULT_RECIPE.threshold.__dict__, "method": method, param: value})
    server, _ = threshold(result.processed, step, result.cell_diameter)
    h, w = result.processed.shape
    src, local, floor = preview_planes(result.processed, step, result.cell_diameter, (w, h))
    browser = preview_mask(src, local, floor, value)
    assert (browser == server).mean() > 0.99
    assert abs(browser.mean() - server.mean()) < 0.01


def test_preview_at_display_size_keeps_the_foreground_fraction(example_images):
    img = example_images[0]
    result = run_pipeline(img.pixels, img.channels, DEFAULT_RECIPE)
    server, _ = threshold(result.processed, DEFAULT_RECIPE.threshold, result.cell_diameter)
    src, local, floor = preview_planes(result.processed, DEFAULT_RECIPE.threshold, result.cell_diameter, (320, 320))
    assert src.shape == local.shape == (320, 320)
    assert abs(preview_mask(src, local, floor, DEFAULT_RECIPE.threshold.offset).mean() - server.mean()) < 0.02
