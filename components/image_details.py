"""One image's details beside the Data page's viewer: channel statistics, plate, notes, and its
ground truth attached from an upload or removed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.state import dataset, mark_edited
from core.cells.measure import channel_stats
from core.data.dataset import Dataset
from core.data.images import CellImage
from core.io.decode import read_labels
from core.io.guards import ImageReadError


def _attach_gt(name: str, key: str) -> None:
    ds = dataset()
    upload = st.session_state.get(key)
    if upload is None or name not in ds:
        return
    image = ds[name]
    try:
        labels, notes = read_labels(upload.getvalue(), upload.name)
        if labels.shape != image.shape[:2]:
            raise ImageReadError(
                f"is {labels.shape[1]}x{labels.shape[0]} but {name} is {image.shape[1]}x{image.shape[0]}; "
                "it was not attached"
            )
    except ImageReadError as exc:
        st.session_state.gt_message = ("error", f"**{upload.name}**: {exc}")
        return
    ds.put(image.with_(gt=labels))
    mark_edited()
    st.session_state.gt_message = ("success", f"Attached {upload.name}: {image.with_(gt=labels).n_cells_gt} cells. " + " ".join(notes))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_channel_stats(_image: CellImage, image_hash: str, channels: tuple) -> pd.DataFrame:
    return channel_stats(_image.pixels, _image.channels)


def image_details(ds: Dataset, image: CellImage) -> None:
    stats = cached_channel_stats(image, image.hash, image.channels)
    st.dataframe(stats, hide_index=True, width="stretch")
    st.caption(f"Batch **{image.batch}**" + (f" · condition **{image.condition}**" if image.condition else "")
               + f" · from {image.source or 'upload'}")
    for note in image.notes:
        st.caption(f"ℹ️ {note}")
    key = f"gt_upload_{image.name}_{st.session_state.get('dataset_version', 0)}"
    st.file_uploader(
        "Ground truth for this image", type=["png", "tif", "tiff"], key=key, on_change=_attach_gt, args=(image.name, key),
        help="A label image of the same size: 0 = background, 1..N = one value per cell. Binary masks are split into connected components.",
    )
    if msg := st.session_state.pop("gt_message", None):
        (st.error if msg[0] == "error" else st.success)(msg[1])
    if image.gt is not None and st.button("Remove ground truth", help="Detach the ground truth from this image."):
        ds.put(image.with_(gt=None))
        mark_edited()
        st.rerun()
