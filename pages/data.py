"""Data page: load images, name channels, assign batches, attach ground truth, look at them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.dataset_table import dataset_table
from components.downloads import download_button
from components.image_viewer import image_viewer
from components.routing import require_router
from components.state import dataset, is_untouched_example, mark_edited, reset_to_example
from core.dataset import Dataset
from core.export import dataset_zip
from core.image_decode import read_labels
from core.images import COLORS, ROLES, UNASSIGNED, CellImage, ChannelInfo, apply_channel_edit, same_layout
from core.io import load_files
from core.measure import channel_stats
from core.plates import apply_batch_table, batches_from_pattern
from core.read_guards import ImageReadError
from core.text import plural

UPLOAD_HELP = (
    "PNG, JPEG or TIFF (8/16-bit, float, multi-page, OME-TIFF), several at once or a .zip of folders. "
    "HPA sets named <id>_red/_green/_blue/_yellow become one 4-channel image. Files named "
    "<image>_mask / _labels / _gt, or in a masks/ folder, are ground truth. A CSV/TSV with "
    "columns filename, batch[, condition] assigns batches."
)


def _bump_version() -> None:
    """Structural change: editors keyed on the old table must start fresh."""
    st.session_state.dataset_version = st.session_state.get("dataset_version", 0) + 1
    mark_edited()


def upload_section(ds: Dataset) -> None:
    with st.form("upload", clear_on_submit=True):
        # No type filter: the browser would drop other files with a note that vanishes on Load; our
        # loader names each file it cannot use and why.
        files = st.file_uploader("Add images", accept_multiple_files=True, help=UPLOAD_HELP)
        c1, c2, c3 = st.columns([2, 1, 2])
        stack_mode = c1.radio(
            "Z-stacks and time series",
            ["maximum projection", "one plane"],
            horizontal=True,
            help="Files with more planes than channels are reduced to one 2-D image per file.",
        )
        plane = c2.number_input("Plane", min_value=0, value=0, step=1, help="Plane index used with 'one plane' (0 = first).")
        replace = c3.checkbox(
            "Replace the current images",
            value=is_untouched_example(),
            help="On: the upload replaces what is loaded (the example, at first). Off: it is added.",
        )
        submitted = st.form_submit_button("Load files", type="primary")
    if submitted and not files:
        st.warning("No files chosen yet: pick files above (and let their upload finish), then press Load files.")
    if submitted and files:
        bar = st.progress(0.0, text="Reading files…")
        report = load_files(
            [(f.name, f.getvalue()) for f in files],
            plane=int(plane) if stack_mode == "one plane" else None,
            existing_names=() if replace else ds.names,
            progress=lambda frac, name: bar.progress(frac, text=f"Reading {name}…"),
        )
        bar.empty()
        if replace and report.images:
            ds.remove(ds.names)
        ds.add(report.images)
        unmatched: list[str] = []
        if report.batch_table is not None:  # a table also relabels images loaded earlier
            updated, unmatched = apply_batch_table(list(ds), report.batch_table)
            for img in updated:
                ds.put(img)
        if report.images or report.batch_table is not None:
            _bump_version()
        st.session_state.load_messages = {
            "images": list(ds.names),  # what the messages describe: gone once images are removed or replaced
            "loaded": [img.name for img in report.images],
            "problems": [(p.file, p.message) for p in report.problems],
            "notes": [(img.name, n) for img in report.images for n in img.notes],
            "unmatched": unmatched,
        }
        st.rerun()  # redraw the whole page (banner, table, viewer) from the new dataset
    _show_load_messages(ds)


def _show_load_messages(ds: Dataset) -> None:
    """What the last upload loaded and refused, while the dataset still holds the images it left:
    "Loaded 4 images" stayed up after one of them was removed."""
    msgs = st.session_state.get("load_messages")
    if msgs and msgs.get("images") != list(ds.names):
        del st.session_state["load_messages"]
        return
    if not msgs:
        return
    if msgs["loaded"]:
        st.success(f"Loaded {plural(len(msgs['loaded']), 'image')}: {', '.join(msgs['loaded'][:8])}{' …' if len(msgs['loaded']) > 8 else ''}")
    for file, message in msgs["problems"]:
        st.error(f"**{file}**: {message}")
    if msgs["unmatched"]:
        st.warning(f"Batch table rows matching no image: {', '.join(msgs['unmatched'][:10])}")
    if msgs["notes"]:
        with st.expander(f"How files were read ({len(msgs['notes'])} notes)"):
            st.markdown("\n".join(f"- **{name}**: {note}" for name, note in msgs["notes"]))


def batch_section(ds: Dataset) -> None:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    pattern = c1.text_input(
        "Batch from file name (regular expression)",
        value=r"(?P<batch>plate[A-Za-z0-9]+)",
        key="batch_pattern",
        help="A Python regex with a named group 'batch', searched in each image name, "
        r"e.g. (?P<batch>plate\d+) or ^(?P<batch>[^_]+)_.",
    )
    if c2.button("Apply pattern", help="Set the batch of every image whose name matches."):
        try:
            found = batches_from_pattern(ds.names, pattern)
        except ValueError as exc:
            st.error(str(exc))
        else:
            for name, batch in found.items():
                ds.put(ds[name].with_(batch=batch))
            _bump_version()
            st.toast(f"Pattern matched {len(found)} of {plural(len(ds), 'image')}")

    table = ds.table()
    edited = dataset_table(ds, table, key=f"dataset_table_{st.session_state.get('dataset_version', 0)}")
    if edited is not None:
        for row in edited.itertuples():
            img = ds[row.name]
            batch, condition = row.batch or UNASSIGNED, row.condition
            if (batch, condition) != (img.batch, img.condition):
                ds.put(img.with_(batch=batch, condition=condition))
                mark_edited()
                table = ds.table()
        row = st.container(horizontal=True)  # each button its label's width: a fifth of the page cut "Download dataset (..."
        download_button(row,
            "Download table (CSV)",
            table.to_csv(index=False),
            file_name="cellscope_dataset.csv",
            mime="text/csv",
            help="Names, shapes, batches and conditions; loads back as a batch table.",
        )
        download_button(row,
            "Download dataset (.zip)",
            lambda: dataset_zip(list(ds)),  # built only when clicked
            file_name="cellscope_dataset.zip",
            mime="application/zip",
            help="Images as OME-TIFF, ground truth in masks/, batches.csv: uploads back unchanged.",
        )


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
        mark_edited()
        st.rerun()


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


def data_page() -> None:
    require_router()
    st.title("Data")
    ds = dataset()
    if is_untouched_example():
        st.info(
            "You are looking at the **example dataset**: 3 plates × 4 fields of synthetic 16-bit nuclei with ground "
            "truth; plates differ in background, illumination and exposure (batch effects). Upload your own below."
        )
    upload_section(ds)
    row = st.container(horizontal=True)  # buttons as wide as their labels, side by side
    if row.button("Load example dataset", help="Replace everything with the bundled example."):
        reset_to_example()
        st.session_state.dataset_version = st.session_state.get("dataset_version", 0) + 1
        st.session_state.pop("load_messages", None)
        st.rerun()
    if row.button("Clear all", help="Remove every image from this session.", disabled=len(ds) == 0):
        ds.remove(ds.names)
        _bump_version()
        st.session_state.pop("load_messages", None)
        st.rerun()
    if len(ds) == 0:
        st.warning("No images loaded. Upload files above or load the example dataset.")
        return

    st.subheader(f"Images ({len(ds)})")
    batch_section(ds)
    to_remove = st.multiselect("Remove images", ds.names, help="Take images out of this session's dataset.")
    if to_remove and st.button(f"Remove {plural(len(to_remove), 'image')}", help="Take the chosen images out; the others stay."):
        ds.remove(to_remove)
        _bump_version()
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
