"""A large image view with channel toggles and label outlines, reused by every page."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.data.images import CellImage, ChannelInfo
from core.figures.display import composite, data_uri, draw_outlines, thumbnail


@st.cache_data(max_entries=64, show_spinner=False)
def cached_composite(_image: CellImage, image_hash: str, channels: tuple[ChannelInfo, ...], visible: tuple[bool, ...]) -> np.ndarray:
    """RGB merge, cached by pixel hash + display settings (the image itself is not hashed)."""
    return composite(_image.pixels, channels, visible)


@st.cache_data(max_entries=2048, show_spinner=False)
def cached_thumbnail_uri(_image: CellImage, image_hash: str, channels: tuple[ChannelInfo, ...], size: int = 72) -> str:
    return data_uri(thumbnail(composite(_image.pixels, channels), size))


VISIBLE_KEY = "channel_visibility"  # "<viewer key>:<image name>" -> which channels are shown


def picture(rgb: np.ndarray, *, caption: str = "", fmt: str = "jpeg", where=None) -> None:
    """An image sent inside the page update as a data URI: no media file that a later rerun could
    delete before the browser fetched it (those 404s reached the browser's console)."""
    (where or st).image(data_uri(rgb, fmt), caption=caption or None, width="stretch")


def channel_toggles(image: CellImage, key: str) -> tuple[bool, ...]:
    """A checkbox per channel, labelled with its name and display colour. What is shown belongs
    to the image: another image starts with all its channels, and coming back finds them as left."""
    remembered = st.session_state.setdefault(VISIBLE_KEY, {})
    n = len(image.channels)
    shown = remembered.get(f"{key}:{image.name}", (True,) * n)
    if len(shown) != n:
        shown = (True,) * n
    cols = st.columns(max(n, 1))
    visible = tuple(
        col.checkbox(
            ch.name if ch.name == ch.color else f"{ch.name} · {ch.color}",
            value=shown[i],
            key=f"{key}_show_{image.name}_{i}",
            help=f"Show the {ch.role} channel ({ch.name}) in {ch.color}.",
        )
        for i, (col, ch) in enumerate(zip(cols, image.channels, strict=True))
    )
    remembered[f"{key}:{image.name}"] = visible
    if not any(visible):
        st.info(f"Every channel of {image.name} is hidden, so the picture is black: tick a channel above.")
    return visible


def image_viewer(image: CellImage, *, key: str) -> None:
    """Show ``image`` large: channel toggles, ground-truth outlines, zoom."""
    visible = channel_toggles(image, key)
    show_gt = st.toggle(
        "Ground-truth outlines",
        value=image.gt is not None,
        disabled=image.gt is None,
        key=f"{key}_gt",
        help="Draw the outline of every ground-truth cell in yellow." if image.gt is not None
        else "This image has no ground truth. Upload a label image for it below.",
    )
    zoom = st.toggle(
        "Zoom & pan",
        value=False,
        key=f"{key}_zoom",
        help="Interactive view: drag to zoom into a region, double-click to reset. Off: the whole image, fitted.",
    )
    rgb = cached_composite(image, image.hash, image.channels, visible)
    if show_gt and image.gt is not None:
        rgb = draw_outlines(rgb, image.gt)
    h, w, c = image.shape
    caption = f"{image.name} · {w}×{h} · {image.pixels.dtype} · {c} channel{'s' * (c > 1)}"
    if image.gt is not None:
        caption += f" · {image.n_cells_gt} ground-truth cells"
    if zoom:
        st.plotly_chart(_zoomable(rgb), width="stretch", config={"displaylogo": False, "scrollZoom": True})
        st.caption(caption)
    else:
        picture(rgb, caption=caption)


def _zoomable(rgb: np.ndarray):
    import plotly.express as px

    fig = px.imshow(rgb, binary_string=True)
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=640, dragmode="zoom")
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    return fig
