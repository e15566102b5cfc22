"""Per-channel settings of an image (name, role, colour, contrast), applied to every image with the
same channels when asked."""

from __future__ import annotations

import streamlit as st

from core.data.dataset import Dataset
from core.data.images import COLORS, ROLES, CellImage, ChannelInfo, apply_channel_edit, same_layout
from core.text import plural


def channel_settings(ds: Dataset, image: CellImage) -> None:
    """Name, role, colour and contrast per channel; optionally for every image like this one."""
    alike = [img for img in ds if same_layout(img, image)]
    everywhere = st.checkbox(
        f"Apply to all {plural(len(alike), 'image')} with these channels ({', '.join(c.name for c in image.channels)})",
        value=True, key="channels_apply_all",
        help="Channel settings usually describe the whole experiment, not one field. Only images whose channels have "
             "the same names and roles change, and only in what you changed here.",
    )
    new = []
    for i, ch in enumerate(image.channels):
        k = f"ch_{image.name}_{i}"
        c1, c2, c3, c4 = st.columns([2, 2, 2, 3])
        name = c1.text_input("Name", ch.name, key=f"{k}_name", help="Stain or marker, e.g. DAPI")
        role = c2.selectbox("Role", ROLES, index=ROLES.index(ch.role), key=f"{k}_role",
                            help="What the channel shows; segmentation uses the nucleus channel.")
        color = c3.selectbox("Colour", list(COLORS), index=list(COLORS).index(ch.color), key=f"{k}_color",
                             help="Display colour. Yellow adds half to red and half to green (HPA convention).")
        lo, hi = c4.slider("Contrast (percentiles)", 0.0, 100.0, (ch.clip_low, ch.clip_high), step=0.1, key=f"{k}_clip",
                           help="Intensities below the low percentile show black, above the high one full colour.")
        if hi <= lo:
            st.warning("The high percentile must be above the low one.")
            hi = min(100.0, lo + 0.1)
        new.append(ChannelInfo(name or ch.name, role, color, lo, hi))
    new = tuple(new)
    if new != image.channels:
        for img in apply_channel_edit(list(ds), image, new, everywhere=everywhere):
            ds.put(img)
        # Names, roles, colours and contrast are how the images are read, not other images: the
        # example stays the example (an upload still replaces it by default; marking it edited
        # flipped the upload form's "Replace the current images" under the user's eyes).
        st.rerun()
