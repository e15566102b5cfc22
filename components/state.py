"""Per-session state shared by the pages: the dataset and the compute device."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from core.data.dataset import Dataset
from core.data.images import CellImage
from core.io.example import make_example_dataset

EXAMPLE_KEY = "example"


def shared_read_only(images: Iterable[CellImage]) -> tuple[CellImage, ...]:
    """``images`` made read-only (pixels and truth): held once per server and shared by every
    session, so nobody may change them in place."""
    images = tuple(images)
    for img in images:
        img.pixels.setflags(write=False)
        if img.gt is not None:
            img.gt.setflags(write=False)
    return images


@st.cache_resource(show_spinner="Generating the example dataset…")
def example_images() -> tuple[CellImage, ...]:
    """Generated once per server process and shared read-only by every session."""
    return shared_read_only(make_example_dataset())


@st.cache_resource(show_spinner=False)
def shared_array_ids() -> frozenset[int]:
    """The example's arrays, shared by every session: a workspace holding them costs nothing."""
    return frozenset(id(a) for img in example_images() for a in (img.pixels, img.gt) if a is not None)


def dataset() -> Dataset:
    """This session's dataset; a newcomer starts with the example so there is data at once."""
    if "dataset" not in st.session_state:
        st.session_state.dataset = Dataset()
        st.session_state.dataset.add(example_images())
        st.session_state.dataset_origin = EXAMPLE_KEY
    return st.session_state.dataset


def image_names() -> list[str]:
    """The names of this session's images, in order; none before its dataset exists (nothing is created)."""
    return list(st.session_state["dataset"].names) if "dataset" in st.session_state else []


def is_untouched_example() -> bool:
    return st.session_state.get("dataset_origin") == EXAMPLE_KEY


def mark_edited() -> None:
    st.session_state.dataset_origin = "user"


def reset_to_example() -> None:
    st.session_state.dataset = Dataset()
    st.session_state.dataset.add(example_images())
    st.session_state.dataset_origin = EXAMPLE_KEY


LESSON_KEY = "lesson"


def holds_own_images() -> bool:
    """Whether this session's images are the user's own (not the example's nor a lesson's)."""
    return "dataset" in st.session_state and len(st.session_state.dataset) > 0 and \
        st.session_state.get("dataset_origin") not in (EXAMPLE_KEY, LESSON_KEY)


def load_lesson_images(images) -> None:
    """Replace the session's images with a lesson's (shared read-only, like the example's)."""
    st.session_state.dataset = Dataset()
    st.session_state.dataset.add(images)
    st.session_state.dataset_origin = LESSON_KEY
    st.session_state.dataset_version = st.session_state.get("dataset_version", 0) + 1
