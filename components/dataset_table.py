"""The dataset as an editable table: thumbnails, shapes, batches and conditions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.image_viewer import cached_thumbnail_uri
from core.data.dataset import Dataset


def dataset_table(ds: Dataset, table: pd.DataFrame, *, key: str) -> pd.DataFrame | None:
    """Show ``table`` (``ds.table()``) with a thumbnail per image; batch and condition are editable.

    Returns the edited table, or None when nothing is loaded.
    """
    if len(ds) == 0:
        return None
    table = table.copy()
    table.insert(0, "preview", [cached_thumbnail_uri(img, img.hash, img.channels) for img in ds])
    return edited_text(st.data_editor(
        table,
        key=key,
        hide_index=True,
        width="stretch",
        row_height=64,
        # what a user edits and checks first, then the file's particulars (at 1280 px these scroll)
        column_order=["preview", "name", "batch", "condition", "has_gt", "gt_cells", "labels", "channels", "height",
                      "width", "dtype"],
        disabled=[c for c in table.columns if c not in ("batch", "condition")],
        column_config={
            "preview": st.column_config.ImageColumn("preview", help="Colour merge with each channel's display settings"),
            "name": st.column_config.TextColumn("name", help="Unique image name, used as the key on every page"),
            "height": st.column_config.NumberColumn("H", help="Height in pixels"),
            "width": st.column_config.NumberColumn("W", help="Width in pixels"),
            "dtype": st.column_config.TextColumn("dtype", help="Pixel type as stored in the file"),
            "channels": st.column_config.TextColumn("channels", help="Channel names, in order"),
            "batch": st.column_config.TextColumn("batch ✎", help="Plate, day or site: edit to regroup images"),
            "condition": st.column_config.TextColumn("condition ✎", help="Treatment or genotype (optional)"),
            "has_gt": st.column_config.CheckboxColumn("GT", help="Has a ground-truth label image"),
            "gt_cells": st.column_config.NumberColumn("GT cells", help="Objects in the ground truth"),
            "labels": st.column_config.TextColumn("Labels", width="large",  # "curated (12 edits from classical)"
                                                  help="Where the ground truth comes from: a file, or curated in the "
                                                       "browser on the Train page"),
        },
    ))


def edited_text(table: pd.DataFrame, columns: tuple[str, ...] = ("batch", "condition")) -> pd.DataFrame:
    """The editable columns as plain text: a cell the user emptied comes back as None or NaN, which
    is no text (``str(nan)`` made a batch called "nan")."""
    table = table.copy()
    for column in columns:
        table[column] = [("" if v is None or pd.isna(v) else str(v).strip()) for v in table[column]]
    return table
