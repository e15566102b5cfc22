"""Keep every page behind the router in app.py.

Streamlit treats an app with a ``pages/`` folder as a legacy (v1) multipage app until
``st.navigation`` has run once in the process. On a freshly started server, a first visitor
who opens a page URL directly therefore gets that page file run on its own: no shared
sidebar, and file names as navigation, for every visitor until someone opens ``/``. Each
page calls :func:`require_router` first; outside the router it runs app.py instead, which
calls ``st.navigation`` and so switches the process to the router for good.
"""

from __future__ import annotations

import runpy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[1] / "app.py"
_state = threading.local()  # each session's script runs in its own thread


@contextmanager
def routed() -> Iterator[None]:
    """Mark the page run by the router."""
    _state.active = True
    try:
        yield
    finally:
        _state.active = False


def require_router() -> None:
    if getattr(_state, "active", False):
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


def page_with_images(title: str):
    """A page's start: behind the router, its title, and the session's dataset, or None (after
    saying where to add images) when there are none."""
    from components.state import dataset

    require_router()
    st.title(title)
    ds = dataset()
    if len(ds) == 0:
        st.warning("No images loaded. Add some on the Data page.")
        return None
    return ds
