"""The Train page's *Curate labels*: choose an image and where its labels start (its ground truth,
a model's result or nothing), correct them with the label editor's tools, undo and redo, and save
them as the image's ground truth. The labels being edited live in :mod:`components.curation_state`."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components.curation_state import (
    START_EMPTY,
    START_GT,
    Curation,
    current_curation,
    save_curation,
    start_curation,
)
from components.downloads import download_button
from components.image_viewer import cached_composite
from components.label_editor import TOOLS, apply_event, label_editor
from components.model_panel import fetch_missing_weights, model_settings
from core.data.dataset import Dataset
from core.data.images import CellImage
from core.io.export import label_tiff_bytes
from core.text import plural
from core.training.label_edit import LabelEditError
from models.registry import list_models

TOOL_LABELS = {"delete": "Delete", "polygon": "Polygon", "brush": "Brush", "erase": "Erase", "merge": "Merge",
               "split": "Split"}
TOOL_HELP = ("Delete: click a cell. Polygon: click its corners, double-click (or click the first point) to close; "
             "Escape cancels, Backspace removes the last point. Brush: drag to paint a new cell (over background "
             "only). Erase: drag to remove pixels. Merge: click two cells. Split: drag a line across a cell.")


def curation_view(ds: Dataset, device: str) -> None:
    """Make ground truth: start from a file, a model or nothing, correct it, save it."""
    c1, c2, c3 = st.columns([1.2, 1.4, 1], vertical_alignment="bottom")
    name = c1.selectbox("Image", ds.names, key="tr.cur_image", help="The image whose labels to curate.")
    image = ds[name]
    starts = ([START_GT] if image.gt is not None else []) + [m.name for m in list_models("segment")] + [START_EMPTY]
    start = c2.selectbox("Start from", starts, key="tr.cur_start",
                         help="The image's ground truth, a model's result (the classical recipe is quick and good on "
                              "fluorescent nuclei), or nothing.")
    curation = current_curation(image)
    settings = model_settings("tr.cur", [start], f"Settings of {start}") if start not in (START_GT, START_EMPTY) else {}
    if c3.button("Start editing" if curation is None else "Start again", key="tr.cur_begin", width="stretch",
                 type="primary" if curation is None else "secondary",
                 help="Load these labels into the editor (edits not saved are dropped)."):
        if start in (START_GT, START_EMPTY) or fetch_missing_weights([start], key="tr.cur"):
            try:
                with st.spinner(f"{start} on {name}…"):
                    start_curation(image, start, settings, device)
            except (ValueError, RuntimeError) as exc:
                st.error(f"Could not start from {start}: {exc}")
                return
            st.rerun()  # the button now reads "Start again"
    if curation is None:
        st.caption("Choose where to start and press **Start editing**; corrected labels become the image's ground "
                   "truth, for training and for the scores on the Compare page.")
        return
    editor(image, curation)


def editor(image: CellImage, curation: Curation) -> None:
    """The label editor on ``image`` with its tools, undo/redo, the labels' state, save and download."""
    history = curation.history
    picture_col, tools = st.columns([2.2, 1])
    tool = tools.radio("Tool", TOOLS, key="tr.tool", format_func=TOOL_LABELS.get, help=TOOL_HELP)
    radius = tools.slider("Brush radius", 1, 30, 5, key="tr.radius", help="In image pixels.")
    u1, u2 = tools.columns(2)
    if u1.button("Undo", key="tr.undo", disabled=not history.can_undo, width="stretch", icon=":material/undo:",
                 help="Take the last edit back (as often as you like, back to where you started)."):
        st.toast(f"Undone: {history.undo()}")
    if u2.button("Redo", key="tr.redo", disabled=not history.can_redo, width="stretch", icon=":material/redo:",
                 help="Make an undone edit again."):
        st.toast(f"Redone: {history.redo()}")

    def edited(event: dict) -> None:
        try:
            st.session_state["tr.said"] = ("ok", apply_event(history, event, brush_radius=radius))
        except LabelEditError as exc:
            st.session_state["tr.said"] = ("error", str(exc))

    rgb = cached_composite(image, image.hash, image.channels, (True,) * image.shape[2])
    with picture_col:
        label_editor(rgb, history.current, key="tr.editor", tool=tool, brush_radius=radius, on_edit=edited)
    said = st.session_state.pop("tr.said", None)
    if said:
        (st.toast if said[0] == "ok" else tools.warning)(said[1])
    cells = int(len(np.unique(history.current)) - (1 if (history.current == 0).any() else 0))
    tools.caption(f"{plural(cells, 'cell')} · {curation_state_text(curation)}"
                  + (f" · last: {history.descriptions[-1]}" if history.descriptions else ""))
    if (saved := st.session_state.pop("tr.saved", None)) and curation.is_saved:
        tools.success(saved, icon=":material/check_circle:")
    if tools.button("Save as ground truth", type="secondary" if curation.is_saved else "primary", key="tr.save",
                    width="stretch", help="These labels become the image's ground truth in this workspace (the Data "
                                          "page's table says 'curated'); Train and Compare use them."):
        save_curation(image, curation)
        st.session_state["tr.saved"] = (f"Saved: {plural(cells, 'cell')} are {image.name}'s ground truth now (the "
                                        "Data page's table says 'curated'; Train and Compare use them).")
        st.rerun()
    download_button(tools, "Download labels (TIFF)", label_tiff_bytes(np.asarray(history.current)),
                    file_name=f"{image.name}_mask.tif", mime="image/tiff", key="tr.dl_labels", width="stretch",
                    help="A label image (0 = background, 1..N = cells) that the Data page reads back as ground "
                         "truth.")


def curation_state_text(curation: Curation) -> str:
    """How far the labels in the editor are from the start and from the last save."""
    history = curation.history
    done = f"{plural(history.n_edits, 'edit')} from {curation.start}"
    if curation.saved is None:
        return done + " · not saved"
    if curation.is_saved:
        return done + " · saved as ground truth"
    return done + " · changed since the save"
