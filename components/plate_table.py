"""The Data page's plate (batch) assignment: plates from a file-name pattern, the editable table of
images with their plates and conditions, and its downloads."""

from __future__ import annotations

import streamlit as st

from components.dataset_table import dataset_table
from components.downloads import download_button
from components.state import mark_edited
from components.upload_panel import bump_dataset_version
from core.data.dataset import Dataset
from core.data.images import UNASSIGNED
from core.data.plates import batches_from_pattern
from core.io.export import dataset_zip
from core.text import plural


def plate_section(ds: Dataset) -> None:
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
            bump_dataset_version()
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
