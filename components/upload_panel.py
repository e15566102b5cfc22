"""The Data page's upload form: files (and zips, tables, ground truth) read into the session's
dataset, and what the last upload loaded, refused and assumed."""

from __future__ import annotations

import streamlit as st

from components.state import is_untouched_example, mark_edited
from core.data.dataset import Dataset
from core.data.plates import apply_batch_table
from core.io.load import load_files
from core.text import plural

UPLOAD_HELP = (
    "PNG, JPEG or TIFF (8/16-bit, float, multi-page, OME-TIFF), several at once or a .zip of folders. "
    "HPA sets named <id>_red/_green/_blue/_yellow become one 4-channel image. Files named "
    "<image>_mask / _labels / _gt, or in a masks/ folder, are ground truth. A CSV/TSV with "
    "columns filename, batch[, condition] assigns batches."
)


def bump_dataset_version() -> None:
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
            bump_dataset_version()
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
