"""Data page: load images, name channels, assign batches, attach ground truth, look at them."""

from __future__ import annotations

import streamlit as st

from components.channel_editor import channel_settings
from components.image_details import image_details
from components.image_viewer import image_viewer
from components.plate_table import plate_section
from components.routing import require_router
from components.state import dataset, is_untouched_example, reset_to_example
from components.upload_panel import bump_dataset_version, upload_section
from core.text import plural


def data_page() -> None:
    require_router()
    st.title("Data")
    ds = dataset()
    if is_untouched_example():
        st.info(
            "You are looking at the **example dataset**: 3 plates × 4 fields of synthetic 16-bit nuclei with ground "
            "truth; plates differ in background, illumination and exposure (batch effects). Upload your own below."
        )
    st.page_link("pages/lesson.py", label="New here, or teaching? Start the lesson: CNNs for microscopy, step by step "
                 "(on its own images: yours stay loaded)", icon=":material/school:")
    upload_section(ds)
    row = st.container(horizontal=True)  # buttons as wide as their labels, side by side
    if row.button("Load example dataset", help="Replace everything with the bundled example."):
        reset_to_example()
        st.session_state.dataset_version = st.session_state.get("dataset_version", 0) + 1
        st.session_state.pop("load_messages", None)
        st.rerun()
    if row.button("Clear all", help="Remove every image from this session.", disabled=len(ds) == 0):
        ds.remove(ds.names)
        bump_dataset_version()
        st.session_state.pop("load_messages", None)
        st.rerun()
    if len(ds) == 0:
        st.warning("No images loaded. Upload files above or load the example dataset.")
        return

    st.subheader(f"Images ({len(ds)})")
    plate_section(ds)
    to_remove = st.multiselect("Remove images", ds.names, help="Take images out of this session's dataset.")
    if to_remove and st.button(f"Remove {plural(len(to_remove), 'image')}", help="Take the chosen images out; the others stay."):
        ds.remove(to_remove)
        bump_dataset_version()
        st.rerun()

    st.subheader("Viewer")
    name = st.selectbox("Image", ds.names, key="viewer_image", help="The image to show large.")
    image = ds[name]
    left, right = st.columns([3, 2])
    with left:
        image_viewer(image, key="data_viewer")
    with right:
        image_details(ds, image)
    with st.expander("Channels: names, roles, colours, contrast"):
        channel_settings(ds, image)


data_page()
