"""The Train page's label curation: one image's labels being edited, with their undo history,
kept in the session (and its workspace, so a reload keeps the edits), and saved back into the
dataset as that image's ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from components.model_panel import compute_result
from components.state import dataset, mark_edited
from components.workspace import Kept
from core.data.images import CellImage
from core.text import plural
from core.training.label_edit import EditHistory

EDIT_KEY = "tr.edit"
START_GT, START_EMPTY = "its ground truth", "nothing (draw every cell)"

# What the Train page's label curation keeps across a reload: the labels being edited, the image, the tools.
KEPT = Kept(
    state=(EDIT_KEY,),
    widgets=("tr.cur_image", "tr.cur_start", "tr.tool", "tr.radius"),
    images=("tr.cur_image",),
)


@dataclass
class Curation:
    """The labels of ``image`` being edited, started from ``start``."""

    image: str
    start: str
    history: EditHistory
    saved: np.ndarray | None = None  # the labels last saved as the image's ground truth

    @property
    def is_saved(self) -> bool:
        """The labels in the editor are the ones saved (undo or a new edit make them differ)."""
        return self.saved is not None and np.array_equal(self.saved, self.history.current)


def current_curation(image: CellImage) -> Curation | None:
    found = st.session_state.get(EDIT_KEY)
    return found if isinstance(found, Curation) and found.image == image.name else None


def start_curation(image: CellImage, start: str, settings: dict, device: str) -> Curation:
    """Begin editing ``image``'s labels from its ground truth, from nothing, or from a model's
    result (computed, or taken from the Compare page's cache)."""
    if start == START_GT:
        if image.gt is None:
            raise ValueError(f"{image.name} has no ground truth to start from: start from a model")
        labels = image.gt
    elif start == START_EMPTY:
        labels = np.zeros(image.shape[:2], np.int32)
    else:
        labels = compute_result(image, start, settings, device).labels
    curation = Curation(image.name, start, EditHistory(np.asarray(labels, np.int32)))
    st.session_state[EDIT_KEY] = curation
    return curation


def save_curation(image: CellImage, curation: Curation) -> CellImage:
    """The edited labels become ``image``'s ground truth in this workspace's dataset."""
    source = f"curated ({plural(curation.history.n_edits, 'edit')} from {curation.start})"
    saved = image.with_(gt=np.array(curation.history.current, np.int32), gt_source=source)
    dataset().put(saved)
    mark_edited()
    curation.saved = saved.gt
    return saved

