"""Channel edits: applied to images of the same layout only, and only in the fields changed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.data.images import CellImage, ChannelInfo, apply_channel_edit, default_channels, same_layout


def _img(name: str, channels) -> CellImage:
    return CellImage(name, np.zeros((8, 8, len(channels)), np.uint8), tuple(channels))


def test_an_edit_reaches_images_of_the_same_layout_only_and_only_the_changed_field():
    nuclei = (ChannelInfo("DAPI", "nucleus", "blue"), ChannelInfo("tubulin", "cytoplasm", "red"),
              ChannelInfo("GFP", "protein", "green"))
    a, b = _img("a", nuclei), _img("b", tuple(replace(c, clip_high=99.0) for c in nuclei))
    rgb = _img("rgb", default_channels(3))
    assert same_layout(a, b) and not same_layout(a, rgb)
    edited = (replace(nuclei[0], clip_low=2.0), *nuclei[1:])
    out = {img.name: img for img in apply_channel_edit([a, b, rgb], a, edited, everywhere=True)}
    assert set(out) == {"a", "b"}  # the RGB image, another layout, is left alone
    assert out["a"].channels == edited
    assert out["b"].channels[0].clip_low == 2.0 and out["b"].channels[0].clip_high == 99.0  # only what changed
    assert out["b"].channels[1:] == b.channels[1:]
    renamed = (replace(rgb.channels[0], name="R1"), *rgb.channels[1:])
    out = apply_channel_edit([a, b, rgb], rgb, renamed, everywhere=True)
    assert [img.name for img in out] == ["rgb"] and out[0].channels[0].name == "R1"
    assert [img.name for img in apply_channel_edit([a, b], a, edited, everywhere=False)] == ["a"]
